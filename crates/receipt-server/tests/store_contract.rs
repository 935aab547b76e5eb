//! The store contract (`ServerStore` and `StoreRead`, src/store/mod.rs) as one suite run on
//! every backend: the embedded redb store and PostgreSQL (a throwaway cluster of the test kit,
//! one database per test). Each case opens the store again (a restart) to read what the
//! committed operations left.

use std::sync::Arc;

use receipt_core::protocol::{SeqEvent, ServerEvent};
use receipt_core::{ChatType, ConversationKey, GroupAckKind, GroupReadAck, GroupRole, MsgId, WireMessage};
use receipt_server::core::StoreOp;
use receipt_server::state::{ConvId, ConvState, Counters, DeviceCursor, Group, State};
use receipt_server::store::{PgServerStore, RedbServerStore, ServerStore};

/// Opens the same store again and again.
trait Backend {
    fn open(&self) -> Box<dyn ServerStore>;
}

struct Redb(tempfile::TempDir);

impl Backend for Redb {
    fn open(&self) -> Box<dyn ServerStore> {
        Box::new(RedbServerStore::open(self.0.path()).unwrap())
    }
}

struct Pg(receipt_testkit::pg::PgDb);

impl Backend for Pg {
    fn open(&self) -> Box<dyn ServerStore> {
        Box::new(PgServerStore::connect(&self.0.conninfo).unwrap())
    }
}

fn redb() -> Option<Box<dyn Backend>> {
    Some(Box::new(Redb(tempfile::tempdir().unwrap())))
}

fn postgres() -> Option<Box<dyn Backend>> {
    receipt_testkit::pg::database().map(|db| Box::new(Pg(db)) as Box<dyn Backend>)
}

/// Each case as a test on each backend: `redb::case` and `postgres::case`.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod redb {
            $(#[test] fn $case() { if let Some(b) = super::redb() { super::$case(&*b) } })*
        }
        mod postgres {
            $(#[test] fn $case() { if let Some(b) = super::postgres() { super::$case(&*b) } })*
        }
    };
}

contract!(
    everything_committed_loads_back_after_a_restart,
    later_writes_of_a_key_win_within_one_commit,
    the_reader_sees_the_last_commit_from_one_snapshot_per_batch,
    logs_are_read_in_pages_swept_and_trimmed,
    a_log_whose_last_events_went_with_their_messages_keeps_its_head,
    read_and_delivery_acks_of_a_message_are_kept_apart,
);

fn msg(id: MsgId, to: &str, chat_type: ChatType) -> WireMessage {
    WireMessage {
        id,
        client_id: format!("c{id}"),
        from: "alice".into(),
        to: to.into(),
        chat_type,
        content: format!("héllo \"{id}\""),
        timestamp: 100 + id,
        require_delivery_ack: true,
        need_group_ack: chat_type == ChatType::GroupChat,
    }
}

fn ack(ack_id: u64, msg_id: MsgId, from: &str, count: u32) -> GroupReadAck {
    GroupReadAck { ack_id, msg_id, from: from.into(), content: Some("e".into()), count, timestamp: 200 + ack_id }
}

fn delivered(msg_id: MsgId, timestamp: u64) -> ServerEvent {
    ServerEvent::Delivered { msg_id, from: "alice".into(), to: "bob".into(), by: "bob".into(), timestamp }
}

fn append(user: &str, seq: u64, event: ServerEvent) -> StoreOp {
    StoreOp::AppendEvent { user: user.into(), event: SeqEvent { seq, event: event.into() }.into() }
}

fn conv(unread: u32, up_to: MsgId) -> ConvState {
    let mut c = ConvState { unread, newest: 9, newest_received: 8, receipt_up_to: 2, ..Default::default() };
    c.read.up_to = up_to;
    c
}

fn events(s: &State, user: &str) -> Vec<(u64, ServerEvent)> {
    s.logs.get(user).map_or(Vec::new(), |l| l.iter().map(|e| (e.seq, (*e.event).clone())).collect())
}

