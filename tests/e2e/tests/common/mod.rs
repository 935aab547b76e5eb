//! Test harness: a real receipt server on 127.0.0.1:0 with an on-disk store in a temp dir, and
//! real client runtimes ([`receipt_client::Client`] over TCP), each with its own temp data dir.
//!
//! Every wait is bounded ([`WAIT`]); a wait that runs out panics with what it was waiting for
//! and the events that did arrive. Sleeps are only used to show that something does *not*
//! happen ([`Device::hears_nothing`]) or to let the clock pass a validity limit.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use receipt_client::{Client, ClientConfig, ClientEvent, Completion};
use receipt_core::*;
use receipt_server::{auth, ServerConfig, ServerHandle, State};

pub const SECRET: &str = "e2e-secret";
/// Longest a single wait may take.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nobody hears anything" is watched.
pub const QUIET: Duration = Duration::from_millis(300);

pub fn token(user: &str) -> String {
    auth::token_for(SECRET, user, 3600)
}

pub fn chat(peer: &str) -> ConversationKey {
    ConversationKey::new(ChatType::Chat, peer)
}

pub fn group(id: &str) -> ConversationKey {
    ConversationKey::new(ChatType::GroupChat, id)
}

// ----- the server -----

pub struct Server {
    handle: Option<ServerHandle>,
    pub config: ServerConfig,
    dir: tempfile::TempDir,
    port: u16,
}

