//! The server's state machine, sans-IO: it takes frames and the current time and returns the
//! store operations to commit and the frames to send to sessions. It never touches a socket, a
//! file or the clock, so every rule is unit-testable.
//!
//! The caller (the core thread of the server's pipeline) must commit [`Effects::ops`] durably
//! before it sends [`Effects::out`]: an `ok` means "stored".
//!
//! This module holds the core itself, request dispatch and the helpers every command shares
//! (emitting events, conversation read state, lookups); the commands live by family in
//! `session` (login, disconnect, pruning), `replay` (the streamed backlog), `cursors` (device
//! cursors, trimming the logs below them), `resync` (the full state for a device below the
//! trimmed log), `one_to_one` (sending, 1:1 receipts, read state), `group_receipts` (group read
//! acks and their pages) and `groups` (group administration).

use std::sync::Arc;

use receipt_core::protocol::{ClientFrame, Response, SeqEvent, ServerEvent, ServerFrame};
use receipt_core::rules;
use receipt_core::{
    ChatError, ChatType, ConversationKey, DeviceId, ErrorCode, GroupAckKind, GroupReadAck, GroupRole, MsgId, UserId, WireMessage,
};

use crate::config::{GroupAckPolicy, RateLimit, ServerConfig};
use crate::state::{ConvState, Counters, DeviceCursor, Group, HashMap, LogEvent, MessageRecord, State};

/// Identifies one connection (one logged-in device) to the core.
pub type SessionId = u64;

mod cache;
mod coalesce;
#[cfg(test)]
mod coalesce_tests;
#[cfg(test)]
mod cursor_tests;
mod cursors;
mod group_delivery;
mod group_receipts;
mod group_unread;
mod groups;
mod limits;
mod one_to_one;
mod replay;
mod resync;
mod session;
#[cfg(test)]
mod tests;

pub(crate) use cache::Meta as CacheMeta;
pub use groups::MAX_GROUP_NAME_BYTES;
pub use replay::{BACKLOG_BATCH, REPLAY_WINDOW_BYTES, SYNC_PAGE};
pub use resync::RESYNC_PAGE;

/// One change to persist. The store applies a batch of them in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    PutCounters(Counters),
    /// A new message (immutable afterwards).
    PutMessage(Arc<WireMessage>),
    /// A 1:1 message's receipt flags.
    PutMessageFlags {
        id: MsgId,
        delivered: bool,
        read_acked: bool,
    },
    /// Drop a message past retention, with its flags and group acks.
    DeleteMessage(MsgId),
    PutGroupAck(GroupReadAck),
    /// A member's group delivery ack (`group_delivery_acks`, `group_delivery_ackers`).
    PutGroupDeliveryAck(GroupReadAck),
    AppendEvent {
        user: UserId,
        event: LogEvent,
    },
    /// A conversation's read state, without its read singles (see the two ops below).
    PutConversation {
        user: UserId,
        key: ConversationKey,
        state: ConvState,
    },
    /// `msg_id` (above the read watermark) was read one by one: add it to the read singles.
    AddRead {
        user: UserId,
        key: ConversationKey,
        msg_id: MsgId,
    },
    /// The read watermark moved to `up_to`: drop the read singles up to it.
    TrimReads {
        user: UserId,
        key: ConversationKey,
        up_to: MsgId,
    },
    PutGroup(Group),
    /// Trim `user`'s log: every event up to seq `up_to` is past retention, or applied by every
    /// remembered device of the user.
    TrimLog {
        user: UserId,
        up_to: u64,
    },
    /// A device's cursor and when it was last seen (`device_cursors`).
    PutCursor {
        user: UserId,
        device: DeviceId,
        cursor: DeviceCursor,
    },
    /// The device is forgotten (unseen past the horizon, or over the per-user cap).
    DeleteCursor {
        user: UserId,
        device: DeviceId,
    },
}

/// A frame for one session. `replay` frames (login answer, backlog, sync end) do not count
/// against the connection's live queue bound.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub session: SessionId,
    pub frame: Arc<ServerFrame>,
    pub replay: bool,
}

/// What handling an input produced: store operations (commit first), then frames to send.
#[derive(Debug, Default)]
pub struct Effects {
    pub ops: Vec<StoreOp>,
    pub out: Vec<Outgoing>,
    /// The number of the batch that produced them (effects appended together: the last). Once
    /// they are committed, the caller tells the core ([`ServerCore::committed`] or
    /// [`ServerCore::recycle`]): what they changed may then leave the cache.
    pub batch: u64,
}

