//! The client runtime that the demo, the tests and the C ABI share.
//!
//! A [`Client`] holds at most one logged-in session. A session owns a connection thread that
//! drives the sans-IO [`ClientEngine`] over TCP: it connects, logs in, feeds every received
//! frame to the engine, writes what the engine wants sent, runs the keep-alive, and reconnects
//! with exponential backoff when the connection drops. The engine's state lives in a redb file
//! under the client's data directory, so acks made offline survive an app restart.
//!
//! Events reach the host on a crossbeam channel ([`Client::events`]); a waker callback, if set,
//! runs (on the thread that produced the event) each time events were queued, so a host with
//! its own event loop (the NAPI shim) can hop to its thread and drain the channel there.
//!
//! Commands may be called from any thread; they take the engine lock briefly and write the
//! resulting frames to the socket at once.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use receipt_core::codec::{encode_into, FrameDecoder, DEFAULT_MAX_FRAME};
use receipt_core::engine::{ClientEngine, EngineConfig, Retention};
use receipt_core::store::{Conversation, RedbStore};
use receipt_core::*;

pub use receipt_core::engine::{ClientEvent, Completion};

mod tls;
use tls::{Conn, TlsClient};
pub use tls::{Security, TlsSettings};

/// Default server port.
pub const DEFAULT_PORT: u16 = 7878;

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub options: ChatOptions,
    /// Where the per-user store files and the device id live.
    pub data_dir: PathBuf,
    /// This install's device id; `None`: generated once and kept in `data_dir/device-id`.
    pub device_id: Option<DeviceId>,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// TLS or plaintext ([`Security::Auto`]: TLS except to a loopback host).
    pub security: Security,
    /// Messages the engine keeps in memory (the rest is read from the store when needed).
    pub message_cache: usize,
    /// What the device keeps of old history (default: everything).
    pub retention: Retention,
}

impl ClientConfig {
    pub fn new(options: ChatOptions, data_dir: impl Into<PathBuf>) -> Self {
        ClientConfig {
            options,
            data_dir: data_dir.into(),
            device_id: None,
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            security: Security::Auto,
            message_cache: receipt_core::engine::DEFAULT_MESSAGE_CACHE,
            retention: Retention::default(),
        }
    }

    fn server_host(&self) -> &str {
        self.options.im_server.as_deref().unwrap_or("127.0.0.1")
    }

    fn server_addr(&self) -> String {
        let host = self.server_host();
        // A bare IPv6 address needs brackets before the port.
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.options.im_port.unwrap_or(DEFAULT_PORT))
        } else {
            format!("{host}:{}", self.options.im_port.unwrap_or(DEFAULT_PORT))
        }
    }
}

