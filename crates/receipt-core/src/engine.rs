//! The client engine: every client-side rule of SPEC section 3, sans-IO.
//!
//! Inputs are calls that take the current time in milliseconds (`now`): commands such as
//! [`ClientEngine::ack_message_read`], and connection inputs ([`ClientEngine::handle_connected`],
//! [`ClientEngine::handle_frame`], [`ClientEngine::handle_disconnected`],
//! [`ClientEngine::handle_timeout`]). Outputs are pulled: [`ClientEngine::poll_transmit`] (frames
//! to send), [`ClientEngine::poll_event`] (what the app hears) and
//! [`ClientEngine::poll_timeout`] (when to call `handle_timeout`). The engine never touches a
//! socket, a thread or the clock, so tests drive it to the millisecond and any transport fits.
//!
//! State lives in memory and is written through a [`ClientStore`] once per input, so a restart
//! (re-[`open`](ClientEngine::open) on the same store) finds everything, the outbox included.

use std::collections::VecDeque;
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
}

impl EngineConfig {
    pub fn new(user: impl Into<UserId>, device: impl Into<DeviceId>, options: ChatOptions) -> Self {
        EngineConfig { user: user.into(), device: device.into(), options, keepalive_ms: 20_000, idle_timeout_ms: 60_000 }
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
    /// The server closed the connection for a protocol error.
    ProtocolError(ChatError),
    MessagesReceived(Vec<ChatMessage>),
    /// Sender side: delivery acks came back.
    MessagesDelivered(Vec<ChatMessage>),
    /// Sender side: read acks (or a conversation ack) came back.
    MessagesRead(Vec<ChatMessage>),
    GroupMessageRead(Vec<GroupReadAck>),
    /// 1:1 conversation ack: `from` read the conversation with `to`. Fires on the peer's devices
    /// and on the acker's other devices.
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
    Group,
}

/// Everything the engine tracks for one (user, device).
pub struct ClientEngine<S: ClientStore> {
    cfg: EngineConfig,
    /// `cfg.user`, shared: compared against every event's parties.
    me: std::sync::Arc<str>,
    store: S,
    meta: Meta,
    messages: HashMap<MsgId, ChatMessage>,
    pending: HashMap<String, ChatMessage>,
    conversations: ConvMap<Conversation>,
    /// Message ids per conversation, ascending: lets a partial watermark count what stays unread.
    conv_ids: ConvMap<Vec<MsgId>>,
    outbox: VecDeque<ClientFrame>,
    queries: HashMap<ReqId, Query>,
    link: Link,
    /// The server refused the last login (bad token): do not retry with it.
    login_refused: bool,
    token: Option<String>,
    /// Delivery acks made while replaying the backlog; sent at SyncDone unless another device
    /// of this user turned out to have sent them already.
    held_delivery_acks: Vec<(ReqId, MsgId)>,
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
    dirty_convs: hashbrown::HashSet<ConversationKey, foldhash::fast::RandomState>,
    outbox_put: Vec<ClientFrame>,
    outbox_delete: Vec<ReqId>,
    received: Vec<MsgId>,
    delivered: Vec<MsgId>,
    read: Vec<MsgId>,
    group_acks: Vec<GroupReadAck>,
    unread_changed: Vec<ConversationKey>,
}

fn insert_sorted(v: &mut Vec<MsgId>, id: MsgId) {
    match v.last() {
        Some(&last) if last < id => v.push(id),
        None => v.push(id),
        _ => {
            if let Err(pos) = v.binary_search(&id) {
                v.insert(pos, id);
            }
        }
    }
}

impl<S: ClientStore> ClientEngine<S> {
    /// Loads the state of `cfg.user` on this device from `store`.
    pub fn open(cfg: EngineConfig, mut store: S) -> Result<Self, StoreError> {
        let snap = store.load()?;
        let mut e = ClientEngine {
            me: cfg.user.as_str().into(),
            cfg,
            store,
            meta: snap.meta,
            messages: HashMap::with_capacity_and_hasher(snap.messages.len(), Default::default()),
            pending: HashMap::default(),
            conversations: ConvMap::default(),
            conv_ids: ConvMap::default(),
            outbox: snap.outbox.into(),
            queries: HashMap::default(),
            link: Link::Down,
            login_refused: false,
            token: None,
            held_delivery_acks: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            last_rx: 0,
            last_tx: 0,
            ping_nonce: 0,
            dirty_meta: false,
            dirty_messages: HashSet::default(),
            dirty_pending: HashSet::default(),
            deleted_pending: Vec::new(),
            dirty_convs: Default::default(),
            outbox_put: Vec::new(),
            outbox_delete: Vec::new(),
            received: Vec::new(),
            delivered: Vec::new(),
            read: Vec::new(),
            group_acks: Vec::new(),
            unread_changed: Vec::new(),
        };
        for c in snap.conversations {
            e.conversations.insert(c.key.clone(), c);
        }
        for m in snap.messages {
            insert_sorted(e.conv_ids.entry(m.conversation()).or_default(), m.id);
            e.messages.insert(m.id, m);
        }
        for m in snap.pending {
            e.pending.insert(m.client_id.clone(), m);
        }
        Ok(e)
    }

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
    /// The server refused the last login; reconnecting with the same token is pointless.
    pub fn is_login_refused(&self) -> bool {
        self.login_refused
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

    // ----- queries on local state -----

    /// A message by its id as users see it (server id, or client id before acceptance).
    pub fn message(&self, msg_id: &str) -> Option<ChatMessage> {
        if let Ok(id) = msg_id.parse::<MsgId>() {
            if let Some(m) = self.messages.get(&id) {
                return Some(self.view(m));
            }
        }
        self.pending.get(msg_id).map(|m| self.view(m))
    }

    pub fn message_by_id(&self, id: MsgId) -> Option<ChatMessage> {
        self.messages.get(&id).map(|m| self.view(m))
    }

    /// All held messages of a conversation, oldest first.
    pub fn conversation_messages(&self, key: &ConversationKey) -> Vec<ChatMessage> {
        self.conv_ids
            .get(key)
            .map(|ids| ids.iter().filter_map(|id| self.messages.get(id)).map(|m| self.view(m)).collect())
            .unwrap_or_default()
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
        let mut v = m.clone();
        v.unread = unread;
        v.receiver_read = receiver_read;
        v
    }

    /// `(unread, receiver_read)` of [`Self::view`], without copying the message.
    fn resolved_flags(&self, m: &ChatMessage) -> (bool, bool) {
        if m.id != 0 {
            if let Some(c) = self.conversations.get(&m.conversation_ref()) {
                return match m.direction {
                    MessageDirection::Receive => (
                        m.unread && m.id > c.read_up_to,
                        m.chat_type == ChatType::Chat && rules::read_ack_covered(m.receiver_read, c.ack_sent_up_to, m.id)
                            || m.receiver_read,
                    ),
                    MessageDirection::Send => (m.unread, m.receiver_read || (m.chat_type == ChatType::Chat && m.id <= c.peer_read_up_to)),
                };
            }
        }
        (m.unread, m.receiver_read)
    }

    /// The newest message this user received in a conversation (0: none held).
    fn newest_received(&self, key: &ConversationKey) -> MsgId {
        let ids = self.conv_ids.get(key).map(Vec::as_slice).unwrap_or(&[]);
        ids.iter().rev().copied().find(|id| self.messages.get(id).is_some_and(|m| m.direction == MessageDirection::Receive)).unwrap_or(0)
    }

    fn is_unread(&self, m: &ChatMessage) -> bool {
        m.direction == MessageDirection::Receive
            && m.unread
            && self.conversations.get(&m.conversation_ref()).is_none_or(|c| m.id > c.read_up_to)
    }

    // ----- commands -----

    fn next_req(&mut self) -> ReqId {
        self.meta.next_req += 1;
        self.dirty_meta = true;
        self.meta.next_req
    }

    /// Queues a request that must survive restarts and disconnects; sends it now if online.
    fn enqueue(&mut self, frame: ClientFrame) {
        self.outbox.push_back(frame.clone());
        self.outbox_put.push(frame.clone());
        if self.link != Link::Down {
            self.transmit.push_back(frame);
        }
    }

    /// Sends a text message. Returns the request id and the message (status `Pending`); the
    /// answer comes as `RequestCompleted { result: Ok(Completion::Sent(..)) }`. Works offline:
    /// the message waits in the outbox.
    pub fn send_message(
        &mut self,
        now: u64,
        to: &str,
        chat_type: ChatType,
        content: &str,
        need_group_ack: bool,
    ) -> ChatResult<(ReqId, ChatMessage)> {
        validate_id("to", to)?;
        rules::check_content(content)?;
        if chat_type == ChatType::Chat && to == self.cfg.user {
            return Err(ChatError::invalid_param("cannot send a 1:1 message to yourself"));
        }
        self.meta.next_client_msg += 1;
        let client_id = format!("{}-{}", self.cfg.device, self.meta.next_client_msg);
        let req = self.next_req();
        let msg = ChatMessage {
            id: 0,
            client_id: client_id.clone(),
            from: self.cfg.user.clone(),
            to: to.to_string(),
            chat_type,
            direction: MessageDirection::Send,
            content: content.to_string(),
            timestamp: 0,
            require_delivery_ack: chat_type == ChatType::Chat && self.cfg.options.require_delivery_ack,
            need_group_ack: chat_type == ChatType::GroupChat && need_group_ack,
            status: SendStatus::Pending,
            delivered: false,
            receiver_read: false,
            unread: false,
            group_ack_count: 0,
            group_ack_sent: false,
        };
        self.enqueue(ClientFrame::Send {
            req,
            client_id: client_id.clone(),
            to: msg.to.clone(),
            chat_type,
            content: msg.content.clone(),
            require_delivery_ack: msg.require_delivery_ack,
            need_group_ack: msg.need_group_ack,
        });
        self.pending.insert(client_id.clone(), msg.clone());
        self.dirty_pending.insert(client_id);
        self.finish(now, true);
        Ok((req, msg))
    }

    fn held_message(&self, msg_id: MsgId) -> ChatResult<&ChatMessage> {
        self.messages.get(&msg_id).ok_or_else(|| ChatError::invalid_message(format!("unknown message {msg_id}")))
    }

    fn check_read_acks_enabled(&self) -> ChatResult<()> {
        if !self.cfg.options.require_read_ack {
            return Err(ChatError::new(ErrorCode::FeatureNotEnabled, "read acks are off (requireReadAck is false): nothing was sent"));
        }
        Ok(())
    }

    /// Sends the read ack of a received 1:1 message (and marks it read here).
    /// `Ok(None)`: already acked by this user (from any device), nothing sent.
    pub fn ack_message_read(&mut self, now: u64, msg_id: MsgId) -> ChatResult<Option<ReqId>> {
        self.check_read_acks_enabled()?;
        let m = self.held_message(msg_id)?;
        rules::check_read_ack(MessageFacts::from(m), &self.cfg.user)?;
        if self.view(m).receiver_read {
            self.mark_read_local(msg_id);
            self.finish(now, true);
            return Ok(None);
        }
        let req = self.next_req();
        self.update_message(msg_id, |m| m.receiver_read = true);
        self.mark_read_local(msg_id);
        self.enqueue(ClientFrame::ReadAck { req, msg_id });
        self.finish(now, true);
        Ok(Some(req))
    }

    /// Conversation ack: every message of the conversation counts as read. 1:1: the peer and
    /// this user's other devices are told; group: only this user's devices.
    /// `Ok(None)`: nothing new to ack, nothing sent.
    pub fn ack_conversation_read(&mut self, now: u64, conversation: &str) -> ChatResult<Option<ReqId>> {
        self.check_read_acks_enabled()?;
        let key = self
            .resolve_conversation(conversation)
            .ok_or_else(|| ChatError::invalid_param(format!("unknown conversation {conversation}")))?;
        if key.chat_type == ChatType::ChatRoom {
            return Err(ChatError::wrong_type("chat rooms take no conversation acks"));
        }
        let c = &self.conversations[&key];
        let marks = ConversationMarks {
            read_up_to: c.read_up_to,
            receipt_up_to: c.ack_sent_up_to,
            newest: c.latest,
            newest_received: self.newest_received(&key),
        };
        // Unread messages the server counts that this device does not hold are above every mark
        // too: the server's newest received message is newer than anything held here.
        let needed = rules::conversation_ack_up_to(key.chat_type, marks).is_some() || c.unread() != 0;
        if !needed {
            return Ok(None);
        }
        let latest = c.latest;
        let req = self.next_req();
        self.apply_read_up_to(&key, latest);
        let c = self.conv_mut(key.as_ref());
        c.ack_sent_up_to = c.ack_sent_up_to.max(latest);
        self.clear_remote_unread(&key);
        self.enqueue(ClientFrame::ConversationAck { req, chat_type: key.chat_type, conversation: key.id.clone() });
        self.finish(now, true);
        Ok(Some(req))
    }

    /// Sends the group read ack of a received group message, with an optional ext for the
    /// sender. `Ok(None)`: this user already acked it, nothing sent.
    pub fn ack_group_message_read(&mut self, now: u64, msg_id: MsgId, ext: Option<&str>) -> ChatResult<Option<ReqId>> {
        self.check_read_acks_enabled()?;
        // The server's order: ext, the message, already acked, asked for acks. (The policy,
        // membership and validity are the server's facts: it alone checks them.)
        rules::check_ext(ext)?;
        let m = self.held_message(msg_id)?;
        rules::check_group_ack_target(MessageFacts::from(m), &self.cfg.user)?;
        if m.group_ack_sent {
            return Ok(None);
        }
        rules::check_group_ack_asked(MessageFacts::from(m))?;
        let req = self.next_req();
        self.update_message(msg_id, |m| m.group_ack_sent = true);
        self.mark_read_local(msg_id);
        self.enqueue(ClientFrame::GroupAck { req, msg_id, ext: ext.map(str::to_string) });
        self.finish(now, true);
        Ok(Some(req))
    }

    /// Asks for one page of a group message's read acks (needs a connection: 300 otherwise).
    pub fn fetch_group_read_acks(&mut self, now: u64, msg_id: MsgId, page_size: u32, start_ack_id: Option<AckId>) -> ChatResult<ReqId> {
        rules::check_page_size(page_size)?;
        self.query(now, Query::FetchGroupAcks, |req| ClientFrame::FetchGroupAcks { req, msg_id, page_size, start_ack_id })
    }

    fn query(&mut self, now: u64, kind: Query, frame: impl FnOnce(ReqId) -> ClientFrame) -> ChatResult<ReqId> {
        if self.link == Link::Down {
            return Err(ChatError::new(ErrorCode::ServerNotReachable, "not connected to the server"));
        }
        let req = self.next_req();
        self.queries.insert(req, kind);
        self.transmit.push_back(frame(req));
        self.finish(now, false);
        Ok(req)
    }

    /// Marks one received message read on this user's devices (no receipt to anybody).
    pub fn mark_message_read(&mut self, now: u64, msg_id: MsgId) -> ChatResult<Option<ReqId>> {
        let m = self.messages.get(&msg_id).ok_or_else(|| ChatError::invalid_message(format!("unknown message {msg_id}")))?;
        if m.direction == MessageDirection::Send {
            return Err(ChatError::wrong_type("a message you sent has no read state of yours"));
        }
        if !self.is_unread(m) {
            return Ok(None);
        }
        let key = m.conversation();
        let req = self.next_req();
        self.mark_read_local(msg_id);
        self.enqueue(ClientFrame::MarkRead { req, chat_type: key.chat_type, conversation: key.id, msg_id: Some(msg_id) });
        self.finish(now, true);
        Ok(Some(req))
    }

    /// Marks a whole conversation read on this user's devices (no receipt to anybody).
    pub fn mark_all_messages_read(&mut self, now: u64, key: &ConversationKey) -> ChatResult<Option<ReqId>> {
        let c = self.conversations.get(key).ok_or_else(|| ChatError::invalid_param(format!("unknown conversation {}", key.id)))?;
        if c.unread() == 0 {
            return Ok(None);
        }
        let latest = c.latest;
        let req = self.next_req();
        self.apply_read_up_to(key, latest);
        self.clear_remote_unread(key);
        self.enqueue(ClientFrame::MarkRead { req, chat_type: key.chat_type, conversation: key.id.clone(), msg_id: None });
        self.finish(now, true);
        Ok(Some(req))
    }

    /// Creates a group (or chat room) owned by this user (needs a connection).
    pub fn create_group(&mut self, now: u64, name: &str, members: &[UserId], chat_room: bool) -> ChatResult<ReqId> {
        for m in members {
            validate_id("member", m)?;
        }
        let (name, members) = (name.to_string(), members.to_vec());
        self.query(now, Query::Group, |req| ClientFrame::CreateGroup { req, name, members, chat_room })
    }

    pub fn add_group_members(&mut self, now: u64, group: &str, members: &[UserId]) -> ChatResult<ReqId> {
        validate_id("group", group)?;
        let (group, members) = (group.to_string(), members.to_vec());
        self.query(now, Query::Group, |req| ClientFrame::AddMembers { req, group, members })
    }

    pub fn remove_group_members(&mut self, now: u64, group: &str, members: &[UserId]) -> ChatResult<ReqId> {
        validate_id("group", group)?;
        let (group, members) = (group.to_string(), members.to_vec());
        self.query(now, Query::Group, |req| ClientFrame::RemoveMembers { req, group, members })
    }

    pub fn set_group_role(&mut self, now: u64, group: &str, member: &str, role: GroupRole) -> ChatResult<ReqId> {
        validate_id("group", group)?;
        let (group, member) = (group.to_string(), member.to_string());
        self.query(now, Query::Group, |req| ClientFrame::SetRole { req, group, member, role })
    }

    // ----- connection inputs -----

    /// A transport connection is up: logs in with `token` and flushes the outbox in order.
    pub fn handle_connected(&mut self, now: u64, token: &str) {
        self.token = Some(token.to_string());
        self.link = Link::Syncing;
        self.login_refused = false;
        self.transmit.clear();
        self.held_delivery_acks.clear();
        self.last_rx = now;
        self.transmit.push_back(ClientFrame::Login {
            v: PROTOCOL_VERSION,
            user: self.cfg.user.clone(),
            device: self.cfg.device.clone(),
            token: token.to_string(),
            since: self.meta.cursor,
        });
        // Unconfirmed requests go again; the server makes each idempotent.
        self.transmit.extend(self.outbox.iter().cloned());
        self.finish(now, false);
    }

    /// The transport connection is gone. Queries in flight fail with 300; outbox entries stay.
    pub fn handle_disconnected(&mut self, now: u64) {
        if self.link == Link::Down {
            return;
        }
        self.link = Link::Down;
        self.transmit.clear();
        self.held_delivery_acks.clear();
        let mut failed: Vec<ReqId> = self.queries.drain().map(|(r, _)| r).collect();
        failed.sort_unstable();
        for req in failed {
            self.events.push_back(ClientEvent::RequestCompleted {
                req,
                result: Err(ChatError::new(ErrorCode::ServerNotReachable, "connection lost before the answer")),
            });
        }
        self.events.push_back(ClientEvent::Disconnected);
        self.finish(now, false);
    }

    /// Keep-alive: call at [`poll_timeout`](Self::poll_timeout). Returns false when the
    /// connection should be considered dead (nothing received for the idle timeout).
    pub fn handle_timeout(&mut self, now: u64) -> bool {
        if self.link == Link::Down {
            return true;
        }
        if now.saturating_sub(self.last_rx) >= self.cfg.idle_timeout_ms {
            return false;
        }
        if now.saturating_sub(self.last_tx) >= self.cfg.keepalive_ms {
            self.ping_nonce += 1;
            self.transmit.push_back(ClientFrame::Ping { nonce: self.ping_nonce });
        }
        true
    }

    /// When to call `handle_timeout` next (ms, same clock as `now`), if connected.
    pub fn poll_timeout(&self) -> Option<u64> {
        (self.link != Link::Down).then(|| (self.last_tx + self.cfg.keepalive_ms).min(self.last_rx + self.cfg.idle_timeout_ms))
    }

    /// Next frame to send, in order.
    pub fn poll_transmit(&mut self, now: u64) -> Option<ClientFrame> {
        let f = self.transmit.pop_front()?;
        self.last_tx = now;
        Some(f)
    }

    /// Next event for the app, in order.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Decodes a frame body and handles it (the runtime's path from the socket).
    pub fn handle_frame_bytes(&mut self, now: u64, body: &[u8]) -> Result<(), crate::codec::FrameError> {
        let f = crate::codec::decode_body::<ServerFrame>(body)?;
        self.handle_frame(now, f);
        Ok(())
    }

    /// Handles one frame from the server.
    pub fn handle_frame(&mut self, now: u64, frame: ServerFrame) {
        self.last_rx = now;
        match frame {
            ServerFrame::LoginOk { .. } => {}
            ServerFrame::LoginFailed { error } => {
                self.link = Link::Down;
                self.login_refused = true;
                self.transmit.clear();
                self.events.push_back(ClientEvent::LoginFailed(error));
            }
            ServerFrame::Backlog { events } => {
                for e in events {
                    self.apply_seq_event(e);
                }
            }
            ServerFrame::SyncDone { conversations, .. } => self.sync_done(conversations),
            ServerFrame::Event { event } => self.apply_seq_event(event),
            ServerFrame::Result { req, ok, err } => self.handle_result(req, ok, err),
            ServerFrame::Error { error } => self.events.push_back(ClientEvent::ProtocolError(error)),
            ServerFrame::Pong { .. } => {}
        }
        self.finish(now, false);
    }

    fn sync_done(&mut self, server: Vec<ConversationState>) {
        // Conversations with read changes still in the outbox keep their local count: the
        // server has not seen those changes yet.
        let mut busy: HashSet<ConversationKey> = HashSet::default();
        for f in &self.outbox {
            match f {
                ClientFrame::ConversationAck { chat_type, conversation, .. } | ClientFrame::MarkRead { chat_type, conversation, .. } => {
                    busy.insert(ConversationKey::new(*chat_type, conversation));
                }
                ClientFrame::ReadAck { msg_id, .. } | ClientFrame::GroupAck { msg_id, .. } => {
                    if let Some(m) = self.messages.get(msg_id) {
                        busy.insert(m.conversation());
                    }
                }
                _ => {}
            }
        }
        let server: HashMap<ConversationKey, u32> =
            server.into_iter().map(|s| (ConversationKey::new(s.chat_type, s.id), s.unread)).collect();
        let keys: Vec<ConversationKey> =
            self.conversations.keys().chain(server.keys()).cloned().collect::<HashSet<_>>().into_iter().collect();
        for key in keys {
            if busy.contains(&key) {
                continue;
            }
            let want = server.get(&key).copied().unwrap_or(0);
            let c = self.conv_mut(key.as_ref());
            let remote = want.saturating_sub(c.local_unread);
            if c.remote_unread != remote {
                c.remote_unread = remote;
                self.unread_changed.push(key);
            }
        }
        // Delivery acks held during the replay: drop those another device already sent.
        for (req, msg_id) in std::mem::take(&mut self.held_delivery_acks) {
            let Some(pos) = self.outbox.iter().position(|f| f.req() == Some(req)) else { continue };
            if self.messages.get(&msg_id).is_some_and(|m| m.delivered) {
                self.outbox.remove(pos);
                self.outbox_delete.push(req);
            } else {
                self.transmit.push_back(self.outbox[pos].clone());
                self.update_message(msg_id, |m| m.delivered = true);
            }
        }
        self.link = Link::Up;
        self.events.push_back(ClientEvent::Connected);
    }

    fn handle_result(&mut self, req: ReqId, ok: Option<Response>, err: Option<ChatError>) {
        if let Some(kind) = self.queries.remove(&req) {
            let result = match (ok, err, kind) {
                (_, Some(e), _) => Err(e),
                (Some(Response::GroupAcks { page, .. }), None, Query::FetchGroupAcks) => Ok(Completion::GroupAcks(page)),
                (Some(Response::GroupCreated { group }), None, Query::Group) => Ok(Completion::GroupCreated(group)),
                (Some(Response::Done), None, Query::Group) => Ok(Completion::Done),
                _ => Err(ChatError::general("unexpected answer from the server")),
            };
            self.events.push_back(ClientEvent::RequestCompleted { req, result });
            return;
        }
        let Some(pos) = self.outbox.iter().position(|f| f.req() == Some(req)) else {
            return; // an answer to a request confirmed before (resent after a reconnect)
        };
        let frame = self.outbox.remove(pos).expect("position is in range");
        self.outbox_delete.push(req);
        let result = match (frame, ok, err) {
            (ClientFrame::Send { client_id, .. }, Some(Response::Sent { msg_id, timestamp, need_group_ack, .. }), None) => {
                Ok(Completion::Sent(self.promote_sent(&client_id, msg_id, timestamp, need_group_ack)))
            }
            (ClientFrame::Send { client_id, .. }, _, e) => {
                if let Some(m) = self.pending.get_mut(&client_id) {
                    m.status = SendStatus::Failed;
                    self.dirty_pending.insert(client_id);
                }
                Err(e.unwrap_or_else(|| ChatError::general("unexpected answer from the server")))
            }
            (frame, _, Some(e)) => {
                self.rollback_refused(&frame);
                Err(e)
            }
            (_, Some(_), None) => Ok(Completion::Done),
            (_, None, None) => Err(ChatError::general("empty answer from the server")),
        };
        self.events.push_back(ClientEvent::RequestCompleted { req, result });
    }

    /// A refused ack reached nobody: clear its "already sent" flag so the state says so (the
    /// local read state stays: the user did read the message).
    fn rollback_refused(&mut self, frame: &ClientFrame) {
        match *frame {
            ClientFrame::DeliveryAck { msg_id, .. } => self.update_message(msg_id, |m| m.delivered = false),
            ClientFrame::ReadAck { msg_id, .. } => self.update_message(msg_id, |m| m.receiver_read = false),
            ClientFrame::GroupAck { msg_id, .. } => self.update_message(msg_id, |m| m.group_ack_sent = false),
            _ => {}
        }
    }

    /// Turns a pending sent message into an accepted one (also when its `Message` event from
    /// the server came first).
    fn promote_sent(&mut self, client_id: &str, msg_id: MsgId, timestamp: u64, need_group_ack: bool) -> ChatMessage {
        if let Some(mut m) = self.pending.remove(client_id) {
            self.deleted_pending.push(client_id.to_string());
            self.dirty_pending.remove(client_id);
            if !self.messages.contains_key(&msg_id) {
                m.id = msg_id;
                m.timestamp = timestamp;
                m.status = SendStatus::Sent;
                m.need_group_ack = need_group_ack;
                self.insert_message(m);
            }
        }
        self.messages.get(&msg_id).map(|m| self.view(m)).unwrap_or_else(|| ChatMessage {
            id: msg_id,
            client_id: client_id.to_string(),
            from: self.cfg.user.clone(),
            to: String::new(),
            chat_type: ChatType::Chat,
            direction: MessageDirection::Send,
            content: String::new(),
            timestamp,
            require_delivery_ack: false,
            need_group_ack: false,
            status: SendStatus::Sent,
            delivered: false,
            receiver_read: false,
            unread: false,
            group_ack_count: 0,
            group_ack_sent: false,
        })
    }

    fn insert_message(&mut self, m: ChatMessage) {
        let id = m.id;
        let unread = self.is_unread(&m);
        let key = m.conversation_ref();
        match self.conv_ids.get_mut(&key) {
            Some(ids) => insert_sorted(ids, id),
            None => {
                self.conv_ids.insert(key.to_key(), vec![id]);
            }
        }
        let c = self.conv_mut(key);
        c.latest = c.latest.max(id);
        if unread {
            c.local_unread += 1;
            // The server counted this one while we did not hold it yet.
            c.remote_unread = c.remote_unread.saturating_sub(1);
            self.unread_changed.push(key.to_key());
        }
        self.messages.insert(id, m);
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

    fn update_message(&mut self, id: MsgId, f: impl FnOnce(&mut ChatMessage)) {
        if let Some(m) = self.messages.get_mut(&id) {
            f(m);
            self.dirty_messages.insert(id);
        }
    }

    /// Marks one received message read here (count -1 if it was unread).
    fn mark_read_local(&mut self, id: MsgId) {
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
        let remaining = if up_to >= c.latest {
            0
        } else {
            let ids = self.conv_ids.get(key).map(Vec::as_slice).unwrap_or(&[]);
            let start = ids.partition_point(|&id| id <= up_to);
            ids[start..]
                .iter()
                .filter(|id| self.messages.get(id).is_some_and(|m| m.direction == MessageDirection::Receive && m.unread))
                .count() as u32
        };
        let c = self.conv_mut(key.as_ref());
        c.read_up_to = up_to;
        c.local_unread = remaining;
        if c.unread() != before {
            self.unread_changed.push(key.clone());
        }
    }

    fn apply_seq_event(&mut self, e: SeqEvent) {
        if e.seq <= self.meta.cursor {
            return; // already applied (replay overlap)
        }
        self.meta.cursor = e.seq;
        self.dirty_meta = true;
        self.apply_event(Arc::unwrap_or_clone(e.event));
    }

    fn apply_event(&mut self, event: ServerEvent) {
        // Shared, not copied: this runs for every event.
        let me = self.me.clone();
        match event {
            ServerEvent::Message { msg } => self.on_message(Arc::unwrap_or_clone(msg)),
            ServerEvent::Delivered { msg_id, from, by, .. } => {
                if by == *me {
                    // Our delivery ack (from any device) went out: never send it again.
                    self.update_message(msg_id, |m| m.delivered = true);
                    self.confirm_pending_ack(|f| matches!(f, ClientFrame::DeliveryAck { msg_id: m, .. } if *m == msg_id));
                } else if from == *me && self.messages.get(&msg_id).is_some_and(|m| !m.delivered) {
                    self.update_message(msg_id, |m| m.delivered = true);
                    self.delivered.push(msg_id);
                }
            }
            ServerEvent::Read { msg_id, from, by, .. } => {
                if by == *me {
                    self.update_message(msg_id, |m| m.receiver_read = true);
                    self.mark_read_local(msg_id);
                    self.confirm_pending_ack(|f| matches!(f, ClientFrame::ReadAck { msg_id: m, .. } if *m == msg_id));
                } else if from == *me && self.messages.get(&msg_id).is_some_and(|m| !self.resolved_flags(m).1) {
                    self.update_message(msg_id, |m| m.receiver_read = true);
                    self.read.push(msg_id);
                }
            }
            ServerEvent::ConversationRead { chat_type, from, to, up_to, device, .. } => {
                if from == *me {
                    let key = ConversationKey::new(chat_type, &to);
                    self.apply_read_up_to(&key, up_to);
                    let c = self.conv_mut(key.as_ref());
                    c.ack_sent_up_to = c.ack_sent_up_to.max(up_to);
                    if c.remote_unread != 0 {
                        c.remote_unread = 0;
                        self.unread_changed.push(key);
                    }
                    if chat_type == ChatType::Chat && device != self.cfg.device {
                        self.events.push_back(ClientEvent::ConversationRead { from, to });
                    }
                } else if chat_type == ChatType::Chat && to == *me {
                    let key = ConversationKey::new(ChatType::Chat, &from);
                    let c = self.conv_mut(key.as_ref());
                    c.peer_read_up_to = c.peer_read_up_to.max(up_to);
                    self.events.push_back(ClientEvent::ConversationRead { from, to });
                }
            }
            ServerEvent::GroupRead { sender, ack, .. } => {
                if ack.from == *me {
                    self.update_message(ack.msg_id, |m| m.group_ack_sent = true);
                    self.mark_read_local(ack.msg_id);
                    let id = ack.msg_id;
                    self.confirm_pending_ack(|f| matches!(f, ClientFrame::GroupAck { msg_id: m, .. } if *m == id));
                }
                if ack.from != *me || sender == *me {
                    let count = ack.count;
                    self.update_message(ack.msg_id, |m| m.group_ack_count = m.group_ack_count.max(count));
                    if ack.from != *me {
                        self.group_acks.push(ack);
                    }
                }
            }
            ServerEvent::ReadState { chat_type, conversation, msg_id, up_to } => match msg_id {
                Some(id) => self.mark_read_local(id),
                None => {
                    let key = ConversationKey::new(chat_type, &conversation);
                    self.apply_read_up_to(&key, up_to);
                    let c = self.conv_mut(key.as_ref());
                    if c.remote_unread != 0 {
                        c.remote_unread = 0;
                        self.unread_changed.push(key);
                    }
                }
            },
            ServerEvent::Membership { group, role, .. } => {
                self.events.push_back(ClientEvent::MembershipChanged { group, role });
            }
        }
    }

    /// The server's own event says this user's ack is in effect (sent by this device, whose
    /// answer was lost with a connection, or by another device): the outbox entry is done. Its
    /// resend, if any, may now be refused (the message may have expired meanwhile); that late
    /// answer no longer matches an outbox entry and cannot undo the ack.
    fn confirm_pending_ack(&mut self, is_it: impl Fn(&ClientFrame) -> bool) {
        while let Some(pos) = self.outbox.iter().position(&is_it) {
            let frame = self.outbox.remove(pos).expect("position is in range");
            let req = frame.req().expect("acks carry a req");
            self.outbox_delete.push(req);
            self.held_delivery_acks.retain(|(r, _)| *r != req);
            self.events.push_back(ClientEvent::RequestCompleted { req, result: Ok(Completion::Done) });
        }
    }

    fn on_message(&mut self, msg: WireMessage) {
        if msg.id == 0 {
            // Server ids start at 1; 0 means "no server id yet" here (a pending message), so
            // such a message could be neither acked nor counted consistently.
            log::warn!("ignoring a message without a server id from {}", msg.from);
            return;
        }
        if self.messages.contains_key(&msg.id) {
            return;
        }
        let mine = msg.from == self.cfg.user;
        if mine {
            // Sent from this device (answer not seen yet) or from another device of ours.
            if self.pending.contains_key(&msg.client_id) {
                self.promote_sent(&msg.client_id, msg.id, msg.timestamp, msg.need_group_ack);
                return;
            }
        }
        let wants_delivery_ack = !mine && msg.chat_type == ChatType::Chat && msg.require_delivery_ack;
        let id = msg.id;
        let m = ChatMessage {
            id,
            client_id: msg.client_id,
            from: msg.from,
            to: msg.to,
            chat_type: msg.chat_type,
            direction: if mine { MessageDirection::Send } else { MessageDirection::Receive },
            content: msg.content,
            timestamp: msg.timestamp,
            require_delivery_ack: msg.require_delivery_ack,
            need_group_ack: msg.need_group_ack,
            status: SendStatus::Sent,
            delivered: false,
            receiver_read: false,
            unread: !mine,
            group_ack_count: 0,
            group_ack_sent: false,
        };
        self.insert_message(m);
        if !mine {
            self.received.push(id);
        }
        if wants_delivery_ack {
            // Rule 1: the SDK acks delivery by itself, backlog included. During the replay the
            // ack is held (but already in the outbox) until we know no other device sent it.
            let req = self.next_req();
            let frame = ClientFrame::DeliveryAck { req, msg_id: id };
            self.outbox.push_back(frame.clone());
            self.outbox_put.push(frame.clone());
            match self.link {
                Link::Up => {
                    self.transmit.push_back(frame);
                    self.update_message(id, |m| m.delivered = true);
                }
                Link::Syncing => self.held_delivery_acks.push((req, id)),
                Link::Down => self.update_message(id, |m| m.delivered = true),
            }
        }
    }

    /// Ends an input: emits the batched events and writes the changes in one transaction.
    fn finish(&mut self, _now: u64, durable: bool) {
        let lists =
            [(std::mem::take(&mut self.received), 0u8), (std::mem::take(&mut self.delivered), 1), (std::mem::take(&mut self.read), 2)];
        for (ids, kind) in lists {
            if ids.is_empty() {
                continue;
            }
            let msgs: Vec<ChatMessage> = ids.iter().filter_map(|id| self.messages.get(id)).map(|m| self.view(m)).collect();
            self.events.push_back(match kind {
                0 => ClientEvent::MessagesReceived(msgs),
                1 => ClientEvent::MessagesDelivered(msgs),
                _ => ClientEvent::MessagesRead(msgs),
            });
        }
        if !self.group_acks.is_empty() {
            self.events.push_back(ClientEvent::GroupMessageRead(std::mem::take(&mut self.group_acks)));
        }
        let mut seen = HashSet::default();
        for key in std::mem::take(&mut self.unread_changed) {
            if seen.insert(key.clone()) {
                let unread = self.unread_count(&key);
                self.events.push_back(ClientEvent::UnreadCountChanged { conversation: key, unread });
            }
        }
        if !self.store.persists() {
            self.dirty_meta = false;
            self.dirty_messages.clear();
            self.dirty_pending.clear();
            self.deleted_pending.clear();
            self.dirty_convs.clear();
            self.outbox_put.clear();
            self.outbox_delete.clear();
            return;
        }
        let batch = StoreBatch {
            meta: std::mem::take(&mut self.dirty_meta).then_some(self.meta),
            messages: self.dirty_messages.drain().filter_map(|id| self.messages.get(&id).cloned()).collect(),
            pending_put: self.dirty_pending.drain().filter_map(|k| self.pending.get(&k).cloned()).collect(),
            pending_delete: std::mem::take(&mut self.deleted_pending),
            conversations: self.dirty_convs.drain().filter_map(|k| self.conversations.get(&k).cloned()).collect(),
            outbox_put: std::mem::take(&mut self.outbox_put),
            outbox_delete: std::mem::take(&mut self.outbox_delete),
            durable,
        };
        if !batch.is_empty() {
            if let Err(e) = self.store.commit(&batch) {
                log::error!("client store commit failed: {e}");
                self.events.push_back(ClientEvent::StoreFailed(e.to_string()));
            }
        }
    }
}
