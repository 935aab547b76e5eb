//! The engine's events carry the state they change: after each input that changes a message's
//! own flags, `MessagesUpdated` holds that message as it now is; after an input that moves a
//! conversation's marks, one `ConversationUpdated` says so (whatever the number of messages it
//! covers), and the messages re-read from the engine show the new flags. A binding never
//! re-derives a flag.
//! Driven by hand-written server frames (the frames a server sends for each case).

use super::*;
use crate::store::MemStore;

const NOW: u64 = 1_700_000_000_000;

/// alice on device a1, logged in and synced.
fn alice() -> ClientEngine<MemStore> {
    let mut e = ClientEngine::open(EngineConfig::new("alice", "a1", ChatOptions::default()), MemStore::default()).unwrap();
    e.handle_connected(NOW, "token");
    e.handle_frame(NOW, ServerFrame::SyncDone { head: 0, conversations: Vec::new(), resync: false });
    drain(&mut e);
    e
}

fn drain(e: &mut ClientEngine<MemStore>) -> Vec<ClientEvent> {
    while e.poll_transmit(NOW).is_some() {}
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// Feeds one live event (the next seq after the engine's cursor).
fn event(e: &mut ClientEngine<MemStore>, ev: ServerEvent) -> Vec<ClientEvent> {
    let seq = e.cursor() + 1;
    e.handle_frame(NOW, ServerFrame::Event { event: SeqEvent { seq, event: Arc::new(ev) } });
    drain(e)
}

fn message(id: MsgId, from: &str, to: &str, chat_type: ChatType, need_group_ack: bool) -> ServerEvent {
    ServerEvent::Message {
        msg: Arc::new(WireMessage {
            id,
            client_id: format!("c{id}"),
            from: from.into(),
            to: to.into(),
            chat_type,
            content: "hi".into(),
            timestamp: NOW,
            require_delivery_ack: false,
            need_group_ack,
        }),
    }
}

/// The messages of the input's `MessagesUpdated` event, by id (panics if there is none, or more
/// than one).
fn updated(evs: &[ClientEvent]) -> Vec<ChatMessage> {
    let all: Vec<&Vec<ChatMessage>> = evs
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MessagesUpdated(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(all.len(), 1, "one MessagesUpdated per input: {evs:?}");
    all[0].clone()
}

fn ids(msgs: &[ChatMessage]) -> Vec<MsgId> {
    msgs.iter().map(|m| m.id).collect()
}

fn no_update(evs: &[ClientEvent]) -> bool {
    !evs.iter().any(|e| matches!(e, ClientEvent::MessagesUpdated(_)))
}

/// A conversation's marks and unread count as `ConversationUpdated` reports them.
#[derive(Debug, PartialEq, Eq)]
struct ConvUpdate {
    read_up_to: MsgId,
    receipt_up_to: MsgId,
    peer_read_up_to: MsgId,
    unread: u32,
}

/// The input's one `ConversationUpdated` event, for `peer`'s 1:1 conversation (panics if there
/// is none, more than one, or one for another conversation).
fn conversation_updated(evs: &[ClientEvent], peer: &str) -> ConvUpdate {
    let all: Vec<ConvUpdate> = evs
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ConversationUpdated { conversation, read_up_to, receipt_up_to, peer_read_up_to, unread } => {
                assert_eq!(conversation, &ConversationKey::new(ChatType::Chat, peer));
                Some(ConvUpdate {
                    read_up_to: *read_up_to,
                    receipt_up_to: *receipt_up_to,
                    peer_read_up_to: *peer_read_up_to,
                    unread: *unread,
                })
            }
            _ => None,
        })
        .collect();
    assert_eq!(all.len(), 1, "one ConversationUpdated per conversation per input: {evs:?}");
    all.into_iter().next().unwrap()
}

fn no_conversation_update(evs: &[ClientEvent]) -> bool {
    !evs.iter().any(|e| matches!(e, ClientEvent::ConversationUpdated { .. }))
}

/// The messages as the engine now shows them (what a binding re-reads).
fn reread(e: &ClientEngine<MemStore>, ids: impl IntoIterator<Item = MsgId>) -> Vec<ChatMessage> {
    ids.into_iter().map(|id| e.message_by_id(id).unwrap()).collect()
}

