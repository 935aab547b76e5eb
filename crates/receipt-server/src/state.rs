//! The server's state: what the store persists and the core owns in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The server's hash maps: foldhash (per-process random seed) instead of SipHash, which was a
/// fifth of the core thread under load (user-id keys are hashed several times per request).
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`HashMap`].
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use receipt_core::protocol::{SeqEvent, ServerFrame};
use receipt_core::rules::{ConversationMarks, ReadMark};
use receipt_core::{
    AckId, ChatType, ConversationKey, DeviceId, GroupAckKind, GroupId, GroupReadAck, GroupRole, MsgId, UserId, WireMessage,
};
use serde::{Deserialize, Serialize};

/// The last ids handed out and the last message timestamp (message timestamps never go back).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub last_msg_id: MsgId,
    pub last_ack_id: AckId,
    pub last_group_id: u64,
    pub last_ts: u64,
}

/// A group or chat room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub chat_room: bool,
    pub members: BTreeMap<UserId, GroupRole>,
    /// Members added after the group was created: the newest message id when they joined. Only
    /// members at send time may ack a group message, so such a member acks only later ones.
    /// Absent: a member since the group was created. Stored apart (`member_since` rows), so
    /// group records written by older versions load unchanged.
    #[serde(skip)]
    pub joined_after: BTreeMap<UserId, MsgId>,
}

/// One user's read state of one conversation, in the words of [`receipt_core::rules`]: the
/// read mark, the receipt mark, newest and newest received.
///
/// A received message is unread iff the read mark does not cover it; `unread` is that count,
/// kept incrementally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvState {
    pub unread: u32,
    /// What this user has read: the read watermark `read.up_to` (conversation read or
    /// mark-all-read) and `read.singles`, the messages above it read one by one. The singles are
    /// stored apart, one row per message ([`crate::core::StoreOp::AddRead`],
    /// [`crate::core::StoreOp::TrimReads`]), so a read ack costs O(log n) however many messages
    /// are read one by one; `PutConversation` does not carry them.
    pub read: ReadMark,
    /// 1:1: the receipt mark, the `up_to` of this user's last conversation ack (the peer already
    /// got a read receipt for everything up to it).
    pub receipt_up_to: MsgId,
    /// Newest message of the conversation, either direction.
    pub newest: MsgId,
    /// Newest message this user received in the conversation.
    pub newest_received: MsgId,
}

impl ConvState {
    /// Marks one received message read; true if it was unread.
    pub fn mark_one(&mut self, id: MsgId) -> bool {
        if self.read.mark_one(id) {
            self.unread = self.unread.saturating_sub(1);
            true
        } else {
            false
        }
    }

    /// The record without the read singles (what `PutConversation` stores): a cheap copy.
    pub fn without_read_set(&self) -> ConvState {
        ConvState {
            unread: self.unread,
            read: ReadMark { up_to: self.read.up_to, singles: BTreeSet::new() },
            receipt_up_to: self.receipt_up_to,
            newest: self.newest,
            newest_received: self.newest_received,
        }
    }

    /// Moves the read watermark to `up_to`: the whole conversation counts as read. O(log n).
    pub fn mark_all(&mut self, up_to: MsgId) {
        self.read.mark_all(up_to);
        self.unread = 0;
    }

    /// The marks a conversation ack looks at ([`receipt_core::rules::conversation_ack_up_to`]).
    pub fn marks(&self) -> ConversationMarks {
        ConversationMarks {
            read_up_to: self.read.up_to,
            receipt_up_to: self.receipt_up_to,
            newest: self.newest,
            newest_received: self.newest_received,
        }
    }
}