type Waker = Arc<dyn Fn() + Send + Sync>;

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The expiry a token carries: its `<unix secs>.<mac>` prefix (the server's token format,
/// docs/protocol.md). `None` for a token of another shape: no expiry events then.
pub fn token_expiry_unix_secs(token: &str) -> Option<u64> {
    let (secs, mac) = token.split_once('.')?;
    if secs.is_empty() || secs.len() > 20 || !secs.bytes().all(|b| b.is_ascii_digit()) || mac.is_empty() {
        return None;
    }
    secs.parse().ok()
}

/// The session's token and when to raise its expiry events (wall clock, Unix ms).
struct TokenClock {
    token: String,
    /// About 80% of the way from when the client got the token to its expiry.
    will_expire_at: Option<u64>,
    expires_at: Option<u64>,
    will_expire_told: bool,
    expired_told: bool,
}

impl TokenClock {
    fn new(token: &str) -> TokenClock {
        let given = unix_ms();
        let expires_at = token_expiry_unix_secs(token).map(|s| s.saturating_mul(1000));
        let will_expire_at = expires_at.map(|e| given + e.saturating_sub(given) * 8 / 10);
        TokenClock { token: token.to_string(), will_expire_at, expires_at, will_expire_told: false, expired_told: false }
    }

    fn expired(&self) -> bool {
        self.expires_at.is_some_and(|e| unix_ms() >= e)
    }
}

/// State shared by the API and the connection thread of one session.
struct Shared {
    engine: Mutex<ClientEngine<RedbStore>>,
    /// The write side of the live connection (and its TLS session), if any.
    conn: Mutex<Option<Conn>>,
    stop: AtomicBool,
    /// "Airplane mode": while false the session stays disconnected (see `set_network_enabled`).
    network: Arc<AtomicBool>,
    /// Wakes the connection thread out of a backoff sleep on logout.
    sleeper: (Mutex<()>, Condvar),
    started: Instant,
    /// The store was opened by an earlier session that reached the server: connection
    /// failures retry in the background instead of failing the login.
    offline_start: bool,
    /// Written when the server first accepts this user here (what makes the next start offline-capable).
    marker: PathBuf,
    token: Mutex<TokenClock>,
    events: Sender<ClientEvent>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Writes the engine's pending frames and forwards its events. Call with the engine locked.
    fn pump(&self, engine: &mut ClientEngine<RedbStore>) {
        let now = self.now();
        let mut out = Vec::new();
        while let Some(frame) = engine.poll_transmit(now) {
            encode_into(&frame, &mut out);
        }
        if !out.is_empty() {
            let mut conn = self.conn.lock();
            if let Some(conn) = conn.as_mut() {
                if let Err(e) = conn.send(&out) {
                    // The reader sees the broken connection and reconnects; unconfirmed
                    // requests are still in the outbox and go again.
                    log::debug!("write failed: {e}");
                    conn.shutdown();
                }
            }
        }
        let mut any = false;
        while let Some(event) = engine.poll_event() {
            if event == ClientEvent::TokenExpired {
                // The engine's (a LoginFailed 108): once per token, with the clock's.
                let mut clock = self.token.lock();
                if clock.expired_told {
                    continue;
                }
                clock.expired_told = true;
            }
            any = true;
            let _ = self.events.send(event);
        }
        if any {
            self.wake();
        }
    }

    /// Runs the waker (events were queued).
    fn wake(&self) {
        let waker = self.waker.lock().clone();
        if let Some(waker) = waker {
            waker();
        }
    }

    /// Queues an event the engine did not produce, and wakes the host.
    fn emit(&self, event: ClientEvent) {
        let _ = self.events.send(event);
        self.wake();
    }

    /// Raises TokenWillExpire / TokenExpired once each when their time has come.
    fn check_token(&self) {
        let now = unix_ms();
        let mut due = Vec::new();
        {
            let mut clock = self.token.lock();
            if !clock.will_expire_told && clock.will_expire_at.is_some_and(|t| now >= t) {
                clock.will_expire_told = true;
                due.push(ClientEvent::TokenWillExpire);
            }
            if !clock.expired_told && clock.expires_at.is_some_and(|t| now >= t) {
                clock.expired_told = true;
                due.push(ClientEvent::TokenExpired);
            }
        }
        for event in due {
            log::info!("token lifecycle: {event:?}");
            self.emit(event);
        }
    }

    fn note_logged_in(&self) {
        if !self.marker.exists() {
            if let Err(e) = std::fs::write(&self.marker, b"1") {
                log::warn!("cannot note the first login at {}: {e}", self.marker.display());
            }
        }
    }

    /// Sleeps `d` in short steps, raising token events on time meanwhile.
    fn sleep_checking(&self, d: Duration) {
        let deadline = Instant::now() + d;
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.load(Ordering::SeqCst) {
                break;
            }
            let woken = self.sleep(left.min(Duration::from_millis(250)));
            self.check_token();
            if woken {
                // Logout or the network coming back: act now.
                break;
            }
        }
    }

    /// Sleeps at most `d`; true when woken early (logout, network switched).
    fn sleep(&self, d: Duration) -> bool {
        let mut guard = self.sleeper.0.lock();
        if self.stop.load(Ordering::SeqCst) {
            return true;
        }
        !self.sleeper.1.wait_for(&mut guard, d).timed_out()
    }
}