#[test]
fn a_session_replaced_by_a_newer_login_is_a_logout_that_ends_the_session() {
    let mut e = alice();
    assert!(e.is_connected());
    let error = ChatError::new(ErrorCode::UserLoginAnotherDevice, "alice logged in again on device a1");
    e.handle_frame(NOW, ServerFrame::Error { error: error.clone() });
    let evs = drain(&mut e);
    assert_eq!(evs, vec![ClientEvent::LoggedOut(error)]);
    assert!(!e.is_connected());
    assert!(e.is_login_refused(), "the runtime must not reconnect with this session");
    // Any other Error stays a protocol error (the runtime reconnects after it).
    let mut e = alice();
    e.handle_frame(NOW, ServerFrame::Error { error: ChatError::invalid_param("bad frame") });
    assert!(matches!(drain(&mut e).as_slice(), [ClientEvent::ProtocolError(_)]));
    assert!(!e.is_login_refused());
}

#[test]
fn ack_message_read_reports_the_message_read_and_acked() {
    let mut e = alice();
    event(&mut e, message(1, "bob", "alice", ChatType::Chat, false));
    e.ack_message_read(NOW, 1).unwrap().unwrap();
    let msgs = updated(&drain(&mut e));
    assert_eq!(ids(&msgs), vec![1]);
    assert!(msgs[0].receiver_read && !msgs[0].unread);
    // Nothing new: no update either.
    assert_eq!(e.ack_message_read(NOW, 1).unwrap(), None);
    assert!(no_update(&drain(&mut e)));
}

#[test]
fn a_single_ack_moves_no_mark() {
    let mut e = alice();
    event(&mut e, message(1, "bob", "alice", ChatType::Chat, false));
    e.ack_message_read(NOW, 1).unwrap().unwrap();
    assert!(no_conversation_update(&drain(&mut e)));
}

#[test]
fn ack_conversation_read_reports_the_conversation_once() {
    let mut e = alice();
    for id in 1..=3 {
        event(&mut e, message(id, "bob", "alice", ChatType::Chat, false));
    }
    event(&mut e, message(4, "alice", "bob", ChatType::Chat, false)); // own, from another device
    e.ack_conversation_read(NOW, "bob").unwrap().unwrap();
    let evs = drain(&mut e);
    assert!(no_update(&evs), "a mark move lists no message: {evs:?}");
    assert_eq!(conversation_updated(&evs, "bob"), ConvUpdate { read_up_to: 4, receipt_up_to: 4, peer_read_up_to: 0, unread: 0 });
    let msgs = reread(&e, 1..=3);
    assert!(msgs.iter().all(|m| m.receiver_read && !m.unread), "{msgs:?}");
    let own = e.message_by_id(4).unwrap();
    assert!(!own.receiver_read && !own.unread, "the own message's flags did not change");
    // The update goes before the count, so the app has the messages when it hears 0.
    let pos = |f: fn(&ClientEvent) -> bool| evs.iter().position(f).unwrap();
    assert!(pos(|e| matches!(e, ClientEvent::ConversationUpdated { .. })) < pos(|e| matches!(e, ClientEvent::UnreadCountChanged { .. })));
}

#[test]
fn a_conversation_read_costs_one_event_whatever_its_size() {
    let mut e = alice();
    let n = 2_000;
    let seq = e.cursor();
    let events = (1..=n).map(|id| SeqEvent { seq: seq + id, event: Arc::new(message(id, "bob", "alice", ChatType::Chat, false)) });
    e.handle_frame(NOW, ServerFrame::Backlog { events: events.collect() });
    drain(&mut e);
    e.ack_conversation_read(NOW, "bob").unwrap().unwrap();
    let evs = drain(&mut e);
    assert!(no_update(&evs));
    assert_eq!(conversation_updated(&evs, "bob").unread, 0);
    // The ack's own events: the conversation update and the count (its completion comes later).
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(reread(&e, [1, n / 2, n]).iter().all(|m| m.receiver_read && !m.unread));
}

#[test]
fn ack_group_message_read_reports_the_message_read_and_acked() {
    let mut e = alice();
    event(&mut e, message(1, "bob", "g1", ChatType::GroupChat, true));
    e.ack_group_message_read(NOW, 1, Some("ext")).unwrap().unwrap();
    let msgs = updated(&drain(&mut e));
    assert_eq!(ids(&msgs), vec![1]);
    assert!(msgs[0].group_ack_sent && !msgs[0].unread);
}

