//! The hot-state cache's bookkeeping: which messages, conversations and log heads the core holds,
//! their estimated bytes against a budget, which are pinned (changed by a batch not committed
//! yet) and which are clean and may be evicted, least recently used first (a clock: every entry
//! is queued once; one used since it last came round, or pinned, goes round again).
//!
//! The entries themselves live in [`State`] (`messages`, `client_ids`, `convs`); this module
//! only keeps their metadata and evicts from those maps. Without a reader (the in-memory store)
//! the core keeps everything resident and none of this runs.
//!
//! Why pinning makes a miss safe: the store commits batch N while the core applies N+1, so the
//! store lags memory. An entry changed by batch N stays in memory until the store thread hands
//! batch N back ([`Cache::committed`]); only then can it be evicted, and a later miss reads a
//! store that has its last write (docs/server-data-model.md, "Hot state and start-up").

use std::collections::VecDeque;

use receipt_core::{ConversationKey, MsgId, UserId};

use crate::state::{ConvState, HashMap, LogEvent, MessageRecord, State};
use crate::store::StoreRead;

/// A cached entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Msg(MsgId),
    Conv(UserId, ConversationKey),
    /// The head (last seq) of a user's log, in `State::log_base`.
    Head(UserId),
}

/// An entry's cache state. A message's is kept in its record (`MessageRecord::cached`: one
/// lookup on the hot path instead of two); conversations' and heads' in maps here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub(super) bytes: usize,
    /// The last batch that changed it; it may be evicted once that batch is committed.
    pub(super) changed_in: u64,
    /// Used since it last came round the queue: one more round before eviction.
    pub(super) used: bool,
}

/// The cache of the core's hot state. See the module docs.
pub(crate) struct Cache {
    pub(super) reader: Option<Box<dyn StoreRead>>,
    budget: usize,
    used_bytes: usize,
    /// The batch being applied (from 1: batch 0 is "nothing", committed from the start).
    pub(super) batch: u64,
    committed: u64,
    convs: HashMap<UserId, HashMap<ConversationKey, Meta>>,
    heads: HashMap<UserId, Meta>,
    /// Each user's log events not committed yet, with their batch (a replay reads the stored
    /// log, then these). Emptied entries stay (no allocation per user per batch) up to
    /// [`TAILS_KEPT`] users.
    tails: HashMap<UserId, VecDeque<(u64, LogEvent)>>,
    /// Every entry once, in the order it came in (front: looked at first for eviction).
    queue: VecDeque<Key>,
    /// Log trims (`TrimLog`) not committed yet, by user: (batch, trimmed up to). The reader
    /// does not see them yet; a login must (a device below gets a resync).
    trims: HashMap<UserId, (u64, u64)>,
    /// Messages made by batches not committed yet, with their batch, in id order: the store's
    /// `conv_messages` index does not have them yet; a resync walk finds them here.
    new_msgs: VecDeque<(u64, MsgId)>,
}

/// Users whose emptied tail entries are kept for reuse.
const TAILS_KEPT: usize = 4096;

/// Estimated heap bytes of a cached message (its record, its client-id index entry and the
/// acks it holds).
pub(super) fn msg_bytes(rec: &MessageRecord) -> usize {
    let m = &rec.msg;
    let acks = rec.ack_bytes;
    // The record, its map node, the Arc'd message with its four strings and the client-id entry:
    // calibrated against RSS (1,000,000 cached messages of 32 bytes: ~1.8x the first, leaner
    // estimate of 200 bytes + strings).
    500 + m.content.len() + m.client_id.len() * 2 + m.from.len() + m.to.len() + 64 + acks
}

/// Estimated heap bytes of a cached log head.
fn head_bytes(user: &str) -> usize {
    160 + user.len() * 2
}

/// Estimated heap bytes of a cached conversation.
pub(super) fn conv_bytes(user: &str, key: &ConversationKey, c: &ConvState) -> usize {
    280 + user.len() + key.id.len() + c.read.singles.len() * 40
}

impl Cache {
    pub(super) fn new(reader: Option<Box<dyn StoreRead>>, budget: usize) -> Self {
        Cache {
            reader,
            budget,
            used_bytes: 0,
            batch: 1,
            committed: 0,
            convs: HashMap::default(),
            heads: HashMap::default(),
            tails: HashMap::default(),
            queue: VecDeque::new(),
            trims: HashMap::default(),
            new_msgs: VecDeque::new(),
        }
    }

