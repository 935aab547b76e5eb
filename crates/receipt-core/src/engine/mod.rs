//! The client engine: every client-side rule of docs/product.md, sans-IO.
//!
//! Inputs are calls that take the current time in milliseconds (`now`): commands such as
//! [`ClientEngine::ack_message_read`], and connection inputs ([`ClientEngine::handle_connected`],
//! [`ClientEngine::handle_frame`], [`ClientEngine::handle_disconnected`],
//! [`ClientEngine::handle_timeout`]). Outputs are pulled: [`ClientEngine::poll_transmit`] (frames
//! to send), [`ClientEngine::poll_event`] (what the app hears) and
//! [`ClientEngine::poll_timeout`] (when to call `handle_timeout`). The engine never touches a
//! socket, a thread or the clock, so tests drive it to the millisecond and any transport fits.
//!
//! Conversation summaries, the outbox and a bounded cache of messages live in memory; changes
//! are written through a [`ClientStore`] once per input, so a restart (re-[`open`](ClientEngine::open)
//! on the same store) finds everything, the outbox included. Messages not in the cache are read
//! from the store by key when an input needs them (see `persistence` for the design).
//!
//! Layout: this file holds the types, the state and its helpers, the accessors and `poll_*`;
//! `commands` the app's requests, `events` what the app hears of an input, `inbound` the connection inputs and the server's events,
//! `persistence` loading and the per-input store batch. Every receipt rule the commands check is
//! a function of [`crate::rules`], the same one the server enforces.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// The engine's maps: foldhash (per-process random seed) instead of SipHash, which was ~3% of
/// a busy client (the load tool) hashing message and request ids.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
/// Maps keyed by conversation: searched by a borrowed [`ConversationRef`] (no key allocated
/// per message looked at).
type ConvMap<V> = hashbrown::HashMap<ConversationKey, V, foldhash::fast::RandomState>;

use crate::error::{ChatError, ChatResult, ErrorCode};
use crate::protocol::*;
use crate::rules::{self, ConversationMarks, MessageFacts};
use crate::store::{ClientStore, Conversation, Meta, StoreBatch, StoreError};
use crate::types::*;

mod commands;
mod events;
mod inbound;
mod persistence;

use events::{resolve_flags, Marks, OwnFlags};
pub use persistence::{CHECKPOINT_IDLE_MS, RETENTION_STEP, RETENTION_STEP_INTERVAL_MS, RETENTION_SWEEP_INTERVAL_MS, STORE_RETRY_MS};

/// Largest page of group acks one fetch may ask for: the rule's bound, [`rules::MAX_PAGE_SIZE`].
pub const MAX_GROUP_ACK_PAGE: u32 = rules::MAX_PAGE_SIZE;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub user: UserId,
    pub device: DeviceId,
    pub options: ChatOptions,
    /// Send a ping after this long without sending anything (ms).
    pub keepalive_ms: u64,
    /// Declare the connection dead after this long without receiving anything (ms).
    pub idle_timeout_ms: u64,
    /// How many accepted messages the engine keeps in memory (least recently touched go first;
    /// the store holds them all). Ignored by a store that keeps nothing.
    pub message_cache: usize,
    /// What this device keeps of old history (default: everything).
    pub retention: Retention,
}

/// Local retention: old messages this device drops from its store, in bounded background
/// steps (see [`ClientEngine::retention_step`]). Unread received messages are never dropped
/// (so every unread count stays exact), nor messages an outbox request names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Drop messages older than this (ms, by server time: the newest server timestamp seen).
    pub max_age_ms: Option<u64>,
    /// Keep at most this many messages per conversation (the newest).
    pub max_per_conversation: Option<u32>,
}

/// A live connection reports its cursor after at most this many events applied since the last
/// report ([`ClientFrame::SyncCursor`]); see [`CURSOR_REPORT_MS`].
pub const CURSOR_REPORT_EVENTS: u64 = 256;
/// ... or, when fewer arrived, at most this long (ms) after the last report. Bounded chatter: at
/// most one `SyncCursor` per 256 events or per 5 s, whichever comes first (and one per sync).
pub const CURSOR_REPORT_MS: u64 = 5_000;