fn everything_committed_loads_back_after_a_restart(b: &dyn Backend) {
    let chat = ConversationKey::new(ChatType::Chat, "alice");
    let group = Group {
        id: "g".into(),
        name: "n".into(),
        chat_room: false,
        members: [("alice".to_string(), GroupRole::Owner), ("bob".to_string(), GroupRole::Member)].into(),
        joined_after: [("bob".to_string(), 1)].into(),
    };
    let counters = Counters { last_msg_id: 2, last_ack_id: 4, last_group_id: 1, last_ts: 9 };
    let cursor = DeviceCursor { seq: 3, seen: 99 };
    let evs = [
        ServerEvent::Message { msg: msg(1, "bob", ChatType::Chat).into() },
        delivered(1, 300),
        ServerEvent::GroupRead { group: "g".into(), sender: "alice".into(), ack: ack(4, 2, "bob", 1) },
        ServerEvent::ReadState { chat_type: ChatType::GroupChat, conversation: "g".into(), msg_id: Some(2), up_to: 0 },
        ServerEvent::Membership { group: "g".into(), role: Some(GroupRole::Admin), chat_room: true },
    ];
    {
        let mut s = b.open();
        s.commit(&[&[
            StoreOp::PutCounters(counters),
            StoreOp::PutMessage(msg(1, "bob", ChatType::Chat).into()),
            StoreOp::PutMessage(msg(2, "g", ChatType::GroupChat).into()),
            StoreOp::PutMessageFlags { id: 1, delivered: true, read_acked: false },
            StoreOp::PutGroupAck(ack(4, 2, "bob", 1)),
            StoreOp::PutGroup(group.clone()),
            StoreOp::PutConversation { user: "bob".into(), key: chat.clone(), state: conv(3, 1) },
            StoreOp::AddRead { user: "bob".into(), key: chat.clone(), msg_id: 5 },
            StoreOp::PutCursor { user: "bob".into(), device: "phone".into(), cursor },
        ]])
        .unwrap();
        // Two commits, two parts: seqs go on across rows.
        let first: Vec<StoreOp> = evs[..2].iter().enumerate().map(|(i, e)| append("bob", i as u64 + 1, e.clone())).collect();
        let rest: Vec<StoreOp> = evs[2..].iter().enumerate().map(|(i, e)| append("bob", i as u64 + 3, e.clone())).collect();
        s.commit(&[&first]).unwrap();
        s.commit(&[&rest[..1], &rest[1..]]).unwrap();
    }
    let mut s = b.open();
    let state = s.load().unwrap();
    assert_eq!(state.counters, counters);
    assert_eq!(*state.messages[&1].msg, msg(1, "bob", ChatType::Chat));
    assert!(state.messages[&1].delivered && !state.messages[&1].read_acked);
    assert_eq!(state.messages[&2].ack_count, 1);
    assert_eq!(state.messages[&2].acks[&4], ack(4, 2, "bob", 1));
    assert_eq!(state.groups["g"], group, "with its join marks");
    let c = &state.convs["bob"][&chat];
    assert_eq!((c.unread, c.read.up_to, c.receipt_up_to, c.newest, c.newest_received), (3, 1, 2, 9, 8));
    assert_eq!(c.read.singles.iter().copied().collect::<Vec<_>>(), vec![5]);
    let want: Vec<_> = evs.iter().cloned().enumerate().map(|(i, e)| (i as u64 + 1, e)).collect();
    assert_eq!(events(&state, "bob"), want);
    assert_eq!(state.cursors["bob"]["phone"], cursor);
    assert_eq!(state.client_ids["alice"]["c2"], 2);
    assert_eq!(state.conv_messages[&ConvId::Group("g".into())].iter().copied().collect::<Vec<_>>(), vec![2]);
    // The hot part: counters, groups, cursors; nothing that grows with history.
    let hot = s.load_hot().unwrap();
    assert_eq!((hot.counters, &hot.groups["g"], hot.cursors["bob"]["phone"]), (counters, &group, cursor));
    assert!(hot.messages.is_empty() && hot.logs.is_empty() && hot.convs.is_empty());
}

