//! Loading the state from the store, and ending an input: its events and its one store batch.

use super::*;

impl<S: ClientStore> ClientEngine<S> {
    /// Loads the state of `cfg.user` on this device from `store`.
    pub fn open(cfg: EngineConfig, mut store: S) -> Result<Self, StoreError> {
        let snapshot = store.load()?;
        let mut engine = ClientEngine {
            me: cfg.user.as_str().into(),
            cfg,
            store,
            meta: snapshot.meta,
            messages: HashMap::with_capacity_and_hasher(snapshot.messages.len(), Default::default()),
            pending: HashMap::default(),
            conversations: ConvMap::default(),
            conv_ids: ConvMap::default(),
            outbox: snapshot.outbox.into(),
            queries: HashMap::default(),
            link: Link::Down,
            login_refused: false,
            token: None,
            held_delivery_acks: Vec::new(),
            sync_conversations: Vec::new(),
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
            conversation_reads: Vec::new(),
            unread_changed: Vec::new(),
            flags_before: HashMap::default(),
            marks_before: ConvMap::default(),
        };
        for c in snapshot.conversations {
            engine.conversations.insert(c.key.clone(), c);
        }
        for m in snapshot.messages {
            insert_sorted(engine.conv_ids.entry(m.conversation()).or_default(), m.id);
            engine.messages.insert(m.id, m);
        }
        for m in snapshot.pending {
            engine.pending.insert(m.client_id.clone(), m);
        }
        Ok(engine)
    }

    /// Ends an input: emits its batched events, then writes its changes in one transaction.
    pub(super) fn finish(&mut self, _now: u64, durable: bool) {
        self.emit_input_events();
        self.commit_input(durable);
    }

    /// Writes the changes of this input in one store batch (`durable`: flushed to disk before
    /// returning, for a command whose effect must survive a crash).
    fn commit_input(&mut self, durable: bool) {
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