/// Default of [`EngineConfig::message_cache`].
pub const DEFAULT_MESSAGE_CACHE: usize = 2048;

impl EngineConfig {
    pub fn new(user: impl Into<UserId>, device: impl Into<DeviceId>, options: ChatOptions) -> Self {
        EngineConfig {
            user: user.into(),
            device: device.into(),
            options,
            keepalive_ms: 20_000,
            idle_timeout_ms: 60_000,
            message_cache: DEFAULT_MESSAGE_CACHE,
            retention: Retention::default(),
        }
    }
}

/// What a finished request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// An ack, a mark-read or a membership change was confirmed by the server.
    Done,
    /// The server accepted a message; here it is with its server id.
    Sent(ChatMessage),
    /// A page of group read acks.
    GroupAcks(CursorResult<GroupReadAck>),
    /// A group was created.
    GroupCreated(GroupId),
    /// A page of the members who have not read a group message (`cursor` empty: the last).
    GroupUnread(CursorResult<UserId>),
    /// The read count of each group message asked, one item per id in the order asked.
    GroupAckCounts(Vec<BatchItem>),
    /// One item per id of a batch of 1:1 read acks, in the order asked.
    ReadAcks(Vec<BatchItem>),
}

/// What the app hears. Lists are batched per inbound frame, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Logged in and caught up with the server (backlog replayed, counts synced).
    Connected,
    /// The connection is gone; acks keep going to the outbox.
    Disconnected,
    /// The server refused the login; the runtime must not retry with the same token.
    LoginFailed(ChatError),
    /// The server ended the session (onLogout(code, info)): 206 USER_LOGIN_ANOTHER_DEVICE when
    /// the same user logged in again on the same device id; raised by the runtime too when a
    /// session the app took as logged in (an offline start) is refused (104, 108, 202). Like
    /// `LoginFailed`, the runtime must not reconnect. Queued acks stay for the next good login.
    LoggedOut(ChatError),
    /// The server closed the connection for a protocol error.
    ProtocolError(ChatError),
    MessagesReceived(Vec<ChatMessage>),
    /// Sender side: delivery acks came back.
    MessagesDelivered(Vec<ChatMessage>),
    /// Sender side: read acks (or a conversation ack) came back.
    MessagesRead(Vec<ChatMessage>),
    /// Group read acks of messages this user sent; after the input's `MessagesUpdated`, which
    /// carries those messages' new counts.
    GroupMessageRead(Vec<GroupReadAck>),
    /// Group delivery acks of messages this user sent (and, when the delivery policy lets
    /// members see acks, of others' messages); after the input's `MessagesUpdated`, which
    /// carries those messages' new delivered counts. `content` is always `None`.
    GroupMessageDelivered(Vec<GroupReadAck>),
    /// onReadAckForGroupMessageUpdated: the read counts of messages this user sent to a large
    /// group went up (a coalesced count update from the server, not one event per ack: fetch
    /// the list of readers on demand). Each message in its new state (`group_ack_count`); after
    /// the input's `MessagesUpdated`. A count never goes down.
    ReadAckForGroupMessageUpdated(Vec<ChatMessage>),
    /// Messages whose own receipt flags or counts changed in this input (an own ack, a single
    /// read here or on another device, a delivery, a group ack count, a refused ack rolled
    /// back), each in its current state, oldest first. Once per input, after the message lists
    /// of the input (received, delivered, read), and without the messages those already carry;
    /// before the notifications whose state it carries (group acks, conversation reads): a binding applies
    /// what it is told and never re-derives a flag. A watermark move over a conversation is not
    /// listed here message by message: it is one [`ClientEvent::ConversationUpdated`].
    MessagesUpdated(Vec<ChatMessage>),
    /// A conversation's marks moved in this input (read by this user here or on another device,
    /// read by the peer, marked all read, a read state from the server): the flags of any of its
    /// messages may have changed, however many. Once per conversation per input, after
    /// `MessagesUpdated` and before `ConversationRead` and `UnreadCountChanged`. A binding that holds messages of the
    /// conversation re-reads them ([`ClientEngine::message`]) rather than comparing ids against
    /// the marks: which mark covers which message (direction, chat type, the read set) is the
    /// engine's rule, and the cost stays with what the binding holds, not with the conversation.
    /// The marks (as [`ClientEngine::conversation`] gives them; receipt marks are 1:1 only) and
    /// the unread count are here for the app's own use.
    ConversationUpdated {
        conversation: ConversationKey,
        /// Received messages up to this id are read (this user, any device).
        read_up_to: MsgId,
        /// 1:1: this user's read receipt covers received messages up to this id.
        receipt_up_to: MsgId,
        /// 1:1: the peer read the messages this user sent up to this id.
        peer_read_up_to: MsgId,
        unread: u32,
    },
    /// 1:1 conversation ack: `from` read the conversation with `to`. Fires on the peer's devices
    /// and on the acker's other devices, after the input's `ConversationUpdated`.
    ConversationRead {
        from: UserId,
        to: String,
    },
    UnreadCountChanged {
        conversation: ConversationKey,
        unread: u32,
    },
    /// A request finished: the server answered, or (for queries) the connection went away.
    RequestCompleted {
        req: ReqId,
        result: Result<Completion, ChatError>,
    },
    /// This user joined, left or changed role in a group.
    MembershipChanged {
        group: GroupId,
        role: Option<GroupRole>,
    },
    /// Persisting state failed; the engine keeps going in memory.
    StoreFailed(String),
    // ----- the connection and token lifecycle (the SDK's ConnectionListener) -----
    /// The user's store is open: counts, messages and flags are readable and acks queue, with
    /// or without a connection (onDatabaseOpened). Raised by the runtime at login.
    /// `offline_start`: an earlier session reached the server, so this login counts as done
    /// already (no `LoginFailed` for an unreachable server; the connection is retried).
    DatabaseOpened {
        user: UserId,
        offline_start: bool,
    },
    /// The server accepted the login and starts replaying what arrived meanwhile
    /// (onOfflineMessageSyncStart).
    OfflineSyncStarted,
    /// The replay is over (onOfflineMessageSyncFinish); `Connected` follows.
    OfflineSyncFinished,
    /// About 80% of the token's lifetime has passed: renew it (onTokenWillExpire).
    TokenWillExpire,
    /// The token's expiry has passed (onTokenExpired): raised by the runtime's clock, and by the
    /// engine just before a `LoginFailed` 108 TOKEN_EXPIRED. Logins with it are refused with 108
    /// until the app renews it.
    TokenExpired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    /// Login sent; replaying the backlog until SyncDone.
    Syncing,
    Up,
}

