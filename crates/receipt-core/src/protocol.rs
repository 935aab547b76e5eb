//! Every frame the client and the server exchange. See `docs/protocol.md` for the flows.
//!
//! Frames are JSON objects tagged by `"t"`, framed by [`crate::codec`]. A connection starts with
//! [`ClientFrame::Login`]; the server answers [`ServerFrame::LoginOk`] (or `LoginFailed` and
//! closes), replays the user's events after the device's cursor in [`ServerFrame::Backlog`]
//! frames, sends the unread counts in [`ServerFrame::SyncConversations`] pages, ends the replay
//! with [`ServerFrame::SyncDone`] (the last page) and then streams live
//! [`ServerFrame::Event`]s. Every request carries a `req` that its [`ServerFrame::Result`] echoes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ChatError;
use crate::types::*;

/// The hand-written decoders of the tagged frames (a fast path for tag-first objects).
mod decode;

/// Version of this protocol, sent in `Login` and `LoginOk`. 2: the client applies a full state
/// resync ([`ServerFrame::Resync`], `SyncDone { resync: true }`) and reports its cursor
/// ([`ClientFrame::SyncCursor`]). 3: the client takes [`ServerEvent::GroupAckCount`] (the
/// coalesced read count of a large group's message; older clients are never sent it), and the
/// ack frames carry `private` (private reading): a version-2 server would ignore that field and
/// tell the sender, so it refuses a version-3 login (110) and a private ack can never reach it.
pub const PROTOCOL_VERSION: u32 = 3;
/// Oldest version that is sent [`ServerEvent::GroupAckCount`] (live or replayed).
pub const GROUP_ACK_COUNT_VERSION: u32 = 3;
/// Oldest version a server still accepts. A version-1 client is never sent `Resync` frames: a
/// login of it below the log's base is replayed what the log retains, as before resyncs existed
/// (docs/protocol.md, "Resync").
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", remote = "Self")]
pub enum ClientFrame {
    /// First frame of a connection. `since` is the last event seq this device applied (0: none).
    Login {
        v: u32,
        user: UserId,
        device: DeviceId,
        token: String,
        since: Seq,
    },
    /// Send a message. `client_id` makes a resend after reconnect idempotent.
    /// `require_delivery_ack` asks for delivery acks: 1:1, the peer's; group, each member's
    /// (group delivery acks, under the server's `[group_delivery_ack]` policy).
    Send {
        req: ReqId,
        client_id: String,
        to: String,
        chat_type: ChatType,
        content: String,
        #[serde(default)]
        require_delivery_ack: bool,
        #[serde(default)]
        need_group_ack: bool,
    },
    /// The message reached this device (sent by the SDK on its own): a 1:1 message, or a group
    /// message that asks for delivery acks (a group delivery ack).
    DeliveryAck {
        req: ReqId,
        msg_id: MsgId,
    },
    /// The user read this 1:1 message. `private` (private reading, version 3): the user's own
    /// read state only, the sender is told nothing ([`crate::rules::read_ack_effect`]).
    ReadAck {
        req: ReqId,
        msg_id: MsgId,
        #[serde(default, skip_serializing_if = "is_false")]
        private: bool,
    },
    /// The user read the whole conversation (1:1: the peer is told unless `private`; group: own
    /// state only).
    ConversationAck {
        req: ReqId,
        chat_type: ChatType,
        conversation: String,
        #[serde(default, skip_serializing_if = "is_false")]
        private: bool,
    },
    /// The user read this group message; `ext` is passed on to the sender. `private`: no ack is
    /// recorded or sent (the count and the list stay as they are), only own read state.
    GroupAck {
        req: ReqId,
        msg_id: MsgId,
        #[serde(default)]
        ext: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        private: bool,
    },
    /// One page of a group message's read acks, newest first, starting at `start_ack_id`
    /// (`None`: from the newest).
    FetchGroupAcks {
        req: ReqId,
        msg_id: MsgId,
        page_size: u32,
        #[serde(default)]
        start_ack_id: Option<AckId>,
    },
    /// [`ClientFrame::FetchGroupAcks`] for the message's group delivery acks (same paging, same
    /// answer: [`Response::GroupAcks`]).
    FetchGroupDeliveryAcks {
        req: ReqId,
        msg_id: MsgId,
        page_size: u32,
        #[serde(default)]
        start_ack_id: Option<AckId>,
    },
    /// One page of the members at send time who have not read group message `msg_id` (and are
    /// still in the group), by user id, after `cursor` (the last id of the previous page;
    /// `None`: from the first).
    FetchGroupUnread {
        req: ReqId,
        msg_id: MsgId,
        page_size: u32,
        #[serde(default)]
        cursor: Option<UserId>,
    },
    /// The read-ack count of each of 1..=[`crate::rules::MAX_BATCH_IDS`] group messages, one
    /// [`BatchItem`] per id in the order asked.
    FetchGroupAckCounts {
        req: ReqId,
        msg_ids: Vec<MsgId>,
    },
    /// Read acks of 1..=[`crate::rules::MAX_BATCH_IDS`] received 1:1 messages of the conversation
    /// with `conversation` (the peer) in one round trip; one [`BatchItem`] per id.
    ReadAcks {
        req: ReqId,
        conversation: String,
        msg_ids: Vec<MsgId>,
        /// Each id as a private [`ClientFrame::ReadAck`].
        #[serde(default, skip_serializing_if = "is_false")]
        private: bool,
    },
    /// Change only the user's own read state (no receipt to anybody): one message, or the
    /// whole conversation when `msg_id` is `None`.
    MarkRead {
        req: ReqId,
        chat_type: ChatType,
        conversation: String,
        #[serde(default)]
        msg_id: Option<MsgId>,
    },
    /// Create a group (or chat room) owned by the caller, with initial members.
    CreateGroup {
        req: ReqId,
        name: String,
        members: Vec<UserId>,
        #[serde(default)]
        chat_room: bool,
    },
    AddMembers {
        req: ReqId,
        group: GroupId,
        members: Vec<UserId>,
    },
    RemoveMembers {
        req: ReqId,
        group: GroupId,
        members: Vec<UserId>,
    },
    SetRole {
        req: ReqId,
        group: GroupId,
        member: UserId,
        role: GroupRole,
    },
    /// The caller leaves a group it is a member or admin of (the owner cannot leave: 603).
    LeaveGroup {
        req: ReqId,
        group: GroupId,
    },
    /// This device durably applied every event up to `seq`: the server remembers it per
    /// (user, device) and trims the prefix of the log every remembered device has applied. A
    /// cursor ahead of the log's head or behind the device's last one is ignored (no answer).
    SyncCursor {
        seq: Seq,
    },
    Ping {
        nonce: u64,
    },
    /// Replace the session's token without dropping the connection (renewToken). The server
    /// checks it for the logged-in user; the answer is `Result` (`done`, or 104/108/202).
    RenewToken {
        req: ReqId,
        token: String,
    },
}