    /// Whether the core reads misses from a store (otherwise everything is resident).
    pub(super) fn on(&self) -> bool {
        self.reader.is_some()
    }

    pub(super) fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    pub(super) fn budget(&self) -> usize {
        self.budget
    }

    fn meta_mut<'a>(&'a mut self, key: &Key, state: &'a mut State) -> Option<&'a mut Meta> {
        match key {
            Key::Msg(id) => state.messages.get_mut(id).map(|r| &mut r.cached),
            Key::Conv(u, k) => self.convs.get_mut(u).and_then(|m| m.get_mut(k)),
            Key::Head(u) => self.heads.get_mut(u),
        }
    }

    /// Sets an entry's bytes and marks it used; a new entry is queued. With `changed`, it was
    /// made or changed by the batch being applied: pinned until that batch is committed.
    fn account(&mut self, key: Key, bytes: usize, changed: bool) {
        let batch = self.batch;
        let (m, new) = match &key {
            Key::Msg(_) => unreachable!("messages are accounted in their records"),
            Key::Conv(u, k) => {
                let m = match self.convs.get_mut(u.as_str()) {
                    Some(m) => m,
                    None => self.convs.entry(u.clone()).or_default(),
                };
                match m.get_mut(k) {
                    Some(meta) => (meta, false),
                    None => (m.entry(k.clone()).or_default(), true),
                }
            }
            Key::Head(u) => match self.heads.get_mut(u.as_str()) {
                Some(m) => (m, false),
                None => (self.heads.entry(u.clone()).or_default(), true),
            },
        };
        self.used_bytes = self.used_bytes + bytes - m.bytes;
        m.bytes = bytes;
        m.used = true;
        if changed {
            m.changed_in = batch;
        }
        if new {
            self.queue.push_back(key);
        }
    }

    /// Message `id` was read from the store into `rec`.
    pub(super) fn read_msg(&mut self, id: MsgId, rec: &mut MessageRecord) {
        let bytes = msg_bytes(rec);
        self.used_bytes += bytes;
        rec.cached = Meta { bytes, changed_in: 0, used: true };
        self.queue.push_back(Key::Msg(id));
    }

    /// Message `id` was made or changed by the batch being applied: pinned until committed.
    pub(super) fn changed_msg(&mut self, id: MsgId, rec: &mut MessageRecord) {
        let bytes = msg_bytes(rec);
        let m = &mut rec.cached;
        if m.bytes == 0 {
            // Not accounted yet: a new message.
            self.queue.push_back(Key::Msg(id));
        }
        self.used_bytes = self.used_bytes + bytes - m.bytes;
        *m = Meta { bytes, changed_in: self.batch, used: true };
    }

    /// Message `id` was made by the batch being applied (see `new_msgs`).
    pub(super) fn new_msg(&mut self, id: MsgId) {
        self.new_msgs.push_back((self.batch, id));
    }

