//! The server's state machine, sans-IO: it takes frames and the current time and returns the
//! store operations to commit and the frames to send to sessions. It never touches a socket, a
//! file or the clock, so every rule is unit-testable.
//!
//! The caller (the core task in [`crate::server`]) must commit [`Effects::ops`] durably before it
//! sends [`Effects::out`]: an `ok` means "stored".

use std::collections::BTreeSet;
use std::sync::Arc;

use receipt_core::protocol::{ClientFrame, ConversationState, Response, SeqEvent, ServerEvent, ServerFrame};
use receipt_core::types::{validate_id, MAX_CONTENT_BYTES};
use receipt_core::{ChatError, ChatType, ConversationKey, CursorResult, ErrorCode, GroupReadAck, GroupRole, MsgId, UserId, WireMessage};

use crate::config::{GroupAckPolicy, ServerConfig, Visibility, WhoMayRequest};
use crate::state::{ConvState, Counters, Group, HashMap, HashSet, LogEvent, MessageRecord, State};

/// Identifies one connection (one logged-in device) to the core.
pub type SessionId = u64;

/// Largest number of events in one `Backlog` frame.
pub const BACKLOG_BATCH: usize = 100;
/// Rough byte budget of one `Backlog` frame (stays far below the 1 MiB frame limit).
const BACKLOG_BYTES: usize = 256 * 1024;
/// Largest page of `FetchGroupAcks`.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 256;

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
    /// A conversation's read state, without its `read_set` (see the two ops below).
    PutConversation {
        user: UserId,
        key: ConversationKey,
        state: ConvState,
    },
    /// `msg_id` (above the read watermark) was read one by one: add it to the read set.
    AddRead {
        user: UserId,
        key: ConversationKey,
        msg_id: MsgId,
    },
    /// The read watermark moved to `up_to`: drop the read-set entries up to it.
    TrimReads {
        user: UserId,
        key: ConversationKey,
        up_to: MsgId,
    },
    PutGroup(Group),
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
}

