//! History larger than memory: the engine keeps a bounded cache of messages and reads the rest
//! from the store by key and by conversation range. A restart over a store larger than the
//! cache keeps counts, flags and acks right; a format-1 file migrates at open; retention drops
//! old read messages in bounded steps and leaves every count exact.

use std::sync::Arc;

use receipt_core::engine::{ClientEngine, ClientEvent, EngineConfig, Retention, CHECKPOINT_IDLE_MS};
use receipt_core::protocol::{ConversationState, SeqEvent, ServerEvent, ServerFrame, PROTOCOL_VERSION};
use receipt_core::store::{ClientStore, RedbStore, StoreError, STORE_FORMAT};
use receipt_core::*;

const CACHE: usize = 8;
const NOW: u64 = 1_700_000_000_000;
const PEERS: [&str; 3] = ["bob", "carol", "dave"];

fn cfg() -> EngineConfig {
    let mut cfg = EngineConfig::new("alice", "a1", ChatOptions::default());
    cfg.message_cache = CACHE;
    cfg
}

fn chat(peer: &str) -> ConversationKey {
    ConversationKey::new(ChatType::Chat, peer)
}

/// Message `id` from `PEERS[id % 3]` to alice, sent at `NOW + id` ms.
fn wire(id: MsgId) -> Arc<ServerEvent> {
    let from = PEERS[(id % 3) as usize];
    Arc::new(ServerEvent::Message {
        msg: Arc::new(WireMessage {
            id,
            client_id: format!("{from}-{id}"),
            from: from.into(),
            to: "alice".into(),
            chat_type: ChatType::Chat,
            content: format!("message {id}"),
            timestamp: NOW + id,
            require_delivery_ack: false,
            need_group_ack: false,
        }),
    })
}

/// Logs alice in and replays messages `1..=n` (one event each), then ends the sync.
fn sync(e: &mut ClientEngine<impl ClientStore>, n: u64) {
    e.handle_connected(1, "t");
    e.handle_frame(1, ServerFrame::LoginOk { v: PROTOCOL_VERSION, user: "alice".into(), device: "a1".into(), server_time: NOW });
    let events = (e.cursor() + 1..=n).map(|id| SeqEvent { seq: id, event: wire(id) }).collect();
    e.handle_frame(2, ServerFrame::Backlog { events });
    let conversations = PEERS
        .iter()
        .map(|p| ConversationState { chat_type: ChatType::Chat, id: p.to_string(), unread: e.unread_count(&chat(p)) })
        .collect();
    e.handle_frame(3, ServerFrame::SyncDone { head: n, conversations, resync: false });
    while e.poll_transmit(3).is_some() {}
    while e.poll_event().is_some() {}
}

#[test]
fn a_restart_over_a_store_larger_than_the_cache_keeps_counts_flags_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.redb");
    {
        let mut alice = ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
        sync(&mut alice, 300);
        assert!(alice.cached_message_count() <= CACHE, "cache bounded: {}", alice.cached_message_count());
        for p in PEERS {
            assert_eq!(alice.unread_count(&chat(p)), 100);
        }
        // Message 3 (from bob) was evicted long ago: its ack reads its facts from the store.
        alice.ack_message_read(4, 3).unwrap().expect("an ack is sent");
        assert_eq!(alice.ack_message_read(4, 3).unwrap(), None, "already acked: read back, not sent again");
        assert_eq!(alice.unread_count(&chat("bob")), 99);
        // A read up to 150 stops short of carol's newest: what stays unread above it is counted
        // from the store's range.
        let seq = alice.cursor() + 1;
        let read = ServerEvent::ReadState { chat_type: ChatType::Chat, conversation: "carol".into(), msg_id: None, up_to: 150 };
        alice.handle_frame(5, ServerFrame::Event { event: SeqEvent { seq, event: Arc::new(read) } });
        assert_eq!(alice.unread_count(&chat("carol")), 50, "carol's messages 151..=298 stay unread");
        assert!(alice.cached_message_count() <= CACHE);
    }
    let mut alice = ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
    assert_eq!(alice.cached_message_count(), 0, "open reads no message");
    assert_eq!((alice.unread_count(&chat("bob")), alice.unread_count(&chat("carol")), alice.unread_count(&chat("dave"))), (99, 50, 100));
    let m = alice.message_by_id(3).unwrap();
    assert!(m.receiver_read && !m.unread, "the ack's flags survived: {m:?}");
    assert!(!alice.message_by_id(148).unwrap().unread, "under carol's read mark");
    assert!(alice.message_by_id(151).unwrap().unread);
    assert_eq!(alice.ack_message_read(6, 3).unwrap(), None, "never acked twice, across a restart");
    // A page of 20 newest first, then the next page from the last one's id.
    let page = alice.load_messages(&chat("bob"), None, 20);
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), (0..20).map(|i| 300 - 3 * i).collect::<Vec<_>>());
    let next = alice.load_messages(&chat("bob"), Some(page[19].id), 20);
    assert_eq!(next[0].id, page[19].id - 3);
    assert_eq!(alice.load_messages(&chat("bob"), Some(3), 20), Vec::new(), "nothing older than the first");
    // A conversation ack after the restart covers the whole history; the count drops to 0.
    alice.ack_conversation_read(7, "dave").unwrap().expect("dave's conversation is acked");
    assert_eq!(alice.unread_count(&chat("dave")), 0);
    assert!(alice.conversation_messages(&chat("dave")).iter().all(|m| !m.unread && m.receiver_read));
    assert!(alice.cached_message_count() <= CACHE);
}

