//! Private reading in the client engine: which frame each ack call queues, the local flags, the
//! per-call override, `requireReadAck = false` winning, and the private flag surviving the
//! on-disk offline queue across a restart (old journal entries still read as public acks).

use std::sync::Arc;

use receipt_core::engine::{ClientEngine, EngineConfig};
use receipt_core::protocol::{ClientFrame, SeqEvent, ServerEvent, ServerFrame, PROTOCOL_VERSION};
use receipt_core::store::RedbStore;
use receipt_core::*;

fn message(id: MsgId, to: &str, chat_type: ChatType, need_group_ack: bool) -> SeqEvent {
    let msg = WireMessage {
        id,
        client_id: format!("b1-{id}"),
        from: "bob".into(),
        to: to.into(),
        chat_type,
        content: "hello".into(),
        timestamp: id,
        require_delivery_ack: false,
        need_group_ack,
    };
    SeqEvent { seq: id, event: Arc::new(ServerEvent::Message { msg: Arc::new(msg) }) }
}

/// alice logged in and synced with bob's 1:1 messages 1..=3 and group message 4 (asks for acks).
fn synced(options: ChatOptions, store: RedbStore) -> ClientEngine<RedbStore> {
    let mut alice = ClientEngine::open(EngineConfig::new("alice", "a1", options), store).unwrap();
    alice.handle_connected(1, "t");
    let mut events: Vec<SeqEvent> = (1..=3).map(|id| message(id, "alice", ChatType::Chat, false)).collect();
    events.push(message(4, "g", ChatType::GroupChat, true));
    alice.handle_frame(2, ServerFrame::LoginOk { v: PROTOCOL_VERSION, user: "alice".into(), device: "a1".into(), server_time: 2 });
    alice.handle_frame(2, ServerFrame::Backlog { events });
    alice.handle_frame(2, ServerFrame::SyncDone { head: 4, conversations: Vec::new(), resync: false });
    while alice.poll_transmit(3).is_some() {}
    alice
}

fn private_opts() -> ChatOptions {
    ChatOptions { private_read_receipts: true, ..Default::default() }
}

fn sent(e: &mut ClientEngine<RedbStore>) -> Vec<ClientFrame> {
    std::iter::from_fn(|| e.poll_transmit(5)).collect()
}

#[test]
fn the_option_makes_every_ack_private_and_sets_no_sent_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = synced(private_opts(), RedbStore::open(dir.path().join("a.redb")).unwrap());
    let chat = ConversationKey::new(ChatType::Chat, "bob");
    let req = alice.ack_message_read(5, 1).unwrap().unwrap();
    assert_eq!(sent(&mut alice), vec![ClientFrame::ReadAck { req, msg_id: 1, private: true }]);
    let m = alice.message_by_id(1).unwrap();
    assert!(!m.unread && !m.receiver_read, "read here, but no receipt was sent: {m:?}");
    assert_eq!(alice.unread_count(&chat), 2);
    // Again: already read, nothing to send.
    assert_eq!(alice.ack_message_read(5, 1).unwrap(), None);

    let req = alice.ack_group_message_read(5, 4, Some("ext")).unwrap().unwrap();
    assert_eq!(sent(&mut alice), vec![ClientFrame::GroupAck { req, msg_id: 4, ext: None, private: true }], "the ext goes nowhere");
    assert!(!alice.message_by_id(4).unwrap().group_ack_sent);

    let req = alice.ack_conversation_read(5, "bob").unwrap().unwrap();
    let conversation = "bob".to_string();
    assert_eq!(sent(&mut alice), vec![ClientFrame::ConversationAck { req, chat_type: ChatType::Chat, conversation, private: true }]);
    assert_eq!(alice.unread_count(&chat), 0);
    assert_eq!(alice.ack_conversation_read(5, "bob").unwrap(), None, "nothing unread: nothing private to say");

    // The mode switched off for one call: a message read privately is acked now, publicly.
    let req = alice.ack_message_read_with(5, 2, Some(false)).unwrap().unwrap();
    assert_eq!(sent(&mut alice), vec![ClientFrame::ReadAck { req, msg_id: 2, private: false }]);
    assert!(alice.message_by_id(2).unwrap().receiver_read);
    // A private ack after the receipt: nothing.
    assert_eq!(alice.ack_message_read_with(5, 2, Some(true)).unwrap(), None);
    // The public conversation ack still has something to tell bob.
    let req = alice.ack_conversation_read_with(5, "bob", Some(false)).unwrap().unwrap();
    let conversation = "bob".to_string();
    assert_eq!(sent(&mut alice), vec![ClientFrame::ConversationAck { req, chat_type: ChatType::Chat, conversation, private: false }]);

    let req = alice.ack_messages_read(5, "bob", &[3]).unwrap();
    assert_eq!(sent(&mut alice), vec![ClientFrame::ReadAcks { req, conversation: "bob".into(), msg_ids: vec![3], private: true }]);
}