impl From<&ServerConfig> for CoreConfig {
    fn from(c: &ServerConfig) -> Self {
        CoreConfig {
            retention_ms: c.retention_ms(),
            max_group_size: c.max_group_size,
            group_ack: c.group_ack.clone(),
            max_devices_per_user: c.max_devices_per_user,
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    /// Shared, so handling a request does not copy the ids.
    user: Arc<str>,
    device: Arc<str>,
}

/// The server state machine. See the module docs.
pub struct ServerCore {
    cfg: CoreConfig,
    st: State,
    sessions: HashMap<SessionId, Session>,
    online: HashMap<UserId, Vec<SessionId>>,
    fx: Effects,
    /// Emptied effect vectors handed back by the store thread, reused for the next batches so
    /// the hot path does not allocate (and fault in) fresh large buffers per batch.
    spare: Vec<Effects>,
    counters_dirty: bool,
    /// The session whose request is being applied: its own per-message echoes are not sent back
    /// to it (it has the answer and applied the effect when it made the request).
    origin: Option<SessionId>,
}

type Res<T> = Result<T, ChatError>;

/// Effect vectors kept for reuse: enough for the batches in flight between core and store.
const SPARE_EFFECTS: usize = 8;

fn err(code: ErrorCode, d: impl Into<String>) -> ChatError {
    ChatError::new(code, d)
}

impl ServerCore {
    pub fn new(cfg: CoreConfig, state: State) -> Self {
        ServerCore {
            cfg,
            st: state,
            sessions: HashMap::default(),
            online: HashMap::default(),
            fx: Effects::default(),
            spare: Vec::new(),
            counters_dirty: false,
            origin: None,
        }
    }

    /// The whole state (for tests and tools).
    pub fn state(&self) -> &State {
        &self.st
    }

    /// Online sessions of a user.
    pub fn sessions_of(&self, user: &str) -> &[SessionId] {
        self.online.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Handles one frame of `session`. A `Login` registers an *authenticated* session (the
    /// connection layer checked the token and the version) and produces `LoginOk`, the backlog
    /// after `since` and `SyncDone`, atomically with registering it. Requests of a session that is
    /// not logged in are refused with 201.
    pub fn handle(&mut self, now_ms: u64, session: SessionId, frame: ClientFrame) -> Effects {
        self.apply(now_ms, session, frame);
        self.take()
    }

    /// [`handle`](Self::handle) without taking the effects: they accumulate (in order) until
    /// [`take_effects`](Self::take_effects). The core thread applies a whole batch this way and
    /// takes its effects once, instead of appending every request's effects to the batch's.
    pub fn apply(&mut self, now_ms: u64, session: SessionId, frame: ClientFrame) {
        match frame {
            ClientFrame::Login { user, device, since, .. } => self.login(now_ms, session, user, device, since),
            ClientFrame::Ping { nonce } => self.send(session, ServerFrame::Pong { nonce }, false),
            ClientFrame::SyncCursor { .. } => {}
            other => {
                let req = other.req().unwrap_or(0);
                let res = match self.sessions.get(&session) {
                    Some(s) => {
                        let (user, device) = (s.user.clone(), s.device.clone());
                        let at = self.fx.out.len();
                        self.origin = Some(session);
                        let res = self.request(now_ms, &user, &device, other);
                        self.origin = None;
                        // The answer goes before the events it caused, so the requesting device
                        // knows e.g. the message id before the echo of its own message.
                        let frame = result_frame(req, res);
                        self.fx.out.insert(at, Outgoing { session, frame: Arc::new(frame), replay: false });
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

    /// Everything applied since the last take: store operations (commit first), then frames.
    pub fn take_effects(&mut self) -> Effects {
        self.take()
    }

    /// Applies a request as `user` without a session (offline admin tools; the device is "").
    /// Returns the answer and the effects (their frames go nowhere: no session is online).
    pub fn apply_as(&mut self, now_ms: u64, user: &str, frame: ClientFrame) -> (Result<Response, ChatError>, Effects) {
        let res = self.request(now_ms, user, "", frame);
        (res, self.take())
    }

    /// The session's connection is gone.
    pub fn disconnect(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.remove(&session) {
            if let Some(list) = self.online.get_mut(&*s.user) {
                list.retain(|x| *x != session);
                if list.is_empty() {
                    self.online.remove(&*s.user);
                }
            }
        }
    }

    /// Drops messages past retention (oldest first; cheap when there is nothing to drop).
    pub fn prune(&mut self, now_ms: u64) -> Effects {
        while let Some((&id, rec)) = self.st.messages.first_key_value() {
            if !self.expired(rec, now_ms) {
                break;
            }
            let rec = self.st.messages.remove(&id).expect("present");
            if let Some(ids) = self.st.client_ids.get_mut(&rec.msg.from) {
                ids.remove(&rec.msg.client_id);
                if ids.is_empty() {
                    self.st.client_ids.remove(&rec.msg.from);
                }
            }
            self.fx.ops.push(StoreOp::DeleteMessage(id));
        }
        self.take()
    }

    fn take(&mut self) -> Effects {
        if self.counters_dirty {
            self.counters_dirty = false;
            self.fx.ops.push(StoreOp::PutCounters(self.st.counters));
        }
        // Size the next accumulation like this one: no regrowth (and copying) while applying.
        let (ops, out) = (self.fx.ops.len(), self.fx.out.len());
        let next = self.spare.pop().unwrap_or_default();
        let fx = std::mem::replace(&mut self.fx, next);
        self.fx.ops.reserve(ops.min(1 << 16));
        self.fx.out.reserve(out.min(1 << 16));
        fx
    }

    /// Takes back the vectors of a batch's effects once they were committed and routed: what
    /// is left in them is dropped here (on the thread that allocated it) and their capacity is
    /// reused by later batches.
    pub fn recycle(&mut self, mut fx: Effects) {
        fx.ops.clear();
        fx.out.clear();
        if self.spare.len() < SPARE_EFFECTS {
            self.spare.push(fx);
        }
    }

    fn send(&mut self, session: SessionId, frame: ServerFrame, replay: bool) {
        self.fx.out.push(Outgoing { session, frame: Arc::new(frame), replay });
    }

    fn expired(&self, rec: &MessageRecord, now_ms: u64) -> bool {
        now_ms.saturating_sub(rec.msg.timestamp) > self.cfg.retention_ms
    }

    // ----- login -----

    fn login(&mut self, now_ms: u64, session: SessionId, user: UserId, device: String, since: u64) {
        if self.sessions.contains_key(&session) {
            self.send(session, ServerFrame::Error { error: ChatError::invalid_param("already logged in") }, false);
            return;
        }
        // Per-user device limit: distinct device ids online, not counting this one (a device
        // reconnecting before its old connection was noticed closed is never refused).
        let limit = self.cfg.max_devices_per_user.max(1);
        if let Some(list) = self.online.get(&user) {
            let mut others: Vec<&str> =
                list.iter().filter_map(|s| self.sessions.get(s)).map(|s| &*s.device).filter(|d| *d != device).collect();
            others.sort_unstable();
            others.dedup();
            if others.len() >= limit {
                let e = err(ErrorCode::UserLoginTooManyDevices, format!("{user} has {limit} devices online (max_devices_per_user)"));
                // The connection layer closes the connection after a LoginFailed.
                self.send(session, ServerFrame::LoginFailed { error: e }, true);
                return;
            }
        }
        self.send(
            session,
            ServerFrame::LoginOk {
                v: receipt_core::protocol::PROTOCOL_VERSION,
                user: user.clone(),
                device: device.clone(),
                server_time: now_ms,
            },
            true,
        );
        let mut frames = Vec::new();
        if let Some(log) = self.st.logs.get(&user) {
            let start = log.partition_point(|e| e.seq <= since);
            let mut batch = Vec::new();
            let mut bytes = 0;
            for e in &log[start..] {
                let size = event_size(&e.event);
                if !batch.is_empty() && (batch.len() >= BACKLOG_BATCH || bytes + size > BACKLOG_BYTES) {
                    frames.push(ServerFrame::Backlog { events: std::mem::take(&mut batch) });
                    bytes = 0;
                }
                bytes += size;
                batch.push(SeqEvent::clone(e));
            }
            if !batch.is_empty() {
                frames.push(ServerFrame::Backlog { events: batch });
            }
        }
        for f in frames {
            self.send(session, f, true);
        }
        let mut conversations: Vec<ConversationState> = self
            .st
            .convs
            .get(&user)
            .map(|m| m.iter().map(|(k, c)| ConversationState { chat_type: k.chat_type, id: k.id.clone(), unread: c.unread }).collect())
            .unwrap_or_default();
        conversations.sort_by(|a, b| (a.chat_type, &a.id).cmp(&(b.chat_type, &b.id)));
        let head = self.st.head(&user);
        self.send(session, ServerFrame::SyncDone { head, conversations }, true);
        self.online.entry(user.clone()).or_default().push(session);
        self.sessions.insert(session, Session { user: user.into(), device: device.into() });
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
        if !self.st.logs.contains_key(user) {
            self.st.logs.insert(user.to_string(), Vec::new());
        }
        let log = self.st.logs.get_mut(user).expect("inserted");
        let seq = log.last().map(|e| e.seq).unwrap_or(0) + 1;
        // The event is shared by the logs, the frame and the store op; one frame for all of
        // this user's sessions.
        let le = LogEvent::new(SeqEvent { seq, event });
        log.push(le.clone());
        if let Some(sessions) = self.online.get(user) {
            let mut frame = None;
            for &s in sessions {
                if Some(s) != skip {
                    let frame = frame.get_or_insert_with(|| le.frame()).clone();
                    self.fx.out.push(Outgoing { session: s, frame, replay: false });
                }
            }
        }
        self.fx.ops.push(StoreOp::AppendEvent { user: user.to_string(), event: le });
    }

    fn conv_mut(&mut self, user: &str, key: &ConversationKey) -> &mut ConvState {
        // Look up first: the entry API would allocate both keys on every call.
        if !self.st.convs.get(user).is_some_and(|m| m.contains_key(key)) {
            self.st.convs.entry(user.to_string()).or_default().insert(key.clone(), ConvState::default());
        }
        self.st.convs.get_mut(user).and_then(|m| m.get_mut(key)).expect("inserted")
    }

    fn conv(&self, user: &str, key: &ConversationKey) -> Option<&ConvState> {
        self.st.convs.get(user).and_then(|m| m.get(key))
    }

    fn put_conv(&mut self, user: &str, key: &ConversationKey) {
        let state = self.conv_mut(user, key).head();
        self.fx.ops.push(StoreOp::PutConversation { user: user.to_string(), key: key.clone(), state });
    }

    /// Moves `user`'s read watermark of `key` to `up_to` and persists the change.
    /// The newest message of the conversation when `user` received something after its read
    /// watermark; `None`: nothing new to mark read.
    fn unread_head(&self, user: &str, key: &ConversationKey) -> Option<MsgId> {
        self.conv(user, key).filter(|c| c.newest_in > c.read_wm).map(|c| c.newest)
    }

    fn mark_all(&mut self, user: &str, key: &ConversationKey, up_to: MsgId) {
        let c = self.conv_mut(user, key);
        let had_reads = !c.read_set.is_empty();
        c.mark_all(up_to);
        let wm = c.read_wm;
        self.put_conv(user, key);
        if had_reads {
            self.fx.ops.push(StoreOp::TrimReads { user: user.to_string(), key: key.clone(), up_to: wm });
        }
    }

    /// Marks one received message read for `user`; persists when it changed. True if it was unread.
    fn mark_one(&mut self, user: &str, key: &ConversationKey, id: MsgId) -> bool {
        let c = self.conv_mut(user, key);
        if !c.mark_one(id) {
            return false;
        }
        if c.unread == 0 && c.newest_in > c.read_wm {
            // Nothing unread is left, so every message received up to `newest_in` is read: the
            // watermark moves there and the one-by-one set empties (it would otherwise grow with
            // every message read one by one, in memory and on disk).
            let stored = c.read_set.len() > 1; // all but `id` have rows already
            let up_to = c.newest_in;
            c.mark_all(up_to);
            self.put_conv(user, key);
            if stored {
                self.fx.ops.push(StoreOp::TrimReads { user: user.to_string(), key: key.clone(), up_to });
            }
        } else {
            self.put_conv(user, key);
            self.fx.ops.push(StoreOp::AddRead { user: user.to_string(), key: key.clone(), msg_id: id });
        }
        true
    }

    fn group(&self, id: &str) -> Res<&Group> {
        self.st.groups.get(id).ok_or_else(|| err(ErrorCode::GroupInvalidId, format!("unknown group {id}")))
    }

    fn role_in(&self, group: &Group, user: &str) -> Res<GroupRole> {
        group.members.get(user).copied().ok_or_else(|| err(ErrorCode::GroupNotJoined, format!("{user} is not a member of {}", group.id)))
    }

    /// A message that exists and is not expired; `pruned_code` is the error for one that is gone.
    fn message(&self, now_ms: u64, id: MsgId, pruned_code: ErrorCode) -> Res<&MessageRecord> {
        match self.st.messages.get(&id) {
            Some(rec) if self.expired(rec, now_ms) => Err(err(pruned_code, format!("message {id} is past the server's retention"))),
            Some(rec) => Ok(rec),
            None if id >= 1 && id <= self.st.counters.last_msg_id => {
                Err(err(pruned_code, format!("message {id} is past the server's retention")))
            }
            None => Err(ChatError::invalid_message(format!("unknown message {id}"))),
        }
    }

    // ----- requests -----

    fn request(&mut self, now: u64, user: &str, device: &str, frame: ClientFrame) -> Res<Response> {
        let ops_before = self.fx.ops.len();
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
            ClientFrame::MarkRead { chat_type, conversation, msg_id, .. } => self.mark_read(now, user, chat_type, conversation, msg_id),
            ClientFrame::CreateGroup { name, members, chat_room, .. } => self.create_group(user, name, members, chat_room),
            ClientFrame::AddMembers { group, members, .. } => self.add_members(user, group, members),
            ClientFrame::RemoveMembers { group, members, .. } => self.remove_members(user, group, members),
            ClientFrame::SetRole { group, member, role, .. } => self.set_role(user, group, member, role),
            ClientFrame::Login { .. } | ClientFrame::Ping { .. } | ClientFrame::SyncCursor { .. } => {
                Err(ChatError::invalid_param("not a request"))
            }
        };
        debug_assert!(res.is_ok() || self.fx.ops.len() == ops_before, "a refused request changed state");
        res
    }

    #[allow(clippy::too_many_arguments)]
    fn send_message(
        &mut self,
        now: u64,
        user: &str,
        client_id: String,
        to: String,
        chat_type: ChatType,
        content: String,
        require_delivery_ack: bool,
        need_group_ack: bool,
    ) -> Res<Response> {
        validate_id("client_id", &client_id)?;
        if let Some(&id) = self.st.client_ids.get(user).and_then(|ids| ids.get(&client_id)) {
            if let Some(rec) = self.st.messages.get(&id) {
                return Ok(Response::Sent { client_id, msg_id: id, timestamp: rec.msg.timestamp, need_group_ack: rec.msg.need_group_ack });
            }
        }
        validate_id("to", &to)?;
        if content.is_empty() || content.len() > MAX_CONTENT_BYTES {
            return Err(ChatError::invalid_param(format!("content must be 1..={MAX_CONTENT_BYTES} bytes")));
        }
        let (recipients, rda, nga): (Vec<UserId>, bool, bool) = match chat_type {
            ChatType::Chat => {
                if to == user {
                    return Err(ChatError::invalid_param("cannot send a 1:1 message to yourself"));
                }
                (vec![to.clone()], require_delivery_ack, false)
            }
            ChatType::GroupChat | ChatType::ChatRoom => {
                let g = self.group(&to)?;
                check_kind(g, chat_type)?;
                let role = self.role_in(g, user)?;
                let mut nga = false;
                if chat_type == ChatType::GroupChat && need_group_ack {
                    let p = &self.cfg.group_ack;
                    if !p.enabled {
                        return Err(err(ErrorCode::FeatureNotEnabled, "group read acks are not enabled"));
                    }
                    if p.who_may_request == WhoMayRequest::OwnerAndAdmins && role == GroupRole::Member {
                        return Err(err(ErrorCode::GroupPermissionDenied, "only the owner and admins may ask for group read acks"));
                    }
                    nga = g.members.len() <= p.member_cap;
                }
                let r = g.members.keys().filter(|m| m.as_str() != user).cloned().collect();
                (r, false, nga)
            }
        };
        let c = &mut self.st.counters;
        c.last_msg_id += 1;
        c.last_ts = c.last_ts.max(now);
        // One shared copy: the message record, the store operation and every log event.
        let msg = Arc::new(WireMessage {
            id: c.last_msg_id,
            client_id: client_id.clone(),
            from: user.to_string(),
            to,
            chat_type,
            content,
            timestamp: c.last_ts,
            require_delivery_ack: rda,
            need_group_ack: nga,
        });
        self.counters_dirty = true;
        let id = msg.id;
        let timestamp = msg.timestamp;
        match self.st.client_ids.get_mut(user) {
            Some(ids) => {
                ids.insert(client_id.clone(), id);
            }
            None => {
                self.st.client_ids.insert(user.to_string(), HashMap::from_iter([(client_id.clone(), id)]));
            }
        }
        self.st.messages.insert(id, MessageRecord::new(msg.clone()));
        self.fx.ops.push(StoreOp::PutMessage(msg.clone()));
        let ev = Arc::new(ServerEvent::Message { msg: msg.clone() });
        for r in &recipients {
            let key = msg.conversation_for(r);
            let conv = self.conv_mut(r, &key);
            conv.unread += 1;
            conv.newest = id;
            conv.newest_in = id;
            self.put_conv(r, &key);
            self.emit(r, ev.clone());
        }
        let key = msg.conversation_for(user);
        self.conv_mut(user, &key).newest = id;
        self.put_conv(user, &key);
        self.echo(user, ev);
        Ok(Response::Sent { client_id, msg_id: id, timestamp, need_group_ack: nga })
    }

    /// Common checks of 1:1 acks: the message is 1:1 and `user` is its recipient.
    fn check_one_to_one(rec: &MessageRecord, user: &str, what: &str) -> Res<()> {
        if rec.msg.chat_type != ChatType::Chat {
            return Err(ChatError::wrong_type(format!("{what} acks are for 1:1 messages only")));
        }
        if rec.msg.from == user {
            return Err(ChatError::wrong_type("cannot ack your own message"));
        }
        if rec.msg.to != user {
            return Err(ChatError::invalid_message(format!("message {} was not sent to you", rec.msg.id)));
        }
        Ok(())
    }

    fn delivery_ack(&mut self, now: u64, user: &str, msg_id: MsgId) -> Res<Response> {
        let rec = self.message(now, msg_id, ErrorCode::MessageInvalid)?;
        Self::check_one_to_one(rec, user, "delivery")?;
        if rec.delivered {
            return Ok(Response::Done);
        }
        let rec = self.st.messages.get_mut(&msg_id).expect("checked");
        rec.delivered = true;
        let (from, to, read_acked) = (rec.msg.from.clone(), rec.msg.to.clone(), rec.read_acked);
        self.fx.ops.push(StoreOp::PutMessageFlags { id: msg_id, delivered: true, read_acked });
        let ev = Arc::new(ServerEvent::Delivered { msg_id, from: from.clone(), to, by: user.to_string(), timestamp: now });
        self.emit(&from, ev.clone());
        self.echo(user, ev);
        Ok(Response::Done)
    }

    fn read_ack(&mut self, now: u64, user: &str, msg_id: MsgId) -> Res<Response> {
        let rec = self.message(now, msg_id, ErrorCode::MessageExpired)?;
        Self::check_one_to_one(rec, user, "read")?;
        let key = ConversationKey::new(ChatType::Chat, rec.msg.from.clone());
        let covered = self.conv(user, &key).is_some_and(|c| msg_id <= c.ack_wm);
        if rec.read_acked || covered {
            return Ok(Response::Done);
        }
        let rec = self.st.messages.get_mut(&msg_id).expect("checked");
        rec.read_acked = true;
        let (from, to, delivered) = (rec.msg.from.clone(), rec.msg.to.clone(), rec.delivered);
        self.fx.ops.push(StoreOp::PutMessageFlags { id: msg_id, delivered, read_acked: true });
        self.mark_one(user, &key, msg_id);
        let ev = Arc::new(ServerEvent::Read { msg_id, from: from.clone(), to, by: user.to_string(), timestamp: now });
        self.emit(&from, ev.clone());
        self.echo(user, ev);
        Ok(Response::Done)
    }

    fn conversation_ack(&mut self, now: u64, user: &str, device: &str, chat_type: ChatType, conversation: String) -> Res<Response> {
        validate_id("conversation", &conversation)?;
        let key = ConversationKey::new(chat_type, conversation.clone());
        match chat_type {
            ChatType::Chat => {
                if conversation == user {
                    return Err(ChatError::invalid_param("a 1:1 conversation is identified by the peer"));
                }
                let Some(c) = self.conv(user, &key) else {
                    return Ok(Response::Done);
                };
                if c.newest_in <= c.ack_wm {
                    return Ok(Response::Done);
                }
                let up_to = c.newest;
                self.conv_mut(user, &key).ack_wm = up_to;
                self.mark_all(user, &key, up_to);
                let ev = Arc::new(ServerEvent::ConversationRead {
                    chat_type,
                    from: user.to_string(),
                    to: conversation.clone(),
                    up_to,
                    timestamp: now,
                    device: device.to_string(),
                });
                self.emit(&conversation, ev.clone());
                self.emit(user, ev);
            }
            ChatType::GroupChat | ChatType::ChatRoom => {
                let g = self.group(&conversation)?;
                check_kind(g, chat_type)?;
                self.role_in(g, user)?;
                let Some(up_to) = self.unread_head(user, &key) else {
                    return Ok(Response::Done);
                };
                self.mark_all(user, &key, up_to);
                let ev = ServerEvent::ConversationRead {
                    chat_type,
                    from: user.to_string(),
                    to: conversation,
                    up_to,
                    timestamp: now,
                    device: device.to_string(),
                };
                self.emit(user, ev);
            }
        }
        Ok(Response::Done)
    }

    fn group_ack(&mut self, now: u64, user: &str, msg_id: MsgId, ext: Option<String>) -> Res<Response> {
        if ext.as_ref().is_some_and(|e| e.len() > MAX_CONTENT_BYTES) {
            return Err(ChatError::invalid_param(format!("ext must be at most {MAX_CONTENT_BYTES} bytes")));
        }
        let rec = self.message(now, msg_id, ErrorCode::MessageExpired)?;
        if rec.msg.chat_type != ChatType::GroupChat {
            return Err(ChatError::wrong_type("group read acks are for group messages only"));
        }
        if rec.msg.from == user {
            return Err(ChatError::wrong_type("cannot ack your own message"));
        }
        if rec.ackers.contains(user) {
            return Ok(Response::Done);
        }
        let p = &self.cfg.group_ack;
        if !p.enabled {
            return Err(err(ErrorCode::FeatureNotEnabled, "group read acks are not enabled"));
        }
        if !rec.msg.need_group_ack {
            return Err(err(ErrorCode::FeatureNotEnabled, "this message does not take group read acks"));
        }
        let group_id = rec.msg.to.clone();
        let members: Vec<UserId> = match self.st.groups.get(&group_id) {
            Some(g) if g.members.contains_key(user) => g.members.keys().cloned().collect(),
            _ => return Err(err(ErrorCode::GroupNotJoined, format!("{user} is not a member of {group_id}"))),
        };
        if now.saturating_sub(rec.msg.timestamp) > p.validity_ms() {
            return Err(err(ErrorCode::MessageExpired, "the group read ack is past its validity"));
        }
        let visibility = p.visibility;
        let sender = rec.msg.from.clone();
        let count = rec.acks.len() as u32 + 1;
        self.st.counters.last_ack_id += 1;
        self.counters_dirty = true;
        let ack =
            GroupReadAck { ack_id: self.st.counters.last_ack_id, msg_id, from: user.to_string(), content: ext, count, timestamp: now };
        self.st.messages.get_mut(&msg_id).expect("checked").add_ack(ack.clone());
        self.fx.ops.push(StoreOp::PutGroupAck(ack.clone()));
        self.mark_one(user, &ConversationKey::new(ChatType::GroupChat, group_id.clone()), msg_id);
        let mut to: Vec<UserId> = vec![sender.clone(), user.to_string()];
        if visibility == Visibility::AllMembers {
            to.extend(members);
        }
        let ev = Arc::new(ServerEvent::GroupRead { group: group_id, sender, ack });
        let mut seen = HashSet::default();
        for u in to {
            if seen.insert(u.clone()) {
                if u == user {
                    self.echo(&u, ev.clone());
                } else {
                    self.emit(&u, ev.clone());
                }
            }
        }
        Ok(Response::Done)
    }

    fn fetch_group_acks(&mut self, now: u64, user: &str, msg_id: MsgId, page_size: u32, start: Option<u64>) -> Res<Response> {
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ChatError::invalid_param(format!("page_size must be 1..={MAX_PAGE_SIZE}")));
        }
        let rec = self.message(now, msg_id, ErrorCode::MessageInvalid)?;
        if rec.msg.chat_type != ChatType::GroupChat {
            return Err(ChatError::wrong_type("group read acks are for group messages only"));
        }
        let allowed = rec.msg.from == user
            || (self.cfg.group_ack.visibility == Visibility::AllMembers
                && self.st.groups.get(&rec.msg.to).is_some_and(|g| g.members.contains_key(user)));
        if !allowed {
            return Err(err(ErrorCode::GroupPermissionDenied, "only the sender may see this message's read acks"));
        }
        let mut it = rec.acks.range(..=start.unwrap_or(u64::MAX)).rev();
        let data: Vec<GroupReadAck> = it.by_ref().take(page_size as usize).map(|(_, a)| a.clone()).collect();
        let cursor = it.next().map(|(id, _)| id.to_string()).unwrap_or_default();
        Ok(Response::GroupAcks { msg_id, page: CursorResult { data, cursor } })
    }

    fn mark_read(&mut self, now: u64, user: &str, chat_type: ChatType, conversation: String, msg_id: Option<MsgId>) -> Res<Response> {
        validate_id("conversation", &conversation)?;
        let key = ConversationKey::new(chat_type, conversation.clone());
        if chat_type != ChatType::Chat {
            let g = self.group(&conversation)?;
            check_kind(g, chat_type)?;
            self.role_in(g, user)?;
        }
        match msg_id {
            Some(id) => {
                let rec = self.message(now, id, ErrorCode::MessageInvalid)?;
                let received =
                    rec.msg.from != user && rec.msg.conversation_for(user) == key && (chat_type != ChatType::Chat || rec.msg.to == user);
                if !received {
                    return Err(ChatError::invalid_message(format!("message {id} is not a message you received in this conversation")));
                }
                if !self.mark_one(user, &key, id) {
                    return Ok(Response::Done);
                }
                let up_to = self.conv(user, &key).map(|c| c.read_wm).unwrap_or(0);
                self.echo(user, ServerEvent::ReadState { chat_type, conversation, msg_id: Some(id), up_to });
            }
            None => {
                let Some(up_to) = self.unread_head(user, &key) else {
                    return Ok(Response::Done);
                };
                self.mark_all(user, &key, up_to);
                self.emit(user, ServerEvent::ReadState { chat_type, conversation, msg_id: None, up_to });
            }
        }
        Ok(Response::Done)
    }

    fn check_members(&self, members: &[UserId]) -> Res<()> {
        for m in members {
            validate_id("member", m)?;
        }
        Ok(())
    }

    fn create_group(&mut self, user: &str, name: String, members: Vec<UserId>, chat_room: bool) -> Res<Response> {
        if name.len() > MAX_GROUP_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(ChatError::invalid_param(format!(
                "group name must be at most {MAX_GROUP_NAME_BYTES} bytes without control characters"
            )));
        }
        self.check_members(&members)?;
        let mut set: BTreeSet<UserId> = members.into_iter().collect();
        set.remove(user);
        if set.len() + 1 > self.cfg.max_group_size {
            return Err(err(ErrorCode::GroupMembersFull, format!("a group has at most {} members", self.cfg.max_group_size)));
        }
        let id = loop {
            self.st.counters.last_group_id += 1;
            let id = format!("g{}", self.st.counters.last_group_id);
            if !self.st.groups.contains_key(&id) {
                break id;
            }
        };
        self.counters_dirty = true;
        let mut g = Group { id: id.clone(), name, chat_room, members: Default::default() };
        g.members.insert(user.to_string(), GroupRole::Owner);
        for m in &set {
            g.members.insert(m.clone(), GroupRole::Member);
        }
        self.fx.ops.push(StoreOp::PutGroup(g.clone()));
        self.st.groups.insert(id.clone(), g);
        self.emit(user, ServerEvent::Membership { group: id.clone(), role: Some(GroupRole::Owner), chat_room });
        for m in &set {
            self.emit(m, ServerEvent::Membership { group: id.clone(), role: Some(GroupRole::Member), chat_room });
        }
        Ok(Response::GroupCreated { group: id })
    }

    /// The group, after checking that `user` is its owner or an admin.
    fn managed_group(&self, user: &str, group: &str) -> Res<(&Group, GroupRole)> {
        let g = self.group(group)?;
        let role = self.role_in(g, user)?;
        if role == GroupRole::Member {
            return Err(err(ErrorCode::GroupPermissionDenied, "only the owner and admins manage members"));
        }
        Ok((g, role))
    }

    fn add_members(&mut self, user: &str, group: String, members: Vec<UserId>) -> Res<Response> {
        self.check_members(&members)?;
        let (g, _) = self.managed_group(user, &group)?;
        let new: BTreeSet<UserId> = members.into_iter().filter(|m| !g.members.contains_key(m)).collect();
        if g.members.len() + new.len() > self.cfg.max_group_size {
            return Err(err(ErrorCode::GroupMembersFull, format!("a group has at most {} members", self.cfg.max_group_size)));
        }
        if new.is_empty() {
            return Ok(Response::Done);
        }
        let g = self.st.groups.get_mut(&group).expect("checked");
        for m in &new {
            g.members.insert(m.clone(), GroupRole::Member);
        }
        let chat_room = g.chat_room;
        self.fx.ops.push(StoreOp::PutGroup(g.clone()));
        for m in &new {
            self.emit(m, ServerEvent::Membership { group: group.clone(), role: Some(GroupRole::Member), chat_room });
        }
        Ok(Response::Done)
    }

    fn remove_members(&mut self, user: &str, group: String, members: Vec<UserId>) -> Res<Response> {
        self.check_members(&members)?;
        let (g, role) = self.managed_group(user, &group)?;
        let mut gone = BTreeSet::new();
        for m in members {
            match g.members.get(&m) {
                None => {}
                Some(GroupRole::Owner) => {
                    return Err(err(ErrorCode::GroupPermissionDenied, "the owner cannot be removed"));
                }
                Some(GroupRole::Admin) if role != GroupRole::Owner && m != user => {
                    return Err(err(ErrorCode::GroupPermissionDenied, "only the owner removes admins"));
                }
                Some(_) => {
                    gone.insert(m);
                }
            }
        }
        if gone.is_empty() {
            return Ok(Response::Done);
        }
        let g = self.st.groups.get_mut(&group).expect("checked");
        for m in &gone {
            g.members.remove(m);
        }
        let chat_room = g.chat_room;
        self.fx.ops.push(StoreOp::PutGroup(g.clone()));
        for m in &gone {
            self.emit(m, ServerEvent::Membership { group: group.clone(), role: None, chat_room });
        }
        Ok(Response::Done)
    }

    fn set_role(&mut self, user: &str, group: String, member: UserId, role: GroupRole) -> Res<Response> {
        validate_id("member", &member)?;
        let g = self.group(&group)?;
        if self.role_in(g, user)? != GroupRole::Owner {
            return Err(err(ErrorCode::GroupPermissionDenied, "only the owner sets roles"));
        }
        let current = self.role_in(g, &member)?;
        if role == GroupRole::Owner || current == GroupRole::Owner {
            return Err(ChatError::invalid_param("ownership cannot be transferred or given up"));
        }
        if current == role {
            return Ok(Response::Done);
        }
        let g = self.st.groups.get_mut(&group).expect("checked");
        g.members.insert(member.clone(), role);
        let chat_room = g.chat_room;
        self.fx.ops.push(StoreOp::PutGroup(g.clone()));
        self.emit(&member, ServerEvent::Membership { group, role: Some(role), chat_room });
        Ok(Response::Done)
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

/// A cheap upper-ish estimate of an event's encoded size.
fn event_size(e: &ServerEvent) -> usize {
    256 + match e {
        ServerEvent::Message { msg } => msg.content.len() * 2,
        ServerEvent::GroupRead { ack, .. } => ack.content.as_ref().map_or(0, |c| c.len() * 2),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use receipt_core::protocol::PROTOCOL_VERSION;

    const T0: u64 = 1_000_000;

    fn core_with(f: impl FnOnce(&mut CoreConfig)) -> ServerCore {
        let mut cfg = CoreConfig::from(&ServerConfig::default());
        f(&mut cfg);
        ServerCore::new(cfg, State::default())
    }

    fn login(c: &mut ServerCore, s: SessionId, user: &str, since: u64) -> Vec<ServerFrame> {
        let fx = c.handle(
            T0,
            s,
            ClientFrame::Login { v: PROTOCOL_VERSION, user: user.into(), device: format!("d{s}"), token: String::new(), since },
        );
        assert!(fx.ops.is_empty(), "login stores nothing");
        assert!(fx.out.iter().all(|o| o.session == s && o.replay));
        fx.out.into_iter().map(|o| (*o.frame).clone()).collect()
    }

    fn send(c: &mut ServerCore, now: u64, s: SessionId, cid: &str, to: &str, t: ChatType, nga: bool) -> (MsgId, Effects) {
        let fx = c.handle(
            now,
            s,
            ClientFrame::Send {
                req: 1,
                client_id: cid.into(),
                to: to.into(),
                chat_type: t,
                content: "hi".into(),
                require_delivery_ack: false,
                need_group_ack: nga,
            },
        );
        match &*fx.out[0].frame {
            ServerFrame::Result { ok: Some(Response::Sent { msg_id, .. }), .. } => (*msg_id, fx),
            f => panic!("{f:?}"),
        }
    }

    fn result(fx: &Effects, s: SessionId) -> Result<Response, ChatError> {
        for o in &fx.out {
            if o.session == s {
                if let ServerFrame::Result { ok, err, .. } = &*o.frame {
                    return match (ok, err) {
                        (Some(r), None) => Ok(r.clone()),
                        (None, Some(e)) => Err(e.clone()),
                        _ => panic!(),
                    };
                }
            }
        }
        panic!("no result for {s}: {fx:?}")
    }

    fn events_for(fx: &Effects, s: SessionId) -> Vec<ServerEvent> {
        fx.out
            .iter()
            .filter(|o| o.session == s)
            .filter_map(|o| match &*o.frame {
                ServerFrame::Event { event } => Some((*event.event).clone()),
                _ => None,
            })
            .collect()
    }

    fn unread(c: &ServerCore, user: &str, t: ChatType, id: &str) -> u32 {
        c.st.convs.get(user).and_then(|m| m.get(&ConversationKey::new(t, id))).map_or(0, |c| c.unread)
    }

    #[test]
    fn requests_before_login_are_201() {
        let mut c = core_with(|_| {});
        let fx = c.handle(T0, 9, ClientFrame::ReadAck { req: 4, msg_id: 1 });
        assert_eq!(result(&fx, 9).unwrap_err().code, ErrorCode::UserNotLogin);
        assert!(fx.ops.is_empty());
    }

    #[test]
    fn send_stores_routes_and_counts_unread() {
        let mut c = core_with(|_| {});
        login(&mut c, 1, "alice", 0);
        login(&mut c, 2, "bob", 0);
        login(&mut c, 3, "bob", 0);
        login(&mut c, 4, "alice", 0);
        let (id, fx) = send(&mut c, T0, 1, "c1", "bob", ChatType::Chat, false);
        assert_eq!(id, 1);
        // Answer first, then the events.
        assert!(matches!(&*fx.out[0].frame, ServerFrame::Result { .. }));
        assert_eq!(events_for(&fx, 2).len(), 1);
        assert_eq!(events_for(&fx, 3).len(), 1);
        assert_eq!(events_for(&fx, 4).len(), 1, "the sender's other device");
        assert!(events_for(&fx, 1).is_empty(), "no live echo to the sending device: it has the answer");
        assert_eq!(c.st.logs["alice"].len(), 1, "the sender's log has the message (replays bring it)");
        assert!(fx.ops.iter().any(|o| matches!(o, StoreOp::PutMessage(m) if m.id == 1)));
        assert!(fx.ops.iter().any(|o| matches!(o, StoreOp::PutCounters(_))));
        assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 1);
        assert_eq!(unread(&c, "alice", ChatType::Chat, "bob"), 0);
        // Idempotent resend: same answer, nothing stored.
        let (id2, fx) = send(&mut c, T0 + 5, 1, "c1", "bob", ChatType::Chat, false);
        assert_eq!(id2, id);
        assert!(fx.ops.is_empty());
        assert_eq!(fx.out.len(), 1);
    }

    #[test]
    fn reading_everything_one_by_one_moves_the_watermark_and_empties_the_read_set() {
        let mut c = core_with(|_| {});
        login(&mut c, 1, "alice", 0);
        login(&mut c, 2, "bob", 0);
        let ids: Vec<MsgId> = (0..3).map(|i| send(&mut c, T0, 1, &format!("c{i}"), "bob", ChatType::Chat, false).0).collect();
        let key = ConversationKey::new(ChatType::Chat, "alice");
        let conv = |c: &ServerCore| c.st.convs["bob"][&key].clone();
        // Out of order: the last message first, then the first; one is still unread.
        for id in [ids[2], ids[0]] {
            let fx = c.handle(T0, 2, ClientFrame::ReadAck { req: 2, msg_id: id });
            assert!(fx.ops.iter().any(|o| matches!(o, StoreOp::AddRead { msg_id, .. } if *msg_id == id)));
        }
        assert_eq!((conv(&c).unread, conv(&c).read_wm, conv(&c).read_set.len()), (1, 0, 2));
        // The last unread one: nothing unread is left, so the watermark moves to the newest
        // received message and the stored one-by-one reads are trimmed instead of growing.
        let fx = c.handle(T0, 2, ClientFrame::ReadAck { req: 3, msg_id: ids[1] });
        assert_eq!((conv(&c).unread, conv(&c).read_wm, conv(&c).read_set.len()), (0, ids[2], 0));
        assert!(!fx.ops.iter().any(|o| matches!(o, StoreOp::AddRead { .. })));
        assert!(fx.ops.iter().any(|o| matches!(o, StoreOp::TrimReads { up_to, .. } if *up_to == ids[2])));
        assert!(fx.ops.iter().any(|o| matches!(o, StoreOp::PutConversation { state, .. } if state.read_wm == ids[2])));
        // Counting goes on above the watermark; a read of an already read message changes nothing.
        let (next, _) = send(&mut c, T0, 1, "c9", "bob", ChatType::Chat, false);
        assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 1);
        let fx = c.handle(
            T0,
            2,
            ClientFrame::MarkRead { req: 4, chat_type: ChatType::Chat, conversation: "alice".into(), msg_id: Some(ids[0]) },
        );
        assert!(fx.ops.is_empty());
        // A single unread message read: the watermark moves with nothing to trim.
        let fx =
            c.handle(T0, 2, ClientFrame::MarkRead { req: 5, chat_type: ChatType::Chat, conversation: "alice".into(), msg_id: Some(next) });
        assert_eq!((conv(&c).unread, conv(&c).read_wm), (0, next));
        assert!(!fx.ops.iter().any(|o| matches!(o, StoreOp::AddRead { .. } | StoreOp::TrimReads { .. })));
    }

    #[test]
    fn an_event_for_two_users_is_one_shared_allocation_under_each_users_seq() {
        let mut c = core_with(|_| {});
        login(&mut c, 1, "alice", 0);
        login(&mut c, 2, "bob", 0);
        send(&mut c, T0, 2, "warmup", "carol", ChatType::Chat, false); // bob's log is one ahead
        let (id, _) = send(&mut c, T0, 1, "c1", "bob", ChatType::Chat, false);
        c.handle(T0, 2, ClientFrame::DeliveryAck { req: 3, msg_id: id });
        let (a, b) = (c.st.logs["alice"].last().unwrap(), c.st.logs["bob"].last().unwrap());
        assert!(matches!(*a.event, ServerEvent::Delivered { msg_id, .. } if msg_id == id));
        assert!(Arc::ptr_eq(&a.event, &b.event), "the sender's and the acker's copies are one");
        assert_eq!((a.seq, b.seq), (2, 3));
        // The message itself: one event in both logs, sharing the stored message.
        let (a, b) = (&c.st.logs["alice"][0], &c.st.logs["bob"][1]);
        assert!(Arc::ptr_eq(&a.event, &b.event));
        let ServerEvent::Message { msg } = &*a.event else { panic!("{a:?}") };
        assert!(Arc::ptr_eq(msg, &c.st.messages[&id].msg));
    }

    #[test]
    fn refused_requests_change_nothing() {
        let mut c = core_with(|_| {});
        login(&mut c, 1, "alice", 0);
        for f in [
            ClientFrame::ReadAck { req: 1, msg_id: 5 },
            ClientFrame::DeliveryAck { req: 1, msg_id: 5 },
            ClientFrame::GroupAck { req: 1, msg_id: 5, ext: None },
            ClientFrame::FetchGroupAcks { req: 1, msg_id: 5, page_size: 0, start_ack_id: None },
            ClientFrame::AddMembers { req: 1, group: "g1".into(), members: vec!["x".into()] },
            ClientFrame::ConversationAck { req: 1, chat_type: ChatType::GroupChat, conversation: "nope".into() },
        ] {
            let fx = c.handle(T0, 1, f);
            assert!(result(&fx, 1).is_err());
            assert!(fx.ops.is_empty());
        }
    }

    #[test]
    fn backlog_then_sync_done_then_live() {
        let mut c = core_with(|_| {});
        login(&mut c, 1, "alice", 0);
        for i in 0..(BACKLOG_BATCH + 5) {
            send(&mut c, T0 + i as u64, 1, &format!("c{i}"), "bob", ChatType::Chat, false);
        }
        let frames = login(&mut c, 2, "bob", 3);
        assert!(matches!(frames[0], ServerFrame::LoginOk { .. }));
        let mut seqs = Vec::new();
        for f in &frames[1..frames.len() - 1] {
            let ServerFrame::Backlog { events } = f else { panic!("{f:?}") };
            assert!(events.len() <= BACKLOG_BATCH);
            seqs.extend(events.iter().map(|e| e.seq));
        }
        assert_eq!(seqs, (4..=(BACKLOG_BATCH as u64 + 5)).collect::<Vec<_>>());
        let ServerFrame::SyncDone { head, conversations } = frames.last().unwrap() else { panic!() };
        assert_eq!(*head, BACKLOG_BATCH as u64 + 5);
        assert_eq!(conversations[0].unread, BACKLOG_BATCH as u32 + 5);
        let (_, fx) = send(&mut c, T0 + 999, 1, "live", "bob", ChatType::Chat, false);
        let live: Vec<u64> = fx
            .out
            .iter()
            .filter(|o| o.session == 2)
            .filter_map(|o| match &*o.frame {
                ServerFrame::Event { event } => Some(event.seq),
                _ => None,
            })
            .collect();
        assert_eq!(live, vec![*head + 1]);
        c.disconnect(2);
        let (_, fx) = send(&mut c, T0 + 1000, 1, "after", "bob", ChatType::Chat, false);
        assert!(events_for(&fx, 2).is_empty());
    }

    #[test]
    fn read_watermark_and_individual_reads() {
        let mut c = core_with(|_| {});
        login(&mut c, 1, "alice", 0);
        login(&mut c, 2, "bob", 0);
        let ids: Vec<MsgId> = (0..5).map(|i| send(&mut c, T0, 1, &format!("c{i}"), "bob", ChatType::Chat, false).0).collect();
        assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 5);
        let fx = c.handle(T0, 2, ClientFrame::ReadAck { req: 2, msg_id: ids[1] });
        assert!(result(&fx, 2).is_ok());
        assert_eq!(events_for(&fx, 1).len(), 1);
        let fx = c.handle(T0, 2, ClientFrame::ReadAck { req: 3, msg_id: ids[1] });
        assert!(result(&fx, 2).is_ok());
        assert!(fx.ops.is_empty() && events_for(&fx, 1).is_empty(), "idempotent");
        assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 4);
        let fx = c.handle(T0, 2, ClientFrame::ConversationAck { req: 4, chat_type: ChatType::Chat, conversation: "alice".into() });
        assert!(matches!(events_for(&fx, 1)[..], [ServerEvent::ConversationRead { up_to, .. }] if up_to == ids[4]));
        assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 0);
        let conv = &c.st.convs["bob"][&ConversationKey::new(ChatType::Chat, "alice")];
        assert!(conv.read_set.is_empty(), "reads below the watermark are dropped");
        // Read acks covered by the conversation ack are not forwarded again.
        let fx = c.handle(T0, 2, ClientFrame::ReadAck { req: 5, msg_id: ids[3] });
        assert!(result(&fx, 2).is_ok() && fx.ops.is_empty());
        let (late, _) = send(&mut c, T0, 1, "late", "bob", ChatType::Chat, false);
        assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 1);
        let fx =
            c.handle(T0, 2, ClientFrame::MarkRead { req: 6, chat_type: ChatType::Chat, conversation: "alice".into(), msg_id: Some(late) });
        assert!(events_for(&fx, 1).is_empty(), "mark-read is own state only");
        assert!(events_for(&fx, 2).is_empty(), "the acting device gets the answer, not its echo");
        assert!(matches!(c.st.logs["bob"].last().map(|e| &*e.event), Some(ServerEvent::ReadState { msg_id: Some(m), .. }) if *m == late));
        assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 0);
    }

    #[test]
    fn group_ack_pages_are_range_scans_newest_first() {
        let mut c = core_with(|cfg| cfg.group_ack.enabled = true);
        login(&mut c, 1, "owner", 0);
        let members: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
        let fx = c.handle(T0, 1, ClientFrame::CreateGroup { req: 1, name: "g".into(), members: members.clone(), chat_room: false });
        let Ok(Response::GroupCreated { group }) = result(&fx, 1) else { panic!() };
        let (id, _) = send(&mut c, T0, 1, "q", &group, ChatType::GroupChat, true);
        for m in &members {
            let (r, fx) = c.apply_as(T0 + 1, m, ClientFrame::GroupAck { req: 1, msg_id: id, ext: None });
            r.unwrap();
            assert!(fx.ops.iter().any(|o| matches!(o, StoreOp::PutGroupAck(_))));
        }
        let (r, fx) = c.apply_as(T0 + 1, "u0", ClientFrame::GroupAck { req: 1, msg_id: id, ext: None });
        assert!(r.is_ok() && fx.ops.is_empty(), "one ack per member");
        let page = |c: &mut ServerCore, start| {
            let fx = c.handle(T0, 1, ClientFrame::FetchGroupAcks { req: 9, msg_id: id, page_size: 3, start_ack_id: start });
            let Ok(Response::GroupAcks { page, .. }) = result(&fx, 1) else { panic!() };
            page
        };
        let p1 = page(&mut c, None);
        assert_eq!(p1.data.iter().map(|a| a.count).collect::<Vec<_>>(), vec![7, 6, 5]);
        let p2 = page(&mut c, Some(p1.cursor.parse().unwrap()));
        assert_eq!(p2.data.iter().map(|a| a.count).collect::<Vec<_>>(), vec![4, 3, 2]);
        let p3 = page(&mut c, Some(p2.cursor.parse().unwrap()));
        assert_eq!(p3.data.len(), 1);
        assert_eq!(p3.cursor, "");
        // Past validity.
        let late = T0 + c.cfg.group_ack.validity_ms() + 1;
        let (id2, _) = send(&mut c, T0, 1, "q2", &group, ChatType::GroupChat, true);
        let (r, _) = c.apply_as(late, "u1", ClientFrame::GroupAck { req: 1, msg_id: id2, ext: None });
        assert_eq!(r.unwrap_err().code, ErrorCode::MessageExpired);
    }

    #[test]
    fn prune_drops_expired_messages_and_read_acks_get_506() {
        let mut c = core_with(|cfg| cfg.retention_ms = 1000);
        login(&mut c, 1, "alice", 0);
        login(&mut c, 2, "bob", 0);
        let (old, _) = send(&mut c, T0, 1, "old", "bob", ChatType::Chat, false);
        let (new, _) = send(&mut c, T0 + 900, 1, "new", "bob", ChatType::Chat, false);
        let fx = c.prune(T0 + 1500);
        assert_eq!(fx.ops, vec![StoreOp::DeleteMessage(old)]);
        let fx = c.handle(T0 + 1500, 2, ClientFrame::ReadAck { req: 1, msg_id: old });
        assert_eq!(result(&fx, 2).unwrap_err().code, ErrorCode::MessageExpired);
        let fx = c.handle(T0 + 1500, 2, ClientFrame::DeliveryAck { req: 1, msg_id: old });
        assert_eq!(result(&fx, 2).unwrap_err().code, ErrorCode::MessageInvalid);
        let fx = c.handle(T0 + 1500, 2, ClientFrame::ReadAck { req: 1, msg_id: new });
        assert!(result(&fx, 2).is_ok());
        assert!(c.prune(T0 + 1500).ops.is_empty());
    }
}
