//! A raw protocol client for the server's rule tests: blocking std sockets, every read bounded
//! by a timeout, frames as the wire carries them (no engine, no outbox), so a test can send
//! what the SDK would never send.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use receipt_core::codec::{encode, FrameDecoder};
use receipt_core::protocol::*;
use receipt_core::*;

use crate::{token, WAIT};

/// One connection to the server, logged in or not.
pub struct RawClient {
    pub stream: TcpStream,
    dec: FrameDecoder,
    next_req: ReqId,
    pub user: String,
    /// Live events received while waiting for something else.
    pub events: VecDeque<SeqEvent>,
    pub backlog: Vec<SeqEvent>,
    /// The retained messages of a full state resync (a login below the log's trimmed prefix).
    pub resync: Vec<RetainedMessage>,
    /// The last sync was a full state resync.
    pub resynced: bool,
    pub head: Seq,
    pub conversations: Vec<ConversationState>,
    pub closed: bool,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            dec: FrameDecoder::default(),
            next_req: 1,
            user: String::new(),
            events: VecDeque::new(),
            backlog: Vec::new(),
            resync: Vec::new(),
            resynced: false,
            head: 0,
            conversations: Vec::new(),
            closed: false,
        }
    }

    /// Logs in with a valid token from `since` 0 and reads up to `SyncDone`.
    pub fn login(addr: SocketAddr, user: &str, device: &str) -> RawClient {
        Self::login_since(addr, user, device, 0)
    }

    pub fn login_since(addr: SocketAddr, user: &str, device: &str, since: Seq) -> RawClient {
        Self::login_with(addr, user, device, &token(user), since)
    }

    /// Logs in with `token` (which the server must accept) and reads up to `SyncDone`.
    pub fn login_with(addr: SocketAddr, user: &str, device: &str, token: &str, since: Seq) -> RawClient {
        let mut c = RawClient::connect(addr);
        c.user = user.into();
        c.send(&ClientFrame::Login { v: PROTOCOL_VERSION, user: user.into(), device: device.into(), token: token.into(), since });
        match c.recv_required() {
            ServerFrame::LoginOk { user: u, .. } => assert_eq!(u, user),
            f => panic!("expected LoginOk, got {f:?}"),
        }
        c.read_sync();
        c
    }

    /// Reads Backlog frames until SyncDone.
    pub fn read_sync(&mut self) {
        let mut pages = Vec::new();
        loop {
            match self.recv_required() {
                ServerFrame::Backlog { events } => self.backlog.extend(events),
                ServerFrame::Resync { messages } => self.resync.extend(messages),
                ServerFrame::SyncConversations { conversations } => pages.extend(conversations),
                ServerFrame::SyncDone { head, conversations, resync } => {
                    self.head = head;
                    self.resynced = resync;
                    pages.extend(conversations);
                    self.conversations = pages;
                    return;
                }
                f => panic!("expected Backlog/SyncDone, got {f:?}"),
            }
        }
    }

    pub fn unread(&self, chat_type: ChatType, id: &str) -> u32 {
        self.conversations.iter().find(|c| c.chat_type == chat_type && c.id == id).map_or(0, |c| c.unread)
    }

    pub fn send(&mut self, f: &ClientFrame) {
        self.send_raw(&encode(f));
    }

    /// Writes bytes. A peer that already closed the connection (a refused login closes it
    /// while pipelined frames are still being written) is not an error here: the test reads
    /// the answers and the close.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            assert!(matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset), "write: {e}");
        }
    }

    /// The next frame within `timeout`, or `None` (timeout or closed: see `self.closed`).
    pub fn recv(&mut self, timeout: Duration) -> Option<ServerFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.dec.next_frame::<ServerFrame>().expect("server sends valid frames") {
                return Some(f);
            }
            if self.closed {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.dec.push(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
                Err(_) => self.closed = true,
            }
        }
    }

    pub fn recv_required(&mut self) -> ServerFrame {
        self.recv(WAIT).expect("a frame from the server")
    }

    /// Reads until the server closes the connection; returns what it sent.
    pub fn until_closed(&mut self) -> Vec<ServerFrame> {
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(200)) {
                Some(f) => out.push(f),
                None if self.closed => return out,
                None => {}
            }
        }
        panic!("server did not close the connection; got {out:?}");
    }

    pub fn next_req(&mut self) -> ReqId {
        self.next_req += 1;
        self.next_req
    }

    /// Sends a request built from a fresh req id and waits for its answer (events meanwhile
    /// are kept in `self.events`).
    pub fn request(&mut self, f: impl FnOnce(ReqId) -> ClientFrame) -> Result<Response, ChatError> {
        let req = self.next_req();
        let frame = f(req);
        self.send(&frame);
        self.wait_result(req)
    }

    pub fn wait_result(&mut self, req: ReqId) -> Result<Response, ChatError> {
        loop {
            match self.recv_required() {
                ServerFrame::Result { req: r, ok, err } if r == req => {
                    return match (ok, err) {
                        (Some(ok), None) => Ok(ok),
                        (None, Some(e)) => Err(e),
                        x => panic!("bad result {x:?}"),
                    }
                }
                ServerFrame::Event { event } => self.events.push_back(event),
                ServerFrame::Result { req: r, .. } => {
                    panic!("answer to {r} while waiting for {req}")
                }
                f => panic!("unexpected {f:?}"),
            }
        }
    }

    pub fn expect_ok(&mut self, f: impl FnOnce(ReqId) -> ClientFrame) -> Response {
        self.request(f).expect("request ok")
    }

    pub fn expect_err(&mut self, code: ErrorCode, f: impl FnOnce(ReqId) -> ClientFrame) -> ChatError {
        match self.request(f) {
            Err(e) => {
                assert_eq!(e.code, code, "{e}");
                e
            }
            Ok(r) => panic!("expected error {code:?}, got {r:?}"),
        }
    }

    pub fn send_msg(&mut self, to: &str, chat_type: ChatType, content: &str) -> MsgId {
        self.send_msg_opts(to, chat_type, content, false, false).expect("send ok").0
    }

    /// Sends a message; returns (id, need_group_ack as stored, via the echo event not needed).
    pub fn send_msg_opts(&mut self, to: &str, chat_type: ChatType, content: &str, rda: bool, nga: bool) -> Result<(MsgId, u64), ChatError> {
        // Unique per process, so a new connection of the same user never reuses one.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let cid = format!("c{}-{}", self.user, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        match self.request(|req| ClientFrame::Send {
            req,
            client_id: cid,
            to: to.into(),
            chat_type,
            content: content.into(),
            require_delivery_ack: rda,
            need_group_ack: nga,
        })? {
            Response::Sent { msg_id, timestamp, .. } => Ok((msg_id, timestamp)),
            r => panic!("expected Sent, got {r:?}"),
        }
    }

    /// The next live event (waits up to `WAIT`).
    pub fn next_event(&mut self) -> ServerEvent {
        if let Some(e) = self.events.pop_front() {
            return Arc::unwrap_or_clone(e.event);
        }
        match self.recv_required() {
            ServerFrame::Event { event } => Arc::unwrap_or_clone(event.event),
            f => panic!("expected an event, got {f:?}"),
        }
    }

    pub fn next_seq_event(&mut self) -> SeqEvent {
        if let Some(e) = self.events.pop_front() {
            return e;
        }
        match self.recv_required() {
            ServerFrame::Event { event } => event,
            f => panic!("expected an event, got {f:?}"),
        }
    }

    /// Skips events until one matches `pred` (bounded by `WAIT` per event).
    pub fn event_matching(&mut self, mut pred: impl FnMut(&ServerEvent) -> bool) -> ServerEvent {
        for _ in 0..1000 {
            let e = self.next_event();
            if pred(&e) {
                return e;
            }
        }
        panic!("no matching event");
    }

    /// Asserts that no event arrives within `ms` (after draining nothing: buffered events count).
    pub fn expect_no_event(&mut self, ms: u64) {
        if let Some(e) = self.events.pop_front() {
            panic!("unexpected event {e:?}");
        }
        if let Some(f) = self.recv(Duration::from_millis(ms)) {
            panic!("unexpected frame {f:?}");
        }
    }

    /// Drains every frame that arrives within `ms`; returns the events.
    pub fn drain_events(&mut self, ms: u64) -> Vec<ServerEvent> {
        let mut out: Vec<ServerEvent> = self.events.drain(..).map(|e| Arc::unwrap_or_clone(e.event)).collect();
        while let Some(f) = self.recv(Duration::from_millis(ms)) {
            if let ServerFrame::Event { event } = f {
                out.push(Arc::unwrap_or_clone(event.event));
            }
        }
        out
    }

    /// Everything the server sent this client so far: a ping round trip flushes it, then the
    /// buffered events are taken.
    pub fn settle(&mut self) -> Vec<ServerEvent> {
        self.sync_ping();
        self.events.drain(..).map(|e| Arc::unwrap_or_clone(e.event)).collect()
    }

    /// A ping round trip: everything the server sent before the pong is read (events buffered).
    pub fn sync_ping(&mut self) {
        self.sync_ping_within(WAIT);
    }

    /// [`sync_ping`](Self::sync_ping) waiting up to `limit` for each frame (a test that measures
    /// a slow round trip asserts its own bound on it).
    pub fn sync_ping_within(&mut self, limit: Duration) {
        let nonce = self.next_req();
        self.send(&ClientFrame::Ping { nonce });
        loop {
            match self.recv(limit).expect("a frame from the server") {
                ServerFrame::Pong { nonce: n } if n == nonce => return,
                ServerFrame::Event { event } => self.events.push_back(event),
                f => panic!("unexpected {f:?}"),
            }
        }
    }
}

pub fn create_group(owner: &mut RawClient, members: &[&str]) -> GroupId {
    match owner.expect_ok(|req| ClientFrame::CreateGroup {
        req,
        name: "team".into(),
        members: members.iter().map(|s| s.to_string()).collect(),
        chat_room: false,
    }) {
        Response::GroupCreated { group } => group,
        r => panic!("{r:?}"),
    }
}

/// A `Send` frame that asks for no delivery ack and no group read ack.
pub fn plain_send(
    req: ReqId,
    client_id: impl Into<String>,
    to: impl Into<String>,
    chat_type: ChatType,
    content: impl Into<String>,
) -> ClientFrame {
    ClientFrame::Send {
        req,
        client_id: client_id.into(),
        to: to.into(),
        chat_type,
        content: content.into(),
        require_delivery_ack: false,
        need_group_ack: false,
    }
}