fn later_writes_of_a_key_win_within_one_commit(b: &dyn Backend) {
    let chat = ConversationKey::new(ChatType::Chat, "alice");
    let bob = || "bob".to_string();
    let mut s = b.open();
    let first = [
        StoreOp::PutMessage(msg(1, "bob", ChatType::Chat).into()),
        StoreOp::PutMessageFlags { id: 1, delivered: true, read_acked: false },
        StoreOp::PutConversation { user: bob(), key: chat.clone(), state: conv(5, 0) },
        StoreOp::AddRead { user: bob(), key: chat.clone(), msg_id: 3 },
        StoreOp::AddRead { user: bob(), key: chat.clone(), msg_id: 5 },
        StoreOp::AddRead { user: bob(), key: chat.clone(), msg_id: 7 },
        StoreOp::PutCursor { user: bob(), device: "old".into(), cursor: DeviceCursor { seq: 1, seen: 1 } },
        StoreOp::DeleteCursor { user: bob(), device: "new".into() },
    ];
    let second = [
        StoreOp::PutMessageFlags { id: 1, delivered: true, read_acked: true },
        StoreOp::PutConversation { user: bob(), key: chat.clone(), state: conv(1, 5) },
        StoreOp::TrimReads { user: bob(), key: chat.clone(), up_to: 5 },
        StoreOp::DeleteCursor { user: bob(), device: "old".into() },
        StoreOp::PutCursor { user: bob(), device: "new".into(), cursor: DeviceCursor { seq: 2, seen: 2 } },
        StoreOp::PutCounters(Counters { last_msg_id: 1, ..Default::default() }),
        StoreOp::PutCounters(Counters { last_msg_id: 2, ..Default::default() }),
    ];
    s.commit(&[&first, &second]).unwrap();
    drop(s);
    let state = b.open().load().unwrap();
    assert!(state.messages[&1].read_acked, "the last flags");
    let c = &state.convs["bob"][&chat];
    assert_eq!((c.unread, c.read.up_to), (1, 5), "the last record");
    assert_eq!(c.read.singles.iter().copied().collect::<Vec<_>>(), vec![7], "reads up to the trim are gone");
    assert_eq!(state.cursors["bob"].keys().collect::<Vec<_>>(), vec!["new"]);
    assert_eq!(state.counters.last_msg_id, 2);
}