#[test]
fn replayed_messages_already_in_the_store_are_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.redb");
    {
        let mut alice = ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
        sync(&mut alice, 60);
    }
    let mut alice = ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
    // The server replays an old message again (a seq past the cursor, a message id held).
    let seq = alice.cursor() + 1;
    alice.handle_frame(4, ServerFrame::Event { event: SeqEvent { seq, event: wire(3) } });
    assert_eq!(alice.unread_count(&chat("bob")), 20);
    assert!(!std::iter::from_fn(|| alice.poll_event()).any(|e| matches!(e, ClientEvent::MessagesReceived(_))));
}

#[test]
fn a_format_1_store_migrates_at_open_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    // Format 1, as the previous SDK wrote it: a `messages` table keyed by id, no format marker.
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let messages: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");
            let convs: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("conversations");
            let mut t = tx.open_table(messages).unwrap();
            for (id, direction, unread) in [(1u64, "Receive", true), (2, "Send", false), (3, "Receive", true), (4, "Send", false)] {
                let (from, to) = if direction == "Receive" { ("bob", "alice") } else { ("alice", "bob") };
                let json = format!(
                    r#"{{"id":{id},"client_id":"c{id}","from":"{from}","to":"{to}","chat_type":"Chat","direction":"{direction}","content":"x","timestamp":{id},"require_delivery_ack":false,"need_group_ack":false,"status":"Sent","delivered":false,"receiver_read":false,"unread":{unread},"group_ack_count":0,"group_ack_sent":false}}"#
                );
                t.insert(id, json.as_bytes()).unwrap();
            }
            let conv = r#"{"key":{"chat_type":"Chat","id":"bob"},"local_unread":2,"remote_unread":0,"read_up_to":0,"peer_read_up_to":0,"ack_sent_up_to":0,"latest":4}"#;
            tx.open_table(convs).unwrap().insert(br#"{"chat_type":"Chat","id":"bob"}"#.as_slice(), conv.as_bytes()).unwrap();
        }
        tx.commit().unwrap();
    }
    let mut alice = ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
    let c = alice.conversation(&chat("bob")).unwrap().clone();
    assert_eq!((c.newest, c.newest_received, c.held, c.local_unread), (4, 3, 4, 2));
    assert_eq!(alice.load_messages(&chat("bob"), None, 10).iter().map(|m| m.id).collect::<Vec<_>>(), vec![4, 3, 2, 1]);
    alice.ack_message_read(5, 1).unwrap().expect("a migrated message takes its ack");
    assert_eq!(alice.unread_count(&chat("bob")), 1);
    drop(alice);

    // A file from a newer SDK is refused, with its format named.
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            tx.open_table(meta).unwrap().insert("format", (STORE_FORMAT + 1).to_string().as_bytes()).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NewerFormat { found, .. } if found == STORE_FORMAT + 1), "{err}");
    assert!(err.to_string().contains("newer than this SDK"), "{err}");
}

