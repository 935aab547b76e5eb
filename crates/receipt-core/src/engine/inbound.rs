//! Connection inputs: connect, disconnect, keep-alive, and every frame and event from the server.

use super::*;

impl<S: ClientStore> ClientEngine<S> {
    /// A transport connection is up: logs in with `token` and flushes the outbox in order.
    pub fn handle_connected(&mut self, now: u64, token: &str) {
        self.token = Some(token.to_string());
        self.link = Link::Syncing;
        self.login_refused = false;
        self.login_refusal = None;
        self.transmit.clear();
        self.held_delivery_acks.clear();
        self.sync_conversations.clear();
        self.last_rx = now;
        // The server knows nothing of this connection's reports yet: the login's `since` is one.
        self.cursor_reported = self.meta.cursor;
        self.cursor_reported_at = now;
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
        self.sync_conversations.clear();
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
        // Local retention rides on the timer: one bounded step when due (see poll_timeout).
        self.retention_tick(now);
        self.store_tick(now);
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
        if self.link == Link::Up && now.saturating_sub(self.cursor_reported_at) >= CURSOR_REPORT_MS {
            self.report_cursor(now);
        }
        true
    }

    /// Tells the server the cursor, once what it covers is on disk: a durable commit of the
    /// state first (the server may trim the log below it; a crash must not lose what it covers).
    /// Nothing when it has not moved since the last report.
    fn report_cursor(&mut self, now: u64) {
        if self.meta.cursor <= self.cursor_reported {
            return;
        }
        // The cursor's own write makes the batch non-empty, so the commit is a durable flush of
        // everything written before it too.
        self.dirty_meta = true;
        self.finish(now, true);
        if self.store_retry_due.is_some() {
            // The write failed (it is retried): the cursor is not on disk, so not reported; the
            // next timer tries again.
            return;
        }
        self.cursor_reported = self.meta.cursor;
        self.cursor_reported_at = now;
        self.transmit.push_back(ClientFrame::SyncCursor { seq: self.meta.cursor });
    }

    /// Decodes a frame body and handles it (the runtime's path from the socket).
    pub fn handle_frame_bytes(&mut self, now: u64, body: &[u8]) -> Result<(), crate::codec::FrameError> {
        let frame = crate::codec::decode_body::<ServerFrame>(body)?;
        self.handle_frame(now, frame);
        Ok(())
    }

    /// Handles one frame from the server.
    pub fn handle_frame(&mut self, now: u64, frame: ServerFrame) {
        self.last_rx = now;
        match frame {
            ServerFrame::LoginOk { server_time, .. } => {
                self.server_clock = self.server_clock.max(server_time);
                self.events.push_back(ClientEvent::OfflineSyncStarted);
            }
            ServerFrame::LoginFailed { error } => {
                self.link = Link::Down;
                self.login_refused = true;
                self.login_refusal = Some(error.clone());
                self.transmit.clear();
                // 108: the server says the token (good signature) has expired: onTokenExpired,
                // then the refusal. The outbox stays for the next login with a fresh token.
                if error.code == crate::ErrorCode::TokenExpired {
                    self.events.push_back(ClientEvent::TokenExpired);
                }
                self.events.push_back(ClientEvent::LoginFailed(error));
            }
            ServerFrame::Backlog { events } => {
                for e in events {
                    self.apply_seq_event(e);
                }
            }
            ServerFrame::Resync { messages } => {
                // Only while syncing: a resync page outside a sync is not the server's truth.
                if self.link == Link::Syncing {
                    for m in messages {
                        self.apply_retained(m);
                    }
                }
            }
            ServerFrame::SyncConversations { mut conversations } => {
                // Only while syncing: a page outside a sync has nothing to complete.
                if self.link == Link::Syncing {
                    self.sync_conversations.append(&mut conversations);
                }
            }
            ServerFrame::SyncDone { mut conversations, head, resync } => {
                let mut all = std::mem::take(&mut self.sync_conversations);
                all.append(&mut conversations);
                // A full state resync: the events before `head` that this device missed are gone
                // from the server's log; the state they would have built came in `Resync` pages.
                if resync && self.link == Link::Syncing && head > self.meta.cursor {
                    self.meta.cursor = head;
                    self.dirty_meta = true;
                }
                let was_syncing = self.link == Link::Syncing;
                self.sync_done(all);
                if was_syncing {
                    self.report_cursor(now);
                }
            }
            ServerFrame::Event { event } => {
                self.apply_seq_event(event);
                if self.link == Link::Up && self.meta.cursor >= self.cursor_reported.saturating_add(CURSOR_REPORT_EVENTS) {
                    self.report_cursor(now);
                }
            }
            ServerFrame::Result { req, ok, err } => self.handle_result(req, ok, err),
            // A newer login of this user on this device replaced the session: it is over, as
            // after a refused login (the runtime must not reconnect with it).
            ServerFrame::Error { error } if error.code == crate::ErrorCode::UserLoginAnotherDevice => {
                self.link = Link::Down;
                self.login_refused = true;
                self.transmit.clear();
                self.events.push_back(ClientEvent::LoggedOut(error));
            }
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
                    } else if let Some(m) = self.stored_message(*msg_id) {
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
            self.fetch(msg_id);
            if self.messages.get(&msg_id).is_some_and(|m| m.delivered) {
                self.outbox.remove(pos);
                self.outbox_delete.push(req);
            } else {
                self.transmit.push_back(self.outbox[pos].clone());
                self.update_message(msg_id, |m| m.delivered = true);
            }
        }
        self.link = Link::Up;
        self.events.push_back(ClientEvent::OfflineSyncFinished);
        self.events.push_back(ClientEvent::Connected);
    }

