//! Group read receipts: acking a group message and paging through its acks. The checks, the
//! recording and the paging are shared with group delivery acks (`group_delivery`): each takes
//! the [`GroupAckKind`] and uses that kind's policy, flag, ack set and store rows. In a group
//! above the `coalesce_above` threshold a read ack is stored and echoed to the acker's devices,
//! and the sender gets one coalesced count update per message per interval (`coalesce`) instead
//! of one event per ack.

use std::sync::Arc;

use receipt_core::protocol::{Response, ServerEvent};
use receipt_core::rules::{self, GroupAckPolicy, MessageFacts};
use receipt_core::{ChatError, ChatType, ConversationKey, CursorResult, ErrorCode, GroupAckKind, GroupReadAck, MsgId, UserId};

use crate::state::HashSet;

use super::coalesce::CountKind;
use super::{err, Res, ServerCore, StoreOp};

impl ServerCore {
    /// The policy of group acks of `kind` (`[group_ack]` or `[group_delivery_ack]`).
    pub(super) fn policy_of(&self, kind: GroupAckKind) -> &GroupAckPolicy {
        match kind {
            GroupAckKind::Read => &self.ack_policy,
            GroupAckKind::Delivery => &self.delivery_policy,
        }
    }

    /// A group read ack; `private`: after the same checks, the reader's own read state only (no
    /// ack recorded, the count and the list unchanged: [`rules::read_ack_effect`]).
    pub(super) fn group_ack(&mut self, now: u64, user: &str, msg_id: MsgId, ext: Option<String>, private: bool) -> Res<Response> {
        rules::check_ext(ext.as_deref())?;
        if self.check_group_acker(now, user, GroupAckKind::Read, msg_id)? {
            return Ok(Response::Done);
        }
        let group_id = self.state.messages.get(&msg_id).expect("checked").msg.to.clone();
        let key = ConversationKey::new(ChatType::GroupChat, group_id);
        self.load_conv(user, &key)?;
        if private {
            let read = self.conv(user, &key).is_some_and(|c| c.read.covers(msg_id));
            if rules::read_ack_effect(true, false, read) == rules::ReadAckEffect::OwnReadState {
                self.read_privately(user, &key, msg_id);
            }
            return Ok(Response::Done);
        }
        self.record_group_ack(now, user, GroupAckKind::Read, msg_id, ext);
        self.mark_one(user, &key, msg_id);
        Ok(Response::Done)
    }

    /// May `user` send a group ack of `kind` of `msg_id`? Makes the message resident and checks,
    /// in this order: the message (unknown 500, past retention 506), a group message `user` did
    /// not send (500), already acked (`Ok(true)`: nothing to do), the policy, the ask,
    /// membership, validity (505, 505, 602, 506), and a member at send time (602).
    pub(super) fn check_group_acker(&mut self, now: u64, user: &str, kind: GroupAckKind, msg_id: MsgId) -> Res<bool> {
        self.load_message(msg_id)?;
        let rec = self.message(now, msg_id, ErrorCode::MessageExpired)?;
        rules::check_group_ack_target(kind, MessageFacts::from(&*rec.msg), user)?;
        if self.acked(kind, rec, user)? {
            return Ok(true);
        }
        let group = self.state.groups.get(&rec.msg.to);
        let is_member = group.is_some_and(|g| g.members.contains_key(user));
        rules::check_group_ack(kind, self.policy_of(kind), MessageFacts::from(&*rec.msg), is_member, now)?;
        // Only members at send time: a member who joined after the message was sent is not among
        // its readers (nor in the sender's ack list).
        if let Some(&joined) = group.and_then(|g| g.joined_after.get(user)).filter(|&&j| msg_id <= j) {
            return Err(err(
                ErrorCode::GroupNotJoined,
                format!("{user} joined {} after message {msg_id} (newest then: {joined})", rec.msg.to),
            ));
        }
        Ok(false)
    }