impl ClientFrame {
    /// The request id, for frames that get a `Result`.
    pub fn req(&self) -> Option<ReqId> {
        use ClientFrame::*;
        match self {
            Send { req, .. }
            | DeliveryAck { req, .. }
            | ReadAck { req, .. }
            | ConversationAck { req, .. }
            | GroupAck { req, .. }
            | FetchGroupAcks { req, .. }
            | FetchGroupDeliveryAcks { req, .. }
            | FetchGroupUnread { req, .. }
            | FetchGroupAckCounts { req, .. }
            | ReadAcks { req, .. }
            | MarkRead { req, .. }
            | CreateGroup { req, .. }
            | AddMembers { req, .. }
            | RemoveMembers { req, .. }
            | SetRole { req, .. }
            | RenewToken { req, .. }
            | LeaveGroup { req, .. } => Some(*req),
            Login { .. } | SyncCursor { .. } | Ping { .. } => None,
        }
    }
}

/// One conversation's read state on the server, sent at the end of a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationState {
    pub chat_type: ChatType,
    pub id: String,
    /// The server's unread count for this user.
    pub unread: u32,
}

/// One retained message of a full state resync, with its flags as the server holds them.
/// Flags absent on the wire are false / 0 (old producers, or not applicable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedMessage {
    pub msg: Arc<WireMessage>,
    /// 1:1 sent by this user: the recipient's delivery ack arrived.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delivered: bool,
    /// 1:1 sent by this user: the recipient read it (read ack, or a conversation ack covering it).
    /// 1:1 received: this user sent its read receipt (read ack or conversation ack).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_acked: bool,
    /// Received by this user: read (on any device, by a read ack, a conversation ack or a mark-read).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read: bool,
    /// Group, received: this user sent its group read ack.
    #[serde(default, skip_serializing_if = "is_false")]
    pub group_ack_sent: bool,
    /// Group: the number of members' read acks so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub group_ack_count: u32,
    /// Group, sent by this user: the number of members' delivery acks so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub group_delivered_count: u32,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The outcome for one id of a batch request: `err` set (the same code the single request
/// would give for that id), or done, with `count` the read-ack count for
/// [`ClientFrame::FetchGroupAckCounts`] (0 and absent on the wire for [`ClientFrame::ReadAcks`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    pub msg_id: MsgId,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<ChatError>,
}

/// The payload of a successful request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case", remote = "Self")]
pub enum Response {
    /// Done, nothing to return (acks, mark-read, membership changes).
    Done,
    /// A message was accepted. `need_group_ack` says whether the server kept the request for
    /// group read acks (a group over the policy's member cap gets none), `require_delivery_ack`
    /// the same for delivery acks.
    Sent {
        client_id: String,
        msg_id: MsgId,
        timestamp: u64,
        #[serde(default)]
        need_group_ack: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        require_delivery_ack: bool,
    },
    /// A page of group read acks.
    GroupAcks { msg_id: MsgId, page: CursorResult<GroupReadAck> },
    /// A group was created.
    GroupCreated { group: GroupId },
    /// A page of the members who have not read `msg_id`; `cursor` empty: the last page.
    GroupUnread { msg_id: MsgId, page: CursorResult<UserId> },
    /// One item per id asked, in the order asked ([`ClientFrame::FetchGroupAckCounts`]).
    GroupAckCounts { items: Vec<BatchItem> },
    /// One item per id asked, in the order asked ([`ClientFrame::ReadAcks`]).
    ReadAcks { items: Vec<BatchItem> },
}