fn the_reader_sees_the_last_commit_from_one_snapshot_per_batch(b: &dyn Backend) {
    let mut s = b.open();
    let r = s.reader().expect("a backend with a reader");
    assert!(r.message(7).unwrap().is_none());
    r.release();
    let chat = ConversationKey::new(ChatType::Chat, "alice");
    let mut ops = vec![
        StoreOp::PutMessage(msg(6, "bob", ChatType::Chat).into()),
        StoreOp::PutMessageFlags { id: 6, delivered: true, read_acked: true },
        StoreOp::PutMessage(msg(7, "g", ChatType::GroupChat).into()),
        StoreOp::PutConversation { user: "bob".into(), key: chat.clone(), state: conv(2, 1) },
        StoreOp::AddRead { user: "bob".into(), key: chat.clone(), msg_id: 4 },
        StoreOp::PutConversation { user: "bob".into(), key: ConversationKey::new(ChatType::GroupChat, "g"), state: conv(1, 0) },
    ];
    for (i, who) in ["bob", "carol", "dave"].iter().enumerate() {
        ops.push(StoreOp::PutGroupAck(ack(i as u64 + 1, 7, who, i as u32 + 1)));
    }
    s.commit(&[&ops]).unwrap();
    let m = r.message(7).unwrap().unwrap();
    assert_eq!((*m.msg == msg(7, "g", ChatType::GroupChat), m.ack_count, m.acks.len()), (true, 3, 0));
    let m6 = r.message(6).unwrap().unwrap();
    assert!(m6.delivered && m6.read_acked);
    assert_eq!(r.client_id("alice", "c7").unwrap(), Some(7));
    assert_eq!(r.client_id("alice", "nope").unwrap(), None);
    assert!(r.has_sent("alice").unwrap() && !r.has_sent("bob").unwrap());
    assert!(r.acked_by(7, "carol").unwrap() && !r.acked_by(7, "erin").unwrap());
    let page: Vec<u64> = r.acks_desc(7, u64::MAX, 2).unwrap().iter().map(|a| a.ack_id).collect();
    assert_eq!(page, vec![3, 2], "newest first, at most the limit");
    let page: Vec<u64> = r.acks_desc(7, 1, 10).unwrap().iter().map(|a| a.ack_id).collect();
    assert_eq!(page, vec![1], "from the cursor down");
    assert_eq!(r.messages_from(7, 10).unwrap().iter().map(|m| m.id).collect::<Vec<_>>(), vec![7]);
    assert_eq!(r.messages_from(0, 1).unwrap().iter().map(|m| m.id).collect::<Vec<_>>(), vec![6]);
    let c = r.conversation("bob", &chat).unwrap().unwrap();
    assert_eq!((c.unread, c.read.singles.iter().copied().collect::<Vec<_>>()), (2, vec![4]));
    assert!(r.conversation("bob", &ConversationKey::new(ChatType::Chat, "zed")).unwrap().is_none());
    let all = r.conversations_of("bob", 10).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|(_, c)| c.read.singles.is_empty()), "without read singles");
    assert_eq!(r.conversations_of("bob", 1).unwrap().len(), 1, "bounded");
    let pair = ConvId::of(&msg(6, "bob", ChatType::Chat));
    assert_eq!(r.conv_messages_after(&pair, 0, 10).unwrap(), vec![6]);
    assert_eq!(r.conv_messages_after(&pair, 6, 10).unwrap(), Vec::<MsgId>::new());
    assert_eq!(r.conv_messages_after(&ConvId::Group("g".into()), 0, 10).unwrap(), vec![7]);
    // Retention: the message goes with its flags, acks, client id and index entry. The batch's
    // snapshot still shows it until the reader is released.
    s.commit(&[&[StoreOp::DeleteMessage(7), StoreOp::DeleteMessage(6)]]).unwrap();
    assert!(r.message(7).unwrap().is_some(), "one snapshot per batch");
    r.release();
    assert!(r.message(7).unwrap().is_none());
    assert!(r.message(6).unwrap().is_none());
    assert_eq!(r.client_id("alice", "c7").unwrap(), None);
    assert!(!r.acked_by(7, "carol").unwrap() && !r.has_sent("alice").unwrap());
    assert!(r.acks_desc(7, u64::MAX, 10).unwrap().is_empty());
    assert!(r.conv_messages_after(&ConvId::Group("g".into()), 0, 10).unwrap().is_empty());
    r.release();
    let state = s.load().unwrap();
    assert!(state.messages.is_empty() && state.conv_messages.values().all(|v| v.is_empty()));
}

fn logs_are_read_in_pages_swept_and_trimmed(b: &dyn Backend) {
    let mut s = b.open();
    let r = s.reader().unwrap();
    // Row 1: seqs 1..=3 logged at 10..30 ms; row 2: seqs 4..=5 at 1000 ms; carol: one old event.
    s.commit(&[&[append("bob", 1, delivered(1, 10)), append("bob", 2, delivered(2, 20)), append("bob", 3, delivered(3, 30))]]).unwrap();
    s.commit(&[&[append("bob", 4, delivered(4, 1000)), append("bob", 5, delivered(5, 1000)), append("carol", 1, delivered(9, 5))]])
        .unwrap();
    let seqs = |read: &receipt_server::store::LogRead| read.events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(r.log_head("bob").unwrap(), 5);
    assert_eq!(r.log_head("nobody").unwrap(), 0);
    let all = r.log_events("bob", 1, 10).unwrap();
    assert_eq!((seqs(&all), all.next, all.more), (vec![1, 2, 3, 4, 5], 6, false));
    let page = r.log_events("bob", 2, 1).unwrap();
    assert_eq!((seqs(&page), page.next, page.more), (vec![2, 3], 4, true), "one row read, from the row holding seq 2");
    let sweep = r.log_sweep(None, 10, 100, 500).unwrap();
    assert_eq!(sweep.trims, vec![("bob".to_string(), 3), ("carol".to_string(), 1)]);
    assert_eq!(sweep.last, None, "the end was reached");
    let sweep = r.log_sweep(None, 1, 100, 500).unwrap();
    assert_eq!((sweep.trims.len(), sweep.last.as_deref()), (1, Some("bob")));
    let sweep = r.log_sweep(Some("bob"), 1, 100, 500).unwrap();
    assert_eq!((sweep.trims, sweep.last.as_deref()), (vec![("carol".to_string(), 1)], Some("carol")));
    r.release();
    s.commit(&[&[StoreOp::TrimLog { user: "bob".into(), up_to: 3 }]]).unwrap();
    assert_eq!(r.log_trimmed("bob").unwrap(), 3);
    assert_eq!(seqs(&r.log_events("bob", 1, 10).unwrap()), vec![4, 5]);
    assert!(r.log_sweep(None, 1, 100, 500).unwrap().trims.is_empty(), "bob's rest is recent");
    r.release();
    // A trim inside a row: the row stays, its trimmed part is never read again.
    s.commit(&[&[StoreOp::TrimLog { user: "bob".into(), up_to: 4 }]]).unwrap();
    assert_eq!(seqs(&r.log_events("bob", 0, 10).unwrap()), vec![5]);
    assert_eq!(r.log_head("bob").unwrap(), 5);
    r.release();
    drop(r);
    drop(s);
    let state = b.open().load().unwrap();
    assert_eq!(events(&state, "bob").iter().map(|e| e.0).collect::<Vec<_>>(), vec![5]);
    assert_eq!((state.trimmed["bob"], state.head("bob")), (4, 5));
}

