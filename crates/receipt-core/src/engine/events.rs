//! What the app hears of an input: the events batched while it ran, and the messages whose
//! flags it changed (noted before the first change, compared at the end).

use super::*;

/// The lists of messages an input reports, each in its own event (in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageList {
    Received,
    Delivered,
    Read,
}

/// What the app sees of a message's receipt state: a change of any of these is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MessageFlags {
    status: SendStatus,
    delivered: bool,
    receiver_read: bool,
    unread: bool,
    group_ack_count: u32,
    group_ack_sent: bool,
}

impl<S: ClientStore> ClientEngine<S> {
    /// Emits the events batched during an input: the message lists, the group acks, the messages
    /// whose flags changed (those no other event of the input carries), the unread counts.
    pub(super) fn emit_input_events(&mut self) {
        let lists = [
            (MessageList::Received, std::mem::take(&mut self.received)),
            (MessageList::Delivered, std::mem::take(&mut self.delivered)),
            (MessageList::Read, std::mem::take(&mut self.read)),
        ];
        let flags_before = std::mem::take(&mut self.flags_before);
        let mut carried: HashSet<MsgId> = HashSet::default();
        for (list, ids) in lists {
            if ids.is_empty() {
                continue;
            }
            if !flags_before.is_empty() {
                carried.extend(ids.iter().copied());
            }
            let msgs: Vec<ChatMessage> = ids.iter().filter_map(|id| self.messages.get(id)).map(|m| self.view(m)).collect();
            self.events.push_back(match list {
                MessageList::Received => ClientEvent::MessagesReceived(msgs),
                MessageList::Delivered => ClientEvent::MessagesDelivered(msgs),
                MessageList::Read => ClientEvent::MessagesRead(msgs),
            });
        }
        if !self.group_acks.is_empty() {
            self.events.push_back(ClientEvent::GroupMessageRead(std::mem::take(&mut self.group_acks)));
        }
        let mut updated: Vec<MsgId> = flags_before
            .into_iter()
            .filter(|(id, before)| !carried.contains(id) && self.messages.get(id).is_some_and(|m| self.flags_of(m) != *before))
            .map(|(id, _)| id)
            .collect();
        if !updated.is_empty() {
            updated.sort_unstable();
            let msgs = updated.iter().filter_map(|id| self.messages.get(id)).map(|m| self.view(m)).collect();
            self.events.push_back(ClientEvent::MessagesUpdated(msgs));
        }
        let mut seen = HashSet::default();
        for key in std::mem::take(&mut self.unread_changed) {
            if seen.insert(key.clone()) {
                let unread = self.unread_count(&key);
                self.events.push_back(ClientEvent::UnreadCountChanged { conversation: key, unread });
            }
        }
    }

    /// The app's view of a message's flags.
    fn flags_of(&self, m: &ChatMessage) -> MessageFlags {
        let (unread, receiver_read) = self.resolved_flags(m);
        MessageFlags {
            status: m.status,
            delivered: m.delivered,
            receiver_read,
            unread,
            group_ack_count: m.group_ack_count,
            group_ack_sent: m.group_ack_sent,
        }
    }

    /// Remembers a message's flags before this input changes them (the first time only).
    pub(super) fn note_flags(&mut self, id: MsgId) {
        if self.flags_before.contains_key(&id) {
            return;
        }
        if let Some(m) = self.messages.get(&id) {
            let flags = self.flags_of(m);
            self.flags_before.insert(id, flags);
        }
    }

    /// [`note_flags`](Self::note_flags) for the messages of `key` in `(after, up_to]` that
    /// `moves` says a watermark move changes. Looks at that range only.
    pub(super) fn note_flags_in(&mut self, key: &ConversationKey, after: MsgId, up_to: MsgId, moves: impl Fn(&ChatMessage) -> bool) {
        if up_to <= after {
            return;
        }
        let Some(ids) = self.conv_ids.get(key) else { return };
        let start = ids.partition_point(|&id| id <= after);
        let hit: Vec<MsgId> =
            ids[start..].iter().take_while(|&&id| id <= up_to).copied().filter(|id| self.messages.get(id).is_some_and(&moves)).collect();
        for id in hit {
            self.note_flags(id);
        }
    }
}