/// Requests that are not kept in the outbox: they need a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    FetchGroupAcks,
    FetchGroupUnread,
    FetchGroupAckCounts,
    /// `private`: the acked messages count as read here, no receipt was sent.
    ReadAcks {
        private: bool,
    },
    Group,
    RenewToken,
}

/// Everything the engine tracks for one (user, device).
pub struct ClientEngine<S: ClientStore> {
    cfg: EngineConfig,
    /// `cfg.user`, shared: compared against every event's parties.
    me: std::sync::Arc<str>,
    store: S,
    meta: Meta,
    /// The message cache: recently touched accepted messages, and every message this input
    /// touched (evicted down to `cfg.message_cache` once the input is written).
    messages: HashMap<MsgId, ChatMessage>,
    /// When each cached message was last touched, and the reverse (oldest first).
    touched: HashMap<MsgId, u64>,
    touch_order: BTreeMap<u64, MsgId>,
    touch_clock: u64,
    pending: HashMap<String, ChatMessage>,
    conversations: ConvMap<Conversation>,
    /// The newest message id held in any conversation: an arriving message above it is new
    /// without a store read. Server ids are global, so the check cannot be per conversation (a
    /// repeated id in another conversation must still be found).
    newest_held: MsgId,
    /// Cached message ids per conversation, ascending: merged with the store's range reads
    /// (the cache holds this input's changes before they are written).
    conv_ids: ConvMap<BTreeSet<MsgId>>,
    /// Conversations retention still has to visit in this sweep.
    retention_queue: VecDeque<ConversationKey>,
    /// Newest server time seen (ms since the epoch): retention's clock.
    server_clock: u64,
    /// When `handle_timeout` runs the next retention step (`None`: no retention configured).
    retention_due: Option<u64>,
    /// When to ask the store for a checkpoint (a durable commit was made; see `persistence`).
    checkpoint_due: Option<u64>,
    /// A store write failed: its changes are still dirty; retried by the next input or then.
    store_retry_due: Option<u64>,
    /// The failed write was durable: its retry must be too.
    unstored_durable: bool,
    outbox: VecDeque<ClientFrame>,
    queries: HashMap<ReqId, Query>,
    link: Link,
    /// The server refused the last login (bad token): do not retry with it.
    login_refused: bool,
    /// Why the server refused the last login (for the runtime's `LoggedOut`).
    login_refusal: Option<ChatError>,
    token: Option<String>,
    /// Delivery acks made while replaying the backlog; sent at SyncDone unless another device
    /// of this user turned out to have sent them already.
    held_delivery_acks: Vec<(ReqId, MsgId)>,
    /// The server's unread counts received in `SyncConversations` pages of this sync, applied
    /// with the last page at `SyncDone`.
    sync_conversations: Vec<ConversationState>,
    /// The last cursor reported to the server (`SyncCursor`) on this connection, and when.
    cursor_reported: Seq,
    cursor_reported_at: u64,
    transmit: VecDeque<ClientFrame>,
    events: VecDeque<ClientEvent>,
    last_rx: u64,
    last_tx: u64,
    ping_nonce: u64,
    // Per-input accumulators.
    dirty_meta: bool,
    dirty_messages: HashSet<MsgId>,
    dirty_pending: HashSet<String>,
    deleted_pending: Vec<String>,
    deleted_messages: Vec<(ConversationKey, MsgId)>,
    dirty_convs: hashbrown::HashSet<ConversationKey, foldhash::fast::RandomState>,
    outbox_put: Vec<ClientFrame>,
    outbox_delete: Vec<ReqId>,
    received: Vec<MsgId>,
    delivered: Vec<MsgId>,
    read: Vec<MsgId>,
    group_acks: Vec<GroupReadAck>,
    group_deliveries: Vec<GroupReadAck>,
    /// Messages whose count a coalesced count update raised in this input.
    count_updates: Vec<MsgId>,
    /// `ConversationRead` events of this input, told after the state they change.
    conversation_reads: Vec<ClientEvent>,
    unread_changed: Vec<ConversationKey>,
    /// The flags each message changed in this input had before its first change (see
    /// [`ClientEvent::MessagesUpdated`]).
    flags_before: HashMap<MsgId, OwnFlags>,
    /// The marks of each conversation this input moved a mark of, as they were before.
    marks_before: ConvMap<Marks>,
}

