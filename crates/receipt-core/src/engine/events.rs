//! What the app hears of an input: the events batched while it ran, the messages whose own
//! flags it changed (noted before the first change, compared at the end), and the conversations
//! whose marks it moved (one event each, whatever the number of messages the move covers).

use super::*;

/// The lists of messages an input reports, each in its own event (in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageList {
    Received,
    Delivered,
    Read,
}

/// A message's own receipt flags, before the conversation's marks are applied to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OwnFlags {
    status: SendStatus,
    delivered: bool,
    receiver_read: bool,
    unread: bool,
    group_ack_count: u32,
    group_ack_sent: bool,
    group_delivered_count: u32,
}

impl OwnFlags {
    /// The flags as the app sees them under `marks` (see [`resolve_flags`]).
    fn seen(self, m: &ChatMessage, marks: Option<Marks>) -> Self {
        let (unread, receiver_read) = resolve_flags(m, self.unread, self.receiver_read, marks);
        OwnFlags { unread, receiver_read, ..self }
    }

    /// `m` showing these flags (the app's view of it).
    fn apply_to(self, m: &ChatMessage) -> ChatMessage {
        let mut view = m.clone();
        view.unread = self.unread;
        view.receiver_read = self.receiver_read;
        view
    }

    fn of(m: &ChatMessage) -> Self {
        OwnFlags {
            status: m.status,
            delivered: m.delivered,
            receiver_read: m.receiver_read,
            unread: m.unread,
            group_ack_count: m.group_ack_count,
            group_ack_sent: m.group_ack_sent,
            group_delivered_count: m.group_delivered_count,
        }
    }
}

/// A conversation's marks that decide its messages' flags (see [`crate::rules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Marks {
    read_up_to: MsgId,
    receipt_up_to: MsgId,
    peer_read_up_to: MsgId,
}

impl Marks {
    pub(super) fn of(c: &Conversation) -> Self {
        Marks { read_up_to: c.read_up_to, receipt_up_to: c.receipt_up_to, peer_read_up_to: c.peer_read_up_to }
    }
}

/// `(unread, receiver_read)` as the app sees them: a message's own flags under its
/// conversation's marks (the read mark reads received messages; the receipt mark and the peer's
/// read mark cover 1:1 read receipts).
pub(super) fn resolve_flags(m: &ChatMessage, unread: bool, receiver_read: bool, marks: Option<Marks>) -> (bool, bool) {
    let Some(marks) = marks else { return (unread, receiver_read) };
    // Receipt marks exist for 1:1 conversations only (a group's read is not a receipt).
    let (receipt_up_to, peer_receipt_up_to) = match m.chat_type {
        ChatType::Chat => (marks.receipt_up_to, marks.peer_read_up_to),
        ChatType::GroupChat | ChatType::ChatRoom => (0, 0),
    };
    match m.direction {
        MessageDirection::Receive => (unread && m.id > marks.read_up_to, rules::read_ack_covered(receiver_read, receipt_up_to, m.id)),
        // The peer's conversation ack covers what this user sent, as this user's covers what it received.
        MessageDirection::Send => (unread, rules::read_ack_covered(receiver_read, peer_receipt_up_to, m.id)),
    }
}