impl Effects {
    pub fn append(&mut self, mut other: Effects) {
        self.ops.append(&mut other.ops);
        self.out.append(&mut other.out);
        self.batch = self.batch.max(other.batch);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.out.is_empty()
    }
}

/// The rule settings the core needs (a subset of [`ServerConfig`]).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub retention_ms: u64,
    pub max_group_size: usize,
    pub group_ack: GroupAckPolicy,
    /// The group delivery-ack policy (`[group_delivery_ack]`).
    pub group_delivery_ack: GroupAckPolicy,
    /// Most distinct devices of one user online at once (further logins: `LoginFailed` 214).
    pub max_devices_per_user: usize,
    /// Most groups one user is in (beyond: 4).
    pub max_groups_per_user: usize,
    /// Per-user rate of sends (beyond: 502) and of other requests (beyond: 4).
    pub send_rate: RateLimit,
    pub request_rate: RateLimit,
    /// Largest page of group read acks, in encoded bytes.
    pub max_result_bytes: usize,
    /// Most 1:1 messages one user keeps stored for users never seen (beyond: 4; 0: no limit).
    pub max_to_unseen_per_user: usize,
    /// Most devices of one user whose cursor the server remembers (the least recently seen
    /// offline one is forgotten beyond it).
    pub max_remembered_devices: usize,
    /// A device not seen (login or cursor) for this long is forgotten (ms).
    pub device_horizon_ms: u64,
}

impl From<&ServerConfig> for CoreConfig {
    fn from(c: &ServerConfig) -> Self {
        CoreConfig {
            retention_ms: c.retention_ms(),
            max_group_size: c.max_group_size,
            group_ack: c.group_ack.clone(),
            group_delivery_ack: c.group_delivery_ack.clone(),
            max_devices_per_user: c.max_devices_per_user,
            max_groups_per_user: c.max_groups_per_user,
            send_rate: c.send_rate,
            request_rate: c.request_rate,
            max_result_bytes: c.max_result_bytes,
            max_to_unseen_per_user: c.max_to_unseen_per_user,
            max_remembered_devices: c.max_remembered_devices,
            device_horizon_ms: c.device_horizon_secs.saturating_mul(1000),
        }
    }
}

/// A logged-in device: who is on the other end of a session.
#[derive(Debug, Clone)]
struct LoggedIn {
    /// Shared, so handling a request does not copy the ids.
    user: Arc<str>,
    device: Arc<str>,
    /// The protocol version the device logged in with: events it cannot decode are not sent to
    /// it (`route_event`, `replay`).
    v: u32,
}

/// The server state machine. See the module docs.
pub struct ServerCore {
    cfg: CoreConfig,
    /// `cfg.group_ack` as the receipt rules take it.
    ack_policy: rules::GroupAckPolicy,
    /// `cfg.group_delivery_ack` as the receipt rules take it.
    delivery_policy: rules::GroupAckPolicy,
    state: State,
    /// Per-user limits: rate buckets, groups per user, messages kept for users never seen.
    limits: limits::Limits,
    /// Bytes of the large results (pages of group read acks) produced since the last take.
    result_bytes: usize,
    sessions: HashMap<SessionId, LoggedIn>,
    online: HashMap<UserId, Vec<SessionId>>,
    /// Sessions replaying their backlog (logged in, not online yet: see `replay`).
    syncing: HashMap<SessionId, replay::Replay>,
    /// Every non-empty log once, by the time of its first event: the retention pass looks at
    /// the logs whose first event expired, not at every log.
    trim_queue: std::collections::BinaryHeap<std::cmp::Reverse<(u64, UserId)>>,
    effects: Effects,
    /// Emptied effect vectors handed back by the store thread, reused for the next batches so
    /// the hot path does not allocate (and fault in) fresh large buffers per batch.
    spare: Vec<Effects>,
    counters_dirty: bool,
    /// The session whose request is being applied: its own per-message echoes are not sent back
    /// to it (it has the answer and applied the effect when it made the request).
    origin: Option<SessionId>,
    /// The time of the input being applied (what a logged event is stamped with).
    now_ms: u64,
    /// Messages, conversations and client ids held in memory when a store reader is given
    /// ([`ServerCore::with_store`]); everything else is read from the store on a miss.
    cache: cache::Cache,
    /// With the cache: the first message id retention has not dropped yet (the dropped ones are
    /// a prefix of the ids: they expire oldest first).
    prune_next: MsgId,
    /// With the cache: the last user whose log the retention sweep looked at.
    sweep_after: Option<UserId>,
    /// The `Send` being applied was checked in `charge`: its client id is not stored (saves the
    /// second store read of a new message's client id).
    send_is_new: bool,
    /// Remembered devices by the time they were last seen: the horizon pass forgets the oldest.
    seen_order: std::collections::BTreeSet<(u64, UserId, DeviceId)>,
    /// Per online session, the seq of the last event sent to it (replayed or live). Every later
    /// event of its user was its own echo, not sent to it (`echo`): a cursor at or above this
    /// covers the head (see `sync_cursor`).
    last_sent: HashMap<SessionId, u64>,
    /// Users whose log has an entry in `trim_queue` (one each: a trim by cursors moves a log's
    /// first event without touching the queue).
    queued: crate::state::HashSet<UserId>,
    /// Counts of large groups' messages changed since their last update (`group_receipts`).
    counts: coalesce::Coalescer,
}

