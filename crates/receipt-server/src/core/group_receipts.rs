//! Group read receipts: acking a group message and paging through its acks.

use std::sync::Arc;

use receipt_core::protocol::{Response, ServerEvent};
use receipt_core::types::MAX_CONTENT_BYTES;
use receipt_core::{ChatError, ChatType, ConversationKey, CursorResult, ErrorCode, GroupReadAck, MsgId, UserId};

use crate::config::Visibility;
use crate::state::HashSet;

use super::{err, Res, ServerCore, StoreOp};

/// Largest page of `FetchGroupAcks`.
pub const MAX_PAGE_SIZE: u32 = 100;

impl ServerCore {
    pub(super) fn group_ack(&mut self, now: u64, user: &str, msg_id: MsgId, ext: Option<String>) -> Res<Response> {
        if ext.as_ref().is_some_and(|e| e.len() > MAX_CONTENT_BYTES) {
            return Err(ChatError::invalid_param(format!("ext must be at most {MAX_CONTENT_BYTES} bytes")));
        }
        let rec = self.message(now, msg_id, ErrorCode::MessageExpired)?;
        if rec.msg.chat_type != ChatType::GroupChat {
            return Err(ChatError::wrong_type("group read acks are for group messages only"));
        }
        if rec.msg.from == user {
            return Err(ChatError::wrong_type("cannot ack your own message"));
        }
        if rec.ackers.contains(user) {
            return Ok(Response::Done);
        }
        let p = &self.cfg.group_ack;
        if !p.enabled {
            return Err(err(ErrorCode::FeatureNotEnabled, "group read acks are not enabled"));
        }
        if !rec.msg.need_group_ack {
            return Err(err(ErrorCode::FeatureNotEnabled, "this message does not take group read acks"));
        }
        let group_id = rec.msg.to.clone();
        let members: Vec<UserId> = match self.state.groups.get(&group_id) {
            Some(g) if g.members.contains_key(user) => g.members.keys().cloned().collect(),
            _ => return Err(err(ErrorCode::GroupNotJoined, format!("{user} is not a member of {group_id}"))),
        };
        if now.saturating_sub(rec.msg.timestamp) > p.validity_ms() {
            return Err(err(ErrorCode::MessageExpired, "the group read ack is past its validity"));
        }
        let visibility = p.visibility;
        let sender = rec.msg.from.clone();
        let count = rec.acks.len() as u32 + 1;
        self.state.counters.last_ack_id += 1;
        self.counters_dirty = true;
        let ack =
            GroupReadAck { ack_id: self.state.counters.last_ack_id, msg_id, from: user.to_string(), content: ext, count, timestamp: now };
        self.state.messages.get_mut(&msg_id).expect("checked").add_ack(ack.clone());
        self.effects.ops.push(StoreOp::PutGroupAck(ack.clone()));
        self.mark_one(user, &ConversationKey::new(ChatType::GroupChat, group_id.clone()), msg_id);
        let mut to: Vec<UserId> = vec![sender.clone(), user.to_string()];
        if visibility == Visibility::AllMembers {
            to.extend(members);
        }
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
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ChatError::invalid_param(format!("page_size must be 1..={MAX_PAGE_SIZE}")));
        }
        let rec = self.message(now, msg_id, ErrorCode::MessageInvalid)?;
        if rec.msg.chat_type != ChatType::GroupChat {
            return Err(ChatError::wrong_type("group read acks are for group messages only"));
        }
        let allowed = rec.msg.from == user
            || (self.cfg.group_ack.visibility == Visibility::AllMembers
                && self.state.groups.get(&rec.msg.to).is_some_and(|g| g.members.contains_key(user)));
        if !allowed {
            return Err(err(ErrorCode::GroupPermissionDenied, "only the sender may see this message's read acks"));
        }
        let mut it = rec.acks.range(..=start.unwrap_or(u64::MAX)).rev();
        let data: Vec<GroupReadAck> = it.by_ref().take(page_size as usize).map(|(_, a)| a.clone()).collect();
        let cursor = it.next().map(|(id, _)| id.to_string()).unwrap_or_default();
        Ok(Response::GroupAcks { msg_id, page: CursorResult { data, cursor } })
    }
}