impl<S: ClientStore> ClientEngine<S> {
    pub fn user(&self) -> &str {
        &self.cfg.user
    }

    pub fn device(&self) -> &str {
        &self.cfg.device
    }

    pub fn options(&self) -> &ChatOptions {
        &self.cfg.options
    }

    pub fn is_connected(&self) -> bool {
        self.link == Link::Up
    }

    /// The server refused the last login (or ended the session: 206, see
    /// [`ClientEvent::LoggedOut`]); reconnecting with the same token is pointless.
    pub fn is_login_refused(&self) -> bool {
        self.login_refused
    }

    /// The error of the last refused login, if the last login was refused.
    pub fn login_refusal(&self) -> Option<&ChatError> {
        self.login_refusal.as_ref().filter(|_| self.login_refused)
    }

    /// The store, for callers that need to close or inspect it.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Requests waiting for the server's confirmation, oldest first.
    pub fn outbox(&self) -> impl Iterator<Item = &ClientFrame> {
        self.outbox.iter()
    }

    /// Last event seq applied.
    pub fn cursor(&self) -> Seq {
        self.meta.cursor
    }

    /// A message by its id as users see it (server id, or client id before acceptance).
    pub fn message(&self, msg_id: &str) -> Option<ChatMessage> {
        if let Ok(id) = msg_id.parse::<MsgId>() {
            if let Some(m) = self.message_by_id(id) {
                return Some(m);
            }
        }
        self.pending.get(msg_id).map(|m| self.view(m))
    }

