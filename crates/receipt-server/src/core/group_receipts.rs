//! Group read receipts: acking a group message and paging through its acks.

use std::sync::Arc;

use receipt_core::protocol::{Response, ServerEvent};
use receipt_core::rules::{self, MessageFacts};
use receipt_core::{ChatError, ChatType, ConversationKey, CursorResult, ErrorCode, GroupReadAck, MsgId, UserId};

use crate::state::HashSet;

use super::{err, Res, ServerCore, StoreOp};

impl ServerCore {
    /// A group read ack; `private`: after the same checks, the reader's own read state only (no
    /// ack recorded, the count and the list unchanged: [`rules::read_ack_effect`]).
    pub(super) fn group_ack(&mut self, now: u64, user: &str, msg_id: MsgId, ext: Option<String>, private: bool) -> Res<Response> {
        rules::check_ext(ext.as_deref())?;
        self.load_message(msg_id)?;
        let rec = self.message(now, msg_id, ErrorCode::MessageExpired)?;
        let facts = MessageFacts::from(&*rec.msg);
        rules::check_group_ack_target(facts, user)?;
        if rec.ackers.contains(user) {
            return Ok(Response::Done);
        }
        let key = ConversationKey::new(ChatType::GroupChat, rec.msg.to.clone());
        // With the cache the record holds only the acks made since it was read.
        if let Some(reader) = &self.cache.reader {
            if reader.acked_by(msg_id, user).map_err(super::read_failed)? {
                return Ok(Response::Done);
            }
        }
        self.load_conv(user, &key)?;
        let rec = self.state.messages.get(&msg_id).expect("loaded");
        let facts = MessageFacts::from(&*rec.msg);
        let group = self.state.groups.get(&rec.msg.to);
        rules::check_group_ack(&self.ack_policy, facts, group.is_some_and(|g| g.members.contains_key(user)), now)?;
        // Only members at send time: a member who joined after the message was sent is not among
        // its readers (nor in the sender's ack list).
        if let Some(&joined) = group.and_then(|g| g.joined_after.get(user)).filter(|&&j| msg_id <= j) {
            return Err(err(
                ErrorCode::GroupNotJoined,
                format!("{user} joined {} after message {msg_id} (newest then: {joined})", rec.msg.to),
            ));
        }
        if private {
            let key = ConversationKey::new(ChatType::GroupChat, rec.msg.to.clone());
            let read = self.conv(user, &key).is_some_and(|c| c.read.covers(msg_id));
            if rules::read_ack_effect(true, false, read) == rules::ReadAckEffect::OwnReadState {
                self.read_privately(user, &key, msg_id);
            }
            return Ok(Response::Done);
        }
        // Who hears of the ack besides the sender and the acker.
        let members: Vec<UserId> = match group {
            Some(g) if rules::members_see_group_acks(&self.ack_policy) => g.members.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let group_id = rec.msg.to.clone();
        let sender = rec.msg.from.clone();
        let count = rec.ack_count + 1;
        self.state.counters.last_ack_id += 1;
        self.counters_dirty = true;
        let ack =
            GroupReadAck { ack_id: self.state.counters.last_ack_id, msg_id, from: user.to_string(), content: ext, count, timestamp: now };
        self.state.messages.get_mut(&msg_id).expect("checked").add_ack(ack.clone());
        self.changed_msg(msg_id);
        self.effects.ops.push(StoreOp::PutGroupAck(ack.clone()));
        self.mark_one(user, &ConversationKey::new(ChatType::GroupChat, group_id.clone()), msg_id);
        let mut to: Vec<UserId> = vec![sender.clone(), user.to_string()];
        to.extend(members);
        let ev = Arc::new(ServerEvent::GroupRead { group: group_id, sender, ack });
        let mut seen = HashSet::default();
        for u in to {
            if seen.insert(u.clone()) {
                if u == user {
                    self.echo(&u, ev.clone());
                } else {
                    self.emit(&u, ev.clone());
                }
            }
        }
        Ok(Response::Done)
    }

    pub(super) fn fetch_group_acks(&mut self, now: u64, user: &str, msg_id: MsgId, page_size: u32, start: Option<u64>) -> Res<Response> {
        rules::check_page_size(page_size)?;
        self.load_message(msg_id)?;
        let rec = self.message(now, msg_id, ErrorCode::MessageInvalid)?;
        if rec.msg.chat_type != ChatType::GroupChat {
            return Err(ChatError::wrong_type("group read acks are for group messages only"));
        }
        let is_member = self.state.groups.get(&rec.msg.to).is_some_and(|g| g.members.contains_key(user));
        rules::check_may_see_group_acks(&self.ack_policy, MessageFacts::from(&*rec.msg), user, is_member)?;
        // Newest first from `start`: one more than the page, whose id is the next cursor. With
        // the cache, the stored acks and those made since the record was read (pinned ones
        // among them), merged.
        let (start, want) = (start.unwrap_or(u64::MAX), page_size as usize + 1);
        let mut acks: Vec<GroupReadAck> = rec.acks.range(..=start).rev().take(want).map(|(_, a)| a.clone()).collect();
        if let Some(reader) = &self.cache.reader {
            acks.extend(reader.acks_desc(msg_id, start, want).map_err(super::read_failed)?);
            acks.sort_unstable_by_key(|a| std::cmp::Reverse(a.ack_id));
            acks.dedup_by_key(|a| a.ack_id);
            acks.truncate(want);
        }
        let mut it = acks.into_iter().map(|a| (a.ack_id, a)).peekable();
        // The page also ends before its acks pass `max_result_bytes` (their exts can be 64 KiB
        // each), but holds at least one ack, so a cursor always moves on.
        let mut data: Vec<GroupReadAck> = Vec::new();
        let mut bytes = 0;
        while let Some((_, a)) = it.peek() {
            let size = crate::size::ack_bytes_bound(a);
            if data.len() == page_size as usize || (!data.is_empty() && bytes + size > self.cfg.max_result_bytes) {
                break;
            }
            bytes += size;
            data.push(it.next().expect("peeked").1);
        }
        let cursor = it.next().map(|(id, _)| id.to_string()).unwrap_or_default();
        self.result_bytes += bytes;
        Ok(Response::GroupAcks { msg_id, page: CursorResult { data, cursor } })
    }
}