/// The logged-in user of a [`Client`]: its state shared with the connection thread, and that
/// thread.
struct LoginSession {
    user: UserId,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The client runtime: one per app (and per user store directory).
pub struct Client {
    cfg: ClientConfig,
    device: DeviceId,
    session: Mutex<Option<LoginSession>>,
    event_sender: Sender<ClientEvent>,
    event_receiver: Receiver<ClientEvent>,
    waker: Arc<Mutex<Option<Waker>>>,
    network: Arc<AtomicBool>,
}

fn store_file_name(user: &str) -> String {
    // User ids are free text: keep [A-Za-z0-9_-] and hex-escape the rest.
    let mut name = String::new();
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02x}"));
        }
    }
    name + ".redb"
}

fn load_device_id(dir: &Path) -> std::io::Result<DeviceId> {
    let path = dir.join("device-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if validate_id("device", &id).is_ok() {
            return Ok(id);
        }
    }
    // Unique enough per install: time, process and address entropy, hashed.
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    let id = format!("dev-{:016x}", hasher.finish());
    std::fs::write(&path, &id)?;
    Ok(id)
}

impl Client {
    /// Creates the runtime; makes `data_dir` if needed. No connection until [`login`](Self::login).
    pub fn new(cfg: ClientConfig) -> ChatResult<Client> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| ChatError::invalid_param(format!("data dir {}: {e}", cfg.data_dir.display())))?;
        let device = match &cfg.device_id {
            Some(d) => {
                validate_id("device", d)?;
                d.clone()
            }
            None => load_device_id(&cfg.data_dir).map_err(|e| ChatError::general(format!("device id: {e}")))?,
        };
        let (event_sender, event_receiver) = crossbeam_channel::unbounded();
        Ok(Client {
            cfg,
            device,
            session: Mutex::new(None),
            event_sender,
            event_receiver,
            waker: Arc::new(Mutex::new(None)),
            network: Arc::new(AtomicBool::new(true)),
        })
    }

    pub fn device_id(&self) -> &str {
        &self.device
    }

    pub fn options(&self) -> &ChatOptions {
        &self.cfg.options
    }

    /// The event channel. Events of every session of this client arrive here, in order.
    pub fn events(&self) -> &Receiver<ClientEvent> {
        &self.event_receiver
    }

    /// Sets the function called after events were queued. It runs on the thread that queued
    /// them (the connection thread, or the caller of a command) and must not block.
    pub fn set_waker(&self, waker: Option<Arc<dyn Fn() + Send + Sync>>) {
        *self.waker.lock() = waker;
    }

    /// The logged-in user, if any.
    pub fn current_user(&self) -> Option<UserId> {
        self.session.lock().as_ref().map(|session| session.user.clone())
    }

    /// Logs in: opens the user's store (raising [`ClientEvent::DatabaseOpened`] at once) and
    /// starts the connection thread. Returns at once; the outcome arrives as
    /// [`ClientEvent::Connected`] or [`ClientEvent::LoginFailed`] (104 for a malformed token, 108
    /// for an expired one, after [`ClientEvent::TokenExpired`], 202 for a bad signature, 300
    /// when the server cannot be reached on the first attempt).
    ///
    /// Offline start: once the server has accepted this user on this client, later logins no
    /// longer need the server: the store opens, counts, messages and flags are readable, acks
    /// queue in the outbox, and the connection is retried in the background with backoff. If
    /// the server then refuses the token, `LoginFailed` and [`ClientEvent::LoggedOut`] (plus
    /// [`ClientEvent::TokenExpired`] when its expiry has passed) end the session; the queued
    /// acks stay in the store for the next good login.
    pub fn login(&self, user: &str, token: &str) -> ChatResult<()> {
        validate_id("user", user)?;
        if token.is_empty() {
            return Err(ChatError::invalid_param("token must not be empty"));
        }
        let mut slot = self.session.lock();
        if let Some(session) = slot.as_ref() {
            if session.shared.stop.load(Ordering::SeqCst) || session.thread.as_ref().is_some_and(|t| t.is_finished()) {
                // A session whose login failed: clear it.
                let old = slot.take().expect("checked");
                drop(slot);
                stop_session(old);
                slot = self.session.lock();
            } else {
                return Err(ChatError::new(ErrorCode::UserAlreadyLogin, format!("{} is already logged in", session.user)));
            }
        }
        let tls = TlsClient::for_host(&self.cfg.security, self.cfg.server_host())
            .map_err(|e| ChatError::invalid_param(format!("TLS settings: {e}")))?;
        let path = self.cfg.data_dir.join(store_file_name(user));
        let marker = self.cfg.data_dir.join(format!("{}.session", store_file_name(user)));
        let store = RedbStore::open(&path).map_err(|e| ChatError::general(format!("opening {}: {e}", path.display())))?;
        let mut engine_cfg = EngineConfig::new(user, self.device.clone(), self.cfg.options.clone());
        engine_cfg.message_cache = self.cfg.message_cache;
        engine_cfg.retention = self.cfg.retention;
        let engine = ClientEngine::open(engine_cfg, store).map_err(|e| ChatError::general(e.to_string()))?;
        let shared = Arc::new(Shared {
            engine: Mutex::new(engine),
            conn: Mutex::new(None),
            stop: AtomicBool::new(false),
            network: self.network.clone(),
            sleeper: (Mutex::new(()), Condvar::new()),
            started: Instant::now(),
            offline_start: marker.exists(),
            marker,
            token: Mutex::new(TokenClock::new(token)),
            events: self.event_sender.clone(),
            waker: self.waker.clone(),
        });
        log::info!("store of {user} opened ({})", if shared.offline_start { "offline start allowed" } else { "first login" });
        // Queued before the thread starts (so it comes first); the host is woken once the
        // session is in place, outside the lock (a host may ask isDatabaseOpened() at once).
        let _ = self.event_sender.send(ClientEvent::DatabaseOpened { user: user.to_string(), offline_start: shared.offline_start });
        let (cfg, thread_shared) = (self.cfg.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("receipt-conn-{user}"))
            .spawn(move || connection_loop(cfg, tls, thread_shared))
            .map_err(|e| ChatError::general(format!("spawning the connection thread: {e}")))?;
        *slot = Some(LoginSession { user: user.to_string(), shared: shared.clone(), thread: Some(thread) });
        drop(slot);
        shared.wake();
        Ok(())
    }

    /// Logs out: closes the connection, stops the thread and closes the store. What is in the
    /// outbox stays on disk and goes out at the user's next login.
    pub fn logout(&self) -> ChatResult<()> {
        let session = self.session.lock().take().ok_or_else(ChatError::not_logged_in)?;
        stop_session(session);
        Ok(())
    }

    /// Runs `f` on the logged-in engine, then writes its frames and forwards its events.
    pub fn with_engine<T>(&self, f: impl FnOnce(&mut ClientEngine<RedbStore>, u64) -> ChatResult<T>) -> ChatResult<T> {
        let shared = self.session.lock().as_ref().map(|session| session.shared.clone()).ok_or_else(ChatError::not_logged_in)?;
        let mut engine = shared.engine.lock();
        let result = f(&mut engine, shared.now());
        shared.pump(&mut engine);
        result
    }

    fn read<T>(&self, f: impl FnOnce(&ClientEngine<RedbStore>) -> T) -> ChatResult<T> {
        let shared = self.session.lock().as_ref().map(|session| session.shared.clone()).ok_or_else(ChatError::not_logged_in)?;
        let engine = shared.engine.lock();
        Ok(f(&engine))
    }

    // ----- the SDK's calls -----

    /// Sends a text message; the answer is `RequestCompleted { req, Ok(Completion::Sent) }`.
    pub fn send_text(&self, to: &str, chat_type: ChatType, content: &str, need_group_ack: bool) -> ChatResult<(ReqId, ChatMessage)> {
        self.with_engine(|engine, now| engine.send_message(now, to, chat_type, content, need_group_ack))
    }

    pub fn ack_message_read(&self, msg_id: MsgId) -> ChatResult<Option<ReqId>> {
        self.with_engine(|engine, now| engine.ack_message_read(now, msg_id))
    }

    pub fn ack_conversation_read(&self, conversation: &str) -> ChatResult<Option<ReqId>> {
        self.with_engine(|engine, now| engine.ack_conversation_read(now, conversation))
    }

    pub fn ack_group_message_read(&self, msg_id: MsgId, ext: Option<&str>) -> ChatResult<Option<ReqId>> {
        self.with_engine(|engine, now| engine.ack_group_message_read(now, msg_id, ext))
    }

    pub fn fetch_group_read_acks(&self, msg_id: MsgId, page_size: u32, start_ack_id: Option<AckId>) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.fetch_group_read_acks(now, msg_id, page_size, start_ack_id))
    }

    pub fn mark_message_read(&self, msg_id: MsgId) -> ChatResult<Option<ReqId>> {
        self.with_engine(|engine, now| engine.mark_message_read(now, msg_id))
    }

    pub fn mark_all_messages_read(&self, conversation: &ConversationKey) -> ChatResult<Option<ReqId>> {
        self.with_engine(|engine, now| engine.mark_all_messages_read(now, conversation))
    }

    pub fn create_group(&self, name: &str, members: &[UserId]) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.create_group(now, name, members, false))
    }

    pub fn add_group_members(&self, group: &str, members: &[UserId]) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.add_group_members(now, group, members))
    }

    pub fn remove_group_members(&self, group: &str, members: &[UserId]) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.remove_group_members(now, group, members))
    }

    /// Leaves a group; the answer is `RequestCompleted { req, Ok(Completion::Done) }`, then
    /// `MembershipChanged { role: None }`. The owner cannot leave (603).
    pub fn leave_group(&self, group: &str) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.leave_group(now, group))
    }

    /// A message by the id users see (server id, or client id before the server accepted it).
    pub fn message(&self, msg_id: &str) -> ChatResult<Option<ChatMessage>> {
        self.read(|engine| engine.message(msg_id))
    }

    pub fn unread_count(&self, conversation: &ConversationKey) -> ChatResult<u32> {
        self.read(|engine| engine.unread_count(conversation))
    }

    pub fn conversation(&self, conversation: &ConversationKey) -> ChatResult<Option<Conversation>> {
        self.read(|engine| engine.conversation(conversation).cloned())
    }

    /// Resolves a bare conversation id (1:1 first, then group, then room).
    pub fn resolve_conversation(&self, id: &str) -> ChatResult<Option<ConversationKey>> {
        self.read(|engine| engine.resolve_conversation(id))
    }

    pub fn is_connected(&self) -> bool {
        self.read(|engine| engine.is_connected()).unwrap_or(false)
    }

    /// A session is live: logged in (online or in an offline start) and not refused.
    pub fn is_logged_in(&self) -> bool {
        self.session.lock().as_ref().is_some_and(|s| !s.shared.stop.load(Ordering::SeqCst))
    }

    /// The user's store is open (from login until logout).
    pub fn is_database_opened(&self) -> bool {
        self.session.lock().is_some()
    }

    /// Replaces the session's token (renewToken) without dropping the connection: the token
    /// clock restarts from the new token's expiry, the next login uses it, and a live session
    /// sends it to the server (the answer: `RequestCompleted` for the returned request id).
    pub fn renew_token(&self, token: &str) -> ChatResult<Option<ReqId>> {
        let shared = self.session.lock().as_ref().map(|session| session.shared.clone()).ok_or_else(ChatError::not_logged_in)?;
        if token.is_empty() {
            return Err(ChatError::invalid_param("token must not be empty"));
        }
        *shared.token.lock() = TokenClock::new(token);
        let mut engine = shared.engine.lock();
        let result = engine.renew_token(shared.now(), token);
        shared.pump(&mut engine);
        result
    }

    /// Number of requests waiting for the server's confirmation.
    pub fn outbox_len(&self) -> ChatResult<usize> {
        self.read(|engine| engine.outbox().count())
    }

    /// Turns the network off or on, like airplane mode: off closes the connection and keeps
    /// the session offline (commands still work; acks wait in the outbox); on reconnects.
    pub fn set_network_enabled(&self, enabled: bool) {
        self.network.store(enabled, Ordering::SeqCst);
        if let Some(session) = self.session.lock().as_ref() {
            if !enabled {
                if let Some(conn) = session.shared.conn.lock().as_ref() {
                    conn.shutdown();
                }
            }
            let _guard = session.shared.sleeper.0.lock();
            session.shared.sleeper.1.notify_all();
        }
    }

    /// Closes the current connection as a network cut would (tests, "airplane mode"). The
    /// runtime reconnects with backoff.
    pub fn drop_connection(&self) {
        if let Some(session) = self.session.lock().as_ref() {
            if let Some(conn) = session.shared.conn.lock().as_ref() {
                conn.shutdown();
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(session) = self.session.lock().take() {
            stop_session(session);
        }
    }
}

fn stop_session(mut session: LoginSession) {
    session.shared.stop.store(true, Ordering::SeqCst);
    {
        let _guard = session.shared.sleeper.0.lock();
        session.shared.sleeper.1.notify_all();
    }
    if let Some(conn) = session.shared.conn.lock().as_ref() {
        conn.shutdown();
    }
    if let Some(thread) = session.thread.take() {
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}

fn connect(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = std::io::Error::new(ErrorKind::NotFound, format!("{addr} resolves to nothing"));
    for candidate in addrs {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

enum Outcome {
    /// The connection ended; try again.
    Retry,
    /// The server refused the login: the session is over.
    Refused,
}

fn connection_loop(cfg: ClientConfig, tls: Option<TlsClient>, shared: Arc<Shared>) {
    let addr = cfg.server_addr();
    let mut backoff = cfg.backoff_min;
    // An offline start (the store was opened before): failures retry in the background.
    let mut ever_connected = shared.offline_start;
    while !shared.stop.load(Ordering::SeqCst) {
        shared.check_token();
        if !shared.network.load(Ordering::SeqCst) {
            let _ = shared.sleep(Duration::from_millis(200));
            continue;
        }
        let attempt = connect(&addr, cfg.connect_timeout).and_then(|stream| {
            let _ = stream.set_nodelay(true);
            match &tls {
                Some(tls) => Conn::handshake(stream, tls, cfg.connect_timeout),
                None => Ok(Conn::plain(stream)),
            }
        });
        match attempt {
            Ok(conn) => {
                backoff = cfg.backoff_min;
                match run_connection(conn, &shared, &mut ever_connected) {
                    Outcome::Refused => return,
                    Outcome::Retry => {}
                }
            }
            Err(e) => {
                if e.kind() == ErrorKind::InvalidData {
                    // A certificate the settings do not trust: worth a warning, not content.
                    log::warn!("TLS to {addr} failed: {e}");
                } else {
                    log::debug!("connect to {addr} failed: {e}");
                }
                if !ever_connected {
                    // The session is over before the host hears so (see run_connection).
                    shared.stop.store(true, Ordering::SeqCst);
                    let _ = shared.events.send(ClientEvent::LoginFailed(ChatError::new(
                        ErrorCode::ServerNotReachable,
                        format!("cannot reach the server at {addr}: {e}"),
                    )));
                    let mut engine = shared.engine.lock();
                    shared.pump(&mut engine);
                    // The LoginFailed above did not come from the engine: wake for it too.
                    shared.wake();
                    shared.stop.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        shared.sleep_checking(backoff);
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

fn run_connection(conn: Conn, shared: &Shared, ever_connected: &mut bool) -> Outcome {
    let Ok(mut reader) = conn.try_clone_socket() else { return Outcome::Retry };
    let _ = reader.set_read_timeout(Some(Duration::from_millis(250)));
    let _ = reader.set_write_timeout(Some(Duration::from_secs(10)));
    let is_tls = conn.is_tls();
    *shared.conn.lock() = Some(conn);
    {
        let token = shared.token.lock().token.clone();
        let mut engine = shared.engine.lock();
        engine.handle_connected(shared.now(), &token);
        shared.pump(&mut engine);
    }
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut read_buf = vec![0u8; 64 * 1024];
    let mut plain = Vec::new();
    let mut outcome = Outcome::Retry;
    'conn: while !shared.stop.load(Ordering::SeqCst) && shared.network.load(Ordering::SeqCst) {
        shared.check_token();
        match reader.read(&mut read_buf) {
            Ok(0) => break,
            Ok(n) => {
                if is_tls {
                    // Decrypt under the connection's lock (writers encrypt under it too).
                    plain.clear();
                    let open = match shared.conn.lock().as_mut() {
                        Some(conn) => conn.absorb(&read_buf[..n], &mut plain),
                        None => break,
                    };
                    match open {
                        Ok(open) => {
                            decoder.push(&plain);
                            if !open {
                                log::debug!("the server closed the TLS session");
                            }
                        }
                        Err(err) => {
                            log::warn!("TLS error from the server: {err}");
                            break;
                        }
                    }
                } else {
                    decoder.push(&read_buf[..n]);
                }
                let mut engine = shared.engine.lock();
                // Handle every complete frame of this read, then write what they produced in
                // one write and forward their events: one syscall per burst, not per frame.
                let mut refused = false;
                loop {
                    let body = match decoder.next_body() {
                        Ok(Some(body)) => body,
                        Ok(None) => break,
                        Err(err) => {
                            log::warn!("bad frame from the server: {err}");
                            shared.pump(&mut engine);
                            break 'conn;
                        }
                    };
                    if let Err(err) = engine.handle_frame_bytes(shared.now(), body) {
                        log::warn!("bad frame from the server: {err}");
                        shared.pump(&mut engine);
                        break 'conn;
                    }
                    if engine.is_connected() && !*ever_connected {
                        *ever_connected = true;
                        shared.note_logged_in();
                    }
                    if engine.is_login_refused() {
                        // Before the LoginFailed event goes out, so a host that logs in again
                        // as soon as it sees it finds this session over.
                        shared.stop.store(true, Ordering::SeqCst);
                        refused = true;
                        break;
                    }
                }
                let refusal = engine.login_refusal().cloned();
                shared.pump(&mut engine);
                drop(engine);
                if refused {
                    // A refused login of a session the app took as logged in: tell it the session
                    // is over (a 206 replacement already came as the engine's own LoggedOut).
                    if let (true, Some(error)) = (*ever_connected, refusal) {
                        let tell_expired = {
                            let mut clock = shared.token.lock();
                            let due = clock.expired() && !clock.expired_told;
                            clock.expired_told |= due;
                            due
                        };
                        if tell_expired {
                            shared.emit(ClientEvent::TokenExpired);
                        }
                        log::info!("logged out by the server: code {}", error.code.as_u32());
                        shared.emit(ClientEvent::LoggedOut(error));
                    }
                    outcome = Outcome::Refused;
                    break 'conn;
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                let mut engine = shared.engine.lock();
                if engine.poll_timeout().is_some_and(|t| t <= shared.now()) && !engine.handle_timeout(shared.now()) {
                    log::info!("connection idle for too long; reconnecting");
                    break;
                }
                shared.pump(&mut engine);
            }
            Err(err) => {
                log::debug!("read failed: {err}");
                break;
            }
        }
    }
    if let Some(conn) = shared.conn.lock().take() {
        conn.shutdown();
    }
    let mut engine = shared.engine.lock();
    engine.handle_disconnected(shared.now());
    shared.pump(&mut engine);
    if matches!(outcome, Outcome::Refused) {
        shared.stop.store(true, Ordering::SeqCst);
    }
    outcome
}
