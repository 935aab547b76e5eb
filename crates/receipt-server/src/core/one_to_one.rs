//! 1:1 receipts and read state: sending (1:1 and group messages), delivery and read acks,
//! conversation acks, marking read.

use std::sync::Arc;

use receipt_core::protocol::{Response, ServerEvent};
use receipt_core::types::{validate_id, MAX_CONTENT_BYTES};
use receipt_core::{ChatError, ChatType, ConversationKey, ErrorCode, GroupRole, MsgId, UserId, WireMessage};

use crate::config::WhoMayRequest;
use crate::state::{HashMap, MessageRecord};

use super::{check_kind, err, Res, ServerCore, StoreOp};

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
        if let Some(&id) = self.state.client_ids.get(user).and_then(|ids| ids.get(&client_id)) {
            if let Some(rec) = self.state.messages.get(&id) {
                return Ok(Response::Sent { client_id, msg_id: id, timestamp: rec.msg.timestamp, need_group_ack: rec.msg.need_group_ack });
            }
        }
        validate_id("to", &to)?;
        if content.is_empty() || content.len() > MAX_CONTENT_BYTES {
            return Err(ChatError::invalid_param(format!("content must be 1..={MAX_CONTENT_BYTES} bytes")));
        }
        let (recipients, delivery_ack, group_ack): (Vec<UserId>, bool, bool) = match chat_type {
            ChatType::Chat => {
                if to == user {
                    return Err(ChatError::invalid_param("cannot send a 1:1 message to yourself"));
                }
                (vec![to.clone()], require_delivery_ack, false)
            }
            ChatType::GroupChat | ChatType::ChatRoom => {
                let g = self.group(&to)?;
                check_kind(g, chat_type)?;
                let role = self.role_in(g, user)?;
                let mut group_ack = false;
                if chat_type == ChatType::GroupChat && need_group_ack {
                    let p = &self.cfg.group_ack;
                    if !p.enabled {
                        return Err(err(ErrorCode::FeatureNotEnabled, "group read acks are not enabled"));
                    }
                    if p.who_may_request == WhoMayRequest::OwnerAndAdmins && role == GroupRole::Member {
                        return Err(err(ErrorCode::GroupPermissionDenied, "only the owner and admins may ask for group read acks"));
                    }
                    group_ack = g.members.len() <= p.member_cap;
                }
                let r = g.members.keys().filter(|m| m.as_str() != user).cloned().collect();
                (r, false, group_ack)
            }
        };
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
        self.effects.ops.push(StoreOp::PutMessage(msg.clone()));
        let ev = Arc::new(ServerEvent::Message { msg: msg.clone() });
        for r in &recipients {
            let key = msg.conversation_for(r);
            let conv = self.conv_mut(r, &key);
            conv.unread += 1;
            conv.newest = id;
            conv.newest_in = id;
            self.put_conv(r, &key);
            self.emit(r, ev.clone());
        }
        let key = msg.conversation_for(user);
        self.conv_mut(user, &key).newest = id;
        self.put_conv(user, &key);
        self.echo(user, ev);
        Ok(Response::Sent { client_id, msg_id: id, timestamp, need_group_ack: group_ack })
    }

    /// Common checks of 1:1 acks: the message is 1:1 and `user` is its recipient.
    fn check_one_to_one(rec: &MessageRecord, user: &str, what: &str) -> Res<()> {
        if rec.msg.chat_type != ChatType::Chat {
            return Err(ChatError::wrong_type(format!("{what} acks are for 1:1 messages only")));
        }
        if rec.msg.from == user {
            return Err(ChatError::wrong_type("cannot ack your own message"));
        }
        if rec.msg.to != user {
            return Err(ChatError::invalid_message(format!("message {} was not sent to you", rec.msg.id)));
        }
        Ok(())
    }

    pub(super) fn delivery_ack(&mut self, now: u64, user: &str, msg_id: MsgId) -> Res<Response> {
        let rec = self.message(now, msg_id, ErrorCode::MessageInvalid)?;
        Self::check_one_to_one(rec, user, "delivery")?;
        if rec.delivered {
            return Ok(Response::Done);
        }
        let rec = self.state.messages.get_mut(&msg_id).expect("checked");
        rec.delivered = true;
        let (from, to, read_acked) = (rec.msg.from.clone(), rec.msg.to.clone(), rec.read_acked);
        self.effects.ops.push(StoreOp::PutMessageFlags { id: msg_id, delivered: true, read_acked });
        let ev = Arc::new(ServerEvent::Delivered { msg_id, from: from.clone(), to, by: user.to_string(), timestamp: now });
        self.emit(&from, ev.clone());
        self.echo(user, ev);
        Ok(Response::Done)
    }

    pub(super) fn read_ack(&mut self, now: u64, user: &str, msg_id: MsgId) -> Res<Response> {
        let rec = self.message(now, msg_id, ErrorCode::MessageExpired)?;
        Self::check_one_to_one(rec, user, "read")?;
        let key = ConversationKey::new(ChatType::Chat, rec.msg.from.clone());
        let covered = self.conv(user, &key).is_some_and(|c| msg_id <= c.ack_wm);
        if rec.read_acked || covered {
            return Ok(Response::Done);
        }
        let rec = self.state.messages.get_mut(&msg_id).expect("checked");
        rec.read_acked = true;
        let (from, to, delivered) = (rec.msg.from.clone(), rec.msg.to.clone(), rec.delivered);
        self.effects.ops.push(StoreOp::PutMessageFlags { id: msg_id, delivered, read_acked: true });
        self.mark_one(user, &key, msg_id);
        let ev = Arc::new(ServerEvent::Read { msg_id, from: from.clone(), to, by: user.to_string(), timestamp: now });
        self.emit(&from, ev.clone());
        self.echo(user, ev);
        Ok(Response::Done)
    }

    pub(super) fn conversation_ack(
        &mut self,
        now: u64,
        user: &str,
        device: &str,
        chat_type: ChatType,
        conversation: String,
    ) -> Res<Response> {
        validate_id("conversation", &conversation)?;
        let key = ConversationKey::new(chat_type, conversation.clone());
        match chat_type {
            ChatType::Chat => {
                if conversation == user {
                    return Err(ChatError::invalid_param("a 1:1 conversation is identified by the peer"));
                }
                let Some(c) = self.conv(user, &key) else {
                    return Ok(Response::Done);
                };
                if c.newest_in <= c.ack_wm {
                    return Ok(Response::Done);
                }
                let up_to = c.newest;
                self.conv_mut(user, &key).ack_wm = up_to;
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
                let Some(up_to) = self.unread_head(user, &key) else {
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
        match msg_id {
            Some(id) => {
                let rec = self.message(now, id, ErrorCode::MessageInvalid)?;
                let received =
                    rec.msg.from != user && rec.msg.conversation_for(user) == key && (chat_type != ChatType::Chat || rec.msg.to == user);
                if !received {
                    return Err(ChatError::invalid_message(format!("message {id} is not a message you received in this conversation")));
                }
                if !self.mark_one(user, &key, id) {
                    return Ok(Response::Done);
                }
                let up_to = self.conv(user, &key).map(|c| c.read_wm).unwrap_or(0);
                self.echo(user, ServerEvent::ReadState { chat_type, conversation, msg_id: Some(id), up_to });
            }
            None => {
                let Some(up_to) = self.unread_head(user, &key) else {
                    return Ok(Response::Done);
                };
                self.mark_all(user, &key, up_to);
                self.emit(user, ServerEvent::ReadState { chat_type, conversation, msg_id: None, up_to });
            }
        }
        Ok(Response::Done)
    }
}