#[test]
fn a_group_ack_count_reaches_the_sender_as_an_update() {
    let mut e = alice();
    event(&mut e, message(1, "alice", "g1", ChatType::GroupChat, true));
    let ack = GroupReadAck { ack_id: 1, msg_id: 1, from: "bob".into(), content: None, count: 1, timestamp: NOW };
    let evs = event(&mut e, ServerEvent::GroupRead { group: "g1".into(), sender: "alice".into(), ack });
    assert_eq!(updated(&evs)[0].group_ack_count, 1);
    // The count is updated before the listener hears of the ack.
    let pos = |f: fn(&ClientEvent) -> bool| evs.iter().position(f).unwrap();
    assert!(pos(|e| matches!(e, ClientEvent::MessagesUpdated(_))) < pos(|e| matches!(e, ClientEvent::GroupMessageRead(_))));
}

#[test]
fn a_coalesced_count_update_raises_the_count_never_lowers_it_and_is_told_after_the_update() {
    let mut e = alice();
    event(&mut e, message(1, "alice", "g1", ChatType::GroupChat, true));
    let count = |n| ServerEvent::GroupAckCount { group: "g1".into(), msg_id: 1, count: n, timestamp: NOW };
    let evs = event(&mut e, count(700));
    assert_eq!(updated(&evs)[0].group_ack_count, 700);
    let told: Vec<&Vec<ChatMessage>> =
        evs.iter().filter_map(|e| if let ClientEvent::ReadAckForGroupMessageUpdated(m) = e { Some(m) } else { None }).collect();
    assert_eq!((told.len(), told[0][0].id, told[0][0].group_ack_count), (1, 1, 700));
    let pos = |f: fn(&ClientEvent) -> bool| evs.iter().position(f).unwrap();
    assert!(pos(|e| matches!(e, ClientEvent::MessagesUpdated(_))) < pos(|e| matches!(e, ClientEvent::ReadAckForGroupMessageUpdated(_))));
    // An older update (replayed out of order with a newer ack) is no news and lowers nothing.
    let evs = event(&mut e, count(650));
    assert!(evs.is_empty(), "{evs:?}");
    assert_eq!(reread(&e, [1])[0].group_ack_count, 700);
    // An update for a message this device does not hold is ignored.
    let evs = event(&mut e, ServerEvent::GroupAckCount { group: "g1".into(), msg_id: 99, count: 3, timestamp: NOW });
    assert!(evs.is_empty(), "{evs:?}");
}

#[test]
fn own_other_device_reading_the_conversation_comes_with_the_read_messages() {
    let mut e = alice();
    for id in 1..=2 {
        event(&mut e, message(id, "bob", "alice", ChatType::Chat, false));
    }
    let evs = event(
        &mut e,
        ServerEvent::ConversationRead {
            chat_type: ChatType::Chat,
            from: "alice".into(),
            to: "bob".into(),
            up_to: 2,
            timestamp: NOW,
            device: "a2".into(),
        },
    );
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::ConversationRead { .. })));
    assert!(no_update(&evs));
    assert_eq!(conversation_updated(&evs, "bob"), ConvUpdate { read_up_to: 2, receipt_up_to: 2, peer_read_up_to: 0, unread: 0 });
    assert!(reread(&e, 1..=2).iter().all(|m| !m.unread && m.receiver_read));
}

#[test]
fn the_peer_reading_the_conversation_comes_with_the_sent_messages_read() {
    let mut e = alice();
    for id in 1..=3 {
        event(&mut e, message(id, "alice", "bob", ChatType::Chat, false));
    }
    let evs = event(
        &mut e,
        ServerEvent::ConversationRead {
            chat_type: ChatType::Chat,
            from: "bob".into(),
            to: "alice".into(),
            up_to: 2,
            timestamp: NOW,
            device: "b1".into(),
        },
    );
    assert!(no_update(&evs));
    assert_eq!(conversation_updated(&evs, "bob"), ConvUpdate { read_up_to: 0, receipt_up_to: 0, peer_read_up_to: 2, unread: 0 });
    // The messages' state moves before the listener hears of the read.
    let pos = |f: fn(&ClientEvent) -> bool| evs.iter().position(f).unwrap();
    assert!(pos(|e| matches!(e, ClientEvent::ConversationUpdated { .. })) < pos(|e| matches!(e, ClientEvent::ConversationRead { .. })));
    assert!(reread(&e, 1..=2).iter().all(|m| m.receiver_read));
    assert!(!e.message_by_id(3).unwrap().receiver_read, "only the messages up to the peer's mark");
}