/// A stored message with its receipt state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Shared with the `Message` events of the logs that hold it.
    pub msg: Arc<WireMessage>,
    /// 1:1: the recipient's delivery ack arrived.
    pub delivered: bool,
    /// 1:1: the recipient's read ack arrived.
    pub read_acked: bool,
    /// Group: read acks by ack id (ordered index: a page is a range scan). Every ack when the
    /// core keeps everything resident; with the hot-state cache, only those made since the
    /// record was read from the store (the others are read from it: `StoreRead::acks_desc`).
    pub acks: BTreeMap<AckId, GroupReadAck>,
    /// Group: who acked (the same part as `acks`).
    pub ackers: HashSet<UserId>,
    /// Group: how many acks the message has in all (stored and in `acks`).
    pub ack_count: u32,
    /// Group: the members' delivery acks, held like the read acks above.
    pub delivery: AckSet,
    /// Estimated heap bytes of the acks of both kinds and who sent them, kept as acks are added (the cache accounts a
    /// changed record per ack: summing every ack would make one ack cost O(acks)).
    pub(crate) ack_bytes: usize,
    /// Its state in the core's hot-state cache (unused when everything is resident).
    pub(crate) cached: crate::core::CacheMeta,
}

impl MessageRecord {
    pub fn new(msg: Arc<WireMessage>) -> Self {
        MessageRecord {
            msg,
            delivered: false,
            read_acked: false,
            acks: BTreeMap::new(),
            ackers: HashSet::default(),
            ack_count: 0,
            delivery: AckSet::default(),
            ack_bytes: 0,
            cached: Default::default(),
        }
    }

    pub fn add_ack(&mut self, ack: GroupReadAck) {
        self.ackers.insert(ack.from.clone());
        let bytes = ack_heap_bytes(&ack);
        if self.acks.insert(ack.ack_id, ack).is_none() {
            self.ack_count += 1;
            self.ack_bytes += bytes;
        }
    }

    /// The group acks of `kind` (what the record holds of them, and their count in all).
    pub fn acks_of(&self, kind: GroupAckKind) -> AckSetRef<'_> {
        match kind {
            GroupAckKind::Read => AckSetRef { acks: &self.acks, ackers: &self.ackers, count: self.ack_count },
            GroupAckKind::Delivery => AckSetRef { acks: &self.delivery.acks, ackers: &self.delivery.ackers, count: self.delivery.count },
        }
    }

    /// Adds a group ack of `kind`.
    pub fn add_ack_of(&mut self, kind: GroupAckKind, ack: GroupReadAck) {
        match kind {
            GroupAckKind::Read => self.add_ack(ack),
            GroupAckKind::Delivery => {
                self.delivery.ackers.insert(ack.from.clone());
                let bytes = ack_heap_bytes(&ack);
                if self.delivery.acks.insert(ack.ack_id, ack).is_none() {
                    self.delivery.count += 1;
                    self.ack_bytes += bytes;
                }
            }
        }
    }
}

/// One kind of group acks of a message (the delivery acks; the read acks are the record's own
/// fields, which predate the kinds): by ack id, who acked, and how many in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckSet {
    pub acks: BTreeMap<AckId, GroupReadAck>,
    pub ackers: HashSet<UserId>,
    pub count: u32,
}

/// A borrowed view of one kind of a message's group acks ([`MessageRecord::acks_of`]).
#[derive(Debug, Clone, Copy)]
pub struct AckSetRef<'a> {
    pub acks: &'a BTreeMap<AckId, GroupReadAck>,
    pub ackers: &'a HashSet<UserId>,
    pub count: u32,
}

/// Estimated heap bytes of one ack in a [`MessageRecord`] (its map node and its `ackers` entry).
fn ack_heap_bytes(a: &GroupReadAck) -> usize {
    160 + a.from.len() * 2 + a.content.as_ref().map_or(0, String::len)
}

/// One event of a user's log: its seq in that log and the event, which is allocated once and
/// shared (reference-counted) by every log it is in (both users of a receipt, every recipient of
/// a group message), the outgoing `event` frames and the store operation that persists it.
/// Dereferences to the [`SeqEvent`]; inline in a log it takes 24 bytes.
///
/// `at` is when it was logged (ms): a log is trimmed of the events older than the retention
/// (docs/server-data-model.md, "Retention"). It is not stored; a loaded event takes the time it
/// carries (a message's, an ack's), or that of the next event in the log that carries one (the
/// loading time when none does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    event: SeqEvent,
    at: u64,
}

