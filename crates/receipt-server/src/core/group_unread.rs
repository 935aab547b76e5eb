//! Who has not read a group message (paged), read counts for a screen of group messages, and
//! 1:1 read acks in one trip. Who acked is read only through [`ServerCore::acked`], so a change
//! in how acks are held touches it alone.

use std::ops::Bound;

use receipt_core::protocol::{BatchItem, Response};
use receipt_core::rules::{self, MessageFacts};
use receipt_core::types::validate_id;
use receipt_core::{ChatType, CursorResult, ErrorCode, GroupAckKind, MsgId, UserId};

use crate::state::MessageRecord;

use super::{err, Res, ServerCore};

impl ServerCore {
    /// Whether `user` sent a group ack of `kind` of message `rec` (a point lookup: no ext is
    /// read). With the hot-state cache the record holds only the acks made since it was read;
    /// the rest are asked of the store.
    pub(super) fn acked(&self, kind: GroupAckKind, rec: &MessageRecord, user: &str) -> Res<bool> {
        if rec.acks_of(kind).ackers.contains(user) {
            return Ok(true);
        }
        match &self.cache.reader {
            Some(reader) => reader.acked_by_of(kind, rec.msg.id, user).map_err(super::read_failed),
            None => Ok(false),
        }
    }

    /// The group's members at send time of `rec` still in it, the sender aside, in user-id order
    /// after `after`: who may have read it.
    fn readers_at_send<'a>(&'a self, rec: &'a MessageRecord, after: Bound<&'a str>) -> impl Iterator<Item = &'a UserId> + 'a {
        let group = self.state.groups.get(&rec.msg.to);
        group.into_iter().flat_map(move |g| g.members.range::<str, _>((after, Bound::Unbounded)).map(|(u, _)| u)).filter(move |u| {
            **u != rec.msg.from && group.is_some_and(|g| rules::member_at_send(g.joined_after.get(*u).copied(), rec.msg.id))
        })
    }

    /// How many of the members at send time still in the group acked `rec`: with the unread
    /// members, exactly those members (a reader who left, or left and came back after the send,
    /// no longer counts). One lookup per such member, bounded by the group's size.
    fn read_count(&self, rec: &MessageRecord) -> Res<u32> {
        let mut count = 0;
        for u in self.readers_at_send(rec, Bound::Unbounded) {
            count += u32::from(self.acked(GroupAckKind::Read, rec, u)?);
        }
        Ok(count)
    }

    /// A group message `user` may see the acks of `kind` of (the visibility policy of the ack
    /// list). The caller made it resident (`load_message`).
    pub(super) fn visible_group_message(&self, now: u64, user: &str, kind: GroupAckKind, msg_id: MsgId) -> Res<&MessageRecord> {
        let rec = self.message(now, msg_id, ErrorCode::MessageInvalid)?;
        if rec.msg.chat_type != ChatType::GroupChat {
            return Err(super::group_receipts::not_a_group_message(kind));
        }
        let is_member = self.state.groups.get(&rec.msg.to).is_some_and(|g| g.members.contains_key(user));
        rules::check_may_see_group_acks(kind, self.policy_of(kind), MessageFacts::from(&*rec.msg), user, is_member)?;
        Ok(rec)
    }

    pub(super) fn fetch_group_unread(
        &mut self,
        now: u64,
        user: &str,
        msg_id: MsgId,
        page_size: u32,
        cursor: Option<UserId>,
    ) -> Res<Response> {
        rules::check_page_size(page_size)?;
        if let Some(c) = cursor.as_deref().filter(|c| !c.is_empty()) {
            validate_id("cursor", c)?;
        }
        self.load_message(msg_id)?;
        let rec = self.visible_group_message(now, user, GroupAckKind::Read, msg_id)?;
        // Without the ask nobody can ack: every member would be listed as unread forever.
        rules::check_group_ack_asked(GroupAckKind::Read, MessageFacts::from(&*rec.msg))?;
        if !self.state.groups.contains_key(&rec.msg.to) {
            return Err(err(ErrorCode::GroupInvalidId, format!("unknown group {}", rec.msg.to)));
        }
        let after = match cursor.as_deref() {
            Some(c) if !c.is_empty() => Bound::Excluded(c),
            _ => Bound::Unbounded,
        };
        // Members in user-id order (a stable order: the cursor is the last id returned); the
        // sender, members who joined later and those who acked are skipped; members who left
        // are no longer members. The page also ends before `max_result_bytes`; one unread
        // member past it says whether there is a next page.
        let mut data: Vec<UserId> = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for u in self.readers_at_send(rec, after) {
            if self.acked(GroupAckKind::Read, rec, u)? {
                continue;
            }
            let size = crate::size::member_bytes(u);
            if data.len() == page_size as usize || (!data.is_empty() && bytes + size > self.cfg.max_result_bytes) {
                more = true;
                break;
            }
            bytes += size;
            data.push(u.to_string());
        }
        let cursor = if more { data.last().cloned().unwrap_or_default() } else { String::new() };
        self.result_bytes += bytes;
        Ok(Response::GroupUnread { msg_id, page: CursorResult { data, cursor } })
    }

    /// One item per id: its read count (members at send time still in the group who acked), or
    /// the error a single fetch of its acks would give.
    pub(super) fn fetch_group_ack_counts(&mut self, now: u64, user: &str, msg_ids: Vec<MsgId>) -> Res<Response> {
        rules::check_batch_ids(msg_ids.len())?;
        let items = msg_ids
            .into_iter()
            .map(|msg_id| {
                match self
                    .load_message(msg_id)
                    .and_then(|()| self.visible_group_message(now, user, GroupAckKind::Read, msg_id))
                    .and_then(|rec| self.read_count(rec))
                {
                    Ok(count) => BatchItem { msg_id, count, err: None },
                    Err(e) => BatchItem { msg_id, count: 0, err: Some(e) },
                }
            })
            .collect();
        Ok(Response::GroupAckCounts { items })
    }

    /// One item per id: done, or the error a single read ack of it would give (500 also for a
    /// message of another conversation). Each done ack has every effect of a single one
    /// (`private`: of a single private one).
    pub(super) fn read_acks(&mut self, now: u64, user: &str, conversation: String, msg_ids: Vec<MsgId>, private: bool) -> Res<Response> {
        validate_id("conversation", &conversation)?;
        rules::check_batch_ids(msg_ids.len())?;
        let items = msg_ids
            .into_iter()
            .map(|msg_id| {
                let res = self
                    .load_message(msg_id)
                    .and_then(|()| self.message(now, msg_id, ErrorCode::MessageExpired))
                    .and_then(|rec| rules::check_in_conversation(MessageFacts::from(&*rec.msg), &conversation))
                    .and_then(|()| self.read_ack(now, user, msg_id, private));
                BatchItem { msg_id, count: 0, err: res.err() }
            })
            .collect();
        Ok(Response::ReadAcks { items })
    }
}