#[test]
fn the_unread_count_reaching_zero_comes_with_the_read_messages() {
    let mut e = alice();
    for id in 1..=2 {
        event(&mut e, message(id, "bob", "alice", ChatType::Chat, false));
    }
    let key = ConversationKey::new(ChatType::Chat, "bob");
    // Another device of alice marked everything read.
    let evs = event(&mut e, ServerEvent::ReadState { chat_type: ChatType::Chat, conversation: "bob".into(), msg_id: None, up_to: 2 });
    assert!(evs.contains(&ClientEvent::UnreadCountChanged { conversation: key.clone(), unread: 0 }));
    assert!(no_update(&evs));
    assert_eq!(conversation_updated(&evs, "bob"), ConvUpdate { read_up_to: 2, receipt_up_to: 0, peer_read_up_to: 0, unread: 0 });
    assert!(reread(&e, 1..=2).iter().all(|m| !m.unread && !m.receiver_read), "own read state only: no receipt");
    // The same through this device's markAllMessagesRead.
    event(&mut e, message(3, "bob", "alice", ChatType::Chat, false));
    e.mark_all_messages_read(NOW, &key).unwrap().unwrap();
    let evs = drain(&mut e);
    assert!(no_update(&evs));
    assert_eq!(conversation_updated(&evs, "bob"), ConvUpdate { read_up_to: 3, receipt_up_to: 0, peer_read_up_to: 0, unread: 0 });
    assert!(!e.message_by_id(3).unwrap().unread);
}

#[test]
fn a_message_another_event_carries_is_not_repeated() {
    let mut e = alice();
    event(&mut e, message(1, "alice", "bob", ChatType::Chat, false));
    let evs = event(&mut e, ServerEvent::Read { msg_id: 1, from: "alice".into(), to: "bob".into(), by: "bob".into(), timestamp: NOW });
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::MessagesRead(m) if m[0].receiver_read)));
    assert!(no_update(&evs), "{evs:?}");
    assert!(no_conversation_update(&evs), "a single read moves no mark");
}

#[test]
fn a_refused_ack_rolls_back_as_an_update() {
    let mut e = alice();
    event(&mut e, message(1, "bob", "alice", ChatType::Chat, false));
    let req = e.ack_message_read(NOW, 1).unwrap().unwrap();
    drain(&mut e);
    e.handle_frame(NOW, ServerFrame::err(req, ChatError::new(ErrorCode::MessageExpired, "too old")));
    let msgs = updated(&drain(&mut e));
    assert!(!msgs[0].receiver_read, "the ack reached nobody");
    assert!(!msgs[0].unread, "the user did read it");
}

#[test]
fn an_empty_message_is_refused_locally_like_the_server_does() {
    let mut e = alice();
    assert_eq!(e.send_message(NOW, "bob", ChatType::Chat, "", false).unwrap_err().code, ErrorCode::InvalidParam);
    assert_eq!(e.outbox().count(), 0, "nothing queued");
    e.send_message(NOW, "bob", ChatType::Chat, "x", false).unwrap();
    assert_eq!(e.outbox().count(), 1);
}

#[test]
fn a_page_size_outside_the_rule_is_refused_locally() {
    let mut e = alice();
    for bad in [0, rules::MAX_PAGE_SIZE + 1] {
        assert_eq!(e.fetch_group_read_acks(NOW, 1, bad, None).unwrap_err().code, ErrorCode::InvalidParam);
    }
    assert!(e.fetch_group_read_acks(NOW, 1, rules::MAX_PAGE_SIZE, None).is_ok());
}