impl<S: ClientStore> ClientEngine<S> {
    /// Emits the events batched during an input: the message lists, the messages whose own flags
    /// changed (those no other event of the input carries), the conversations whose marks moved,
    /// the group acks and conversation reads (after the state they change), the unread counts.
    pub(super) fn emit_input_events(&mut self) {
        let lists = [
            (MessageList::Received, std::mem::take(&mut self.received)),
            (MessageList::Delivered, std::mem::take(&mut self.delivered)),
            (MessageList::Read, std::mem::take(&mut self.read)),
        ];
        let flags_before = std::mem::take(&mut self.flags_before);
        let anything_changed = !flags_before.is_empty() || !self.marks_before.is_empty();
        let mut carried: HashSet<MsgId> = HashSet::default();
        for (list, ids) in lists {
            if ids.is_empty() {
                continue;
            }
            if anything_changed {
                carried.extend(ids.iter().copied());
            }
            let msgs: Vec<ChatMessage> = ids.iter().filter_map(|id| self.messages.get(id)).map(|m| self.view(m)).collect();
            self.events.push_back(match list {
                MessageList::Received => ClientEvent::MessagesReceived(msgs),
                MessageList::Delivered => ClientEvent::MessagesDelivered(msgs),
                MessageList::Read => ClientEvent::MessagesRead(msgs),
            });
        }
        let updated = self.changed_messages(flags_before, &carried);
        if !updated.is_empty() {
            self.events.push_back(ClientEvent::MessagesUpdated(updated));
        }
        let conversations = self.conversations_updated();
        self.events.extend(conversations);
        // The notifications whose state the updates above carry come after them, so that a
        // listener already sees the messages it is told about in their new state.
        if !self.group_acks.is_empty() {
            self.events.push_back(ClientEvent::GroupMessageRead(std::mem::take(&mut self.group_acks)));
        }
        if !self.group_deliveries.is_empty() {
            self.events.push_back(ClientEvent::GroupMessageDelivered(std::mem::take(&mut self.group_deliveries)));
        }
        if !self.count_updates.is_empty() {
            let mut ids = std::mem::take(&mut self.count_updates);
            ids.sort_unstable();
            ids.dedup();
            let msgs: Vec<ChatMessage> = ids.iter().filter_map(|id| self.messages.get(id)).map(|m| self.view(m)).collect();
            self.events.push_back(ClientEvent::ReadAckForGroupMessageUpdated(msgs));
        }
        self.events.extend(std::mem::take(&mut self.conversation_reads));
        let mut seen = HashSet::default();
        for key in std::mem::take(&mut self.unread_changed) {
            if seen.insert(key.clone()) {
                let unread = self.unread_count(&key);
                self.events.push_back(ClientEvent::UnreadCountChanged { conversation: key, unread });
            }
        }
    }

    /// The messages whose own flags changed in this input, as the app now sees them, oldest
    /// first (each compared under its conversation's marks before and after the input). A mark
    /// move is not listed message by message: it is one [`ClientEvent::ConversationUpdated`]
    /// (see [`Self::conversations_updated`]), so its cost does not grow with the conversation.
    fn changed_messages(&self, flags_before: HashMap<MsgId, OwnFlags>, carried: &HashSet<MsgId>) -> Vec<ChatMessage> {
        let mut changed: Vec<ChatMessage> = Vec::new();
        for (id, own_then) in &flags_before {
            let Some(m) = self.messages.get(id) else { continue };
            if carried.contains(id) {
                continue;
            }
            let marks_now = self.conversations.get(&m.conversation_ref()).map(Marks::of);
            let marks_then = self.marks_before.get(&m.conversation_ref()).copied().or(marks_now);
            let now = OwnFlags::of(m).seen(m, marks_now);
            if own_then.seen(m, marks_then) != now {
                changed.push(now.apply_to(m));
            }
        }
        changed.sort_unstable_by_key(|m| m.id);
        changed
    }

    /// One [`ClientEvent::ConversationUpdated`] per conversation whose marks moved in this input
    /// (by key, for a stable order): O(conversations moved), whatever their size.
    fn conversations_updated(&mut self) -> Vec<ClientEvent> {
        let mut moved: Vec<(ConversationKey, Marks)> = std::mem::take(&mut self.marks_before).into_iter().collect();
        moved.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        moved
            .into_iter()
            .filter_map(|(key, then)| {
                let c = self.conversations.get(&key)?;
                let now = Marks::of(c);
                (now != then).then(|| ClientEvent::ConversationUpdated {
                    read_up_to: now.read_up_to,
                    receipt_up_to: now.receipt_up_to,
                    peer_read_up_to: now.peer_read_up_to,
                    unread: c.unread(),
                    conversation: key,
                })
            })
            .collect()
    }

    /// Remembers a message's own flags before this input changes them (the first time only).
    pub(super) fn note_flags(&mut self, id: MsgId) {
        if self.flags_before.contains_key(&id) {
            return;
        }
        if let Some(m) = self.messages.get(&id) {
            self.flags_before.insert(id, OwnFlags::of(m));
        }
    }

    /// Remembers a conversation's marks before this input moves one (the first time only).
    pub(super) fn note_marks(&mut self, key: &ConversationKey) {
        if self.marks_before.contains_key(key) {
            return;
        }
        let marks = Marks::of(self.conv_mut(key.as_ref()));
        self.marks_before.insert(key.clone(), marks);
    }
}