impl LogEvent {
    /// An event logged at the time it carries (0 if it carries none).
    pub fn new(event: SeqEvent) -> Self {
        let at = event_time(&event.event);
        LogEvent { event, at }
    }

    /// An event logged at `at` (ms).
    pub fn logged_at(event: SeqEvent, at: u64) -> Self {
        LogEvent { event, at }
    }

    /// When it was logged (ms).
    pub fn at(&self) -> u64 {
        self.at
    }

    /// Logged no earlier than `at` (loading keeps a log's times in order).
    pub fn not_before(&mut self, at: u64) {
        self.at = self.at.max(at);
    }

    /// Logged at `at` if its time is unknown (0).
    pub fn unknown_time_is(&mut self, at: u64) {
        if self.at == 0 {
            self.at = at;
        }
    }

    /// The `event` frame carrying this event (the event itself is shared, not copied).
    pub fn frame(&self) -> Arc<ServerFrame> {
        Arc::new(ServerFrame::Event { event: self.event.clone() })
    }
}

/// The time an event carries (ms); 0 for those without one (`ReadState`, `Membership`).
pub fn event_time(e: &receipt_core::protocol::ServerEvent) -> u64 {
    use receipt_core::protocol::ServerEvent as E;
    match e {
        E::Message { msg } => msg.timestamp,
        E::Delivered { timestamp, .. }
        | E::Read { timestamp, .. }
        | E::ConversationRead { timestamp, .. }
        | E::GroupAckCount { timestamp, .. } => *timestamp,
        E::GroupRead { ack, .. } | E::GroupDelivered { ack, .. } => ack.timestamp,
        E::ReadState { .. } | E::Membership { .. } => 0,
    }
}

impl std::ops::Deref for LogEvent {
    type Target = SeqEvent;

    fn deref(&self) -> &SeqEvent {
        &self.event
    }
}

impl From<SeqEvent> for LogEvent {
    fn from(e: SeqEvent) -> Self {
        LogEvent::new(e)
    }
}

/// A conversation as both sides see it, the key of the `conv_messages` index: a 1:1 pair (the
/// two user ids in order) or a group / chat room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConvId {
    Pair(UserId, UserId),
    Group(GroupId),
}

impl ConvId {
    /// The conversation `msg` belongs to.
    pub fn of(msg: &WireMessage) -> Self {
        match msg.chat_type {
            ChatType::Chat => ConvId::pair(&msg.from, &msg.to),
            _ => ConvId::Group(msg.to.clone()),
        }
    }

    /// `user`'s conversation `key`.
    pub fn for_user(user: &str, key: &ConversationKey) -> Self {
        match key.chat_type {
            ChatType::Chat => ConvId::pair(user, &key.id),
            _ => ConvId::Group(key.id.clone()),
        }
    }

    fn pair(a: &str, b: &str) -> Self {
        if a <= b {
            ConvId::Pair(a.to_string(), b.to_string())
        } else {
            ConvId::Pair(b.to_string(), a.to_string())
        }
    }

    /// The store's key parts: (kind, first id, second id); 0 = pair, 1 = group ("" second).
    pub fn key_parts(&self) -> (u8, &str, &str) {
        match self {
            ConvId::Pair(a, b) => (0, a, b),
            ConvId::Group(g) => (1, g, ""),
        }
    }
}

/// What the server remembers of one device of a user: the last event seq it applied (its
/// `SyncCursor`, or its login's `since`) and when it was last seen (login or cursor, ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCursor {
    pub seq: u64,
    pub seen: u64,
}