fn a_log_whose_last_events_went_with_their_messages_keeps_its_head(b: &dyn Backend) {
    let m = msg(1, "bob", ChatType::Chat);
    let mut s = b.open();
    s.commit(&[&[StoreOp::PutMessage(m.clone().into()), append("bob", 5, ServerEvent::Message { msg: Arc::new(m) })]]).unwrap();
    // The message leaves (retention) before its log event is trimmed.
    s.commit(&[&[StoreOp::DeleteMessage(1)]]).unwrap();
    let r = s.reader().unwrap();
    let read = r.log_events("bob", 1, 10).unwrap();
    assert!(read.events.is_empty() && read.next == 6, "the reference to a gone message is left out: {read:?}");
    drop(r);
    drop(s);
    let state = b.open().load().unwrap();
    assert!(state.logs.get("bob").is_none_or(Vec::is_empty));
    assert_eq!(state.head("bob"), 5, "seqs never go back");
}

/// PostgreSQL only: the schema is created with its version, and a newer one is refused.
#[test]
fn postgres_schema_is_versioned_and_a_newer_one_is_refused() {
    let Some(db) = receipt_testkit::pg::database() else { return };
    drop(PgServerStore::connect(&db.conninfo).unwrap());
    let mut c = ::postgres::Client::connect(&db.conninfo, ::postgres::NoTls).unwrap();
    let v: i32 = c.query_one("SELECT version FROM receipt_schema_version", &[]).unwrap().get(0);
    assert_eq!(v, receipt_server::store::postgres::SCHEMA_VERSION);
    // Connecting again migrates nothing and keeps one version row.
    drop(PgServerStore::connect(&db.conninfo).unwrap());
    let n: i64 = c.query_one("SELECT count(*) FROM receipt_schema_version", &[]).unwrap().get(0);
    assert_eq!(n, 1);
    c.execute("UPDATE receipt_schema_version SET version = version + 1", &[]).unwrap();
    let e = PgServerStore::connect(&db.conninfo).unwrap_err().to_string();
    assert!(e.contains(&format!("schema version {}", v + 1)) && e.contains("newer server"), "{e}");
    let after: i32 = c.query_one("SELECT version FROM receipt_schema_version", &[]).unwrap().get(0);
    assert_eq!(after, v + 1, "refused without writing");
}

/// PostgreSQL only (redb stores any string): a commit one of whose statements fails applies
/// nothing, and the store commits again afterwards on the same connection.
#[test]
fn postgres_a_failed_commit_applies_nothing() {
    let Some(db) = receipt_testkit::pg::database() else { return };
    let b = Pg(db);
    let mut s = b.open();
    let cursor = DeviceCursor { seq: 1, seen: 1 };
    // A text column cannot hold a NUL: the cursor's statement fails, after the message's.
    let bad = [
        StoreOp::PutMessage(msg(1, "bob", ChatType::Chat).into()),
        StoreOp::PutCursor { user: "bob".into(), device: "a\0b".into(), cursor },
    ];
    assert!(s.commit(&[&bad]).is_err());
    let state = s.load().unwrap();
    assert!(state.messages.is_empty() && state.cursors.is_empty(), "nothing of the failed commit");
    s.commit(&[&[StoreOp::PutMessage(msg(2, "bob", ChatType::Chat).into())]]).unwrap();
    assert_eq!(b.open().load().unwrap().messages.keys().copied().collect::<Vec<_>>(), vec![2]);
}