#[test]
fn retention_drops_old_read_messages_in_bounded_steps_and_keeps_counts_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.redb");
    let mut config = cfg();
    config.retention = Retention { max_age_ms: None, max_per_conversation: Some(10) };
    let mut alice = ClientEngine::open(config, RedbStore::open(&path).unwrap()).unwrap();
    sync(&mut alice, 1500); // 500 per conversation
                            // bob's history is read up to message 1200 (400 of his 500); carol's and dave's stay unread.
    let seq = alice.cursor() + 1;
    let read = ServerEvent::ReadState { chat_type: ChatType::Chat, conversation: "bob".into(), msg_id: None, up_to: 1200 };
    alice.handle_frame(5, ServerFrame::Event { event: SeqEvent { seq, event: Arc::new(read) } });
    assert_eq!(alice.unread_count(&chat("bob")), 100);
    let counts = |a: &ClientEngine<RedbStore>| PEERS.map(|p| a.unread_count(&chat(p)));
    let before = counts(&alice);
    let mut steps = 0;
    // Each step drops at most RETENTION_STEP messages of one conversation; bounded sweeps.
    while alice.conversation(&chat("bob")).unwrap().held > 100 && steps < 50 {
        alice.retention_step(6);
        steps += 1;
    }
    assert!(steps > 1, "more than one step: the work is split ({steps})");
    assert_eq!(counts(&alice), before, "dropping read messages changes no count");
    let bob = alice.conversation(&chat("bob")).unwrap();
    assert_eq!(bob.held, 100, "only bob's read messages went; his 100 unread stay");
    assert_eq!(alice.conversation(&chat("carol")).unwrap().held, 500, "unread messages are never dropped");
    assert_eq!(alice.message_by_id(3), None, "an old read message is gone");
    assert!(alice.message_by_id(1203).unwrap().unread);
    let page = alice.load_messages(&chat("bob"), None, 1000);
    assert_eq!(page.len(), 100);
    assert!(page.iter().all(|m| m.id > 1200));
    // Reading the rest lets the next sweep bring bob down to the cap.
    alice.ack_conversation_read(7, "bob").unwrap().unwrap();
    for _ in 0..10 {
        alice.retention_step(8);
    }
    assert_eq!(alice.conversation(&chat("bob")).unwrap().held, 10);
    assert_eq!(alice.load_messages(&chat("bob"), None, 1000).len(), 10);
    assert_eq!(alice.unread_count(&chat("bob")), 0);
    drop(alice);
    let alice = ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
    assert_eq!(alice.load_messages(&chat("bob"), None, 1000).len(), 10, "the drop is on disk");
    assert_eq!(alice.unread_count(&chat("carol")), 500);
}

#[test]
fn retention_runs_by_itself_on_the_timer_while_connected() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cfg();
    config.retention = Retention { max_age_ms: Some(1_000), max_per_conversation: None };
    let mut alice = ClientEngine::open(config, RedbStore::open(dir.path().join("a.redb")).unwrap()).unwrap();
    sync(&mut alice, 1500); // timestamps NOW+1 ..= NOW+1500: the server clock is NOW+1500
    alice.ack_conversation_read(4, "bob").unwrap().unwrap();
    // Only the timer drives it: poll_timeout says when, handle_timeout runs one bounded step.
    let mut now = 10;
    let mut ticks = 0;
    // bob's 500 messages are ids 3, 6, ..= 1500; those sent (server time) over 1 s before the
    // newest, ids below 500, go: 166 of them.
    while alice.conversation(&chat("bob")).unwrap().held > 334 && ticks < 100 {
        now = alice.poll_timeout().expect("connected").max(now);
        assert!(alice.handle_timeout(now));
        while alice.poll_transmit(now).is_some() {}
        ticks += 1;
    }
    assert!(ticks < 100, "retention finished in bounded ticks");
    assert!(now < 20_000, "the steps come quicker than the keep-alive ({now} ms)");
    // carol's are unread: all kept.
    let bob = alice.load_messages(&chat("bob"), None, 2000);
    assert_eq!(bob.len(), 334);
    assert!(bob.iter().all(|m| m.timestamp >= NOW + 500));
    assert_eq!(alice.conversation(&chat("carol")).unwrap().held, 500);
    assert_eq!(alice.unread_count(&chat("carol")), 500);
}

