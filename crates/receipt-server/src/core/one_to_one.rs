//! 1:1 receipts and read state: sending (1:1 and group messages), delivery and read acks,
//! conversation acks, marking read.

use std::sync::Arc;

use receipt_core::protocol::{Response, ServerEvent};
use receipt_core::rules::{self, MessageFacts, ReadAckEffect};
use receipt_core::types::validate_id;
use receipt_core::{ChatError, ChatType, ConversationKey, ErrorCode, GroupAckKind, MsgId, UserId, WireMessage};

use crate::state::{HashMap, MessageRecord};

use super::{check_kind, Res, ServerCore, StoreOp};

impl ServerCore {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_message(
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
        let known = if std::mem::take(&mut self.send_is_new) { None } else { self.load_client_id(user, &client_id)? };
        if let Some(id) = known {
            if let Some(rec) = self.state.messages.get(&id) {
                return Ok(Response::Sent {
                    client_id,
                    msg_id: id,
                    timestamp: rec.msg.timestamp,
                    need_group_ack: rec.msg.need_group_ack,
                    require_delivery_ack: rec.msg.require_delivery_ack,
                });
            }
        }
        validate_id("to", &to)?;
        rules::check_content(&content)?;
        let (recipients, delivery_ack, group_ack): (Vec<UserId>, bool, bool) = match chat_type {
            ChatType::Chat => {
                if to == user {
                    return Err(ChatError::invalid_param("cannot send a 1:1 message to yourself"));
                }
                if self.cfg.max_to_unseen_per_user > 0 && !self.limits.is_seen(&to) {
                    // With the cache nothing was loaded at start: a recipient who sent a message
                    // still stored counts as seen, as when the messages were loaded.
                    if let Some(reader) = &self.cache.reader {
                        if reader.has_sent(&to).map_err(super::read_failed)? {
                            self.limits.seen(&to);
                        }
                    }
                }
                self.limits.check_send_to(self.cfg.max_to_unseen_per_user, user, &to)?;
                (vec![to.clone()], require_delivery_ack, false)
            }
            ChatType::GroupChat | ChatType::ChatRoom => {
                let g = self.group(&to)?;
                check_kind(g, chat_type)?;
                let role = self.role_in(g, user)?;
                // Rooms take no group read acks: a room message's request is dropped.
                let wants = chat_type == ChatType::GroupChat && need_group_ack;
                let group_ack = rules::group_ack_on_send(GroupAckKind::Read, &self.ack_policy, wants, role, g.members.len())?;
                // A group message's delivery request is a group delivery-ack request, under its
                // own policy; rooms take none either.
                let wants = chat_type == ChatType::GroupChat && require_delivery_ack;
                let delivery_ack = rules::group_ack_on_send(GroupAckKind::Delivery, &self.delivery_policy, wants, role, g.members.len())?;
                let r = g.members.keys().filter(|m| m.as_str() != user).cloned().collect();
                (r, delivery_ack, group_ack)
            }
        };
        // The conversations this message changes, read before anything changes.
        let key_of = |r: &str| match chat_type {
            ChatType::Chat => ConversationKey::new(ChatType::Chat, if r == user { to.as_str() } else { user }),
            _ => ConversationKey::new(chat_type, to.as_str()),
        };
        if self.cache.on() {
            for r in recipients.iter().map(String::as_str).chain(std::iter::once(user)) {
                let key = key_of(r);
                self.load_conv(r, &key)?;
            }
        }
        let c = &mut self.state.counters;
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
            require_delivery_ack: delivery_ack,
            need_group_ack: group_ack,
        });
        self.counters_dirty = true;
        let id = msg.id;
        let timestamp = msg.timestamp;
        match self.state.client_ids.get_mut(user) {
            Some(ids) => {
                ids.insert(client_id.clone(), id);
            }
            None => {
                self.state.client_ids.insert(user.to_string(), HashMap::from_iter([(client_id.clone(), id)]));
            }
        }
        self.state.messages.insert(id, MessageRecord::new(msg.clone()));
        self.changed_msg(id);
        self.index_message(&msg);
        self.limits.stored(&msg);
        self.effects.ops.push(StoreOp::PutMessage(msg.clone()));
        let ev = Arc::new(ServerEvent::Message { msg: msg.clone() });
        for r in &recipients {
            let key = msg.conversation_for(r);
            let conv = self.conv_mut(r, &key);
            conv.unread += 1;
            conv.newest = id;
            conv.newest_received = id;
            self.put_conv(r, &key);
            self.emit(r, ev.clone());
        }
        let key = msg.conversation_for(user);
        self.conv_mut(user, &key).newest = id;
        self.put_conv(user, &key);
        self.echo(user, ev);
        Ok(Response::Sent { client_id, msg_id: id, timestamp, need_group_ack: group_ack, require_delivery_ack: delivery_ack })
    }

    pub(super) fn delivery_ack(&mut self, now: u64, user: &str, msg_id: MsgId) -> Res<Response> {
        self.load_message(msg_id)?;
        let rec = self.message(now, msg_id, ErrorCode::MessageInvalid)?;
        if rec.msg.chat_type == ChatType::GroupChat {
            return self.group_delivery_ack(now, user, msg_id);
        }
        rules::check_one_to_one_ack(MessageFacts::from(&*rec.msg), user, "delivery")?;
        if rec.delivered {
            return Ok(Response::Done);
        }
        let rec = self.state.messages.get_mut(&msg_id).expect("checked");
        rec.delivered = true;
        let (from, to, read_acked) = (rec.msg.from.clone(), rec.msg.to.clone(), rec.read_acked);
        self.changed_msg(msg_id);
        self.effects.ops.push(StoreOp::PutMessageFlags { id: msg_id, delivered: true, read_acked });
        let ev = Arc::new(ServerEvent::Delivered { msg_id, from: from.clone(), to, by: user.to_string(), timestamp: now });
        self.emit(&from, ev.clone());
        self.echo(user, ev);
        Ok(Response::Done)
    }

    /// A 1:1 read ack; `private`: the reader's own read state only ([`rules::read_ack_effect`]).
    pub(super) fn read_ack(&mut self, now: u64, user: &str, msg_id: MsgId, private: bool) -> Res<Response> {
        self.load_message(msg_id)?;
        let rec = self.message(now, msg_id, ErrorCode::MessageExpired)?;
        rules::check_read_ack(MessageFacts::from(&*rec.msg), user)?;
        let key = ConversationKey::new(ChatType::Chat, rec.msg.from.clone());
        self.load_conv(user, &key)?;
        let rec = self.state.messages.get(&msg_id).expect("checked");
        let conv = self.conv(user, &key);
        let receipt_sent = rules::read_ack_covered(rec.read_acked, conv.map_or(0, |c| c.receipt_up_to), msg_id);
        let read = conv.is_some_and(|c| c.read.covers(msg_id));
        match rules::read_ack_effect(private, receipt_sent, read) {
            ReadAckEffect::Nothing => return Ok(Response::Done),
            ReadAckEffect::OwnReadState => {
                self.read_privately(user, &key, msg_id);
                return Ok(Response::Done);
            }
            ReadAckEffect::Receipt => {}
        }
        let rec = self.state.messages.get_mut(&msg_id).expect("checked");
        rec.read_acked = true;
        let (from, to, delivered) = (rec.msg.from.clone(), rec.msg.to.clone(), rec.delivered);
        self.changed_msg(msg_id);
        self.effects.ops.push(StoreOp::PutMessageFlags { id: msg_id, delivered, read_acked: true });
        self.mark_one(user, &key, msg_id);
        let ev = Arc::new(ServerEvent::Read { msg_id, from: from.clone(), to, by: user.to_string(), timestamp: now });
        self.emit(&from, ev.clone());
        self.echo(user, ev);
        Ok(Response::Done)
    }

    /// Marks one received message read for `user` alone (a mark-read, or a private ack): their
    /// other devices hear `ReadState`, nobody else hears anything. Nothing when it was read.
    pub(super) fn read_privately(&mut self, user: &str, key: &ConversationKey, id: MsgId) {
        if self.mark_one(user, key, id) {
            let up_to = self.conv(user, key).map_or(0, |c| c.read.up_to);
            self.echo(user, ServerEvent::ReadState { chat_type: key.chat_type, conversation: key.id.clone(), msg_id: Some(id), up_to });
        }
    }

    /// Marks a whole conversation read for `user` alone (a mark-all, or a private conversation
    /// ack): `ReadState` to their devices (the acting one too: the watermark may cover messages
    /// it has not received yet). Nothing when nothing was unread.
    fn read_all_privately(&mut self, user: &str, key: &ConversationKey) {
        if let Some(up_to) = self.unread_head(user, key) {
            self.mark_all(user, key, up_to);
            self.emit(user, ServerEvent::ReadState { chat_type: key.chat_type, conversation: key.id.clone(), msg_id: None, up_to });
        }
    }

    pub(super) fn conversation_ack(
        &mut self,
        now: u64,
        user: &str,
        device: &str,
        chat_type: ChatType,
        conversation: String,
        private: bool,
    ) -> Res<Response> {
        validate_id("conversation", &conversation)?;
        let key = ConversationKey::new(chat_type, conversation.clone());
        self.load_conv(user, &key)?;
        match chat_type {
            ChatType::Chat => {
                if conversation == user {
                    return Err(ChatError::invalid_param("a 1:1 conversation is identified by the peer"));
                }
                let up_to = self.conversation_ack_up_to(user, &key);
                let read = self.unread_head(user, &key).is_none();
                match rules::read_ack_effect(private, up_to.is_none(), read) {
                    ReadAckEffect::Nothing => return Ok(Response::Done),
                    ReadAckEffect::OwnReadState => {
                        self.read_all_privately(user, &key);
                        return Ok(Response::Done);
                    }
                    ReadAckEffect::Receipt => {}
                }
                let Some(up_to) = up_to else {
                    return Ok(Response::Done);
                };
                self.conv_mut(user, &key).receipt_up_to = up_to;
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
                let Some(up_to) = self.conversation_ack_up_to(user, &key) else {
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

    /// Where `user`'s conversation ack of `key` moves the marks; `None`: nothing to say.
    fn conversation_ack_up_to(&self, user: &str, key: &ConversationKey) -> Option<MsgId> {
        self.conv(user, key).and_then(|c| rules::conversation_ack_up_to(key.chat_type, c.marks()))
    }

    pub(super) fn mark_read(
        &mut self,
        now: u64,
        user: &str,
        chat_type: ChatType,
        conversation: String,
        msg_id: Option<MsgId>,
    ) -> Res<Response> {
        validate_id("conversation", &conversation)?;
        let key = ConversationKey::new(chat_type, conversation.clone());
        if chat_type != ChatType::Chat {
            let g = self.group(&conversation)?;
            check_kind(g, chat_type)?;
            self.role_in(g, user)?;
        }
        self.load_conv(user, &key)?;
        match msg_id {
            Some(id) => {
                self.load_message(id)?;
                let rec = self.message(now, id, ErrorCode::MessageInvalid)?;
                let received =
                    rec.msg.from != user && rec.msg.conversation_for(user) == key && (chat_type != ChatType::Chat || rec.msg.to == user);
                if !received {
                    return Err(ChatError::invalid_message(format!("message {id} is not a message you received in this conversation")));
                }
                self.read_privately(user, &key, id);
            }
            None => {
                self.read_all_privately(user, &key);
            }
        }
        Ok(Response::Done)
    }
}