type Res<T> = Result<T, ChatError>;

/// Effect vectors kept for reuse: enough for the batches in flight between core and store.
const SPARE_EFFECTS: usize = 8;

fn err(code: ErrorCode, d: impl Into<String>) -> ChatError {
    ChatError::new(code, d)
}

impl ServerCore {
    /// A core that keeps everything resident: `state` is everything stored
    /// ([`crate::store::ServerStore::load`]) and nothing is read from a store.
    pub fn new(cfg: CoreConfig, state: State) -> Self {
        Self::build(cfg, state, cache::Cache::new(None, usize::MAX))
    }

    /// A core with the hot-state cache: `state` is the hot part
    /// ([`crate::store::ServerStore::load_hot`]), the rest is read through `reader` when needed,
    /// and clean messages and conversations are evicted beyond `cache_bytes` (estimated). The
    /// caller reports each batch's commit ([`committed`](Self::committed) or
    /// [`recycle`](Self::recycle)): until then what the batch changed stays in memory.
    pub fn with_store(cfg: CoreConfig, state: State, reader: Box<dyn crate::store::StoreRead>, cache_bytes: usize) -> Self {
        let mut core = Self::build(cfg, state, cache::Cache::new(Some(reader), cache_bytes));
        // Only counters, groups and device cursors stay resident from the start; the rest is
        // cached or read on demand (log bases, `conv_messages`).
        core.state.messages.clear();
        core.state.client_ids.clear();
        core.state.convs.clear();
        core.state.logs.clear();
        core.state.log_base.clear();
        core.state.trimmed.clear();
        core.state.conv_messages.clear();
        core.trim_queue.clear();
        core
    }

    fn build(cfg: CoreConfig, state: State, cache: cache::Cache) -> Self {
        let trim_queue = state.logs.iter().filter_map(|(u, l)| l.first().map(|e| std::cmp::Reverse((e.at(), u.clone())))).collect();
        let queued = state.logs.iter().filter(|(_, l)| !l.is_empty()).map(|(u, _)| u.clone()).collect();
        let seen_order = state.cursors.iter().flat_map(|(u, ds)| ds.iter().map(move |(d, c)| (c.seen, u.clone(), d.clone()))).collect();
        ServerCore {
            seen_order,
            queued,
            counts: coalesce::Coalescer::new(cfg.group_ack.coalesce_ms),
            last_sent: HashMap::default(),
            trim_queue,
            ack_policy: cfg.group_ack.rules(),
            delivery_policy: cfg.group_delivery_ack.rules(),
            limits: limits::Limits::new(&state),
            result_bytes: 0,
            cfg,
            state,
            sessions: HashMap::default(),
            online: HashMap::default(),
            syncing: HashMap::default(),
            effects: Effects::default(),
            spare: Vec::new(),
            counters_dirty: false,
            origin: None,
            now_ms: 0,
            cache,
            prune_next: 0,
            sweep_after: None,
            send_is_new: false,
        }
    }

    /// Estimated bytes of the messages and conversations held in the hot-state cache (0 when
    /// everything is resident: no store reader).
    pub fn cache_bytes_used(&self) -> usize {
        self.cache.used_bytes()
    }

