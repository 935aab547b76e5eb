//! Loading the state from the store, reading messages on demand, and ending an input: its
//! events, its one store batch, the cache's eviction.
//!
//! # Design: history that does not live in memory
//!
//! - **In memory** (O(conversations + outbox + cache)): the meta counters; one [`Conversation`]
//!   summary per conversation (unread counts, the read, receipt and peer-read marks, the newest
//!   message id, the newest received id, how many messages are held); messages waiting for the
//!   server and the outbox; and a cache of accepted messages, least recently touched evicted
//!   first down to [`EngineConfig::message_cache`] at the end of every input (after the input's
//!   batch is written, so nothing evicted is unwritten). When a write fails, its changes stay
//!   dirty and their messages pinned (never evicted) until a later write succeeds (the next
//!   input, or the timer after [`STORE_RETRY_MS`]): memory stays the truth the engine reports.
//! - **Read by key**: an input that names a message (an ack, a read, a server event about it)
//!   first [`fetch`](ClientEngine::fetch)es it into the cache, so the rules get their facts (is
//!   it mine, unread, already acked) from one lookup, never a scan. A new message is known new
//!   without a read when its id is above every id held (server ids are global and grow).
//! - **Read by range**: a watermark that stops short of the newest message counts what stays
//!   unread above it by reading that conversation's id range above the mark (store range merged
//!   with the cache, whose copies are newer). Cost: what lies in the range, never the whole
//!   history. Paging ([`ClientEngine::load_messages`]) is the same read, newest first, with a
//!   limit. A mark move itself visits no message (one `ConversationUpdated` event).
//! - **Tables** (redb, format [`crate::store::STORE_FORMAT`]): `conv_messages` keyed by
//!   (conversation, id) so a conversation's history is one ordered key range; `message_conv`
//!   (id -> conversation) for lookups by id; `conversations`, `pending`, `outbox`, `meta` (with
//!   a `format` marker). A format-1 file (one `messages` table keyed by id) is migrated at open
//!   in one transaction; a newer format is refused with [`StoreError::NewerFormat`].
//! - **Crash safety vs. commit cost**: redb reopens a file that was not closed cleanly by
//!   walking it whole (O(history)) unless its last durable commit recorded the allocator state
//!   ("quick repair"), which costs a write that grows with the file and a second fsync. So
//!   [`crate::store::RedbStore`] writes each batch to a small journal file (durable when the
//!   batch is: one fsync) and to the big file lazily; the big file's only durable commits are
//!   checkpoints with quick repair ([`ClientStore::checkpoint`]), which the engine asks for once
//!   the app has been quiet for [`CHECKPOINT_IDLE_MS`] after a durable commit (the timer:
//!   `poll_timeout` / `handle_timeout`, with or without a connection); the store also makes one
//!   when the journal grows past [`crate::store::JOURNAL_MAX_BYTES`] and at close. The open
//!   replays the journal. Every ack costs the same at any history size, and a kill at any moment
//!   reopens without a walk of the history (docs/benchmarks.md, "History larger than memory").
//! - **Retention**: [`ClientEngine::retention_step`] (called from `handle_timeout`, or by the
//!   runtime) visits one conversation per step and drops at most [`RETENTION_STEP`] of its
//!   oldest messages beyond the age / count cap. It never drops an unread received message
//!   (so `local_unread` stays exact) nor one the outbox names; the marks are ids and do not
//!   move; the summary's `newest` and `newest_received` stay (they are what a conversation
//!   ack needs).
//! - **Per-input cost**: every event an input emits is built from the messages it touched (a
//!   mark move is one conversation-level event), so it does not grow with the history.

use super::*;

/// Most messages one retention step drops (one write transaction).
pub const RETENTION_STEP: usize = 256;
/// Pause between two retention steps of a sweep (ms): the work is spread out.
pub const RETENTION_STEP_INTERVAL_MS: u64 = 50;
/// Pause between two sweeps (ms).
pub const RETENTION_SWEEP_INTERVAL_MS: u64 = 10 * 60 * 1000;
/// Quiet time after the last durable commit before the engine asks the store for a
/// checkpoint ([`ClientStore::checkpoint`]): a burst of acks pays one checkpoint at its end,
/// not one per ack.
pub const CHECKPOINT_IDLE_MS: u64 = 250;
/// Pause before retrying a store write that failed (the next input retries too).
pub const STORE_RETRY_MS: u64 = 1000;