    /// Records `user`'s group ack of `kind` of `msg_id` (checked by [`Self::check_group_acker`])
    /// and tells whom it concerns.
    pub(super) fn record_group_ack(&mut self, now: u64, user: &str, kind: GroupAckKind, msg_id: MsgId, content: Option<String>) {
        let rec = self.state.messages.get(&msg_id).expect("checked");
        let (group, sender) = (rec.msg.to.clone(), rec.msg.from.clone());
        let count = rec.acks_of(kind).count + 1;
        self.state.counters.last_ack_id += 1;
        self.counters_dirty = true;
        let ack = GroupReadAck { ack_id: self.state.counters.last_ack_id, msg_id, from: user.to_string(), content, count, timestamp: now };
        self.state.messages.get_mut(&msg_id).expect("checked").add_ack_of(kind, ack.clone());
        self.changed_msg(msg_id);
        self.effects.ops.push(match kind {
            GroupAckKind::Read => StoreOp::PutGroupAck(ack.clone()),
            GroupAckKind::Delivery => StoreOp::PutGroupDeliveryAck(ack.clone()),
        });
        // A large group's read acks are coalesced: the sender gets count updates
        // (`flush_counts`), members nothing; only the acker's own devices get the ack. Nothing
        // here is O(members). (Delivery acks are not coalesced yet: one event per ack.)
        let coalesce = kind == GroupAckKind::Read
            && self.state.groups.get(&group).is_some_and(|g| rules::coalesce_group_acks(&self.ack_policy, g.members.len()));
        if coalesce {
            self.counts.note(now, CountKind::GroupRead, msg_id, &group, &sender, count);
            self.echo(user, ServerEvent::GroupRead { group, sender, ack });
            return;
        }
        let event = match kind {
            GroupAckKind::Read => ServerEvent::GroupRead { group, sender, ack },
            GroupAckKind::Delivery => ServerEvent::GroupDelivered { group, sender, ack },
        };
        self.emit_group_ack(kind, user, Arc::new(event));
    }

    /// A group ack's event goes to the sender, to the acker's devices (their own echo: the ack
    /// is not sent twice) and, when the kind's policy lets members see acks, to every member.
    pub(super) fn emit_group_ack(&mut self, kind: GroupAckKind, acker: &str, ev: Arc<ServerEvent>) {
        let (ServerEvent::GroupRead { group, sender, .. } | ServerEvent::GroupDelivered { group, sender, .. }) = &*ev else {
            return;
        };
        let members: Vec<UserId> = match self.state.groups.get(group) {
            Some(g) if rules::members_see_group_acks(self.policy_of(kind)) => g.members.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let mut to: Vec<UserId> = vec![sender.clone(), acker.to_string()];
        to.extend(members);
        let mut seen = HashSet::default();
        for u in to {
            if seen.insert(u.clone()) {
                if u == acker {
                    self.echo(&u, ev.clone());
                } else {
                    self.emit(&u, ev.clone());
                }
            }
        }
    }

    /// Emits the coalesced count updates due at `now_ms` (every pending one with `all`: at
    /// shutdown), one `GroupAckCount` per changed message into its sender's log. The caller (the
    /// core thread, after each batch and on its tick) takes the effects like [`apply`]'s.
    ///
    /// [`apply`]: ServerCore::apply
    pub fn flush_counts(&mut self, now_ms: u64, all: bool) {
        if self.counts.next_due().is_none_or(|at| at > now_ms && !all) {
            return;
        }
        self.now_ms = now_ms;
        for (kind, msg_id, p) in self.counts.take_due(now_ms, all) {
            match kind {
                CountKind::GroupRead => {
                    self.emit(&p.to, ServerEvent::GroupAckCount { group: p.group, msg_id, count: p.count, timestamp: now_ms })
                }
            }
        }
    }

    /// Messages with a coalesced count update pending (at most one entry each).
    pub fn pending_counts(&self) -> usize {
        self.counts.len()
    }

    /// The interval of the coalesced count updates (ms): the core thread ticks at least this
    /// often.
    pub fn count_interval_ms(&self) -> u64 {
        self.counts.interval_ms()
    }

    /// One page of the group acks of `kind` of `msg_id`, newest first, from ack id `start`.
    pub(super) fn fetch_group_acks(
        &mut self,
        now: u64,
        user: &str,
        kind: GroupAckKind,
        msg_id: MsgId,
        page_size: u32,
        start: Option<u64>,
    ) -> Res<Response> {
        rules::check_page_size(page_size)?;
        self.load_message(msg_id)?;
        let rec = self.visible_group_message(now, user, kind, msg_id)?;
        // Newest first from `start`: one more than the page, whose id is the next cursor. With
        // the cache, the stored acks and those made since the record was read (pinned ones
        // among them), merged.
        let (start, want) = (start.unwrap_or(u64::MAX), page_size as usize + 1);
        let mut acks: Vec<GroupReadAck> = rec.acks_of(kind).acks.range(..=start).rev().take(want).map(|(_, a)| a.clone()).collect();
        if let Some(reader) = &self.cache.reader {
            acks.extend(reader.acks_desc_of(kind, msg_id, start, want).map_err(super::read_failed)?);
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

/// A message that is not a group message has no group acks of either kind (500).
pub(super) fn not_a_group_message(kind: GroupAckKind) -> ChatError {
    ChatError::wrong_type(format!("group {} acks are for group messages only", kind.word()))
}