#[test]
fn a_mark_move_and_a_flag_change_of_one_message_in_one_input_report_it_once() {
    let mut e = alice();
    event(&mut e, message(1, "bob", "alice", ChatType::Chat, false));
    event(&mut e, message(2, "bob", "alice", ChatType::Chat, false));
    // One frame: another device of alice read the conversation up to 1, then acked 1 itself.
    let seq = e.cursor();
    let frame = |seq, ev| SeqEvent { seq, event: Arc::new(ev) };
    let read_conv = ServerEvent::ConversationRead {
        chat_type: ChatType::Chat,
        from: "alice".into(),
        to: "bob".into(),
        up_to: 1,
        timestamp: NOW,
        device: "a2".into(),
    };
    let read_one = ServerEvent::Read { msg_id: 1, from: "bob".into(), to: "alice".into(), by: "alice".into(), timestamp: NOW };
    e.handle_frame(NOW, ServerFrame::Backlog { events: vec![frame(seq + 1, read_conv), frame(seq + 2, read_one)] });
    let evs = drain(&mut e);
    let msgs = updated(&evs);
    assert_eq!(ids(&msgs), vec![1], "the one message whose own flags changed");
    assert!(msgs[0].receiver_read && !msgs[0].unread);
    assert_eq!(conversation_updated(&evs, "bob"), ConvUpdate { read_up_to: 1, receipt_up_to: 1, peer_read_up_to: 0, unread: 1 });
    assert!(e.message_by_id(2).unwrap().unread, "2 is above the mark and unchanged");
}

#[test]
fn unread_counts_paged_over_sync_conversations_are_applied_at_sync_done() {
    let mut e = ClientEngine::open(EngineConfig::new("alice", "a1", ChatOptions::default()), MemStore::default()).unwrap();
    e.handle_connected(NOW, "token");
    let conv = |t, id: &str, unread| ConversationState { chat_type: t, id: id.into(), unread };
    e.handle_frame(NOW, ServerFrame::SyncConversations { conversations: vec![conv(ChatType::GroupChat, "g1", 3)] });
    e.handle_frame(NOW, ServerFrame::SyncConversations { conversations: vec![conv(ChatType::Chat, "bob", 2)] });
    // Nothing applied before the sync ends.
    assert_eq!(e.unread_count(&ConversationKey::new(ChatType::GroupChat, "g1")), 0);
    e.handle_frame(NOW, ServerFrame::SyncDone { head: 0, conversations: vec![conv(ChatType::Chat, "carol", 1)], resync: false });
    drain(&mut e);
    assert_eq!(e.unread_count(&ConversationKey::new(ChatType::GroupChat, "g1")), 3);
    assert_eq!(e.unread_count(&ConversationKey::new(ChatType::Chat, "bob")), 2);
    assert_eq!(e.unread_count(&ConversationKey::new(ChatType::Chat, "carol")), 1);
    // A reconnect starts a fresh sync: pages of an interrupted one are not carried over.
    e.handle_disconnected(NOW);
    e.handle_connected(NOW, "token");
    e.handle_frame(NOW, ServerFrame::SyncConversations { conversations: vec![conv(ChatType::Chat, "dave", 9)] });
    e.handle_disconnected(NOW);
    e.handle_connected(NOW, "token");
    e.handle_frame(NOW, ServerFrame::SyncDone { head: 0, conversations: Vec::new(), resync: false });
    drain(&mut e);
    assert_eq!(e.unread_count(&ConversationKey::new(ChatType::Chat, "dave")), 0);
    assert_eq!(e.unread_count(&ConversationKey::new(ChatType::Chat, "bob")), 0, "the server said nothing unread");
}

#[test]
fn a_durable_commit_is_checkpointed_once_the_app_is_quiet_not_during_a_burst() {
    let mut e = alice();
    for id in 1..=3 {
        event(&mut e, message(id, "bob", "alice", ChatType::Chat, false));
    }
    e.handle_disconnected(NOW); // offline: the store's timer runs without a connection too
    drain(&mut e);
    assert_eq!(e.poll_timeout(), None, "nothing durable written yet: no timer while offline");
    // A burst of acks, 100 ms apart: each durable commit pushes the checkpoint back.
    for (i, id) in (1..=3).enumerate() {
        let now = NOW + 100 * i as u64;
        e.ack_message_read(now, id).unwrap().unwrap();
        assert_eq!(e.poll_timeout(), Some(now + CHECKPOINT_IDLE_MS));
        assert!(e.handle_timeout(now + 99));
    }
    assert_eq!(e.store().checkpoints, 0, "no checkpoint within the burst");
    let quiet = NOW + 200 + CHECKPOINT_IDLE_MS;
    assert_eq!(e.poll_timeout(), Some(quiet));
    assert!(e.handle_timeout(quiet));
    assert_eq!(e.store().checkpoints, 1, "one checkpoint for the burst, once quiet");
    assert_eq!(e.poll_timeout(), None, "and none again until the next durable commit");
    assert!(e.handle_timeout(quiet + 10_000));
    assert_eq!(e.store().checkpoints, 1);
}

