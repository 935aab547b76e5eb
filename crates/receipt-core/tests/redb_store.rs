//! The on-disk store: an engine's state (messages, flags, counts, watermarks, outbox, cursor)
//! comes back intact when the store file is reopened, as after an app restart.

use std::sync::Arc;

use receipt_core::engine::{ClientEngine, ClientEvent, EngineConfig};
use receipt_core::protocol::{ClientFrame, ConversationState, SeqEvent, ServerEvent, ServerFrame, PROTOCOL_VERSION};
use receipt_core::store::{ClientStore, RedbStore};
use receipt_core::*;

/// What the server sends alice at login: bob's five messages (ids 1..=5), then the sync end.
fn login_answer() -> Vec<ServerFrame> {
    let events = (1..=5)
        .map(|id| {
            let msg = WireMessage {
                id,
                client_id: format!("b1-{id}"),
                from: "bob".into(),
                to: "alice".into(),
                chat_type: ChatType::Chat,
                content: "hello".into(),
                timestamp: id,
                require_delivery_ack: false,
                need_group_ack: false,
            };
            SeqEvent { seq: id, event: Arc::new(ServerEvent::Message { msg: Arc::new(msg) }) }
        })
        .collect();
    vec![
        ServerFrame::LoginOk { v: PROTOCOL_VERSION, user: "alice".into(), device: "a1".into(), server_time: 2 },
        ServerFrame::Backlog { events },
        ServerFrame::SyncDone {
            head: 5,
            conversations: vec![ConversationState { chat_type: ChatType::Chat, id: "bob".into(), unread: 5 }],
            resync: false,
        },
    ]
}

#[test]
fn engine_state_survives_reopening_the_redb_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.redb");
    let cfg = || EngineConfig::new("alice", "a1", ChatOptions::default());
    let key = ConversationKey::new(ChatType::Chat, "bob");

    let (cursor, outbox, unread) = {
        let mut alice = ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
        alice.handle_connected(2, "t");
        assert!(matches!(alice.poll_transmit(2), Some(ClientFrame::Login { .. })));
        for f in login_answer() {
            alice.handle_frame(3, f);
        }
        assert_eq!(alice.unread_count(&key), 5);
        alice.handle_disconnected(4);
        // Offline: one read ack and one mark-read go to the outbox.
        alice.ack_message_read(5, 2).unwrap().unwrap();
        alice.mark_message_read(5, 3).unwrap().unwrap();
        let outbox: Vec<ClientFrame> = alice.outbox().cloned().collect();
        (alice.cursor(), outbox, alice.unread_count(&key))
    };
    assert_eq!(unread, 3);
    assert_eq!(outbox.len(), 2);

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.conversation_messages(&key, 1..MsgId::MAX, 100, false).unwrap().len(), 5);
    let alice = ClientEngine::open(cfg(), store).unwrap();
    assert_eq!(alice.cursor(), cursor);
    assert_eq!(alice.outbox().cloned().collect::<Vec<_>>(), outbox);
    assert_eq!(alice.unread_count(&key), 3);
    let m = alice.message_by_id(2).unwrap();
    assert!(m.receiver_read && !m.unread);
    assert!(alice.message_by_id(4).unwrap().unread);
}

#[test]
fn corrupt_record_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            tx.open_table(def).unwrap().insert("meta", b"not json".as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let mut store = RedbStore::open(&path).unwrap();
    assert!(matches!(store.load(), Err(receipt_core::store::StoreError::Corrupt(_))));
}

/// The offline queue across restarts (issue 14): acks queued offline survive two restarts and a
/// refused login; the next good login sends each once, right after `Login`, and the confirmed
/// ones leave the store.
#[test]
fn offline_queue_survives_restarts_and_a_refused_login_then_flushes_once() {
    use receipt_core::protocol::Response;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.redb");
    let cfg = || EngineConfig::new("alice", "a1", ChatOptions::default());
    let open = || ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
    {
        let mut alice = open();
        alice.handle_connected(1, "t");
        for f in login_answer() {
            alice.handle_frame(2, f);
        }
        alice.handle_disconnected(3);
        alice.ack_message_read(4, 1).unwrap().expect("queued");
    }
    // Restart 1, still offline: one more ack; then the server refuses the token.
    {
        let mut alice = open();
        assert_eq!(alice.outbox().count(), 1);
        alice.ack_message_read(5, 2).unwrap().expect("queued");
        alice.handle_connected(6, "expired");
        alice.handle_frame(7, ServerFrame::LoginFailed { error: ChatError::new(ErrorCode::TokenExpired, "token expired") });
        assert!(alice.is_login_refused());
        assert_eq!(alice.login_refusal().map(|e| e.code), Some(ErrorCode::TokenExpired));
        let events: Vec<ClientEvent> = std::iter::from_fn(|| alice.poll_event()).collect();
        // 108: onTokenExpired, then the refusal.
        let tail: Vec<&ClientEvent> =
            events.iter().filter(|e| matches!(e, ClientEvent::TokenExpired | ClientEvent::LoginFailed(_))).collect();
        assert!(
            matches!(tail.as_slice(), [ClientEvent::TokenExpired, ClientEvent::LoginFailed(e)] if e.code == ErrorCode::TokenExpired),
            "{events:?}"
        );
        assert_eq!(alice.outbox().count(), 2, "a refused login keeps the queue");
    }
    // Restart 2, a good login: Login, then each queued ack once.
    let mut alice = open();
    let queued: Vec<ClientFrame> = alice.outbox().cloned().collect();
    assert_eq!(queued.len(), 2);
    alice.handle_connected(8, "good");
    let sent: Vec<ClientFrame> = std::iter::from_fn(|| alice.poll_transmit(8)).collect();
    assert!(matches!(sent[0], ClientFrame::Login { .. }));
    assert_eq!(&sent[1..], &queued[..], "each queued ack once, in order");
    for f in &queued {
        alice.handle_frame(9, ServerFrame::Result { req: f.req().unwrap(), ok: Some(Response::Done), err: None });
    }
    assert_eq!(alice.outbox().count(), 0);
    drop(alice);
    assert_eq!(open().outbox().count(), 0, "confirmed acks are gone from the store too");
}

#[test]
fn only_a_108_refusal_raises_token_expired() {
    for code in [ErrorCode::InvalidToken, ErrorCode::UserAuthenticationFailed, ErrorCode::TokenExpired] {
        let dir = tempfile::tempdir().unwrap();
        let mut alice = ClientEngine::open(
            EngineConfig::new("alice", "a1", ChatOptions::default()),
            RedbStore::open(dir.path().join("a.redb")).unwrap(),
        )
        .unwrap();
        alice.handle_connected(1, "t");
        alice.handle_frame(2, ServerFrame::LoginFailed { error: ChatError::new(code, "refused") });
        let events: Vec<ClientEvent> = std::iter::from_fn(|| alice.poll_event()).collect();
        let expired = events.iter().filter(|e| **e == ClientEvent::TokenExpired).count();
        assert_eq!(expired, usize::from(code == ErrorCode::TokenExpired), "{code:?}: {events:?}");
        assert!(events.iter().any(|e| matches!(e, ClientEvent::LoginFailed(err) if err.code == code)), "{events:?}");
    }
}
