//! The app's commands: send, the acks, mark-read and the group requests. Each checks with the
//! [`rules`](crate::rules) the server enforces, updates the local state and queues its frame.

use super::*;

impl<S: ClientStore> ClientEngine<S> {
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
        self.send_message_asking(now, to, chat_type, content, need_group_ack, false)
    }

    /// [`Self::send_message`], also saying whether a group message asks for group delivery
    /// acks (`need_group_delivery_ack`; ignored for 1:1, whose delivery acks follow
    /// `ChatOptions::require_delivery_ack`, and for rooms).
    pub fn send_message_asking(
        &mut self,
        now: u64,
        to: &str,
        chat_type: ChatType,
        content: &str,
        need_group_ack: bool,
        need_group_delivery_ack: bool,
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
            require_delivery_ack: match chat_type {
                ChatType::Chat => self.cfg.options.require_delivery_ack,
                ChatType::GroupChat => need_group_delivery_ack,
                ChatType::ChatRoom => false,
            },
            need_group_ack: chat_type == ChatType::GroupChat && need_group_ack,
            status: SendStatus::Pending,
            delivered: false,
            receiver_read: false,
            unread: false,
            group_ack_count: 0,
            group_ack_sent: false,
            group_delivered_count: 0,
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

    /// The message an ack names (fetch it into the cache first: its facts for the rules).
    fn held_message(&self, msg_id: MsgId) -> ChatResult<&ChatMessage> {
        self.messages.get(&msg_id).ok_or_else(|| ChatError::invalid_message(format!("unknown message {msg_id}")))
    }

    /// Whether a read ack call goes out private (`private`: the call's override), or 505 when
    /// `requireReadAck` is false ([`rules::read_ack_private`]).
    fn read_ack_private(&self, private: Option<bool>) -> ChatResult<bool> {
        rules::read_ack_private(self.cfg.options.require_read_ack, self.cfg.options.private_read_receipts, private)
    }

    /// Sends the read ack of a received 1:1 message (and marks it read here), private when
    /// [`ChatOptions::private_read_receipts`] says so.
    /// `Ok(None)`: already acked by this user (from any device), nothing sent.
    pub fn ack_message_read(&mut self, now: u64, msg_id: MsgId) -> ChatResult<Option<ReqId>> {
        self.ack_message_read_with(now, msg_id, None)
    }

    /// [`ack_message_read`](Self::ack_message_read) with a per-call override of private
    /// reading (`None`: the option). A private ack marks the message read on this user's devices
    /// and tells the sender nothing; `Ok(None)` then also when the message was read already.
    pub fn ack_message_read_with(&mut self, now: u64, msg_id: MsgId, private: Option<bool>) -> ChatResult<Option<ReqId>> {
        let result = self.ack_message_read_checked(now, msg_id, private);
        // A refused command fetched its message without an input end: keep the cache bounded.
        self.evict();
        result
    }

    fn ack_message_read_checked(&mut self, now: u64, msg_id: MsgId, private: Option<bool>) -> ChatResult<Option<ReqId>> {
        let private = self.read_ack_private(private)?;
        self.fetch(msg_id);
        let m = self.held_message(msg_id)?;
        rules::check_read_ack(MessageFacts::from(m), &self.cfg.user)?;
        let effect = rules::read_ack_effect(private, self.view(m).receiver_read, !self.is_unread(m));
        if effect == rules::ReadAckEffect::Nothing {
            self.mark_read_local(msg_id);
            self.finish(now, true);
            return Ok(None);
        }
        let req = self.next_req();
        if effect == rules::ReadAckEffect::Receipt {
            self.update_message(msg_id, |m| m.receiver_read = true);
        }
        self.mark_read_local(msg_id);
        self.enqueue(ClientFrame::ReadAck { req, msg_id, private });
        self.finish(now, true);
        Ok(Some(req))
    }

    /// Conversation ack: every message of the conversation counts as read. 1:1: the peer and
    /// this user's other devices are told (private reading: only this user's devices); group:
    /// only this user's devices. `Ok(None)`: nothing new to ack, nothing sent.
    pub fn ack_conversation_read(&mut self, now: u64, conversation: &str) -> ChatResult<Option<ReqId>> {
        self.ack_conversation_read_with(now, conversation, None)
    }

    /// [`ack_conversation_read`](Self::ack_conversation_read) with a per-call override of
    /// private reading (`None`: the option).
    pub fn ack_conversation_read_with(&mut self, now: u64, conversation: &str, private: Option<bool>) -> ChatResult<Option<ReqId>> {
        let private = self.read_ack_private(private)?;
        let key = self
            .resolve_conversation(conversation)
            .ok_or_else(|| ChatError::invalid_param(format!("unknown conversation {conversation}")))?;
        if key.chat_type == ChatType::ChatRoom {
            return Err(ChatError::wrong_type("chat rooms take no conversation acks"));
        }
        let c = &self.conversations[&key];
        let marks = ConversationMarks {
            read_up_to: c.read_up_to,
            receipt_up_to: c.receipt_up_to,
            newest: c.newest,
            newest_received: c.newest_received,
        };
        // Unread messages the server counts that this device does not hold are above every mark
        // too: the server's newest received message is newer than anything held here.
        let unread = c.unread() != 0;
        let receipt_sent = rules::conversation_ack_up_to(key.chat_type, marks).is_none() && !unread;
        let effect = rules::read_ack_effect(private, receipt_sent, !unread);
        if effect == rules::ReadAckEffect::Nothing {
            return Ok(None);
        }
        let newest = c.newest;
        let req = self.next_req();
        self.apply_read_up_to(&key, newest);
        if effect == rules::ReadAckEffect::Receipt {
            self.move_receipt_mark(&key, newest);
        }
        self.clear_remote_unread(&key);
        self.enqueue(ClientFrame::ConversationAck { req, chat_type: key.chat_type, conversation: key.id.clone(), private });
        self.finish(now, true);
        Ok(Some(req))
    }

    /// Sends the group read ack of a received group message, with an optional ext for the
    /// sender. `Ok(None)`: this user already acked it, nothing sent.
    pub fn ack_group_message_read(&mut self, now: u64, msg_id: MsgId, ext: Option<&str>) -> ChatResult<Option<ReqId>> {
        self.ack_group_message_read_with(now, msg_id, ext, None)
    }

    /// [`ack_group_message_read`](Self::ack_group_message_read) with a per-call override of
    /// private reading (`None`: the option). A private one is checked like an ack but records
    /// none: the sender's count and list stay as they are, `ext` goes nowhere.
    pub fn ack_group_message_read_with(
        &mut self,
        now: u64,
        msg_id: MsgId,
        ext: Option<&str>,
        private: Option<bool>,
    ) -> ChatResult<Option<ReqId>> {
        let result = self.ack_group_message_read_checked(now, msg_id, ext, private);
        // A refused command fetched its message without an input end: keep the cache bounded.
        self.evict();
        result
    }

    fn ack_group_message_read_checked(
        &mut self,
        now: u64,
        msg_id: MsgId,
        ext: Option<&str>,
        private: Option<bool>,
    ) -> ChatResult<Option<ReqId>> {
        let private = self.read_ack_private(private)?;
        // The server's order: ext, the message, already acked, asked for acks. (The policy,
        // membership and validity are the server's facts: it alone checks them.)
        rules::check_ext(ext)?;
        self.fetch(msg_id);
        let m = self.held_message(msg_id)?;
        rules::check_group_ack_target(GroupAckKind::Read, MessageFacts::from(m), &self.cfg.user)?;
        if m.group_ack_sent {
            return Ok(None);
        }
        rules::check_group_ack_asked(GroupAckKind::Read, MessageFacts::from(m))?;
        let effect = rules::read_ack_effect(private, false, !self.is_unread(m));
        if effect == rules::ReadAckEffect::Nothing {
            return Ok(None);
        }
        let req = self.next_req();
        let ext = if private { None } else { ext.map(str::to_string) };
        if effect == rules::ReadAckEffect::Receipt {
            self.update_message(msg_id, |m| m.group_ack_sent = true);
        }
        self.mark_read_local(msg_id);
        self.enqueue(ClientFrame::GroupAck { req, msg_id, ext, private });
        self.finish(now, true);
        Ok(Some(req))
    }

    /// Asks for one page of a group message's read acks (needs a connection: 300 otherwise).
    pub fn fetch_group_read_acks(&mut self, now: u64, msg_id: MsgId, page_size: u32, start_ack_id: Option<AckId>) -> ChatResult<ReqId> {
        self.fetch_group_acks(now, GroupAckKind::Read, msg_id, page_size, start_ack_id)
    }

    /// Asks for one page of a group message's delivery acks (needs a connection: 300 otherwise);
    /// the answer is `Completion::GroupAcks`, like the read acks'.
    pub fn fetch_group_delivery_acks(&mut self, now: u64, msg_id: MsgId, page_size: u32, start_ack_id: Option<AckId>) -> ChatResult<ReqId> {
        self.fetch_group_acks(now, GroupAckKind::Delivery, msg_id, page_size, start_ack_id)
    }

    fn fetch_group_acks(
        &mut self,
        now: u64,
        kind: GroupAckKind,
        msg_id: MsgId,
        page_size: u32,
        start_ack_id: Option<AckId>,
    ) -> ChatResult<ReqId> {
        rules::check_page_size(page_size)?;
        self.query(now, Query::FetchGroupAcks, |req| match kind {
            GroupAckKind::Read => ClientFrame::FetchGroupAcks { req, msg_id, page_size, start_ack_id },
            GroupAckKind::Delivery => ClientFrame::FetchGroupDeliveryAcks { req, msg_id, page_size, start_ack_id },
        })
    }

    /// Asks for one page of the members who have not read a group message, after `cursor` (the
    /// last id of the previous page; empty or `None`: from the first). Needs a connection (300).
    pub fn fetch_group_unread_members(&mut self, now: u64, msg_id: MsgId, page_size: u32, cursor: Option<&str>) -> ChatResult<ReqId> {
        rules::check_page_size(page_size)?;
        let cursor = cursor.filter(|c| !c.is_empty()).map(str::to_string);
        self.query(now, Query::FetchGroupUnread, |req| ClientFrame::FetchGroupUnread { req, msg_id, page_size, cursor })
    }

    /// Asks for the read count of each of 1..=20 group messages (110 otherwise; 300 offline).
    pub fn fetch_group_ack_counts(&mut self, now: u64, msg_ids: &[MsgId]) -> ChatResult<ReqId> {
        rules::check_batch_ids(msg_ids.len())?;
        let msg_ids = msg_ids.to_vec();
        self.query(now, Query::FetchGroupAckCounts, |req| ClientFrame::FetchGroupAckCounts { req, msg_ids })
    }

    /// Sends the read acks of 1..=20 received 1:1 messages of the conversation with `conversation`
    /// in one round trip (110 otherwise; 300 offline: unlike a single ack it is not queued). The
    /// answer has one item per id; each acked message is marked read here then.
    pub fn ack_messages_read(&mut self, now: u64, conversation: &str, msg_ids: &[MsgId]) -> ChatResult<ReqId> {
        self.ack_messages_read_with(now, conversation, msg_ids, None)
    }

    /// [`ack_messages_read`](Self::ack_messages_read) with a per-call override of private
    /// reading (`None`: the option): each id as a private single ack.
    pub fn ack_messages_read_with(&mut self, now: u64, conversation: &str, msg_ids: &[MsgId], private: Option<bool>) -> ChatResult<ReqId> {
        let private = self.read_ack_private(private)?;
        rules::check_batch_ids(msg_ids.len())?;
        if conversation.is_empty() {
            return Err(ChatError::invalid_param("conversation must not be empty"));
        }
        let (conversation, msg_ids) = (conversation.to_string(), msg_ids.to_vec());
        self.query(now, Query::ReadAcks { private }, |req| ClientFrame::ReadAcks { req, conversation, msg_ids, private })
    }

    /// Replaces the token (renewToken): the next login uses it, and a live session hands it to
    /// the server, which checks it for this user without dropping the connection; the answer
    /// is `RequestCompleted` (`Done`, or 104/108/202). Offline: `Ok(None)`, the token waits for the
    /// next login.
    pub fn renew_token(&mut self, now: u64, token: &str) -> ChatResult<Option<ReqId>> {
        if token.is_empty() {
            return Err(ChatError::invalid_param("token must not be empty"));
        }
        self.token = Some(token.to_string());
        if self.link == Link::Down {
            return Ok(None);
        }
        let token = token.to_string();
        self.query(now, Query::RenewToken, |req| ClientFrame::RenewToken { req, token }).map(Some)
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
        let result = self.mark_message_read_checked(now, msg_id);
        // A refused command fetched its message without an input end: keep the cache bounded.
        self.evict();
        result
    }

    fn mark_message_read_checked(&mut self, now: u64, msg_id: MsgId) -> ChatResult<Option<ReqId>> {
        self.fetch(msg_id);
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
        let newest = c.newest;
        let req = self.next_req();
        self.apply_read_up_to(key, newest);
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

    /// Leaves a group (needs a connection). The owner cannot leave (603).
    pub fn leave_group(&mut self, now: u64, group: &str) -> ChatResult<ReqId> {
        validate_id("group", group)?;
        let group = group.to_string();
        self.query(now, Query::Group, |req| ClientFrame::LeaveGroup { req, group })
    }

    pub fn set_group_role(&mut self, now: u64, group: &str, member: &str, role: GroupRole) -> ChatResult<ReqId> {
        validate_id("group", group)?;
        let (group, member) = (group.to_string(), member.to_string());
        self.query(now, Query::Group, |req| ClientFrame::SetRole { req, group, member, role })
    }
}