    /// An accepted message by its id, from the cache or the store (not cached: a read of the
    /// app's changes nothing).
    pub fn message_by_id(&self, id: MsgId) -> Option<ChatMessage> {
        match self.messages.get(&id) {
            Some(m) => Some(self.view(m)),
            None => self.stored_message(id).map(|m| self.view(&m)),
        }
    }

    /// All held messages of a conversation, oldest first (reads the whole history: for tests
    /// and small conversations; apps page with [`Self::load_messages`]).
    pub fn conversation_messages(&self, key: &ConversationKey) -> Vec<ChatMessage> {
        self.held_range(key, 0..MsgId::MAX, usize::MAX, false).iter().map(|m| self.view(m)).collect()
    }

    /// One page of a conversation's history, newest first: up to `page_size` messages older
    /// than `start` (`None`: from the newest), with their flags current. Messages waiting for
    /// the server (no id yet) are not in the history yet. The SDK's
    /// `Conversation.loadMessages(startMsgId, pageSize)`.
    pub fn load_messages(&self, key: &ConversationKey, start: Option<MsgId>, page_size: usize) -> Vec<ChatMessage> {
        let end = start.unwrap_or(MsgId::MAX);
        self.held_range(key, 1..end, page_size, true).iter().map(|m| self.view(m)).collect()
    }

    /// How many accepted messages are in memory now (the cache; for tests and figures).
    pub fn cached_message_count(&self) -> usize {
        self.messages.len()
    }

    pub fn conversation(&self, key: &ConversationKey) -> Option<&Conversation> {
        self.conversations.get(key)
    }

    pub fn conversations(&self) -> impl Iterator<Item = &Conversation> {
        self.conversations.values()
    }

    /// Unread count of a conversation (0 for an unknown one).
    pub fn unread_count(&self, key: &ConversationKey) -> u32 {
        self.conversations.get(key).map_or(0, Conversation::unread)
    }

    /// Finds the conversation an app means by a bare id: 1:1 first, then group, then room.
    pub fn resolve_conversation(&self, id: &str) -> Option<ConversationKey> {
        [ChatType::Chat, ChatType::GroupChat, ChatType::ChatRoom]
            .into_iter()
            .map(|t| ConversationKey::new(t, id))
            .find(|k| self.conversations.contains_key(k))
    }

    /// A message with its flags resolved against the conversation's watermarks.
    fn view(&self, m: &ChatMessage) -> ChatMessage {
        let (unread, receiver_read) = self.resolved_flags(m);
        let mut view = m.clone();
        view.unread = unread;
        view.receiver_read = receiver_read;
        view
    }

    /// `(unread, receiver_read)` of [`Self::view`], without copying the message.
    fn resolved_flags(&self, m: &ChatMessage) -> (bool, bool) {
        let marks = if m.id != 0 { self.conversations.get(&m.conversation_ref()).map(Marks::of) } else { None };
        resolve_flags(m, m.unread, m.receiver_read, marks)
    }

    fn is_unread(&self, m: &ChatMessage) -> bool {
        m.direction == MessageDirection::Receive
            && m.unread
            && self.conversations.get(&m.conversation_ref()).is_none_or(|c| m.id > c.read_up_to)
    }