impl<S: ClientStore> ClientEngine<S> {
    /// Loads the state of `cfg.user` on this device from `store`.
    pub fn open(cfg: EngineConfig, mut store: S) -> Result<Self, StoreError> {
        let snapshot = store.load()?;
        let mut engine = ClientEngine {
            me: cfg.user.as_str().into(),
            cfg,
            store,
            meta: snapshot.meta,
            messages: HashMap::default(),
            touched: HashMap::default(),
            touch_order: BTreeMap::new(),
            touch_clock: 0,
            retention_queue: VecDeque::new(),
            server_clock: 0,
            newest_held: 0,
            retention_due: None,
            checkpoint_due: None,
            store_retry_due: None,
            unstored_durable: false,
            pending: HashMap::default(),
            conversations: ConvMap::default(),
            conv_ids: ConvMap::default(),
            outbox: snapshot.outbox.into(),
            queries: HashMap::default(),
            link: Link::Down,
            login_refused: false,
            login_refusal: None,
            token: None,
            held_delivery_acks: Vec::new(),
            sync_conversations: Vec::new(),
            cursor_reported: 0,
            cursor_reported_at: 0,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            last_rx: 0,
            last_tx: 0,
            ping_nonce: 0,
            dirty_meta: false,
            dirty_messages: HashSet::default(),
            dirty_pending: HashSet::default(),
            deleted_pending: Vec::new(),
            deleted_messages: Vec::new(),
            dirty_convs: Default::default(),
            outbox_put: Vec::new(),
            outbox_delete: Vec::new(),
            received: Vec::new(),
            delivered: Vec::new(),
            read: Vec::new(),
            group_acks: Vec::new(),
            group_deliveries: Vec::new(),
            count_updates: Vec::new(),
            conversation_reads: Vec::new(),
            unread_changed: Vec::new(),
            flags_before: HashMap::default(),
            marks_before: ConvMap::default(),
        };
        if engine.cfg.retention != Retention::default() && engine.store.persists() {
            engine.retention_due = Some(0); // a first sweep soon after the connection is up
        }
        for c in snapshot.conversations {
            engine.newest_held = engine.newest_held.max(c.newest);
            engine.conversations.insert(c.key.clone(), c);
        }
        for m in snapshot.pending {
            engine.pending.insert(m.client_id.clone(), m);
        }
        Ok(engine)
    }

    /// Ends an input: emits its batched events, then writes its changes in one transaction.
    pub(super) fn finish(&mut self, now: u64, durable: bool) {
        self.emit_input_events();
        self.commit_input(now, durable);
        self.evict();
        self.checkpoint_tick(now);
    }

    /// The timer's store work (from `handle_timeout`): retries a failed write when due, and
    /// asks for a checkpoint once the app has been quiet for [`CHECKPOINT_IDLE_MS`].
    pub(super) fn store_tick(&mut self, now: u64) {
        if self.store_retry_due.is_some_and(|due| due <= now) {
            self.finish(now, false); // carries the failed batch again (durable if it was)
        }
        self.checkpoint_tick(now);
    }

    /// Checkpoints the store when due: the last durable commit is [`CHECKPOINT_IDLE_MS`] old
    /// and every change is written (a checkpoint records the file as it is on disk).
    fn checkpoint_tick(&mut self, now: u64) {
        if self.checkpoint_due.is_none_or(|due| due > now) || self.store_retry_due.is_some() {
            return;
        }
        match self.store.checkpoint() {
            Ok(()) => self.checkpoint_due = None,
            Err(e) => {
                log::error!("client store checkpoint failed: {e}");
                self.events.push_back(ClientEvent::StoreFailed(e.to_string()));
                self.checkpoint_due = Some(now + STORE_RETRY_MS);
            }
        }
    }

    /// The earliest of the store's timers (a retry, a checkpoint), for `poll_timeout`.
    pub(super) fn store_timeout(&self) -> Option<u64> {
        [self.store_retry_due, self.checkpoint_due].into_iter().flatten().min()
    }

    /// Puts an accepted message in the cache (or replaces its copy), as just touched.
    pub(super) fn cache(&mut self, m: ChatMessage) {
        let id = m.id;
        if !self.messages.contains_key(&id) {
            let key = m.conversation_ref();
            match self.conv_ids.get_mut(&key) {
                Some(ids) => {
                    ids.insert(id);
                }
                None => {
                    self.conv_ids.insert(key.to_key(), BTreeSet::from([id]));
                }
            }
        }
        self.messages.insert(id, m);
        self.touch(id);
    }

    fn touch(&mut self, id: MsgId) {
        self.touch_clock += 1;
        if let Some(old) = self.touched.insert(id, self.touch_clock) {
            self.touch_order.remove(&old);
        }
        self.touch_order.insert(self.touch_clock, id);
    }

