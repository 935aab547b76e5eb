//! The hot-state cache's bookkeeping: which messages and conversations the core holds, their
//! estimated bytes against a budget, which are pinned (changed by a batch not committed yet) and
//! which are clean and may be evicted, least recently used first (second chance: an entry used
//! since it was queued goes round once more).
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

#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    bytes: usize,
    /// The last batch that changed it; it may be evicted once that batch is committed.
    changed_in: u64,
    /// In the eviction queue (clean entries are; pinned ones join it when committed).
    queued: bool,
    /// Used since it was queued: one more round before eviction.
    used: bool,
}

/// The cache of the core's hot state. See the module docs.
pub(crate) struct Cache {
    pub(super) reader: Option<Box<dyn StoreRead>>,
    budget: usize,
    used_bytes: usize,
    /// The batch being applied (from 1: batch 0 is "nothing", committed from the start).
    pub(super) batch: u64,
    committed: u64,
    msgs: HashMap<MsgId, Meta>,
    convs: HashMap<UserId, HashMap<ConversationKey, Meta>>,
    heads: HashMap<UserId, Meta>,
    /// Each user's log events not committed yet, with their batch (a replay reads the stored
    /// log, then these); and which users got events in which batch, to drop them once committed.
    tails: HashMap<UserId, VecDeque<(u64, LogEvent)>>,
    tail_marks: VecDeque<(u64, UserId)>,
    /// Clean entries in the order they became clean or were read (front: evicted first).
    queue: VecDeque<Key>,
    /// Entries changed by batches not committed yet, by batch.
    pinned: VecDeque<(u64, Key)>,
}

/// Estimated heap bytes of a cached message (its record, its client-id index entry and the
/// acks it holds).
pub(super) fn msg_bytes(rec: &MessageRecord) -> usize {
    let m = &rec.msg;
    let acks: usize = rec.acks.values().map(|a| 160 + a.from.len() * 2 + a.content.as_ref().map_or(0, String::len)).sum();
    // record + Arc'd message + map node, and the client-id entry (key strings + map slot)
    200 + m.content.len() + m.client_id.len() * 2 + m.from.len() + m.to.len() + 64 + acks
}

/// Estimated heap bytes of a cached log head.
fn head_bytes(user: &str) -> usize {
    96 + user.len() * 2
}

/// Estimated heap bytes of a cached conversation.
pub(super) fn conv_bytes(user: &str, key: &ConversationKey, c: &ConvState) -> usize {
    160 + user.len() + key.id.len() + c.read.singles.len() * 40
}

impl Cache {
    pub(super) fn new(reader: Option<Box<dyn StoreRead>>, budget: usize) -> Self {
        Cache {
            reader,
            budget,
            used_bytes: 0,
            batch: 1,
            committed: 0,
            msgs: HashMap::default(),
            convs: HashMap::default(),
            heads: HashMap::default(),
            tails: HashMap::default(),
            tail_marks: VecDeque::new(),
            queue: VecDeque::new(),
            pinned: VecDeque::new(),
        }
    }

    /// Whether the core reads misses from a store (otherwise everything is resident).
    pub(super) fn on(&self) -> bool {
        self.reader.is_some()
    }

    pub(super) fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    fn meta_mut(&mut self, key: &Key) -> Option<&mut Meta> {
        match key {
            Key::Msg(id) => self.msgs.get_mut(id),
            Key::Conv(u, k) => self.convs.get_mut(u).and_then(|m| m.get_mut(k)),
            Key::Head(u) => self.heads.get_mut(u),
        }
    }