/// The helper process of the kill test (run by it with `--ignored`): opens the store named by
/// `KILL_STORE`, syncs and acks message 3 (a durable commit), lets the engine's timer run
/// `KILL_IDLE_MS` later (0: not at all), and dies without closing anything, as a phone kills an
/// app.
#[test]
#[ignore = "a child process of a_kill_at_any_moment_reopens_without_walking_the_file_and_loses_no_durable_write"]
fn killed_app() {
    let Ok(path) = std::env::var("KILL_STORE") else { return };
    let idle: u64 = std::env::var("KILL_IDLE_MS").unwrap().parse().unwrap();
    let mut alice = ClientEngine::open(cfg(), RedbStore::open(&path).unwrap()).unwrap();
    if std::env::var("KILL_ACK").is_ok() {
        sync(&mut alice, 30);
        alice.ack_message_read(10, 3).unwrap().expect("an ack is sent");
        if idle > 0 {
            alice.handle_timeout(10 + idle);
        }
    }
    std::process::exit(0); // no destructor: redb's clean close never runs
}

/// Runs `killed_app` in a child process over `path`. False (after a loud note) where this test
/// binary cannot start itself: aarch64-ohos under qemu-user without binfmt_misc
/// (scripts/test-ohos.sh); the test then checks nothing there and says so.
fn run_killed_app(path: &std::path::Path, ack: bool, idle_ms: u64) -> bool {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "killed_app", "--ignored", "--nocapture", "--test-threads=1"]);
    cmd.env("KILL_STORE", path).env("KILL_IDLE_MS", idle_ms.to_string());
    if ack {
        cmd.env("KILL_ACK", "1");
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.raw_os_error() == Some(8) => {
            eprintln!("SKIPPED: the kill test cannot start a child process here ({e}): nothing checked on this target");
            return false;
        }
        Err(e) => panic!("cannot start the child process: {e}"),
    };
    assert!(out.status.success(), "child: {}", String::from_utf8_lossy(&out.stderr));
    true
}

#[test]
fn a_kill_at_any_moment_reopens_without_walking_the_file_and_loses_no_durable_write() {
    let dir = tempfile::tempdir().unwrap();
    // Killed once the app had been quiet: the checkpoint emptied the journal.
    let idle = dir.path().join("idle.redb");
    if !run_killed_app(&idle, true, CHECKPOINT_IDLE_MS) {
        return;
    }
    let store = RedbStore::open(&idle).unwrap();
    assert!(!store.repaired_at_open(), "a kill after the checkpoint does not walk the file");
    assert_eq!(store.replayed_at_open(), 0, "nothing left in the journal");
    let alice = ClientEngine::open(cfg(), store).unwrap();
    assert!(alice.message_by_id(3).unwrap().receiver_read, "the ack survived the kill");
    drop(alice);

    // Killed right after the ack (within a burst, before the checkpoint): the journal holds the
    // batches since the last checkpoint (the synced messages, lazily, then the ack, durably);
    // the open replays them, and walks nothing.
    let burst = dir.path().join("burst.redb");
    run_killed_app(&burst, true, 0);
    // Killed again right after its reopen (which replayed the journal and kept it until the next
    // checkpoint): replaying it a second time changes nothing.
    run_killed_app(&burst, false, 0);
    let store = RedbStore::open(&burst).unwrap();
    assert!(!store.repaired_at_open(), "no walk of the file after a kill within a burst either");
    assert!(store.replayed_at_open() > 0, "the journal was replayed");
    let alice = ClientEngine::open(cfg(), store).unwrap();
    let m = alice.message_by_id(3).unwrap();
    assert!(m.receiver_read && !m.unread, "the ack survived the kill: {m:?}");
    assert_eq!(alice.cursor(), 30, "what came before the durable ack is on disk with it");
    assert_eq!(PEERS.map(|p| alice.conversation_messages(&chat(p)).len()), [10, 10, 10]);
    assert_eq!(alice.unread_count(&chat("bob")), 9);
    drop(alice); // a clean close checkpoints: the journal is empty
    run_killed_app(&burst, false, 0); // opened and killed again, nothing written
    let store = RedbStore::open(&burst).unwrap();
    assert_eq!((store.repaired_at_open(), store.replayed_at_open()), (false, 0));
}
