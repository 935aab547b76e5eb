//! [`Device`]: a real client runtime ([`receipt_client::Client`] over TCP to 127.0.0.1) with
//! an event-waiting API.
//!
//! Events the runtime emits are queued in arrival order; a wait takes the first queued (or
//! arriving) event its predicate accepts and leaves the others queued, so a test can wait for
//! things in any order. Sleeps are only used to show that something does *not* happen
//! ([`Device::hears_nothing`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use receipt_client::{Client, ClientConfig, ClientEvent, Completion};
use receipt_core::*;

use crate::{token, QUIET, WAIT};

/// One device of a user: label `"user/device"`.
pub struct Device {
    pub label: String,
    pub user: String,
    pub client: Client,
    cfg: ClientConfig,
    /// The client's data dir when the device made it (kept across [`Device::reopen`]).
    _dir: Option<tempfile::TempDir>,
    /// Longest a single wait may take ([`WAIT`] unless [`Device::wait_limit`] said otherwise).
    limit: Duration,
    /// Events received but not consumed by a wait yet, in arrival order.
    pending: RefCell<VecDeque<ClientEvent>>,
}

/// Panics with the message of a failed `try_` call.
fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

impl Device {
    /// A client runtime for `label` ("user/device") talking to 127.0.0.1:`port`, with its data
    /// in a temp dir of its own; not logged in yet.
    pub fn new(label: &str, options: ChatOptions, port: u16) -> Device {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut d = must(Device::build(label, options, port, dir.path().join("client")));
        d._dir = Some(dir);
        d
    }

    /// A client runtime whose data goes to `<dir>/<user>_<device>` (the caller owns `dir`).
    pub fn in_dir(label: &str, options: ChatOptions, port: u16, dir: &Path) -> Result<Device, String> {
        Device::build(label, options, port, dir.join(label.replace('/', "_")))
    }

    fn build(label: &str, options: ChatOptions, port: u16, data: PathBuf) -> Result<Device, String> {
        let options = ChatOptions { im_server: Some("127.0.0.1".into()), im_port: Some(port), ..options };
        let mut cfg = ClientConfig::new(options, data);
        cfg.device_id = Some(label.replace('/', "-"));
        // Reconnect quickly: tests cut connections and restart the server.
        cfg.backoff_min = Duration::from_millis(20);
        cfg.backoff_max = Duration::from_millis(250);
        cfg.connect_timeout = Duration::from_secs(2);
        let client = Client::new(cfg.clone()).map_err(|e| format!("{label}: client runtime: {e}"))?;
        let user = label.split('/').next().unwrap_or(label).to_string();
        Ok(Device { label: label.to_string(), user, client, cfg, _dir: None, limit: WAIT, pending: RefCell::new(VecDeque::new()) })
    }

    /// A client runtime for `label`, logged in and caught up.
    pub fn online(label: &str, options: ChatOptions, port: u16) -> Device {
        let d = Device::new(label, options, port);
        d.login();
        d
    }

    /// Sets how long a single wait may take (default [`WAIT`]).
    pub fn wait_limit(mut self, limit: Duration) -> Device {
        self.limit = limit;
        self
    }

    /// Logs in with a [`token`] and waits until the device is connected and caught up.
    pub fn login(&self) {
        must(self.try_login())
    }

    pub fn try_login(&self) -> Result<(), String> {
        self.client.login(&self.user, &token(&self.user)).map_err(|e| format!("{}: login call: {e}", self.label))?;
        self.try_wait_connected()
    }

    pub fn wait_connected(&self) {
        must(self.try_wait_connected())
    }

    /// Waits for `Connected`; a `LoginFailed` instead is an error.
    pub fn try_wait_connected(&self) -> Result<(), String> {
        let r = self.try_wait("Connected", |e| match e {
            ClientEvent::Connected => Some(Ok(())),
            ClientEvent::LoginFailed(err) => Some(Err(err.clone())),
            _ => None,
        })?;
        r.map_err(|e| format!("{}: login refused: {e}", self.label))
    }

