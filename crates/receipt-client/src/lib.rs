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
//!
//! Modules: `config` ([`ClientConfig`]), `session` (the state a session's API and its
//! connection thread share), `connection` (the connection thread: connect, log in, drive the
//! engine, reconnect with backoff), `tls` (rustls over the socket), `token` (the token's expiry
//! clock).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use receipt_core::engine::{ClientEngine, EngineConfig};
use receipt_core::store::{Conversation, RedbStore};
use receipt_core::*;

pub use receipt_core::engine::{ClientEvent, Completion};

mod config;
mod connection;
mod session;
mod tls;
mod token;

pub use config::{ClientConfig, DEFAULT_PORT};
use connection::connection_loop;
use session::{stop_session, LoginSession, Shared};
use tls::TlsClient;
pub use tls::{Security, TlsSettings};
pub use token::token_expiry_unix_secs;
use token::TokenClock;

pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

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

    /// [`Self::send_text`], with `need_group_delivery_ack`: a group message asks the members'
    /// devices for group delivery acks (`setIsNeedGroupDeliveryAck`; ignored for 1:1 and rooms).
    pub fn send_text_asking(
        &self,
        to: &str,
        chat_type: ChatType,
        content: &str,
        need_group_ack: bool,
        need_group_delivery_ack: bool,
    ) -> ChatResult<(ReqId, ChatMessage)> {
        self.with_engine(|engine, now| engine.send_message_asking(now, to, chat_type, content, need_group_ack, need_group_delivery_ack))
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

    /// The read-ack calls with a per-call override of private reading (`None`: the option
    /// `private_read_receipts`; see [`ClientEngine::ack_message_read_with`]).
    pub fn ack_message_read_with(&self, msg_id: MsgId, private: Option<bool>) -> ChatResult<Option<ReqId>> {
        self.with_engine(|engine, now| engine.ack_message_read_with(now, msg_id, private))
    }

    pub fn ack_conversation_read_with(&self, conversation: &str, private: Option<bool>) -> ChatResult<Option<ReqId>> {
        self.with_engine(|engine, now| engine.ack_conversation_read_with(now, conversation, private))
    }

    pub fn ack_group_message_read_with(&self, msg_id: MsgId, ext: Option<&str>, private: Option<bool>) -> ChatResult<Option<ReqId>> {
        self.with_engine(|engine, now| engine.ack_group_message_read_with(now, msg_id, ext, private))
    }

    pub fn ack_messages_read_with(&self, conversation: &str, msg_ids: &[MsgId], private: Option<bool>) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.ack_messages_read_with(now, conversation, msg_ids, private))
    }

    pub fn fetch_group_read_acks(&self, msg_id: MsgId, page_size: u32, start_ack_id: Option<AckId>) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.fetch_group_read_acks(now, msg_id, page_size, start_ack_id))
    }

    /// One page of a group message's delivery acks (`Completion::GroupAcks`, like the read acks').
    pub fn fetch_group_delivery_acks(&self, msg_id: MsgId, page_size: u32, start_ack_id: Option<AckId>) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.fetch_group_delivery_acks(now, msg_id, page_size, start_ack_id))
    }

    /// One page of the members who have not read a group message (`RequestCompleted` with
    /// `Completion::GroupUnread`).
    pub fn fetch_group_unread_members(&self, msg_id: MsgId, page_size: u32, cursor: Option<&str>) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.fetch_group_unread_members(now, msg_id, page_size, cursor))
    }

    /// The read count of each of 1..=20 group messages (`Completion::GroupAckCounts`).
    pub fn fetch_group_ack_counts(&self, msg_ids: &[MsgId]) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.fetch_group_ack_counts(now, msg_ids))
    }

    /// Read acks of 1..=20 received 1:1 messages of one conversation in one trip
    /// (`Completion::ReadAcks`, one item per id).
    pub fn ack_messages_read(&self, conversation: &str, msg_ids: &[MsgId]) -> ChatResult<ReqId> {
        self.with_engine(|engine, now| engine.ack_messages_read(now, conversation, msg_ids))
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
