//! The on-disk store: an engine's state (messages, flags, counts, watermarks, outbox, cursor)
//! comes back intact when the store file is reopened, as after an app restart.

mod sim;

use receipt_core::engine::{ClientEngine, EngineConfig};
use receipt_core::protocol::ClientFrame;
use receipt_core::store::{ClientStore, RedbStore};
use receipt_core::*;
use sim::SimServer;

#[test]
fn engine_state_survives_reopening_the_redb_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.redb");
    let cfg = || EngineConfig::new("alice", "a1", ChatOptions::default());
    let mut server = SimServer::new();
    let key = ConversationKey::new(ChatType::Chat, "bob");

    // bob's messages reach alice through the reference server.
    let mut bob =
        ClientEngine::open(EngineConfig::new("bob", "b1", ChatOptions::default()), receipt_core::store::MemStore::default()).unwrap();
    server.handle("b1", ClientFrame::Login { v: 1, user: "bob".into(), device: "b1".into(), token: String::new(), since: 0 });
    for _ in 0..5 {
        bob.send_message(1, "alice", ChatType::Chat, "hello", false).unwrap();
    }
    bob.handle_connected(1, "t"); // login, then the outbox: the five sends
    while let Some(f) = bob.poll_transmit(1) {
        if !matches!(f, ClientFrame::Login { .. }) {
            server.handle("b1", f);
        }
    }

    let (cursor, outbox, unread) = {
        let mut alice = ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
        alice.handle_connected(2, "t");
        let login = alice.poll_transmit(2).unwrap();
        server.handle("a1", login);
        let frames: Vec<_> = server.sessions.get_mut("a1").unwrap().1.drain(..).collect();
        for f in frames {
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

    let mut store = RedbStore::open(&path).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.messages.len(), 5);
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