    /// Sets an entry's bytes; a new entry is read from the store (clean, queued) or, with
    /// `changed`, made by the batch being applied (pinned).
    fn account(&mut self, key: Key, bytes: usize, changed: bool) {
        let batch = self.batch;
        let m = match &key {
            Key::Msg(id) => self.msgs.entry(*id).or_default(),
            Key::Conv(u, k) => {
                let m = match self.convs.get_mut(u.as_str()) {
                    Some(m) => m,
                    None => self.convs.entry(u.clone()).or_default(),
                };
                match m.get_mut(k) {
                    Some(meta) => meta,
                    None => m.entry(k.clone()).or_default(),
                }
            }
            Key::Head(u) => self.heads.entry(u.clone()).or_default(),
        };
        self.used_bytes = self.used_bytes + bytes - m.bytes;
        m.bytes = bytes;
        m.used = true;
        if changed {
            if m.changed_in != batch {
                m.changed_in = batch;
                self.pinned.push_back((batch, key));
            }
        } else if !m.queued && m.changed_in <= self.committed {
            m.queued = true;
            self.queue.push_back(key);
        }
    }

    /// Message `id` (of `bytes`) was read from the store.
    pub(super) fn read_msg(&mut self, id: MsgId, bytes: usize) {
        self.account(Key::Msg(id), bytes, false);
    }

    /// Message `id` was made or changed by the batch being applied: pinned until committed.
    pub(super) fn changed_msg(&mut self, id: MsgId, bytes: usize) {
        self.account(Key::Msg(id), bytes, true);
    }

    /// Message `id` was used (hit).
    pub(super) fn used_msg(&mut self, id: MsgId) {
        if let Some(m) = self.msgs.get_mut(&id) {
            m.used = true;
        }
    }

    /// Message `id` left the state (retention).
    pub(super) fn forget_msg(&mut self, id: MsgId) {
        if let Some(m) = self.msgs.remove(&id) {
            self.used_bytes -= m.bytes;
        }
    }

    pub(super) fn read_conv(&mut self, user: &str, key: &ConversationKey, bytes: usize) {
        self.account(Key::Conv(user.to_string(), key.clone()), bytes, false);
    }

    pub(super) fn changed_conv(&mut self, user: &str, key: &ConversationKey, bytes: usize) {
        // The common case, a conversation already pinned by this batch: no key allocated.
        let batch = self.batch;
        if let Some(m) = self.convs.get_mut(user).and_then(|m| m.get_mut(key)).filter(|m| m.changed_in == batch) {
            self.used_bytes = self.used_bytes + bytes - m.bytes;
            m.bytes = bytes;
            m.used = true;
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
        let tail = match self.tails.get_mut(user) {
            Some(t) => t,
            None => self.tails.entry(user.to_string()).or_default(),
        };
        if tail.back().is_none_or(|(b, _)| *b != batch) {
            self.tail_marks.push_back((batch, user.to_string()));
        }
        tail.push_back((batch, event));
        let pinned = self.heads.get(user).is_some_and(|m| m.changed_in == batch);
        if !pinned {
            self.account(Key::Head(user.to_string()), head_bytes(user), true);
        }
    }

    /// `user`'s log events not committed yet, in seq order.
    pub(super) fn tail(&self, user: &str) -> impl Iterator<Item = &LogEvent> {
        self.tails.get(user).into_iter().flatten().map(|(_, e)| e)
    }

    /// The store committed every batch up to `batch`: their entries are clean and may go.
    pub(super) fn committed(&mut self, batch: u64) {
        self.committed = self.committed.max(batch);
        while self.tail_marks.front().is_some_and(|(b, _)| *b <= self.committed) {
            let (_, user) = self.tail_marks.pop_front().expect("peeked");
            if let Some(t) = self.tails.get_mut(&user) {
                while t.front().is_some_and(|(b, _)| *b <= self.committed) {
                    t.pop_front();
                }
                if t.is_empty() {
                    self.tails.remove(&user);
                }
            }
        }
        while self.pinned.front().is_some_and(|(b, _)| *b <= self.committed) {
            let (_, key) = self.pinned.pop_front().expect("peeked");
            let committed = self.committed;
            if let Some(m) = self.meta_mut(&key) {
                if m.changed_in <= committed && !m.queued {
                    m.queued = true;
                    self.queue.push_back(key);
                }
            }
        }
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
            let Some(m) = self.meta_mut(&key) else { continue }; // gone (retention)
            if m.changed_in > committed {
                // Pinned again since it was queued: it is queued again when committed.
                m.queued = false;
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
                    self.msgs.remove(&id);
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
