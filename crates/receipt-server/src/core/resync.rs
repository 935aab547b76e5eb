//! A full state resync: a device whose cursor is below the trimmed prefix of its user's log
//! missed events that are gone, so instead of a replay it gets the state they built. The core
//! walks the user's conversations (`conversation_keys`) and, in each, the retained messages
//! (`conv_messages_after`, the `conv_messages` index: resident without the hot-state cache, a
//! range scan of the store with it, plus the messages not committed yet), reads each message
//! and the conversations its flags come from through the cache, and sends them as `Resync`
//! pages, window by window like a backlog (`replay`): at most
//! [`RESYNC_PAGE`] messages and ~256 KiB a page, one ~1 MiB window per written window. Then the
//! events logged since the resync started (`Backlog`), the unread counts and
//! `SyncDone { resync: true }`. docs/server-data-model.md, "Event logs and device cursors".

use std::collections::BTreeSet;

use receipt_core::protocol::{RetainedMessage, ServerFrame};
use receipt_core::{ChatType, ConversationKey, GroupAckKind, MsgId, WireMessage};

use super::replay::BACKLOG_BYTES;
use super::{read_failed, Res, ServerCore, SessionId};
use crate::state::ConvId;

/// Most messages in one `Resync` frame.
pub const RESYNC_PAGE: usize = 100;

/// Where a resync is in its walk over the user's conversations.
#[derive(Debug)]
pub(super) struct Walk {
    /// The user's conversations when the resync started, in key order.
    convs: Vec<ConversationKey>,
    /// The conversation being sent, and the last message id sent of it.
    at: usize,
    after: MsgId,
}

impl Walk {
    pub(super) fn new(convs: Vec<ConversationKey>) -> Self {
        Walk { convs, at: 0, after: 0 }
    }
}

impl ServerCore {
    /// The next `Resync` pages of `session`'s walk, about `budget` estimated bytes of them: the
    /// frames, their estimated bytes, and whether the walk is over. A store read failing ends
    /// the login (`LoginFailed`, the connection closes): the device resyncs at its next login.
    pub(super) fn resync_pages(&mut self, session: SessionId, user: &str, budget: usize) -> (Vec<ServerFrame>, usize, bool) {
        let Some(mut walk) = self.syncing.get_mut(&session).and_then(|r| r.resync.take()) else {
            return (Vec::new(), 0, true);
        };
        let (mut frames, mut page, mut page_bytes, mut window) = (Vec::new(), Vec::new(), 0, 0);
        // Each turn moves to the next conversation or sends at least one message: bounded by
        // the conversations plus the messages of one window.
        let finished = loop {
            let Some(key) = walk.convs.get(walk.at).cloned() else { break Ok(true) };
            let Some(floor) = self.resync_floor(user, &key) else {
                (walk.at, walk.after) = (walk.at + 1, 0);
                continue;
            };
            let conv = ConvId::for_user(user, &key);
            let ids = match self.conv_messages_after(&conv, walk.after.max(floor), RESYNC_PAGE) {
                Ok(ids) => ids,
                Err(e) => break Err(e),
            };
            if ids.is_empty() {
                (walk.at, walk.after) = (walk.at + 1, 0);
                continue;
            }
            let mut failed = None;
            for id in ids {
                let retained = match self.retained(user, &key, id) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        walk.after = id;
                        continue;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                walk.after = id;
                let size = 256 + retained.msg.content.len() * 2;
                if !page.is_empty() && (page.len() >= RESYNC_PAGE || page_bytes + size > BACKLOG_BYTES) {
                    frames.push(ServerFrame::Resync { messages: std::mem::take(&mut page) });
                    page_bytes = 0;
                }
                page_bytes += size;
                window += size;
                page.push(retained);
            }
            if let Some(e) = failed {
                break Err(e);
            }
            if window >= budget {
                break Ok(false);
            }
        };
        if !page.is_empty() {
            frames.push(ServerFrame::Resync { messages: page });
        }
        match finished {
            Ok(true) => (frames, window, true),
            Ok(false) => {
                if let Some(r) = self.syncing.get_mut(&session) {
                    r.resync = Some(walk);
                }
                (frames, window, false)
            }
            Err(e) => {
                log::error!("resync of {user}: {}", e.description);
                self.syncing.remove(&session);
                frames.push(ServerFrame::LoginFailed { error: e });
                (frames, window, false)
            }
        }
    }