/// A test-only wrapper around the real in-memory store whose writes fail while `failing` is set
/// (a full disk, say): it stands for the store's own failure, the engine is the real one.
struct FailingStore {
    inner: MemStore,
    failing: std::rc::Rc<std::cell::Cell<bool>>,
    /// Durability of each batch written, in order.
    written_durable: Vec<bool>,
}

impl ClientStore for FailingStore {
    fn load(&mut self) -> Result<crate::store::Snapshot, StoreError> {
        self.inner.load()
    }
    fn commit(&mut self, batch: &StoreBatch) -> Result<(), StoreError> {
        if self.failing.get() {
            return Err(StoreError::Backend("disk full".into()));
        }
        self.written_durable.push(batch.durable);
        self.inner.commit(batch)
    }
    fn message(&self, id: MsgId) -> Result<Option<ChatMessage>, StoreError> {
        self.inner.message(id)
    }
    fn conversation_messages(
        &self,
        key: &ConversationKey,
        ids: std::ops::Range<MsgId>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        self.inner.conversation_messages(key, ids, limit, newest_first)
    }
}

#[test]
fn a_change_whose_write_failed_stays_in_memory_until_a_write_succeeds() {
    const CACHE: usize = 2;
    let failing = std::rc::Rc::new(std::cell::Cell::new(false));
    let store = FailingStore { inner: MemStore::default(), failing: failing.clone(), written_durable: Vec::new() };
    let mut cfg = EngineConfig::new("alice", "a1", ChatOptions::default());
    cfg.message_cache = CACHE;
    let mut e = ClientEngine::open(cfg, store).unwrap();
    e.handle_connected(NOW, "token");
    e.handle_frame(NOW, ServerFrame::SyncDone { head: 0, conversations: Vec::new(), resync: false });
    let feed = |e: &mut ClientEngine<FailingStore>, id: MsgId| {
        let seq = e.cursor() + 1;
        let ev = message(id, "bob", "alice", ChatType::Chat, false);
        e.handle_frame(NOW, ServerFrame::Event { event: SeqEvent { seq, event: Arc::new(ev) } });
    };
    for id in 1..=5 {
        feed(&mut e, id);
    }
    while e.poll_event().is_some() {}
    assert!(e.cached_message_count() <= CACHE, "message 1 was evicted: its ack reads it from the store");

    failing.set(true);
    e.ack_message_read(NOW, 1).unwrap().expect("the ack goes out");
    let failed = std::iter::from_fn(|| e.poll_event()).filter(|ev| matches!(ev, ClientEvent::StoreFailed(_))).count();
    assert_eq!(failed, 1, "the failed write is reported");
    // More input pushes message 1 far past the cache's size (their writes fail too).
    for id in 6..=12 {
        feed(&mut e, id);
    }
    let acked = e.message_by_id(1).unwrap();
    assert!(!acked.unread && acked.receiver_read, "memory keeps the change the store lost: {acked:?}");
    assert_eq!(e.ack_message_read(NOW, 1).unwrap(), None, "not acked twice");
    assert_eq!(e.unread_count(&ConversationKey::new(ChatType::Chat, "bob")), 11);
    assert!(e.cached_message_count() > CACHE, "unwritten messages are pinned above the cache's size");
    assert_eq!(e.store().inner.message_count(), 5, "nothing written while the disk fails");

    // The disk recovers: the timer retries (no new input needed), durably (the ack was).
    failing.set(false);
    while e.poll_transmit(NOW).is_some() {}
    assert_eq!(e.poll_timeout(), Some(NOW + STORE_RETRY_MS), "a retry is scheduled");
    assert!(e.handle_timeout(NOW + STORE_RETRY_MS));
    assert_eq!(e.store().written_durable.last(), Some(&true), "the retried batch is durable: {:?}", e.store().written_durable);
    let stored = e.store().inner.message(1).unwrap().unwrap();
    assert!(!stored.unread && stored.receiver_read, "the ack is stored: {stored:?}");
    assert_eq!(e.store().inner.message_count(), 12);
    assert_eq!(e.store().inner.clone().load().unwrap().conversations[0].local_unread, 11);
    assert!(e.cached_message_count() <= CACHE, "written: evictable again");
    assert!(!e.message_by_id(1).unwrap().unread);
}