    /// The messages made by batches not committed yet (few: the batches in flight).
    pub(super) fn uncommitted_msgs(&self) -> impl Iterator<Item = MsgId> + '_ {
        self.new_msgs.iter().map(|(_, id)| *id)
    }

    /// `user`'s log is trimmed up to `up_to` by the batch being applied.
    pub(super) fn trimmed(&mut self, user: &str, up_to: u64) {
        let batch = self.batch;
        match self.trims.get_mut(user) {
            Some(t) => *t = (batch, t.1.max(up_to)),
            None => {
                self.trims.insert(user.to_string(), (batch, up_to));
            }
        }
    }

    /// The trim of `user`'s log not committed yet, if any (0: none).
    pub(super) fn pending_trim(&self, user: &str) -> u64 {
        self.trims.get(user).map_or(0, |t| t.1)
    }

    /// A message left the state (retention).
    pub(super) fn forget_msg(&mut self, rec: &MessageRecord) {
        self.used_bytes -= rec.cached.bytes;
    }

    pub(super) fn read_conv(&mut self, user: &str, key: &ConversationKey, bytes: usize) {
        self.account(Key::Conv(user.to_string(), key.clone()), bytes, false);
    }

    pub(super) fn changed_conv(&mut self, user: &str, key: &ConversationKey, bytes: usize) {
        // The common case, a conversation already cached: no key allocated.
        let batch = self.batch;
        if let Some(m) = self.convs.get_mut(user).and_then(|m| m.get_mut(key)) {
            self.used_bytes = self.used_bytes + bytes - m.bytes;
            (m.bytes, m.used, m.changed_in) = (bytes, true, batch);
            return;
        }
        self.account(Key::Conv(user.to_string(), key.clone()), bytes, true);
    }

    pub(super) fn used_conv(&mut self, user: &str, key: &ConversationKey) {
        if let Some(m) = self.convs.get_mut(user).and_then(|m| m.get_mut(key)) {
            m.used = true;
        }
    }

    /// `user`'s log head was read from the store.
    pub(super) fn read_head(&mut self, user: &str) {
        self.account(Key::Head(user.to_string()), head_bytes(user), false);
    }

    pub(super) fn used_head(&mut self, user: &str) {
        if let Some(m) = self.heads.get_mut(user) {
            m.used = true;
        }
    }

    /// An event was appended to `user`'s log by the batch being applied: the head is pinned and
    /// the event kept (for replays) until the batch is committed.
    pub(super) fn appended(&mut self, user: &str, event: LogEvent) {
        let batch = self.batch;
        match self.tails.get_mut(user) {
            Some(t) => t.push_back((batch, event)),
            None => {
                self.tails.entry(user.to_string()).or_default().push_back((batch, event));
            }
        }
        match self.heads.get_mut(user) {
            Some(m) => (m.used, m.changed_in) = (true, batch),
            None => self.account(Key::Head(user.to_string()), head_bytes(user), true),
        }
    }

    /// `user`'s log events not committed yet, in seq order.
    pub(super) fn tail(&self, user: &str) -> impl Iterator<Item = &LogEvent> {
        self.tails.get(user).into_iter().flatten().map(|(_, e)| e)
    }

    /// The store committed every batch up to `batch`: their entries are clean and may go, their
    /// log events are in the store.
    pub(super) fn committed(&mut self, batch: u64) {
        self.committed = self.committed.max(batch);
        let committed = self.committed;
        self.trims.retain(|_, (b, _)| *b > committed);
        while self.new_msgs.front().is_some_and(|(b, _)| *b <= committed) {
            self.new_msgs.pop_front();
        }
        let keep_empty = self.tails.len() <= TAILS_KEPT;
        self.tails.retain(|_, t| {
            while t.front().is_some_and(|(b, _)| *b <= committed) {
                t.pop_front();
            }
            keep_empty || !t.is_empty()
        });
    }

    /// Evicts clean entries, least recently used first, until under the budget (or nothing
    /// clean is left: pinned entries may hold more than the budget for a moment).
    pub(super) fn evict(&mut self, state: &mut State) {
        // Bounded: every entry gets at most one second chance per call.
        let mut rounds = 2 * self.queue.len() + 1;
        while self.used_bytes > self.budget && rounds > 0 {
            rounds -= 1;
            let Some(key) = self.queue.pop_front() else { break };
            let committed = self.committed;
            let Some(m) = self.meta_mut(&key, state) else { continue }; // gone (retention)
            if m.changed_in > committed {
                // Pinned: round again (the batches in flight are few).
                self.queue.push_back(key);
                continue;
            }
            if m.used {
                m.used = false;
                self.queue.push_back(key);
                continue;
            }
            let bytes = m.bytes;
            self.used_bytes -= bytes;
            match key {
                Key::Msg(id) => {
                    if let Some(rec) = state.messages.remove(&id) {
                        if let Some(ids) = state.client_ids.get_mut(&rec.msg.from) {
                            ids.remove(&rec.msg.client_id);
                            if ids.is_empty() {
                                state.client_ids.remove(&rec.msg.from);
                            }
                        }
                    }
                }
                Key::Head(user) => {
                    self.heads.remove(&user);
                    state.log_base.remove(&user);
                }
                Key::Conv(user, k) => {
                    if let Some(m) = self.convs.get_mut(&user) {
                        m.remove(&k);
                        if m.is_empty() {
                            self.convs.remove(&user);
                        }
                    }
                    if let Some(m) = state.convs.get_mut(&user) {
                        m.remove(&k);
                        if m.is_empty() {
                            state.convs.remove(&user);
                        }
                    }
                }
            }
        }
    }
}