    /// The lowest message id of conversation `key` that `user` received or sent (messages are
    /// above it), or `None` when the user gets none of it: a group it is no longer in.
    fn resync_floor(&self, user: &str, key: &ConversationKey) -> Option<MsgId> {
        match key.chat_type {
            ChatType::Chat => Some(0),
            _ => {
                let g = self.state.groups.get(&key.id)?;
                g.members.contains_key(user).then(|| g.joined_after.get(user).copied().unwrap_or(0))
            }
        }
    }

    /// The ids of the retained messages of `conv` above `after`, ascending, at most `limit`
    /// (`State::conv_messages_after`). With the cache: the store's index, then the messages
    /// not committed yet (newer than every stored one: ids grow).
    fn conv_messages_after(&self, conv: &ConvId, after: MsgId, limit: usize) -> Res<Vec<MsgId>> {
        let Some(reader) = &self.cache.reader else {
            let ids = self.state.conv_messages.get(conv);
            return Ok(ids.map(|ids| ids.range(after.saturating_add(1)..).take(limit).copied().collect()).unwrap_or_default());
        };
        let mut ids: BTreeSet<MsgId> = reader.conv_messages_after(conv, after, limit).map_err(read_failed)?.into_iter().collect();
        // A commit the core has not learnt of yet may have them in both: a set.
        let pending = self.cache.uncommitted_msgs().filter(|id| *id > after);
        ids.extend(pending.filter(|id| self.state.messages.get(id).is_some_and(|r| ConvId::of(&r.msg) == *conv)));
        Ok(ids.into_iter().take(limit).collect())
    }

    /// A new message goes into the `conv_messages` index (with the cache the store writes its
    /// row with the message; until then the cache lists it as not committed).
    pub(super) fn index_message(&mut self, msg: &WireMessage) {
        if self.cache.on() {
            self.cache.new_msg(msg.id);
        } else {
            self.state.index_message(msg);
        }
    }

    /// Retained message `id` with its flags as `user` sees them (`None`: gone or past
    /// retention). With the cache the message and the conversations are read through it.
    fn retained(&mut self, user: &str, key: &ConversationKey, id: MsgId) -> Res<Option<RetainedMessage>> {
        self.load_message(id)?;
        let Some(rec) = self.state.messages.get(&id) else { return Ok(None) };
        if self.expired(rec, self.now_ms) {
            return Ok(None);
        }
        let (msg, delivered, read_acked, ack_count) = (rec.msg.clone(), rec.delivered, rec.read_acked, rec.ack_count);
        let delivered_count = rec.delivery.count;
        let mine = msg.from == user;
        let group = msg.chat_type == ChatType::GroupChat;
        let group_ack_sent = !mine && group && self.acked(GroupAckKind::Read, rec, user)?;
        // Group, received: this user's delivery ack went out (from any device).
        let delivery_sent = !mine && group && msg.require_delivery_ack && self.acked(GroupAckKind::Delivery, rec, user)?;
        self.load_conv(user, key)?;
        let read = !mine && self.conv(user, key).is_some_and(|c| c.read.covers(msg.id));
        let (delivered, read_acked) = if msg.chat_type == ChatType::Chat {
            // Read by a read ack, or by a conversation ack covering it (the recipient's receipt mark).
            let receipt_key = ConversationKey::new(ChatType::Chat, msg.from.clone());
            self.load_conv(&msg.to, &receipt_key)?;
            let receipt_up_to = self.conv(&msg.to, &receipt_key).map_or(0, |c| c.receipt_up_to);
            (delivered, read_acked || receipt_up_to >= msg.id)
        } else {
            (delivery_sent, false)
        };
        let sees_acks = mine || receipt_core::rules::members_see_group_acks(&self.ack_policy);
        let sees_deliveries = mine || receipt_core::rules::members_see_group_acks(&self.delivery_policy);
        Ok(Some(RetainedMessage {
            msg,
            delivered,
            read_acked,
            read,
            group_ack_sent,
            group_ack_count: if sees_acks { ack_count } else { 0 },
            group_delivered_count: if sees_deliveries { delivered_count } else { 0 },
        }))
    }
}