impl Server {
    /// A server with its own data dir and group read acks enabled; `f` adjusts the config.
    pub fn start(f: impl FnOnce(&mut ServerConfig)) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: Some(dir.path().join("server")),
            secret: SECRET.into(),
            ..ServerConfig::default()
        };
        config.group_ack.enabled = true;
        f(&mut config);
        let handle = ServerHandle::spawn_in_thread(config.clone()).expect("server starts");
        let port = handle.local_addr().port();
        Server { handle: Some(handle), config, dir, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (it commits what is in flight and closes the store).
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }

    /// Starts it again on the same data dir, on the same port if it can be bound again within
    /// a second, else on a new one. Returns the port it listens on.
    pub fn start_again(&mut self) -> u16 {
        assert!(self.handle.is_none(), "stop the server first");
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut config = self.config.clone();
        loop {
            config.addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            match ServerHandle::spawn_in_thread(config.clone()) {
                Ok(h) => {
                    self.handle = Some(h);
                    return self.port;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding port {}: {e}; retrying", self.port);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    eprintln!("port {} stays busy ({e}): restarting on a new port", self.port);
                    config.addr = "127.0.0.1:0".parse().unwrap();
                    let h = ServerHandle::spawn_in_thread(config).expect("server restarts");
                    self.port = h.local_addr().port();
                    self.handle = Some(h);
                    return self.port;
                }
            }
        }
    }

    /// Stops the server and loads what its store holds (the server's view of the world).
    pub fn stop_and_load(&mut self) -> State {
        self.stop();
        let mut store = receipt_server::open_store(&self.config).expect("open the server store");
        store.load().expect("load the server store")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's unread count of `user` for `key`.
pub fn server_unread(state: &State, user: &str, key: &ConversationKey) -> u32 {
    state.convs.get(user).and_then(|m| m.get(key)).map_or(0, |c| c.unread)
}

// ----- a device: one client runtime -----

static NEXT_DIR: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct Device {
    pub label: String,
    pub user: String,
    pub client: Client,
    cfg: ClientConfig,
    /// The client's data dir (kept across [`Device::reopen`]).
    dir: Arc<tempfile::TempDir>,
    /// Events received but not consumed by a wait yet, in arrival order.
    pending: RefCell<VecDeque<ClientEvent>>,
}

fn client_config(label: &str, options: ChatOptions, port: u16, dir: PathBuf) -> ClientConfig {
    let options = ChatOptions { im_server: Some("127.0.0.1".into()), im_port: Some(port), ..options };
    let mut cfg = ClientConfig::new(options, dir);
    cfg.device_id = Some(label.replace('/', "-"));
    // Reconnect quickly: tests cut connections and restart the server.
    cfg.backoff_min = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(250);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg
}

impl Device {
    /// A client runtime for `user` (label "user/device"), not logged in yet.
    pub fn new(label: &str, options: ChatOptions, port: u16) -> Device {
        let user = label.split('/').next().unwrap().to_string();
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let n = NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cfg = client_config(label, options, port, dir.path().join(format!("client-{n}")));
        let client = Client::new(cfg.clone()).expect("client runtime");
        Device { label: label.to_string(), user, client, cfg, dir, pending: RefCell::new(VecDeque::new()) }
    }

    /// A client runtime for `user`, logged in and synced.
    pub fn online(label: &str, options: ChatOptions, port: u16) -> Device {
        let d = Device::new(label, options, port);
        d.login();
        d
    }

    /// Logs in and waits until the device is connected and caught up.
    pub fn login(&self) {
        self.client.login(&self.user, &token(&self.user)).expect("login call");
        self.wait_connected();
    }

    pub fn wait_connected(&self) {
        let r = self.wait("Connected", |e| match e {
            ClientEvent::Connected => Some(Ok(())),
            ClientEvent::LoginFailed(err) => Some(Err(err.clone())),
            _ => None,
        });
        if let Err(e) = r {
            panic!("{}: login refused: {e}", self.label);
        }
    }

    pub fn wait_disconnected(&self) {
        self.wait("Disconnected", |e| matches!(e, ClientEvent::Disconnected).then_some(()));
    }

    /// Drops this client runtime (no logout: like the app being killed) and creates a new one
    /// on the same data dir and device id, pointing at `port`. Not logged in.
    pub fn reopen(self, port: u16) -> Device {
        let Device { label, user, client, mut cfg, dir, .. } = self;
        drop(client);
        cfg.options.im_port = Some(port);
        let client = Client::new(cfg.clone()).expect("client runtime");
        Device { label, user, client, cfg, dir, pending: RefCell::new(VecDeque::new()) }
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

    /// Waits (at most [`WAIT`]) for the first event `f` accepts and consumes it; other events
    /// stay queued in order.
    pub fn wait<T>(&self, what: &str, f: impl FnMut(&ClientEvent) -> Option<T>) -> T {
        self.wait_for(WAIT, what, f)
    }

    pub fn wait_for<T>(&self, limit: Duration, what: &str, mut f: impl FnMut(&ClientEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut pending = self.pending.borrow_mut();
                let hit = pending.iter().enumerate().find_map(|(i, e)| f(e).map(|t| (i, t)));
                if let Some((i, t)) = hit {
                    pending.remove(i);
                    return t;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("{}: no {what} within {limit:?}; events seen: {:#?}", self.label, self.pending.borrow());
            }
            self.pull(left.min(Duration::from_millis(50)));
        }
    }

    /// Waits (at most [`WAIT`]) until `cond` holds on the device's state, keeping the events
    /// that arrive meanwhile.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut(&Device) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            if Instant::now() >= deadline {
                panic!("{}: {what} not reached within {WAIT:?}", self.label);
            }
            self.pull(Duration::from_millis(10));
        }
    }

    /// Everything that arrives within `d` (plus what was already queued); the queue is emptied.
    pub fn collect(&self, d: Duration) -> Vec<ClientEvent> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.pull(left.min(Duration::from_millis(20)));
        }
        self.pull_ready();
        self.pending.borrow_mut().drain(..).collect()
    }

    /// Forgets the queued events (after a step whose events were checked).
    pub fn clear(&self) {
        self.pull_ready();
        self.pending.borrow_mut().clear();
    }

    /// Asserts that no event `bad` accepts is queued or arrives within [`QUIET`].
    pub fn hears_nothing(&self, what: &str, mut bad: impl FnMut(&ClientEvent) -> bool) {
        let deadline = Instant::now() + QUIET;
        while Instant::now() < deadline {
            self.pull(Duration::from_millis(20));
        }
        self.pull_ready();
        let pending = self.pending.borrow();
        if let Some(e) = pending.iter().find(|e| bad(e)) {
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

    pub fn group_acks(&self) -> Vec<GroupReadAck> {
        self.wait("onGroupMessageRead", |e| match e {
            ClientEvent::GroupMessageRead(a) => Some(a.clone()),
            _ => None,
        })
    }

    pub fn conversation_read(&self) -> (UserId, String) {
        self.wait("onConversationRead", |e| match e {
            ClientEvent::ConversationRead { from, to } => Some((from.clone(), to.clone())),
            _ => None,
        })
    }

    /// The outcome of request `req`.
    pub fn completed(&self, req: ReqId) -> Result<Completion, ChatError> {
        self.wait(&format!("answer to request {req}"), |e| match e {
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
        match self.completed(req) {
            Err(e) if e.code == code => e,
            other => panic!("{}: expected refusal {} for request {req}, got {other:?}", self.label, code.as_u32()),
        }
    }

    // ----- the SDK's calls, with their outcome -----

    /// Sends a message and waits until the server accepted it.
    pub fn send(&self, to: &str, chat_type: ChatType, text: &str, need_group_ack: bool) -> ChatMessage {
        let (req, _) = self.client.send_text(to, chat_type, text, need_group_ack).expect("send call");
        match self.ok(req) {
            Completion::Sent(m) => m,
            other => panic!("{}: send answered {other:?}", self.label),
        }
    }

    pub fn send_chat(&self, to: &str, text: &str) -> ChatMessage {
        self.send(to, ChatType::Chat, text, false)
    }

    /// Creates a group (or chat room) owned by this device's user.
    pub fn create_group(&self, members: &[&str], chat_room: bool) -> GroupId {
        let members: Vec<UserId> = members.iter().map(|m| m.to_string()).collect();
        let req = self.client.with_engine(|e, now| e.create_group(now, "e2e", &members, chat_room)).expect("create group call");
        match self.ok(req) {
            Completion::GroupCreated(g) => g,
            other => panic!("{}: create group answered {other:?}", self.label),
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

pub fn expect_err<T: std::fmt::Debug>(r: ChatResult<T>, code: ErrorCode) -> ChatError {
    match r {
        Err(e) if e.code == code => e,
        other => panic!("expected error {}, got {other:?}", code.as_u32()),
    }
}