/// Something that happened to a user, in their event log. Every device of the user gets it (a
/// device's own per-message echo only by replay: docs/protocol.md, "The user event log").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case", remote = "Self")]
pub enum ServerEvent {
    /// A message for this user, or one this user sent from another device. Shared: a server
    /// keeps one copy for the message and every log that holds it.
    Message { msg: Arc<WireMessage> },
    /// `by` sent the delivery ack of 1:1 message `msg_id` (to the sender and to `by`'s devices).
    Delivered { msg_id: MsgId, from: UserId, to: UserId, by: UserId, timestamp: u64 },
    /// `by` read 1:1 message `msg_id` (to the sender and to `by`'s devices).
    Read { msg_id: MsgId, from: UserId, to: UserId, by: UserId, timestamp: u64 },
    /// `from` read every message of the conversation with `to` up to `up_to` (1:1: to both
    /// users' devices; group: to `from`'s devices only, with `to` the group).
    /// `device` is the acking device: it does not hear its own ack as `onConversationRead`.
    ConversationRead {
        chat_type: ChatType,
        from: UserId,
        to: String,
        up_to: MsgId,
        timestamp: u64,
        #[serde(default)]
        device: DeviceId,
    },
    /// A member read a group message (to the sender, to the acker's devices, and to every
    /// member when the group's policy lets members see acks).
    GroupRead { group: GroupId, sender: UserId, ack: GroupReadAck },
    /// A member's device acked the delivery of a group message that asks for it (to the sender,
    /// and to every member when the delivery policy lets members see acks). `ack.content` is
    /// empty; `ack.count` is the delivered count with this ack.
    GroupDelivered { group: GroupId, sender: UserId, ack: GroupReadAck },
    /// The user's own read state changed on another device, without a receipt.
    ReadState { chat_type: ChatType, conversation: String, msg_id: Option<MsgId>, up_to: MsgId },
    /// The user joined, left or changed role in a group.
    Membership { group: GroupId, role: Option<GroupRole>, chat_room: bool },
    /// The read count of the user's message `msg_id` in a large group (above the server's
    /// coalescing threshold) is now `count`: sent instead of one `GroupRead` per ack, at most one
    /// per message per interval (the list is fetched on demand). Counts only grow: a client never
    /// lowers its count for one. Protocol version 3 ([`GROUP_ACK_COUNT_VERSION`]).
    GroupAckCount { group: GroupId, msg_id: MsgId, count: u32, timestamp: u64 },
}

/// An event with its position in the user's log. The event is shared: a server logs one event
/// for every user it concerns (both ends of a receipt, every member of a group) under each
/// user's own seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct SeqEvent {
    pub seq: Seq,
    #[serde(flatten)]
    pub event: Arc<ServerEvent>,
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", remote = "Self")]
pub enum ServerFrame {
    LoginOk {
        v: u32,
        user: UserId,
        device: DeviceId,
        server_time: u64,
    },
    /// The login was refused; the server closes the connection after this frame.
    LoginFailed {
        error: ChatError,
    },
    /// Replayed events this device missed (in order). More may follow.
    Backlog {
        events: Vec<SeqEvent>,
    },
    /// A page of the server's unread counts, before `SyncDone` (a user with more conversations
    /// than fit in one frame gets several; the client applies them all at `SyncDone`).
    SyncConversations {
        conversations: Vec<ConversationState>,
    },
    /// A page of a full state resync (a device whose `since` is below the log's base: the events
    /// it missed are gone): retained messages of the user's conversations with their flags, in
    /// conversation order, then id order. More may follow; `Backlog` frames of what happened
    /// during the resync, `SyncConversations` pages and `SyncDone { resync: true }` end it.
    /// Sent only to clients of protocol version 2 or later.
    Resync {
        messages: Vec<RetainedMessage>,
    },
    /// The replay is complete: from here on events are live. Carries the server's unread counts
    /// (the last page of them, after any `SyncConversations` pages). `resync`: this sync was a
    /// full state resync; the client's cursor becomes `head` and the counts replace its own.
    SyncDone {
        head: Seq,
        conversations: Vec<ConversationState>,
        #[serde(default, skip_serializing_if = "is_false")]
        resync: bool,
    },
    /// A live event.
    Event {
        #[serde(flatten)]
        event: SeqEvent,
    },
    /// The answer to request `req`.
    Result {
        req: ReqId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Response>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<ChatError>,
    },
    /// The connection is being closed for a protocol error (malformed frame, no login, ...).
    Error {
        error: ChatError,
    },
    Pong {
        nonce: u64,
    },
}

impl ServerFrame {
    pub fn ok(req: ReqId, r: Response) -> Self {
        ServerFrame::Result { req, ok: Some(r), err: None }
    }
    pub fn err(req: ReqId, e: ChatError) -> Self {
        ServerFrame::Result { req, ok: None, err: Some(e) }
    }
}