    pub fn wait_disconnected(&self) {
        self.wait("Disconnected", |e| matches!(e, ClientEvent::Disconnected).then_some(()));
    }

    /// Drops this client runtime (no logout: like the app being killed) and creates a new one
    /// on the same data dir and device id, pointing at `port`. Not logged in.
    pub fn reopen(self, port: u16) -> Device {
        let Device { label, user, client, mut cfg, _dir, limit, .. } = self;
        drop(client);
        cfg.options.im_port = Some(port);
        let client = Client::new(cfg.clone()).expect("client runtime");
        Device { label, user, client, cfg, _dir, limit, pending: RefCell::new(VecDeque::new()) }
    }

    /// Rebuilds the runtime (no logout: like an app restart) with its config changed by `f`
    /// (TLS settings, backoff, ...), on the same data dir and device id. Not logged in.
    pub fn reconfigure(self, f: impl FnOnce(&mut ClientConfig)) -> Device {
        let Device { label, user, client, mut cfg, _dir, limit, .. } = self;
        drop(client);
        f(&mut cfg);
        let client = Client::new(cfg.clone()).expect("client runtime");
        Device { label, user, client, cfg, _dir, limit, pending: RefCell::new(VecDeque::new()) }
    }

    // ----- events -----

    fn pull(&self, timeout: Duration) -> bool {
        match self.client.events().recv_timeout(timeout) {
            Ok(e) => {
                self.pending.borrow_mut().push_back(e);
                true
            }
            Err(_) => false,
        }
    }

    fn pull_ready(&self) {
        while let Ok(e) = self.client.events().try_recv() {
            self.pending.borrow_mut().push_back(e);
        }
    }

    /// Waits (at most the wait limit) for the first event `f` accepts and consumes it; other
    /// events stay queued in order. Panics if none comes.
    pub fn wait<T>(&self, what: &str, f: impl FnMut(&ClientEvent) -> Option<T>) -> T {
        must(self.try_wait(what, f))
    }

    /// [`Device::wait`], returning what did arrive as the error when nothing matched in time.
    pub fn try_wait<T>(&self, what: &str, f: impl FnMut(&ClientEvent) -> Option<T>) -> Result<T, String> {
        self.try_wait_for(self.limit, what, f)
    }

    /// [`Device::wait`] with its own time bound.
    pub fn wait_for<T>(&self, limit: Duration, what: &str, f: impl FnMut(&ClientEvent) -> Option<T>) -> T {
        must(self.try_wait_for(limit, what, f))
    }