    fn handle_result(&mut self, req: ReqId, ok: Option<Response>, err: Option<ChatError>) {
        if let Some(kind) = self.queries.remove(&req) {
            let result = match (ok, err, kind) {
                (_, Some(e), _) => Err(e),
                (Some(Response::GroupAcks { page, .. }), None, Query::FetchGroupAcks) => Ok(Completion::GroupAcks(page)),
                (Some(Response::GroupCreated { group }), None, Query::Group) => Ok(Completion::GroupCreated(group)),
                (Some(Response::GroupUnread { page, .. }), None, Query::FetchGroupUnread) => Ok(Completion::GroupUnread(page)),
                (Some(Response::GroupAckCounts { items }), None, Query::FetchGroupAckCounts) => Ok(Completion::GroupAckCounts(items)),
                (Some(Response::ReadAcks { items }), None, Query::ReadAcks { private }) => {
                    // What a single ack does here at once, each acked message gets at the answer.
                    for item in items.iter().filter(|i| i.err.is_none()) {
                        self.fetch(item.msg_id);
                        if self.messages.contains_key(&item.msg_id) {
                            if !private {
                                self.update_message(item.msg_id, |m| m.receiver_read = true);
                            }
                            self.mark_read_local(item.msg_id);
                        }
                    }
                    Ok(Completion::ReadAcks(items))
                }
                (Some(Response::Done), None, Query::Group | Query::RenewToken) => Ok(Completion::Done),
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
            (
                ClientFrame::Send { client_id, .. },
                Some(Response::Sent { msg_id, timestamp, need_group_ack, require_delivery_ack, .. }),
                None,
            ) => Ok(Completion::Sent(self.promote_sent(&client_id, msg_id, timestamp, need_group_ack, require_delivery_ack))),
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
            // A private ack set no "sent" flag (a receipt made since may have).
            ClientFrame::ReadAck { msg_id, private: false, .. } => self.update_message(msg_id, |m| m.receiver_read = false),
            ClientFrame::GroupAck { msg_id, private: false, .. } => self.update_message(msg_id, |m| m.group_ack_sent = false),
            _ => {}
        }
    }

    /// Turns a pending sent message into an accepted one (also when its `Message` event from
    /// the server came first).
    /// `need_group_ack` / `require_delivery_ack`: the requests the server kept.
    pub(super) fn promote_sent(
        &mut self,
        client_id: &str,
        msg_id: MsgId,
        timestamp: u64,
        need_group_ack: bool,
        require_delivery_ack: bool,
    ) -> ChatMessage {
        if let Some(mut m) = self.pending.remove(client_id) {
            self.deleted_pending.push(client_id.to_string());
            self.dirty_pending.remove(client_id);
            if !self.fetch(msg_id) {
                m.id = msg_id;
                m.timestamp = timestamp;
                m.status = SendStatus::Sent;
                m.need_group_ack = need_group_ack;
                if m.chat_type == ChatType::GroupChat {
                    m.require_delivery_ack = require_delivery_ack;
                }
                self.insert_message(m);
            }
        }
        self.fetch(msg_id);
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
            group_delivered_count: 0,
        })
    }

    /// One retained message of a full state resync. A message this device holds is updated to the
    /// server's flags with no receipt callback (`MessagesDelivered`, `MessagesRead`,
    /// `GroupMessageRead` are not replayed; the changed flags are in `MessagesUpdated`); one it
    /// never had is stored as if it had arrived (`MessagesReceived` for a received one, its
    /// delivery ack unless the server says another device sent it), then given its flags; one it
    /// had and dropped (local retention) is stored again quietly.
    fn apply_retained(&mut self, r: RetainedMessage) {
        let id = r.msg.id;
        if id == 0 {
            return;
        }
        if !self.fetch(id) {
            // Not held. Read (or sent by this user) and not above the newest message this device
            // had in its conversation: most likely one it had and dropped (local retention drops
            // only read and sent messages), else one a race kept from it that was read
            // elsewhere. Stored again, without a callback: nothing lost, nothing heard twice.
            // Unread on the server: this device never had it (an unread one is never dropped).
            let unread = r.msg.from != self.cfg.user && !r.read;
            let newest = self.conversations.get(&r.msg.conversation_for(&self.cfg.user)).map_or(0, |c| c.newest);
            let notify = unread || id > newest;
            self.store_message(Arc::unwrap_or_clone(r.msg), notify);
            if !self.fetch(id) {
                return;
            }
        }
        self.update_message(id, |m| {
            m.delivered |= r.delivered;
            m.receiver_read |= r.read_acked;
            m.group_ack_sent |= r.group_ack_sent;
            m.group_ack_count = m.group_ack_count.max(r.group_ack_count);
            m.group_delivered_count = m.group_delivered_count.max(r.group_delivered_count);
        });
        if r.read {
            self.mark_read_local(id);
        }
    }

    fn apply_seq_event(&mut self, seq_event: SeqEvent) {
        if seq_event.seq <= self.meta.cursor {
            return; // already applied (replay overlap)
        }
        self.meta.cursor = seq_event.seq;
        self.dirty_meta = true;
        self.apply_event(Arc::unwrap_or_clone(seq_event.event));
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
                } else if from == *me && self.fetch(msg_id) && self.messages.get(&msg_id).is_some_and(|m| !m.delivered) {
                    self.update_message(msg_id, |m| m.delivered = true);
                    self.delivered.push(msg_id);
                }
            }
            ServerEvent::Read { msg_id, from, by, .. } => {
                if by == *me {
                    self.update_message(msg_id, |m| m.receiver_read = true);
                    self.mark_read_local(msg_id);
                    self.confirm_pending_ack(|f| matches!(f, ClientFrame::ReadAck { msg_id: m, .. } if *m == msg_id));
                } else if from == *me && self.fetch(msg_id) && self.messages.get(&msg_id).is_some_and(|m| !self.resolved_flags(m).1) {
                    self.update_message(msg_id, |m| m.receiver_read = true);
                    self.read.push(msg_id);
                }
            }
            ServerEvent::ConversationRead { chat_type, from, to, up_to, device, .. } => {
                if from == *me {
                    let key = ConversationKey::new(chat_type, &to);
                    self.apply_read_up_to(&key, up_to);
                    self.move_receipt_mark(&key, up_to);
                    self.clear_remote_unread(&key);
                    if chat_type == ChatType::Chat && device != self.cfg.device {
                        self.conversation_reads.push(ClientEvent::ConversationRead { from, to });
                    }
                } else if chat_type == ChatType::Chat && to == *me {
                    let key = ConversationKey::new(ChatType::Chat, &from);
                    self.move_peer_read_mark(&key, up_to);
                    self.conversation_reads.push(ClientEvent::ConversationRead { from, to });
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
            ServerEvent::GroupDelivered { ack, .. } => {
                let (id, count) = (ack.msg_id, ack.count);
                if ack.from == *me {
                    // Our group delivery ack (from any device) went out: never send it again.
                    self.update_message(id, |m| m.delivered = true);
                    self.confirm_pending_ack(|f| matches!(f, ClientFrame::DeliveryAck { msg_id: m, .. } if *m == id));
                } else {
                    self.update_message(id, |m| m.group_delivered_count = m.group_delivered_count.max(count));
                    self.group_deliveries.push(ack);
                }
            }
            ServerEvent::GroupAckCount { msg_id, count, .. } => {
                // Monotonic: an update replayed after a newer ack never lowers the count.
                self.fetch(msg_id);
                if self.messages.get(&msg_id).is_some_and(|m| count > m.group_ack_count) {
                    self.update_message(msg_id, |m| m.group_ack_count = count);
                    self.count_updates.push(msg_id);
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
        self.store_message(msg, true);
    }

    /// A message from the server: stored if new. `notify`: it is news to this device
    /// (`MessagesReceived`, its delivery ack); false: history it had (a resync), stored quietly.
    fn store_message(&mut self, msg: WireMessage, notify: bool) {
        if msg.id == 0 {
            // Server ids start at 1; 0 means "no server id yet" here (a pending message), so
            // such a message could be neither acked nor counted consistently.
            log::warn!("ignoring a message without a server id from {}", msg.from);
            return;
        }
        // Known new without a read when above every id held (the usual case: server ids grow);
        // otherwise one lookup by key, whatever conversation it names.
        if msg.id <= self.newest_held && self.fetch(msg.id) {
            return;
        }
        let mine = msg.from == self.cfg.user;
        if mine {
            // Sent from this device (answer not seen yet) or from another device of ours.
            if self.pending.contains_key(&msg.client_id) {
                self.promote_sent(&msg.client_id, msg.id, msg.timestamp, msg.need_group_ack, msg.require_delivery_ack);
                return;
            }
        }
        // 1:1 when the sender asked; group when the message asks for group delivery acks.
        let wants_delivery_ack = notify
            && !mine
            && ((msg.chat_type == ChatType::Chat && msg.require_delivery_ack)
                || rules::wants_group_delivery_ack(MessageFacts::from(&msg), &self.cfg.user));
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
            group_delivered_count: 0,
        };
        self.insert_message(m);
        if !mine && notify {
            self.received.push(id);
        }
        if wants_delivery_ack {
            // Rule 1: the SDK acks delivery by itself, backlog included (group messages that ask
            // too). During the replay the
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
}