    /// When to call `handle_timeout` next (ms, same clock as `now`): keep-alive and retention
    /// while connected; the store's checkpoint and write retry with or without a connection.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut keepalive = (self.last_tx + self.cfg.keepalive_ms).min(self.last_rx + self.cfg.idle_timeout_ms);
        if self.link == Link::Up && self.meta.cursor > self.cursor_reported {
            keepalive = keepalive.min(self.cursor_reported_at + CURSOR_REPORT_MS);
        }
        let connected = (self.link != Link::Down).then(|| self.retention_due.map_or(keepalive, |due| due.min(keepalive)));
        [connected, self.store_timeout()].into_iter().flatten().min()
    }

    /// Next frame to send, in order.
    pub fn poll_transmit(&mut self, now: u64) -> Option<ClientFrame> {
        let frame = self.transmit.pop_front()?;
        self.last_tx = now;
        Some(frame)
    }

    /// Next event for the app, in order.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn next_req(&mut self) -> ReqId {
        self.meta.next_req += 1;
        self.dirty_meta = true;
        self.meta.next_req
    }

    fn insert_message(&mut self, m: ChatMessage) {
        let id = m.id;
        let unread = self.is_unread(&m);
        self.server_clock = self.server_clock.max(m.timestamp);
        let key = m.conversation_ref();
        self.newest_held = self.newest_held.max(id);
        let c = self.conv_mut(key);
        c.note_held(&m);
        if unread {
            c.local_unread += 1;
            // The server counted this one while we did not hold it yet.
            c.remote_unread = c.remote_unread.saturating_sub(1);
            self.unread_changed.push(key.to_key());
        }
        if !self.deleted_messages.is_empty() {
            // Held again after a drop not written yet (a failed write): the put must win.
            self.deleted_messages.retain(|(_, d)| *d != id);
        }
        self.cache(m);
        self.dirty_messages.insert(id);
    }

    fn conv_mut(&mut self, key: ConversationRef<'_>) -> &mut Conversation {
        // A store that keeps nothing needs no dirty set (`finish` would clear it).
        if self.store.persists() && !self.dirty_convs.contains(&key) {
            self.dirty_convs.insert(key.to_key());
        }
        // Look up first: the entry API would copy the key on every call.
        if !self.conversations.contains_key(&key) {
            self.conversations.insert(key.to_key(), Conversation::new(key.to_key()));
        }
        self.conversations.get_mut(&key).expect("inserted")
    }

    /// 1:1: this user's conversation ack covered the received messages up to `up_to` (the
    /// receipt mark moves; their `receiver_read` turns true).
    fn move_receipt_mark(&mut self, key: &ConversationKey, up_to: MsgId) {
        self.note_marks(key);
        let c = self.conv_mut(key.as_ref());
        c.receipt_up_to = c.receipt_up_to.max(up_to);
    }

    /// 1:1: the peer read every message this user sent up to `up_to` (their `receiver_read`
    /// turns true).
    fn move_peer_read_mark(&mut self, key: &ConversationKey, up_to: MsgId) {
        self.note_marks(key);
        let c = self.conv_mut(key.as_ref());
        c.peer_read_up_to = c.peer_read_up_to.max(up_to);
    }

    fn update_message(&mut self, id: MsgId, f: impl FnOnce(&mut ChatMessage)) {
        self.fetch(id);
        self.note_flags(id);
        if let Some(m) = self.messages.get_mut(&id) {
            f(m);
            self.dirty_messages.insert(id);
        }
    }

    /// Marks one received message read here (count -1 if it was unread).
    fn mark_read_local(&mut self, id: MsgId) {
        self.fetch(id);
        let Some(m) = self.messages.get(&id) else { return };
        if !self.is_unread(m) {
            return;
        }
        let key = m.conversation();
        self.update_message(id, |m| m.unread = false);
        let c = self.conv_mut(key.as_ref());
        c.local_unread = c.local_unread.saturating_sub(1);
        self.unread_changed.push(key);
    }

    /// Drops the unread messages the server counted that this device does not hold (a
    /// conversation read covers them), telling the app when that changes the count.
    fn clear_remote_unread(&mut self, key: &ConversationKey) {
        let c = self.conv_mut(key.as_ref());
        if std::mem::take(&mut c.remote_unread) != 0 {
            self.unread_changed.push(key.clone());
        }
    }

    /// Moves a conversation's read watermark. O(1) when it covers the newest message (the
    /// usual case); otherwise it only looks at the messages newer than `up_to`.
    fn apply_read_up_to(&mut self, key: &ConversationKey, up_to: MsgId) {
        let c = self.conv_mut(key.as_ref());
        if up_to <= c.read_up_to {
            return;
        }
        let before = c.unread();
        self.note_marks(key);
        let c = self.conv_mut(key.as_ref());
        let remaining = if up_to >= c.newest {
            0
        } else {
            self.held_range(key, up_to + 1..MsgId::MAX, usize::MAX, false)
                .iter()
                .filter(|m| m.direction == MessageDirection::Receive && m.unread)
                .count() as u32
        };
        let c = self.conv_mut(key.as_ref());
        c.read_up_to = up_to;
        c.local_unread = remaining;
        if c.unread() != before {
            self.unread_changed.push(key.clone());
        }
    }
}

#[cfg(test)]
mod tests;