    /// The hot-state cache's budget (`cache_bytes`); `None` when everything is resident.
    pub fn cache_budget(&self) -> Option<usize> {
        self.cache.on().then(|| self.cache.budget())
    }

    /// The store committed the effects of every batch up to `batch` ([`Effects::batch`]): what
    /// they changed may leave the cache.
    pub fn committed(&mut self, batch: u64) {
        self.cache.committed(batch);
        if let Some(reader) = &self.cache.reader {
            reader.release();
            self.cache.evict(&mut self.state);
        }
    }

    /// The state in memory: everything without a store reader, the hot part with one (for
    /// tests and tools).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Online sessions of a user.
    pub fn sessions_of(&self, user: &str) -> &[SessionId] {
        self.online.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Handles one frame of `session`. A `Login` registers an *authenticated* session (the
    /// connection layer checked the token and the version) and produces `LoginOk` and the first
    /// window of the backlog after `since`; [`replay_more`](Self::replay_more) the next ones; the
    /// last one ends with `SyncDone`, atomically with the session going online. Requests of a session that is
    /// not logged in are refused with 201.
    pub fn handle(&mut self, now_ms: u64, session: SessionId, frame: ClientFrame) -> Effects {
        self.apply(now_ms, session, frame);
        self.take()
    }

    /// [`handle`](Self::handle) without taking the effects: they accumulate (in order) until
    /// [`take_effects`](Self::take_effects). The core thread applies a whole batch this way and
    /// takes its effects once, instead of appending every request's effects to the batch's.
    pub fn apply(&mut self, now_ms: u64, session: SessionId, frame: ClientFrame) {
        self.now_ms = now_ms;
        match frame {
            ClientFrame::Login { v, user, device, since, .. } => self.login(now_ms, session, user, device, since, v),
            ClientFrame::Ping { nonce } => self.send(session, ServerFrame::Pong { nonce }, false),
            ClientFrame::SyncCursor { seq } => self.sync_cursor(now_ms, session, seq),
            other => {
                let req = other.req().unwrap_or(0);
                let res = match self.sessions.get(&session) {
                    Some(s) => {
                        let (user, device) = (s.user.clone(), s.device.clone());
                        let at = self.effects.out.len();
                        self.origin = Some(session);
                        let res = match self.charge(now_ms, &user, &other) {
                            Ok(()) => self.request(now_ms, &user, &device, other),
                            Err(e) => Err(e),
                        };
                        self.send_is_new = false;
                        self.origin = None;
                        // The answer goes before the events it caused, so the requesting device
                        // knows e.g. the message id before the echo of its own message.
                        let frame = Arc::new(result_frame(req, res));
                        if self.syncing.is_empty() || !self.hold_while_replaying(session, &frame) {
                            self.effects.out.insert(at, Outgoing { session, frame, replay: false });
                        }
                        None
                    }
                    None => Some(ServerFrame::err(req, ChatError::not_logged_in())),
                };
                if let Some(f) = res {
                    self.send(session, f, false);
                }
            }
        }
    }

    /// Charges a request to its user's rate limit. A resend of a stored message is free: it
    /// stores nothing, and an outbox replayed after a reconnect must not be refused for it.
    fn charge(&mut self, now_ms: u64, user: &str, frame: &ClientFrame) -> Res<()> {
        if let ClientFrame::Send { client_id, .. } = frame {
            if self.load_client_id(user, client_id)?.is_some() {
                return Ok(());
            }
            self.send_is_new = true;
        }
        self.limits.charge(self.cfg.send_rate, self.cfg.request_rate, user, frame, now_ms)
    }

    /// Everything applied since the last take: store operations (commit first), then frames.
    pub fn take_effects(&mut self) -> Effects {
        self.take()
    }

    /// Applies a request as `user` without a session (offline admin tools; the device is "").
    /// Returns the answer and the effects (their frames go nowhere: no session is online).
    pub fn apply_as(&mut self, now_ms: u64, user: &str, frame: ClientFrame) -> (Result<Response, ChatError>, Effects) {
        self.now_ms = now_ms;
        let res = self.request(now_ms, user, "", frame);
        (res, self.take())
    }

    /// Bytes of the large results produced since the effects were last taken: the core thread
    /// ends a batch early past a budget.
    pub fn result_bytes(&self) -> usize {
        self.result_bytes
    }

    fn take(&mut self) -> Effects {
        self.result_bytes = 0;
        if self.counters_dirty {
            self.counters_dirty = false;
            self.effects.ops.push(StoreOp::PutCounters(self.state.counters));
        }
        // Size the next accumulation like this one: no regrowth (and copying) while applying.
        let (ops, out) = (self.effects.ops.len(), self.effects.out.len());
        let next = self.spare.pop().unwrap_or_default();
        let mut effects = std::mem::replace(&mut self.effects, next);
        effects.batch = self.cache.batch;
        self.cache.batch += 1;
        if let Some(reader) = &self.cache.reader {
            reader.release();
            self.cache.evict(&mut self.state);
        }
        self.effects.ops.reserve(ops.min(1 << 16));
        self.effects.out.reserve(out.min(1 << 16));
        effects
    }

    /// Takes back the vectors of a batch's effects once they were committed and routed: what
    /// is left in them is dropped here (on the thread that allocated it) and their capacity is
    /// reused by later batches.
    pub fn recycle(&mut self, mut effects: Effects) {
        self.committed(effects.batch);
        effects.ops.clear();
        effects.out.clear();
        if self.spare.len() < SPARE_EFFECTS {
            self.spare.push(effects);
        }
    }

    fn send(&mut self, session: SessionId, frame: ServerFrame, replay: bool) {
        let frame = Arc::new(frame);
        // A session replaying gets its other frames after its `SyncDone`.
        if !replay && !self.syncing.is_empty() && self.hold_while_replaying(session, &frame) {
            return;
        }
        self.effects.out.push(Outgoing { session, frame, replay });
    }

    fn expired(&self, rec: &MessageRecord, now_ms: u64) -> bool {
        self.expired_at(rec.msg.timestamp, now_ms)
    }

    fn expired_at(&self, timestamp: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(timestamp) > self.cfg.retention_ms
    }

    /// Whether message `id` was dropped by retention (a log's `Message` event of it is not
    /// replayed).
    fn message_gone(&self, id: MsgId) -> bool {
        if self.cache.on() {
            id < self.prune_next
        } else {
            !self.state.messages.contains_key(&id)
        }
    }

    // ----- the hot-state cache: reads on a miss, accounting of changes -----

    /// Makes message `id` resident if it is stored (a miss reads the store).
    fn load_message(&mut self, id: MsgId) -> Res<()> {
        if let Some(rec) = self.state.messages.get_mut(&id) {
            rec.cached.used = true;
            return Ok(());
        }
        let Some(reader) = &self.cache.reader else { return Ok(()) };
        if id < self.prune_next {
            return Ok(()); // dropped by retention (maybe not committed yet)
        }
        if let Some(mut rec) = reader.message(id).map_err(read_failed)? {
            self.state.client_ids.entry(rec.msg.from.clone()).or_default().insert(rec.msg.client_id.clone(), id);
            self.cache.read_msg(id, &mut rec);
            self.state.messages.insert(id, rec);
        }
        Ok(())
    }

    /// The message `user` sent with `client_id`, made resident; `None`: none stored.
    fn load_client_id(&mut self, user: &str, client_id: &str) -> Res<Option<MsgId>> {
        if let Some(&id) = self.state.client_ids.get(user).and_then(|ids| ids.get(client_id)) {
            return Ok(Some(id));
        }
        let Some(reader) = &self.cache.reader else { return Ok(None) };
        let Some(id) = reader.client_id(user, client_id).map_err(read_failed)? else { return Ok(None) };
        self.load_message(id)?;
        Ok(self.state.messages.contains_key(&id).then_some(id))
    }

    /// Message `id` was made or changed: pinned in the cache until committed.
    fn changed_msg(&mut self, id: MsgId) {
        if self.cache.on() {
            if let Some(rec) = self.state.messages.get_mut(&id) {
                self.cache.changed_msg(id, rec);
            }
        }
    }

    /// Makes `user`'s conversation `key` resident if it is stored (a miss reads the store).
    /// Called before a request changes anything, so a failed read changes nothing.
    fn load_conv(&mut self, user: &str, key: &ConversationKey) -> Res<()> {
        if self.state.convs.get(user).is_some_and(|m| m.contains_key(key)) {
            self.cache.used_conv(user, key);
            return Ok(());
        }
        let Some(reader) = &self.cache.reader else { return Ok(()) };
        if let Some(c) = reader.conversation(user, key).map_err(read_failed)? {
            self.cache.read_conv(user, key, cache::conv_bytes(user, key, &c));
            self.state.convs.entry(user.to_string()).or_default().insert(key.clone(), c);
        }
        Ok(())
    }

    // ----- events and state helpers -----

    /// Appends an event to a user's log, persists it and sends it to the user's online devices.
    /// An event for several users is built once and shared (`Arc`): each log holds it under the
    /// user's own seq.
    fn emit(&mut self, user: &str, event: impl Into<Arc<ServerEvent>>) {
        self.emit_to(user, event, None);
    }

    /// Like [`emit`](Self::emit) for the requesting user's own per-message echo (its message,
    /// its delivery, read or group ack, its read of one message): logged for every device, sent
    /// live to the user's other devices only. The requesting device applied the effect itself and
    /// gets the `Result`; the event stays in the log, so a replay still brings it. Watermark
    /// events (conversation read, read-all) are not sent this way: the server's watermark may
    /// cover messages the device has not seen yet.
    fn echo(&mut self, user: &str, event: impl Into<Arc<ServerEvent>>) {
        self.emit_to(user, event, self.origin);
    }

    fn emit_to(&mut self, user: &str, event: impl Into<Arc<ServerEvent>>, skip: Option<SessionId>) {
        let event = event.into();
        if self.cache.on() {
            // The log stays in the store; memory holds its head and the events not committed.
            let seq = match self.state.log_base.get_mut(user) {
                Some(h) => {
                    *h += 1;
                    *h
                }
                None => {
                    let seq = self.head_of(user) + 1;
                    *self.state.log_base.get_mut(user).expect("read by head_of") = seq;
                    seq
                }
            };
            let le = LogEvent::logged_at(SeqEvent { seq, event }, self.now_ms);
            self.cache.appended(user, le.clone());
            self.route_event(user, &le, skip);
            self.effects.ops.push(StoreOp::AppendEvent { user: user.to_string(), event: le });
            return;
        }
        let seq = self.state.head(user) + 1;
        if !self.state.logs.contains_key(user) {
            self.state.logs.insert(user.to_string(), Vec::new());
        }
        let log = self.state.logs.get_mut(user).expect("inserted");
        // The event is shared by the logs, the frame and the store op; one frame for all of
        // this user's sessions.
        let le = LogEvent::logged_at(SeqEvent { seq, event }, self.now_ms);
        if !self.queued.contains(user) {
            self.queued.insert(user.to_string());
            self.trim_queue.push(std::cmp::Reverse((le.at(), user.to_string())));
        }
        log.push(le.clone());
        self.route_event(user, &le, skip);
        self.effects.ops.push(StoreOp::AppendEvent { user: user.to_string(), event: le });
    }

    /// Sends a logged event to the user's online sessions but `skip`: one frame for all.
    fn route_event(&mut self, user: &str, le: &LogEvent, skip: Option<SessionId>) {
        if let Some(sessions) = self.online.get(user) {
            let mut frame = None;
            let newer = needs_version(&le.event);
            for &s in sessions {
                // A device too old to decode the event is not sent it; its `last_sent` stays,
                // so its cursor still covers the head (see `sync_cursor`).
                if newer.is_some_and(|v| self.sessions.get(&s).is_some_and(|l| l.v < v)) {
                    continue;
                }
                if Some(s) != skip {
                    let frame = frame.get_or_insert_with(|| le.frame()).clone();
                    self.effects.out.push(Outgoing { session: s, frame, replay: false });
                    if let Some(last) = self.last_sent.get_mut(&s) {
                        *last = le.seq;
                    }
                }
            }
        }
    }

    /// The head (last seq) of `user`'s log. With the cache, a miss reads the store; that read
    /// failing stops the core (an event appended under a wrong seq would be lost).
    fn head_of(&mut self, user: &str) -> u64 {
        let Some(reader) = &self.cache.reader else { return self.state.head(user) };
        if let Some(&h) = self.state.log_base.get(user) {
            self.cache.used_head(user);
            return h;
        }
        let h = reader.log_head(user).unwrap_or_else(|e| panic!("the log head of {user} could not be read from the store: {e}"));
        self.state.log_base.insert(user.to_string(), h);
        self.cache.read_head(user);
        h
    }

    fn conv_mut(&mut self, user: &str, key: &ConversationKey) -> &mut ConvState {
        // Look up first: the entry API would allocate both keys on every call.
        if !self.state.convs.get(user).is_some_and(|m| m.contains_key(key)) {
            // Requests load what they change first (`load_conv`), so this read is not reached;
            // if it were and failed, a default record would overwrite the stored one: stop.
            if self.cache.on() {
                if let Err(e) = self.load_conv(user, key) {
                    panic!("a conversation could not be read from the store: {e}");
                }
            }
            if !self.state.convs.get(user).is_some_and(|m| m.contains_key(key)) {
                self.state.convs.entry(user.to_string()).or_default().insert(key.clone(), ConvState::default());
                // Accounted (and evictable) even if the request leaves it unchanged.
                if self.cache.on() {
                    self.cache.read_conv(user, key, cache::conv_bytes(user, key, &ConvState::default()));
                }
            }
        }
        self.state.convs.get_mut(user).and_then(|m| m.get_mut(key)).expect("inserted")
    }

    fn conv(&self, user: &str, key: &ConversationKey) -> Option<&ConvState> {
        self.state.convs.get(user).and_then(|m| m.get(key))
    }

    fn put_conv(&mut self, user: &str, key: &ConversationKey) {
        let c = self.conv_mut(user, key);
        let state = c.without_read_set();
        if self.cache.on() {
            let bytes = cache::conv_bytes(user, key, self.conv(user, key).expect("made above"));
            self.cache.changed_conv(user, key, bytes);
        }
        self.effects.ops.push(StoreOp::PutConversation { user: user.to_string(), key: key.clone(), state });
    }

    /// The newest message of the conversation when `user` received something after its read
    /// watermark; `None`: nothing new to mark read.
    fn unread_head(&self, user: &str, key: &ConversationKey) -> Option<MsgId> {
        self.conv(user, key).filter(|c| c.newest_received > c.read.up_to).map(|c| c.newest)
    }

    /// Moves `user`'s read watermark of `key` to `up_to` and persists the change.
    fn mark_all(&mut self, user: &str, key: &ConversationKey, up_to: MsgId) {
        let c = self.conv_mut(user, key);
        let had_reads = !c.read.singles.is_empty();
        c.mark_all(up_to);
        let wm = c.read.up_to;
        self.put_conv(user, key);
        if had_reads {
            self.effects.ops.push(StoreOp::TrimReads { user: user.to_string(), key: key.clone(), up_to: wm });
        }
    }

    /// Marks one received message read for `user`; persists when it changed. True if it was unread.
    fn mark_one(&mut self, user: &str, key: &ConversationKey, id: MsgId) -> bool {
        let c = self.conv_mut(user, key);
        if !c.mark_one(id) {
            return false;
        }
        if c.unread == 0 && c.newest_received > c.read.up_to {
            // Nothing unread is left, so every message received up to `newest_received` is read:
            // the watermark moves there and the singles empty (they would otherwise grow with
            // every message read one by one, in memory and on disk).
            let stored = c.read.singles.len() > 1; // all but `id` have rows already
            let up_to = c.newest_received;
            c.mark_all(up_to);
            self.put_conv(user, key);
            if stored {
                self.effects.ops.push(StoreOp::TrimReads { user: user.to_string(), key: key.clone(), up_to });
            }
        } else {
            self.put_conv(user, key);
            self.effects.ops.push(StoreOp::AddRead { user: user.to_string(), key: key.clone(), msg_id: id });
        }
        true
    }

    fn group(&self, id: &str) -> Res<&Group> {
        self.state.groups.get(id).ok_or_else(|| err(ErrorCode::GroupInvalidId, format!("unknown group {id}")))
    }

    fn role_in(&self, group: &Group, user: &str) -> Res<GroupRole> {
        group.members.get(user).copied().ok_or_else(|| err(ErrorCode::GroupNotJoined, format!("{user} is not a member of {}", group.id)))
    }

    /// A message that exists and is not expired; `pruned_code` is the error for one that is gone.
    fn message(&self, now_ms: u64, id: MsgId, pruned_code: ErrorCode) -> Res<&MessageRecord> {
        match self.state.messages.get(&id) {
            Some(rec) if self.expired(rec, now_ms) => Err(err(pruned_code, format!("message {id} is past the server's retention"))),
            Some(rec) => Ok(rec),
            None if id >= 1 && id <= self.state.counters.last_msg_id => {
                Err(err(pruned_code, format!("message {id} is past the server's retention")))
            }
            None => Err(ChatError::invalid_message(format!("unknown message {id}"))),
        }
    }

    // ----- requests -----

    fn request(&mut self, now: u64, user: &str, device: &str, frame: ClientFrame) -> Res<Response> {
        let ops_before = self.effects.ops.len();
        let res = match frame {
            ClientFrame::Send { client_id, to, chat_type, content, require_delivery_ack, need_group_ack, .. } => {
                self.send_message(now, user, client_id, to, chat_type, content, require_delivery_ack, need_group_ack)
            }
            ClientFrame::DeliveryAck { msg_id, .. } => self.delivery_ack(now, user, msg_id),
            ClientFrame::ReadAck { msg_id, private, .. } => self.read_ack(now, user, msg_id, private),
            ClientFrame::ConversationAck { chat_type, conversation, private, .. } => {
                self.conversation_ack(now, user, device, chat_type, conversation, private)
            }
            ClientFrame::GroupAck { msg_id, ext, private, .. } => self.group_ack(now, user, msg_id, ext, private),
            ClientFrame::FetchGroupAcks { msg_id, page_size, start_ack_id, .. } => {
                self.fetch_group_acks(now, user, GroupAckKind::Read, msg_id, page_size, start_ack_id)
            }
            ClientFrame::FetchGroupDeliveryAcks { msg_id, page_size, start_ack_id, .. } => {
                self.fetch_group_acks(now, user, GroupAckKind::Delivery, msg_id, page_size, start_ack_id)
            }
            ClientFrame::FetchGroupUnread { msg_id, page_size, cursor, .. } => {
                self.fetch_group_unread(now, user, msg_id, page_size, cursor)
            }
            ClientFrame::FetchGroupAckCounts { msg_ids, .. } => self.fetch_group_ack_counts(now, user, msg_ids),
            ClientFrame::ReadAcks { conversation, msg_ids, private, .. } => self.read_acks(now, user, conversation, msg_ids, private),
            ClientFrame::MarkRead { chat_type, conversation, msg_id, .. } => self.mark_read(now, user, chat_type, conversation, msg_id),
            ClientFrame::CreateGroup { name, members, chat_room, .. } => self.create_group(user, name, members, chat_room),
            ClientFrame::AddMembers { group, members, .. } => self.add_members(user, group, members),
            ClientFrame::RemoveMembers { group, members, .. } => self.remove_members(user, group, members),
            ClientFrame::SetRole { group, member, role, .. } => self.set_role(user, group, member, role),
            ClientFrame::LeaveGroup { group, .. } => self.leave_group(user, group),
            // RenewToken is answered by the connection's reader, which holds the secret.
            ClientFrame::Login { .. } | ClientFrame::Ping { .. } | ClientFrame::SyncCursor { .. } | ClientFrame::RenewToken { .. } => {
                Err(ChatError::invalid_param("not a request"))
            }
        };
        debug_assert!(res.is_ok() || self.effects.ops.len() == ops_before, "a refused request changed state");
        res
    }
}

/// The oldest protocol version that can decode `e`; `None`: every version.
fn needs_version(e: &ServerEvent) -> Option<u32> {
    matches!(e, ServerEvent::GroupAckCount { .. }).then_some(receipt_core::protocol::GROUP_ACK_COUNT_VERSION)
}

/// A failed store read: the request is refused (302 SERVER_BUSY) before it changed anything.
fn read_failed(e: crate::store::StoreError) -> ChatError {
    log::error!("{e}");
    err(ErrorCode::ServerBusy, "the server could not read its store")
}

fn check_kind(g: &Group, chat_type: ChatType) -> Res<()> {
    let want_room = chat_type == ChatType::ChatRoom;
    if g.chat_room != want_room {
        let is = if g.chat_room { "a chat room" } else { "a group" };
        return Err(ChatError::invalid_param(format!("{} is {is}; chat_type does not match", g.id)));
    }
    Ok(())
}

fn result_frame(req: u64, res: Res<Response>) -> ServerFrame {
    match res {
        Ok(r) => ServerFrame::ok(req, r),
        Err(e) => ServerFrame::err(req, e),
    }
}