#[test]
fn require_read_ack_false_wins_over_private_reading() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ChatOptions { require_read_ack: false, private_read_receipts: true, ..Default::default() };
    let mut alice = synced(opts, RedbStore::open(dir.path().join("a.redb")).unwrap());
    let code = |r: ChatResult<Option<ReqId>>| r.unwrap_err().code;
    assert_eq!(code(alice.ack_message_read(5, 1)), ErrorCode::ServiceNotEnabled);
    assert_eq!(code(alice.ack_message_read_with(5, 1, Some(true))), ErrorCode::ServiceNotEnabled);
    assert_eq!(code(alice.ack_group_message_read_with(5, 4, None, Some(true))), ErrorCode::ServiceNotEnabled);
    assert_eq!(code(alice.ack_conversation_read_with(5, "bob", Some(true))), ErrorCode::ServiceNotEnabled);
    assert_eq!(alice.ack_messages_read_with(5, "bob", &[1], Some(true)).unwrap_err().code, ErrorCode::ServiceNotEnabled);
    assert!(sent(&mut alice).is_empty());
    assert!(alice.message_by_id(1).unwrap().unread, "nothing changed");
}

#[test]
fn a_private_ack_queued_offline_stays_private_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.redb");
    let req = {
        let mut alice = synced(ChatOptions::default(), RedbStore::open(&path).unwrap());
        alice.handle_disconnected(5);
        alice.ack_message_read_with(6, 1, Some(true)).unwrap().unwrap()
    };
    let mut alice = ClientEngine::open(EngineConfig::new("alice", "a1", ChatOptions::default()), RedbStore::open(&path).unwrap()).unwrap();
    let want = ClientFrame::ReadAck { req, msg_id: 1, private: true };
    assert_eq!(alice.outbox().cloned().collect::<Vec<_>>(), vec![want.clone()]);
    alice.handle_connected(7, "t");
    let frames = sent(&mut alice);
    assert!(matches!(frames[0], ClientFrame::Login { .. }));
    assert_eq!(frames[1..], [want]);
    assert!(!alice.message_by_id(1).unwrap().receiver_read);
}

#[test]
fn ack_frames_of_older_journals_and_producers_read_as_public() {
    let old: ClientFrame = serde_json::from_str(r#"{"t":"read_ack","req":1,"msg_id":2}"#).unwrap();
    assert_eq!(old, ClientFrame::ReadAck { req: 1, msg_id: 2, private: false });
    let old: ClientFrame = serde_json::from_str(r#"{"t":"group_ack","req":1,"msg_id":2,"ext":"x"}"#).unwrap();
    assert_eq!(old, ClientFrame::GroupAck { req: 1, msg_id: 2, ext: Some("x".into()), private: false });
    // A public ack is written as before (no field): the bytes older servers know.
    let bytes = serde_json::to_string(&ClientFrame::ReadAck { req: 1, msg_id: 2, private: false }).unwrap();
    assert!(!bytes.contains("private"), "{bytes}");
    let bytes = serde_json::to_string(&ClientFrame::ReadAck { req: 1, msg_id: 2, private: true }).unwrap();
    assert_eq!(serde_json::from_str::<ClientFrame>(&bytes).unwrap(), ClientFrame::ReadAck { req: 1, msg_id: 2, private: true });
}