/// Everything the server knows ([`crate::store::ServerStore::load`]), or its hot part: with the
/// hot-state cache `messages`, `client_ids` and `convs` hold only the cached entries (see
/// `core::cache`), and `conv_messages`, `logs` stay empty (read from the store).
#[derive(Debug, Clone, Default)]
pub struct State {
    pub counters: Counters,
    pub messages: BTreeMap<MsgId, MessageRecord>,
    /// `(from, client_id)` -> message id: makes `Send` idempotent. Derived from `messages`.
    /// Keyed by user first, so a lookup needs no allocated key.
    pub client_ids: HashMap<UserId, HashMap<String, MsgId>>,
    pub groups: HashMap<GroupId, Group>,
    /// Per-user event logs, in seq order: the retained part (older events are trimmed).
    pub logs: HashMap<UserId, Vec<LogEvent>>,
    /// Per user, a floor of the log's head: the seq of the last event trimmed from the log, or
    /// (after a load) the last seq stored, whose event may have been dropped with its message.
    /// Seqs never go back.
    pub log_base: HashMap<UserId, u64>,
    /// Per user, the seq of the last event trimmed from the log (the `log_base` table): unlike
    /// `log_base`, not raised to the last stored seq at load.
    pub trimmed: HashMap<UserId, u64>,
    pub convs: HashMap<UserId, HashMap<ConversationKey, ConvState>>,
    /// Per user, the cursor of each remembered device (`device_cursors`): the log is trimmed
    /// below the lowest (docs/server-data-model.md, "Event logs and device cursors").
    pub cursors: HashMap<UserId, BTreeMap<DeviceId, DeviceCursor>>,
    /// The retained messages of each conversation, by id (`conv_messages`): what a full state
    /// resync walks. Derived from `messages` at load; kept with them.
    pub conv_messages: HashMap<ConvId, BTreeSet<MsgId>>,
}

impl State {
    /// Rebuilds the derived indexes after loading.
    pub fn rebuild_indexes(&mut self) {
        self.client_ids = HashMap::default();
        self.conv_messages = HashMap::default();
        for r in self.messages.values() {
            self.client_ids.entry(r.msg.from.clone()).or_default().insert(r.msg.client_id.clone(), r.msg.id);
            self.conv_messages.entry(ConvId::of(&r.msg)).or_default().insert(r.msg.id);
        }
    }

    /// Adds a new message to the `conv_messages` index.
    pub fn index_message(&mut self, msg: &WireMessage) {
        self.conv_messages.entry(ConvId::of(msg)).or_default().insert(msg.id);
    }

    /// Drops a message from the `conv_messages` index (it left at retention).
    pub fn unindex_message(&mut self, msg: &WireMessage) {
        let conv = ConvId::of(msg);
        if let Some(ids) = self.conv_messages.get_mut(&conv) {
            ids.remove(&msg.id);
            if ids.is_empty() {
                self.conv_messages.remove(&conv);
            }
        }
    }

    /// The retained messages of `conv` with ids above `after`, ascending, at most `limit`.
    pub fn conv_messages_after(&self, conv: &ConvId, after: MsgId, limit: usize) -> Vec<&MessageRecord> {
        let Some(ids) = self.conv_messages.get(conv) else { return Vec::new() };
        ids.range(after.saturating_add(1)..).take(limit).filter_map(|id| self.messages.get(id)).collect()
    }

    /// The conversations `user` has a record of, in key order.
    pub fn conversations_of(&self, user: &str) -> Vec<ConversationKey> {
        let mut keys: Vec<ConversationKey> = self.convs.get(user).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        keys.sort_by(|a, b| (a.chat_type, &a.id).cmp(&(b.chat_type, &b.id)));
        keys
    }

    /// The seq of the last event trimmed from `user`'s log (0: none): a device whose cursor is
    /// below it missed events that are gone.
    pub fn trimmed_up_to(&self, user: &str) -> u64 {
        self.trimmed.get(user).copied().unwrap_or(0)
    }

    /// Records that `user`'s log was trimmed up to `up_to` (seqs never go back).
    pub fn note_trim(&mut self, user: &str, up_to: u64) {
        for map in [&mut self.log_base, &mut self.trimmed] {
            match map.get_mut(user) {
                Some(b) => *b = (*b).max(up_to),
                None => {
                    map.insert(user.to_string(), up_to);
                }
            }
        }
    }

    /// The head (last seq) of a user's log.
    pub fn head(&self, user: &str) -> u64 {
        let base = self.log_base.get(user).copied().unwrap_or(0);
        self.logs.get(user).and_then(|l| l.last()).map_or(base, |e| e.seq.max(base))
    }
}