/// A group message's read acks and delivery acks share ack ids' numbering but not their lists,
/// counts or "who acked"; deleting the message drops both.
fn read_and_delivery_acks_of_a_message_are_kept_apart(b: &dyn Backend) {
    let mut s = b.open();
    let m = msg(5, "g", ChatType::GroupChat);
    s.commit(&[&[
        StoreOp::PutMessage(Arc::new(m)),
        StoreOp::PutGroupAck(ack(1, 5, "bob", 1)),
        StoreOp::PutGroupDeliveryAck(ack(2, 5, "carol", 1)),
        StoreOp::PutGroupDeliveryAck(ack(3, 5, "bob", 2)),
    ]])
    .unwrap();
    drop(s);
    let mut s = b.open();
    let all = s.load().unwrap();
    let rec = &all.messages[&5];
    assert_eq!((rec.ack_count, rec.delivery.count), (1, 2));
    assert_eq!(rec.acks.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(rec.delivery.acks.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    let r = s.reader().expect("a reader");
    let rec = r.message(5).unwrap().expect("stored");
    assert_eq!((rec.ack_count, rec.delivery.count), (1, 2));
    assert!(r.acked_by_of(GroupAckKind::Read, 5, "bob").unwrap());
    assert!(!r.acked_by_of(GroupAckKind::Read, 5, "carol").unwrap());
    assert!(r.acked_by_of(GroupAckKind::Delivery, 5, "carol").unwrap());
    assert_eq!(r.acks_desc_of(GroupAckKind::Delivery, 5, u64::MAX, 10).unwrap(), vec![ack(3, 5, "bob", 2), ack(2, 5, "carol", 1)]);
    assert_eq!(r.acks_desc_of(GroupAckKind::Delivery, 5, 2, 10).unwrap(), vec![ack(2, 5, "carol", 1)]);
    assert_eq!(r.acks_desc_of(GroupAckKind::Read, 5, u64::MAX, 10).unwrap(), vec![ack(1, 5, "bob", 1)]);
    drop(r);
    s.commit(&[&[StoreOp::DeleteMessage(5)]]).unwrap();
    let r = s.reader().expect("a reader");
    assert!(r.message(5).unwrap().is_none());
    assert!(r.acks_desc_of(GroupAckKind::Delivery, 5, u64::MAX, 10).unwrap().is_empty());
    assert!(!r.acked_by_of(GroupAckKind::Read, 5, "bob").unwrap());
}

/// PostgreSQL: one store of a cluster leads at a time (the sequencer lock on the commit
/// connection); the lock goes with that connection; another key is another cluster's lock.
#[test]
fn postgres_one_store_leads_at_a_time_and_the_lock_goes_with_its_connection() {
    let Some(db) = receipt_testkit::pg::database() else { return };
    let b = Pg(db);
    let lease = std::time::Duration::from_secs(3);
    let (mut first, mut second) = (b.open(), b.open());
    second.confirm_lead().expect_err("a store that never led does not confirm a lead");
    assert!(first.try_lead(7, lease).unwrap());
    first.confirm_lead().unwrap();
    assert!(first.try_lead(7, lease).unwrap(), "still held");
    assert!(!second.try_lead(7, lease).unwrap(), "never two leaders");
    assert!(b.open().try_lead(8, lease).unwrap(), "another cluster's key");
    drop(first);
    // PostgreSQL frees a closed session's lock as the backend exits: bounded wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !second.try_lead(7, lease).unwrap() {
        assert!(std::time::Instant::now() < deadline, "the lock was not freed with its connection");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// redb: the file lock is the lock; a store that opened always leads.
#[test]
fn redb_always_leads() {
    let b = redb().unwrap();
    let mut s = b.open();
    assert!(s.try_lead(7, std::time::Duration::from_secs(3)).unwrap());
    s.confirm_lead().unwrap();
}
