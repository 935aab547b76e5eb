//! The engine's side of a full state resync (docs/server-data-model.md, "Event logs and device
//! cursors"), frame by frame: the server's truth replaces flags and counts, a message the device
//! never had arrives once, one it had and dropped by local retention comes back quietly.

use std::sync::Arc;

use receipt_core::engine::{ClientEngine, ClientEvent, EngineConfig, Retention};
use receipt_core::protocol::{ClientFrame, ConversationState, RetainedMessage, SeqEvent, ServerEvent, ServerFrame, PROTOCOL_VERSION};
use receipt_core::store::RedbStore;
use receipt_core::*;

const NOW: u64 = 1_700_000_000_000;

fn msg(id: MsgId, from: &str, to: &str) -> Arc<WireMessage> {
    Arc::new(WireMessage {
        id,
        client_id: format!("{from}-{id}"),
        from: from.into(),
        to: to.into(),
        chat_type: ChatType::Chat,
        content: format!("message {id}"),
        timestamp: NOW + id,
        require_delivery_ack: false,
        need_group_ack: false,
    })
}

fn retained(m: Arc<WireMessage>, read: bool, read_acked: bool) -> RetainedMessage {
    RetainedMessage { msg: m, delivered: false, read_acked, read, group_ack_sent: false, group_ack_count: 0, group_delivered_count: 0 }
}

fn received(evs: &[ClientEvent]) -> Vec<MsgId> {
    evs.iter().flat_map(|e| if let ClientEvent::MessagesReceived(m) = e { m.iter().map(|m| m.id).collect() } else { vec![] }).collect()
}

fn drain(e: &mut ClientEngine<RedbStore>, now: u64) -> (Vec<ClientFrame>, Vec<ClientEvent>) {
    let frames = std::iter::from_fn(|| e.poll_transmit(now)).collect();
    let events = std::iter::from_fn(|| e.poll_event()).collect();
    (frames, events)
}

#[test]
fn a_resync_replaces_flags_and_counts_and_tells_nothing_the_device_had() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new("alice", "a1", ChatOptions::default());
    cfg.retention = Retention { max_age_ms: None, max_per_conversation: Some(2) };
    let mut alice = ClientEngine::open(cfg, RedbStore::open(dir.path().join("a.redb")).unwrap()).unwrap();
    let bob = ConversationKey::new(ChatType::Chat, "bob");
    // A first sync: bob's messages 1..=6, then all read here (a read watermark from the server).
    alice.handle_connected(1, "t");
    alice.handle_frame(1, ServerFrame::LoginOk { v: PROTOCOL_VERSION, user: "alice".into(), device: "a1".into(), server_time: NOW });
    let events: Vec<SeqEvent> =
        (1..=6).map(|id| SeqEvent { seq: id, event: Arc::new(ServerEvent::Message { msg: msg(id, "bob", "alice") }) }).collect();
    alice.handle_frame(2, ServerFrame::Backlog { events });
    let read = ServerEvent::ReadState { chat_type: ChatType::Chat, conversation: "bob".into(), msg_id: None, up_to: 6 };
    alice.handle_frame(2, ServerFrame::Backlog { events: vec![SeqEvent { seq: 7, event: Arc::new(read) }] });
    let conversations = vec![ConversationState { chat_type: ChatType::Chat, id: "bob".into(), unread: 0 }];
    alice.handle_frame(3, ServerFrame::SyncDone { head: 7, conversations, resync: false });
    let (frames, _) = drain(&mut alice, 3);
    assert!(frames.contains(&ClientFrame::SyncCursor { seq: 7 }), "the cursor is reported after the sync: {frames:?}");
    // Local retention keeps bob's newest two.
    for t in 0..20 {
        alice.retention_step(4 + t);
    }
    assert_eq!(alice.conversation(&bob).unwrap().held, 2);
    assert_eq!(alice.message_by_id(1), None);
    alice.handle_disconnected(5);
    drain(&mut alice, 5);
    // Back below the server's trimmed log: the state comes instead of the events. Messages 1..=6
    // are retained (1..=4 dropped here: back in the history, not received again), 5 held
    // (updated silently: alice's read receipt went out from another device), 8 and 9 new (9 read
    // on another device: above bob's newest here, so news all the same).
    alice.handle_connected(6, "t");
    alice.handle_frame(6, ServerFrame::LoginOk { v: PROTOCOL_VERSION, user: "alice".into(), device: "a1".into(), server_time: NOW });
    let mut page: Vec<RetainedMessage> = (1..=6).map(|id| retained(msg(id, "bob", "alice"), true, id == 5)).collect();
    page.push(retained(msg(8, "bob", "alice"), false, false));
    page.push(retained(msg(9, "bob", "alice"), true, false));
    alice.handle_frame(7, ServerFrame::Resync { messages: page });
    let conversations = vec![ConversationState { chat_type: ChatType::Chat, id: "bob".into(), unread: 1 }];
    alice.handle_frame(8, ServerFrame::SyncDone { head: 40, conversations, resync: true });
    let (frames, events) = drain(&mut alice, 8);
    assert_eq!(received(&events), vec![8, 9], "only what it never had, once");
    assert!(!events
        .iter()
        .any(|e| matches!(e, ClientEvent::MessagesRead(_) | ClientEvent::MessagesDelivered(_) | ClientEvent::GroupMessageRead(_))));
    assert!(!alice.message_by_id(1).unwrap().unread, "a dropped message is back in the history, read");
    assert!(alice.message_by_id(5).unwrap().receiver_read, "the held one has the server's flags");
    assert!(alice.message_by_id(8).unwrap().unread && !alice.message_by_id(9).unwrap().unread);
    assert_eq!(alice.unread_count(&bob), 1, "the server's count");
    assert_eq!(alice.cursor(), 40, "the cursor is the head");
    assert!(frames.contains(&ClientFrame::SyncCursor { seq: 40 }), "{frames:?}");
    assert!(alice.is_connected());
    // A resync page outside a sync is ignored.
    alice.handle_frame(9, ServerFrame::Resync { messages: vec![retained(msg(50, "bob", "alice"), false, false)] });
    assert_eq!(alice.message_by_id(50), None);
}
