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
use receipt_core::{ChatError, ChatType, ConversationKey, DeviceId, ErrorCode, GroupReadAck, GroupRole, MsgId, UserId, WireMessage};

use crate::config::{GroupAckPolicy, RateLimit, ServerConfig};
use crate::state::{ConvState, Counters, DeviceCursor, Group, HashMap, LogEvent, MessageRecord, State};

/// Identifies one connection (one logged-in device) to the core.
pub type SessionId = u64;

#[cfg(test)]
mod cursor_tests;
mod cursors;
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
}

impl Effects {
    pub fn append(&mut self, mut other: Effects) {
        self.ops.append(&mut other.ops);
        self.out.append(&mut other.out);
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
}

/// The server state machine. See the module docs.
pub struct ServerCore {
    cfg: CoreConfig,
    /// `cfg.group_ack` as the receipt rules take it.
    ack_policy: rules::GroupAckPolicy,
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
    /// Remembered devices by the time they were last seen: the horizon pass forgets the oldest.
    seen_order: std::collections::BTreeSet<(u64, UserId, DeviceId)>,
    /// Per online session, the seq of the last event sent to it (replayed or live). Every later
    /// event of its user was its own echo, not sent to it (`echo`): a cursor at or above this
    /// covers the head (see `sync_cursor`).
    last_sent: HashMap<SessionId, u64>,
    /// Users whose log has an entry in `trim_queue` (one each: a trim by cursors moves a log's
    /// first event without touching the queue).
    queued: crate::state::HashSet<UserId>,
}

type Res<T> = Result<T, ChatError>;

/// Effect vectors kept for reuse: enough for the batches in flight between core and store.
const SPARE_EFFECTS: usize = 8;

fn err(code: ErrorCode, d: impl Into<String>) -> ChatError {
    ChatError::new(code, d)
}

impl ServerCore {
    pub fn new(cfg: CoreConfig, state: State) -> Self {
        let trim_queue = state.logs.iter().filter_map(|(u, l)| l.first().map(|e| std::cmp::Reverse((e.at(), u.clone())))).collect();
        let queued = state.logs.iter().filter(|(_, l)| !l.is_empty()).map(|(u, _)| u.clone()).collect();
        let seen_order = state.cursors.iter().flat_map(|(u, ds)| ds.iter().map(move |(d, c)| (c.seen, u.clone(), d.clone()))).collect();
        ServerCore {
            seen_order,
            queued,
            last_sent: HashMap::default(),
            trim_queue,
            ack_policy: cfg.group_ack.rules(),
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
        }
    }

    /// The whole state (for tests and tools).
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
            if self.state.client_ids.get(user).is_some_and(|ids| ids.contains_key(client_id)) {
                return Ok(());
            }
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
        let effects = std::mem::replace(&mut self.effects, next);
        self.effects.ops.reserve(ops.min(1 << 16));
        self.effects.out.reserve(out.min(1 << 16));
        effects
    }

    /// Takes back the vectors of a batch's effects once they were committed and routed: what
    /// is left in them is dropped here (on the thread that allocated it) and their capacity is
    /// reused by later batches.
    pub fn recycle(&mut self, mut effects: Effects) {
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
        now_ms.saturating_sub(rec.msg.timestamp) > self.cfg.retention_ms
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
        if let Some(sessions) = self.online.get(user) {
            let mut frame = None;
            for &s in sessions {
                if Some(s) != skip {
                    let frame = frame.get_or_insert_with(|| le.frame()).clone();
                    self.effects.out.push(Outgoing { session: s, frame, replay: false });
                    if let Some(last) = self.last_sent.get_mut(&s) {
                        *last = seq;
                    }
                }
            }
        }
        self.effects.ops.push(StoreOp::AppendEvent { user: user.to_string(), event: le });
    }

    fn conv_mut(&mut self, user: &str, key: &ConversationKey) -> &mut ConvState {
        // Look up first: the entry API would allocate both keys on every call.
        if !self.state.convs.get(user).is_some_and(|m| m.contains_key(key)) {
            self.state.convs.entry(user.to_string()).or_default().insert(key.clone(), ConvState::default());
        }
        self.state.convs.get_mut(user).and_then(|m| m.get_mut(key)).expect("inserted")
    }

    fn conv(&self, user: &str, key: &ConversationKey) -> Option<&ConvState> {
        self.state.convs.get(user).and_then(|m| m.get(key))
    }

    fn put_conv(&mut self, user: &str, key: &ConversationKey) {
        let state = self.conv_mut(user, key).without_read_set();
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
            ClientFrame::ReadAck { msg_id, .. } => self.read_ack(now, user, msg_id),
            ClientFrame::ConversationAck { chat_type, conversation, .. } => {
                self.conversation_ack(now, user, device, chat_type, conversation)
            }
            ClientFrame::GroupAck { msg_id, ext, .. } => self.group_ack(now, user, msg_id, ext),
            ClientFrame::FetchGroupAcks { msg_id, page_size, start_ack_id, .. } => {
                self.fetch_group_acks(now, user, msg_id, page_size, start_ack_id)
            }
            ClientFrame::FetchGroupUnread { msg_id, page_size, cursor, .. } => {
                self.fetch_group_unread(now, user, msg_id, page_size, cursor)
            }
            ClientFrame::FetchGroupAckCounts { msg_ids, .. } => self.fetch_group_ack_counts(now, user, msg_ids),
            ClientFrame::ReadAcks { conversation, msg_ids, .. } => self.read_acks(now, user, conversation, msg_ids),
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