    /// Brings an accepted message into the cache if the store holds it (one lookup by key).
    /// Returns whether it is held.
    pub(super) fn fetch(&mut self, id: MsgId) -> bool {
        if self.messages.contains_key(&id) {
            self.touch(id);
            return true;
        }
        match self.stored_message(id) {
            Some(m) => {
                self.cache(m);
                true
            }
            None => false,
        }
    }

    /// A message from the store (not the cache). A read error is logged and reads as absent.
    pub(super) fn stored_message(&self, id: MsgId) -> Option<ChatMessage> {
        if id == 0 || !self.store.persists() {
            return None;
        }
        self.store.message(id).unwrap_or_else(|e| {
            log::error!("client store read of message {id} failed: {e}");
            None
        })
    }

    /// A conversation's held messages with ids in `ids` (ascending, or newest first), at most
    /// `limit`: the store's range merged with the cache (its copies are newer: this input's
    /// changes are written at its end).
    pub(super) fn held_range(
        &self,
        key: &ConversationKey,
        ids: std::ops::Range<MsgId>,
        limit: usize,
        newest_first: bool,
    ) -> Vec<ChatMessage> {
        if ids.is_empty() || limit == 0 {
            return Vec::new();
        }
        let stored = if self.store.persists() {
            self.store.conversation_messages(key, ids.clone(), limit, newest_first).unwrap_or_else(|e| {
                log::error!("client store read of {key:?} failed: {e}");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        let cached: Vec<&ChatMessage> = match self.conv_ids.get(key) {
            Some(set) => {
                let range = set.range(ids);
                let pick = |id: &MsgId| self.messages.get(id);
                if newest_first {
                    range.rev().take(limit).filter_map(pick).collect()
                } else {
                    range.take(limit).filter_map(pick).collect()
                }
            }
            None => Vec::new(),
        };
        // Merge two sorted lists (same order), the cached copy winning on equal ids.
        let before = |a: MsgId, b: MsgId| if newest_first { a > b } else { a < b };
        let mut out = Vec::with_capacity(stored.len().max(cached.len()).min(limit));
        let (mut s, mut c) = (stored.into_iter().peekable(), cached.into_iter().peekable());
        while out.len() < limit {
            let take_cached = match (s.peek(), c.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(a), Some(b)) => {
                    if a.id == b.id {
                        s.next();
                        true
                    } else {
                        before(b.id, a.id)
                    }
                }
            };
            if take_cached {
                out.push(c.next().expect("peeked").clone());
            } else {
                out.push(s.next().expect("peeked"));
            }
        }
        out
    }

    /// Drops the least recently touched messages from memory down to the configured size.
    /// Runs after the input's batch is written: what it drops is in the store. A message whose
    /// change is not written yet (the write failed: it is still in `dirty_messages`) stays
    /// pinned until a write succeeds, so memory stays the truth the engine reports. A store
    /// that keeps nothing keeps everything here.
    pub(super) fn evict(&mut self) {
        if !self.store.persists() {
            return;
        }
        let excess = self.messages.len().saturating_sub(self.cfg.message_cache);
        if excess == 0 {
            return;
        }
        let victims: Vec<MsgId> = self.touch_order.values().filter(|id| !self.dirty_messages.contains(id)).take(excess).copied().collect();
        for id in victims {
            self.uncache(id);
        }
    }

    fn uncache(&mut self, id: MsgId) {
        self.touched.remove(&id).map(|t| self.touch_order.remove(&t));
        let Some(m) = self.messages.remove(&id) else { return };
        let key = m.conversation_ref();
        if let Some(ids) = self.conv_ids.get_mut(&key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.conv_ids.remove(&key);
            }
        }
    }

    /// Changes the local retention caps (an app setting); the next sweep applies them.
    pub fn set_retention(&mut self, retention: Retention) {
        self.cfg.retention = retention;
        self.retention_due = (retention != Retention::default() && self.store.persists()).then_some(0);
    }

    /// Runs a retention step when one is due (from `handle_timeout`) and schedules the next.
    pub(super) fn retention_tick(&mut self, now: u64) {
        let Some(due) = self.retention_due else { return };
        if now < due {
            return;
        }
        let more = self.retention_step(now);
        self.retention_due = Some(now + if more { RETENTION_STEP_INTERVAL_MS } else { RETENTION_SWEEP_INTERVAL_MS });
    }

    /// One bounded step of local retention ([`EngineConfig::retention`]): visits the next
    /// conversation of the sweep and drops at most [`RETENTION_STEP`] of its oldest messages
    /// beyond the caps, in one store batch. Returns true when the sweep has more to visit.
    pub fn retention_step(&mut self, now: u64) -> bool {
        let policy = self.cfg.retention;
        if policy == Retention::default() || !self.store.persists() {
            return false;
        }
        if self.retention_queue.is_empty() {
            self.retention_queue.extend(self.conversations.keys().cloned());
        }
        let Some(key) = self.retention_queue.pop_front() else { return false };
        let Some(c) = self.conversations.get(&key) else { return !self.retention_queue.is_empty() };
        let over_count = policy.max_per_conversation.map_or(0, |max| c.held.saturating_sub(max) as usize);
        let age_limit = policy.max_age_ms.map_or(0, |age| self.server_clock.saturating_sub(age));
        let named: HashSet<MsgId> = self
            .outbox
            .iter()
            .filter_map(|f| match f {
                ClientFrame::ReadAck { msg_id, .. } | ClientFrame::GroupAck { msg_id, .. } | ClientFrame::DeliveryAck { msg_id, .. } => {
                    Some(*msg_id)
                }
                ClientFrame::MarkRead { msg_id, .. } => *msg_id,
                _ => None,
            })
            .collect();
        let mut dropped = 0usize;
        let mut dropped_by_count = 0usize;
        for m in self.held_range(&key, 1..MsgId::MAX, RETENTION_STEP, false) {
            let by_count = dropped_by_count < over_count;
            let by_age = m.timestamp < age_limit;
            if !by_count && !by_age {
                break; // the oldest left is within both caps: so is the rest
            }
            if self.is_unread(&m) || named.contains(&m.id) {
                continue;
            }
            if by_count {
                dropped_by_count += 1;
            }
            self.uncache(m.id);
            self.dirty_messages.remove(&m.id);
            self.deleted_messages.push((key.clone(), m.id));
            dropped += 1;
        }
        if dropped == RETENTION_STEP {
            self.retention_queue.push_front(key.clone()); // maybe more to drop here: next step
        }
        if dropped != 0 {
            let c = self.conv_mut(key.as_ref());
            c.held = c.held.saturating_sub(dropped as u32);
            self.finish(now, false);
        }
        !self.retention_queue.is_empty()
    }

    /// Writes the changes of this input in one store batch (`durable`: flushed to disk before
    /// returning, for a command whose effect must survive a crash).
    fn commit_input(&mut self, now: u64, durable: bool) {
        if !self.store.persists() {
            self.dirty_meta = false;
            self.dirty_messages.clear();
            self.dirty_pending.clear();
            self.deleted_pending.clear();
            self.deleted_messages.clear();
            self.dirty_convs.clear();
            self.outbox_put.clear();
            self.outbox_delete.clear();
            return;
        }
        // A failed write's changes are still in the dirty sets (see below): they ride along,
        // with the durability they asked for.
        let durable = durable || self.unstored_durable;
        let batch = StoreBatch {
            meta: std::mem::take(&mut self.dirty_meta).then_some(self.meta),
            messages: self.dirty_messages.drain().filter_map(|id| self.messages.get(&id).cloned()).collect(),
            messages_delete: std::mem::take(&mut self.deleted_messages),
            pending_put: self.dirty_pending.drain().filter_map(|k| self.pending.get(&k).cloned()).collect(),
            pending_delete: std::mem::take(&mut self.deleted_pending),
            conversations: self.dirty_convs.drain().filter_map(|k| self.conversations.get(&k).cloned()).collect(),
            outbox_put: std::mem::take(&mut self.outbox_put),
            outbox_delete: std::mem::take(&mut self.outbox_delete),
            durable,
        };
        if batch.is_empty() {
            return;
        }
        match self.store.commit(&batch) {
            Ok(()) => {
                self.unstored_durable = false;
                self.store_retry_due = None;
                if durable {
                    self.checkpoint_due = Some(now + CHECKPOINT_IDLE_MS);
                }
            }
            Err(e) => {
                // Every change goes back to the dirty sets (its messages stay pinned in the
                // cache: `evict`), to be written with the next input or on the timer.
                log::error!("client store commit failed: {e}");
                self.events.push_back(ClientEvent::StoreFailed(e.to_string()));
                self.dirty_meta = batch.meta.is_some();
                self.dirty_messages.extend(batch.messages.iter().map(|m| m.id));
                self.deleted_messages = batch.messages_delete;
                self.dirty_pending.extend(batch.pending_put.into_iter().map(|m| m.client_id));
                self.deleted_pending = batch.pending_delete;
                self.dirty_convs.extend(batch.conversations.into_iter().map(|c| c.key));
                self.outbox_put = batch.outbox_put;
                self.outbox_delete = batch.outbox_delete;
                self.unstored_durable = durable;
                self.store_retry_due = Some(now + STORE_RETRY_MS);
            }
        }
    }
}
