//! Crashes found by the fuzz targets in `fuzz/` (docs/reliability.md), each reduced to the
//! frames and commands that trigger it. The fuzz input that found each one is kept in
//! `fuzz/regressions/` and can be replayed with `cargo fuzz run -s none TARGET FILE`.

use receipt_core::engine::{ClientEngine, ClientEvent, EngineConfig};
use receipt_core::protocol::*;
use receipt_core::store::MemStore;
use receipt_core::*;

const NOW: u64 = 1_700_000_000_000;

/// alice on device a1, logged in (Login sent, nothing received yet).
fn engine() -> ClientEngine<MemStore> {
    let mut e = ClientEngine::open(EngineConfig::new("alice", "a1", ChatOptions::default()), MemStore::default()).unwrap();
    e.handle_connected(NOW, "token");
    while e.poll_transmit(NOW).is_some() {}
    e
}

fn events(e: &mut ClientEngine<MemStore>) -> Vec<ClientEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn transmitted(e: &mut ClientEngine<MemStore>) -> Vec<ClientFrame> {
    std::iter::from_fn(|| e.poll_transmit(NOW)).collect()
}

/// The last unread count the app was told for `key`, if any.
fn told(evs: &[ClientEvent], key: &ConversationKey) -> Option<u32> {
    evs.iter().rev().find_map(|e| match e {
        ClientEvent::UnreadCountChanged { conversation, unread } if conversation == key => Some(*unread),
        _ => None,
    })
}

/// Every conversation's local count equals the number of its messages flagged unread.
fn assert_counts_match_flags(e: &ClientEngine<MemStore>) {
    for c in e.conversations() {
        let flagged = e.conversation_messages(&c.key).iter().filter(|m| m.unread).count() as u32;
        assert_eq!(c.local_unread, flagged, "{c:?}");
    }
}

fn sync_done(conversations: Vec<(ChatType, &str, u32)>) -> ServerFrame {
    ServerFrame::SyncDone {
        head: 0,
        conversations: conversations
            .into_iter()
            .map(|(chat_type, id, unread)| ConversationState { chat_type, id: id.into(), unread })
            .collect(),
        resync: false,
    }
}

/// engine_frames, fuzz/regressions/engine_frames-conversation-ack-remote-unread: the server
/// counts 5 unread messages this device does not hold (older than its history); a conversation
/// ack clears them, but the app was never told: its badge stayed at 5 while the engine said 0.
#[test]
fn conversation_ack_of_remote_only_unread_tells_the_app() {
    let mut e = engine();
    let key = ConversationKey::new(ChatType::Chat, "bob");
    e.handle_frame(NOW, sync_done(vec![(ChatType::Chat, "bob", 5)]));
    assert_eq!(told(&events(&mut e), &key), Some(5));

    assert!(e.ack_conversation_read(NOW, "bob").unwrap().is_some());
    assert_eq!(e.unread_count(&key), 0);
    assert_eq!(told(&events(&mut e), &key), Some(0), "the app must hear that the count went to 0");
}

/// Same path through markAllMessagesRead (own read state only).
#[test]
fn mark_all_read_of_remote_only_unread_tells_the_app() {
    let mut e = engine();
    let key = ConversationKey::new(ChatType::GroupChat, "g1");
    e.handle_frame(NOW, sync_done(vec![(ChatType::GroupChat, "g1", 3)]));
    assert_eq!(told(&events(&mut e), &key), Some(3));

    assert!(e.mark_all_messages_read(NOW, &key).unwrap().is_some());
    assert_eq!(e.unread_count(&key), 0);
    assert_eq!(told(&events(&mut e), &key), Some(0), "the app must hear that the count went to 0");
}

/// engine_inbound, fuzz/regressions/engine_inbound-message-id-0: a message with server id 0
/// (0 means "no server id yet" on the client). The engine took it, counted it unread and sent a
/// delivery ack for message 0; a later read watermark cleared the count but not the message's
/// unread flag (its flags are not resolved against watermarks), so count and flags disagreed.
/// Such a message is now ignored.
#[test]
fn message_with_id_0_is_ignored() {
    let mut e = engine();
    let msg = WireMessage {
        id: 0,
        client_id: "b1-1".into(),
        from: "bob".into(),
        to: "alice".into(),
        chat_type: ChatType::Chat,
        content: "hi".into(),
        timestamp: 5,
        require_delivery_ack: true,
        need_group_ack: false,
    };
    e.handle_frame(NOW, ServerFrame::Backlog { events: vec![SeqEvent { seq: 1, event: ServerEvent::Message { msg: msg.into() }.into() }] });
    e.handle_frame(NOW, sync_done(vec![]));
    let key = ConversationKey::new(ChatType::Chat, "bob");
    e.handle_frame(
        NOW,
        ServerFrame::Event {
            event: SeqEvent {
                seq: 2,
                event: ServerEvent::ReadState { chat_type: ChatType::Chat, conversation: "bob".into(), msg_id: None, up_to: 3 }.into(),
            },
        },
    );
    assert_counts_match_flags(&e);
    assert!(e.conversation_messages(&key).is_empty());
    assert_eq!(e.unread_count(&key), 0);
    assert_eq!(e.cursor(), 2, "the event is still consumed");
    assert!(!transmitted(&mut e).iter().any(|f| matches!(f, ClientFrame::DeliveryAck { .. })), "no delivery ack for message 0");
    assert!(!events(&mut e).iter().any(|ev| matches!(ev, ClientEvent::MessagesReceived(_))));
}

/// engine_frames, fuzz/regressions/engine_frames-message-id-in-two-conversations: a server sends
/// message 2 in group g1 and then a message with the same id 2 from carol. Server ids are global,
/// but the engine (since it stopped holding all messages in memory) only looked the id up when it
/// was not above the newest id of the message's own conversation, so the second copy was taken
/// as new: g1's index listed id 2 while the held message 2 was carol's, and counts and flags
/// disagreed. A repeated id is now found whatever conversation it names, and ignored.
#[test]
fn a_message_id_seen_in_another_conversation_is_ignored() {
    let mut e = engine();
    let msg = |id: MsgId, from: &str, to: &str, chat_type: ChatType| WireMessage {
        id,
        client_id: format!("{from}-{id}"),
        from: from.into(),
        to: to.into(),
        chat_type,
        content: "m".into(),
        timestamp: 5,
        require_delivery_ack: false,
        need_group_ack: false,
    };
    let event =
        |seq: Seq, m: WireMessage| ServerFrame::Event { event: SeqEvent { seq, event: ServerEvent::Message { msg: m.into() }.into() } };
    e.handle_frame(NOW, sync_done(vec![]));
    e.handle_frame(NOW, event(1, msg(2, "bob", "g1", ChatType::GroupChat)));
    e.handle_frame(NOW, event(2, msg(2, "carol", "alice", ChatType::Chat)));
    assert_counts_match_flags(&e);
    for c in e.conversations() {
        assert!(e.conversation_messages(&c.key).iter().all(|m| m.conversation() == c.key), "{c:?}");
    }
    let carol = ConversationKey::new(ChatType::Chat, "carol");
    assert!(e.conversation_messages(&carol).is_empty(), "the repeated id is not taken");
    assert_eq!(e.unread_count(&ConversationKey::new(ChatType::GroupChat, "g1")), 1);
    assert_eq!(e.cursor(), 2, "the event is still consumed");
}