    pub fn try_wait_for<T>(&self, limit: Duration, what: &str, mut f: impl FnMut(&ClientEvent) -> Option<T>) -> Result<T, String> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut pending = self.pending.borrow_mut();
                let hit = pending.iter().enumerate().find_map(|(i, e)| f(e).map(|t| (i, t)));
                if let Some((i, t)) = hit {
                    pending.remove(i);
                    return Ok(t);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{}: no {what} within {limit:?}; events seen: {:#?}", self.label, self.pending.borrow()));
            }
            self.pull(left.min(Duration::from_millis(50)));
        }
    }

    /// Waits (at most the wait limit) until `cond` holds on the device's state, keeping the
    /// events that arrive meanwhile.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut(&Device) -> bool) {
        let deadline = Instant::now() + self.limit;
        while !cond(self) {
            if Instant::now() >= deadline {
                panic!("{}: {what} not reached within {:?}", self.label, self.limit);
            }
            self.pull(Duration::from_millis(10));
        }
    }

    /// Everything that arrives within `d` (plus what was already queued); the queue is emptied.
    pub fn collect(&self, d: Duration) -> Vec<ClientEvent> {
        self.watch(d);
        self.pending.borrow_mut().drain(..).collect()
    }

    /// Queues what arrives within `d`.
    fn watch(&self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.pull(left.min(Duration::from_millis(20)));
        }
        self.pull_ready();
    }

    /// Forgets the queued events (after a step whose events were checked).
    pub fn clear(&self) {
        self.pull_ready();
        self.pending.borrow_mut().clear();
    }

    /// Watches for `d`; returns the first queued or arrived event `bad` accepts (left queued).
    pub fn heard(&self, d: Duration, mut bad: impl FnMut(&ClientEvent) -> bool) -> Option<ClientEvent> {
        self.watch(d);
        self.pending.borrow().iter().find(|e| bad(e)).cloned()
    }

    /// Asserts that no event `bad` accepts is queued or arrives within [`QUIET`].
    pub fn hears_nothing(&self, what: &str, bad: impl FnMut(&ClientEvent) -> bool) {
        if let Some(e) = self.heard(QUIET, bad) {
            panic!("{}: expected no {what}, got {e:?}", self.label);
        }
    }

    /// Takes messages from `MessagesReceived` events until `n` were collected (an event with
    /// more keeps the rest queued).
    pub fn received(&self, n: usize) -> Vec<ChatMessage> {
        self.take_msgs(n, "onMessageReceived", Kind::Received)
    }

    pub fn delivered(&self, n: usize) -> Vec<ChatMessage> {
        self.take_msgs(n, "onMessageDelivered", Kind::Delivered)
    }

    pub fn read(&self, n: usize) -> Vec<ChatMessage> {
        self.take_msgs(n, "onMessageRead", Kind::Read)
    }

    fn take_msgs(&self, n: usize, what: &str, kind: Kind) -> Vec<ChatMessage> {
        let mut out = Vec::new();
        while out.len() < n {
            let mut msgs = self.wait(what, |e| kind.msgs(e).map(<[ChatMessage]>::to_vec));
            let want = n - out.len();
            if msgs.len() > want {
                let rest = msgs.split_off(want);
                self.pending.borrow_mut().push_front(kind.event(rest));
            }
            out.extend(msgs);
        }
        out
    }

    /// The first message of the next `MessagesReceived` event whose messages `f` accepts.
    pub fn try_received_where(&self, what: &str, mut f: impl FnMut(&ChatMessage) -> bool) -> Result<ChatMessage, String> {
        self.try_wait(what, |e| match e {
            ClientEvent::MessagesReceived(m) => m.iter().find(|m| f(m)).cloned(),
            _ => None,
        })
    }

    pub fn group_acks(&self) -> Vec<GroupReadAck> {
        self.wait("onGroupMessageRead", |e| match e {
            ClientEvent::GroupMessageRead(a) => Some(a.clone()),
            _ => None,
        })
    }

    pub fn conversation_read(&self) -> (UserId, String) {
        must(self.try_conversation_read())
    }

    pub fn try_conversation_read(&self) -> Result<(UserId, String), String> {
        self.try_wait("onConversationRead", |e| match e {
            ClientEvent::ConversationRead { from, to } => Some((from.clone(), to.clone())),
            _ => None,
        })
    }

    /// The outcome of request `req`.
    pub fn completed(&self, req: ReqId) -> Result<Completion, ChatError> {
        must(self.try_completed(req))
    }

    pub fn try_completed(&self, req: ReqId) -> Result<Result<Completion, ChatError>, String> {
        self.try_wait(&format!("answer to request {req}"), |e| match e {
            ClientEvent::RequestCompleted { req: r, result } if *r == req => Some(result.clone()),
            _ => None,
        })
    }

    /// Request `req` succeeded.
    pub fn ok(&self, req: ReqId) -> Completion {
        self.completed(req).unwrap_or_else(|e| panic!("{}: request {req} refused: {e}", self.label))
    }

    /// Request `req` was refused with `code`.
    pub fn refused(&self, req: ReqId, code: ErrorCode) -> ChatError {
        must(self.try_refused(req, code))
    }

    pub fn try_refused(&self, req: ReqId, code: ErrorCode) -> Result<ChatError, String> {
        match self.try_completed(req)? {
            Err(e) if e.code == code => Ok(e),
            other => Err(format!("{}: expected refusal {} for request {req}, got {other:?}", self.label, code.as_u32())),
        }
    }

    // ----- the SDK's calls, with their outcome -----

    /// Sends a message and waits until the server accepted it.
    pub fn send(&self, to: &str, chat_type: ChatType, text: &str, need_group_ack: bool) -> ChatMessage {
        must(self.try_send(to, chat_type, text, need_group_ack))
    }

    pub fn try_send(&self, to: &str, chat_type: ChatType, text: &str, need_group_ack: bool) -> Result<ChatMessage, String> {
        let (req, _) = self.client.send_text(to, chat_type, text, need_group_ack).map_err(|e| format!("{}: send call: {e}", self.label))?;
        match self.try_completed(req)? {
            Ok(Completion::Sent(m)) => Ok(m),
            other => Err(format!("{}: send answered {other:?}", self.label)),
        }
    }

    pub fn send_chat(&self, to: &str, text: &str) -> ChatMessage {
        self.send(to, ChatType::Chat, text, false)
    }

    /// Creates a group (or chat room) named "e2e" owned by this device's user.
    pub fn create_group(&self, members: &[&str], chat_room: bool) -> GroupId {
        must(self.try_create_group("e2e", members, chat_room))
    }

    pub fn try_create_group(&self, name: &str, members: &[&str], chat_room: bool) -> Result<GroupId, String> {
        let members: Vec<UserId> = members.iter().map(|m| m.to_string()).collect();
        let req = self
            .client
            .with_engine(|e, now| e.create_group(now, name, &members, chat_room))
            .map_err(|e| format!("{}: create group call: {e}", self.label))?;
        match self.try_completed(req)? {
            Ok(Completion::GroupCreated(g)) => Ok(g),
            other => Err(format!("{}: create group answered {other:?}", self.label)),
        }
    }

    /// A 1:1 read ack that must go out and be accepted.
    pub fn ack_read(&self, id: MsgId) {
        let req = self.client.ack_message_read(id).expect("ack call").expect("an ack goes out");
        self.ok(req);
    }

    /// The message with its flags as this device sees it.
    pub fn msg(&self, id: MsgId) -> ChatMessage {
        self.client.message(&id.to_string()).expect("logged in").unwrap_or_else(|| panic!("{}: no message {id}", self.label))
    }

    pub fn unread(&self, key: &ConversationKey) -> u32 {
        self.client.unread_count(key).expect("logged in")
    }

    pub fn outbox(&self) -> usize {
        self.client.outbox_len().expect("logged in")
    }

    /// Waits until this device's unread count for `key` is `n`.
    pub fn wait_unread(&self, key: &ConversationKey, n: u32) {
        self.wait_until(&format!("unread {n} in {}", key.id), |d| d.unread(key) == n);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Received,
    Delivered,
    Read,
}

