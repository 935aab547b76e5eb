//! A full state resync: a device whose cursor is below the trimmed prefix of its user's log
//! missed events that are gone, so instead of a replay it gets the state they built. The core
//! walks the user's conversations (`State::conversations_of`) and, in each, the retained messages
//! (`State::conv_messages_after`, the `conv_messages` index), and sends them with the flags it
//! holds as `Resync` pages, window by window like a backlog (`replay`): at most
//! [`RESYNC_PAGE`] messages and ~256 KiB a page, one ~1 MiB window per written window. Then the
//! events logged since the resync started (`Backlog`), the unread counts and
//! `SyncDone { resync: true }`. docs/server-data-model.md, "Event logs and device cursors".

use receipt_core::protocol::{RetainedMessage, ServerFrame};
use receipt_core::{ChatType, ConversationKey, MsgId};

use super::replay::BACKLOG_BYTES;
use super::{ServerCore, SessionId};
use crate::state::{ConvId, MessageRecord};

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
    /// frames, their estimated bytes, and whether the walk is over.
    pub(super) fn resync_pages(&mut self, session: SessionId, user: &str, budget: usize) -> (Vec<ServerFrame>, usize, bool) {
        let Some(mut walk) = self.syncing.get_mut(&session).and_then(|r| r.resync.take()) else {
            return (Vec::new(), 0, true);
        };
        let (mut frames, mut page, mut page_bytes, mut window) = (Vec::new(), Vec::new(), 0, 0);
        // Each turn moves to the next conversation or sends at least one message: bounded by
        // the conversations plus the messages of one window.
        let finished = loop {
            let Some(key) = walk.convs.get(walk.at) else { break true };
            let Some(floor) = self.resync_floor(user, key) else {
                (walk.at, walk.after) = (walk.at + 1, 0);
                continue;
            };
            let conv = ConvId::for_user(user, key);
            let recs = self.state.conv_messages_after(&conv, walk.after.max(floor), RESYNC_PAGE);
            if recs.is_empty() {
                (walk.at, walk.after) = (walk.at + 1, 0);
                continue;
            }
            for rec in recs {
                walk.after = rec.msg.id;
                if self.expired(rec, self.now_ms) {
                    continue;
                }
                let size = 256 + rec.msg.content.len() * 2;
                if !page.is_empty() && (page.len() >= RESYNC_PAGE || page_bytes + size > BACKLOG_BYTES) {
                    frames.push(ServerFrame::Resync { messages: std::mem::take(&mut page) });
                    page_bytes = 0;
                }
                page_bytes += size;
                window += size;
                page.push(self.retained(user, key, rec));
            }
            if window >= budget {
                break false;
            }
        };
        if !page.is_empty() {
            frames.push(ServerFrame::Resync { messages: page });
        }
        if !finished {
            if let Some(r) = self.syncing.get_mut(&session) {
                r.resync = Some(walk);
            }
        }
        (frames, window, finished)
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

    /// A retained message with its flags as `user` sees them.
    fn retained(&self, user: &str, key: &ConversationKey, rec: &MessageRecord) -> RetainedMessage {
        let msg = &rec.msg;
        let mine = msg.from == user;
        let read = !mine && self.conv(user, key).is_some_and(|c| c.read.covers(msg.id));
        let (delivered, read_acked) = if msg.chat_type == ChatType::Chat {
            // Read by a read ack, or by a conversation ack covering it (the recipient's receipt mark).
            let receipt_up_to = self.conv(&msg.to, &ConversationKey::new(ChatType::Chat, msg.from.clone())).map_or(0, |c| c.receipt_up_to);
            (rec.delivered, rec.read_acked || receipt_up_to >= msg.id)
        } else {
            (false, false)
        };
        let sees_acks = mine || receipt_core::rules::members_see_group_acks(&self.ack_policy);
        RetainedMessage {
            msg: msg.clone(),
            delivered,
            read_acked,
            read,
            group_ack_sent: !mine && rec.ackers.contains(user),
            group_ack_count: if sees_acks { rec.acks.len() as u32 } else { 0 },
        }
    }
}