impl Kind {
    fn msgs(self, e: &ClientEvent) -> Option<&[ChatMessage]> {
        match (self, e) {
            (Kind::Received, ClientEvent::MessagesReceived(m))
            | (Kind::Delivered, ClientEvent::MessagesDelivered(m))
            | (Kind::Read, ClientEvent::MessagesRead(m)) => Some(m),
            _ => None,
        }
    }

    fn event(self, m: Vec<ChatMessage>) -> ClientEvent {
        match self {
            Kind::Received => ClientEvent::MessagesReceived(m),
            Kind::Delivered => ClientEvent::MessagesDelivered(m),
            Kind::Read => ClientEvent::MessagesRead(m),
        }
    }
}

/// Ids of the messages in `MessagesRead` events.
pub fn read_ids(events: &[ClientEvent]) -> Vec<MsgId> {
    events
        .iter()
        .flat_map(|e| match e {
            ClientEvent::MessagesRead(m) => m.iter().map(|m| m.id).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The error of a call that must be refused with `code` (an `Err` message otherwise).
pub fn try_expect_err<T: std::fmt::Debug>(r: ChatResult<T>, code: ErrorCode) -> Result<ChatError, String> {
    match r {
        Err(e) if e.code == code => Ok(e),
        other => Err(format!("expected error {}, got {other:?}", code.as_u32())),
    }
}

/// The error of a call that must be refused with `code`.
pub fn expect_err<T: std::fmt::Debug>(r: ChatResult<T>, code: ErrorCode) -> ChatError {
    must(try_expect_err(r, code))
}
