//! The real binary on the PostgreSQL backend (`--backend postgres`) with a throwaway cluster:
//! SIGKILL of the server under load and a restart on the same database (lost 0, duplicated 0,
//! unread counts exact), and PostgreSQL itself stopped (`pg_ctl stop -m immediate`) and started
//! while the server runs. The rule suites run on PostgreSQL too (scripts/test.sh,
//! `RECEIPT_TEST_BACKEND=postgres`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use receipt_core::codec::encode;
use receipt_core::protocol::*;
use receipt_core::*;
use receipt_testkit::ops::http_get;
use receipt_testkit::pg::PgCluster;
use receipt_testkit::raw::*;
use receipt_testkit::ChildServer;

/// The pipelined sends are far beyond a user's send rate: the rates are off here.
const NO_RATE_LIMITS: &str = "[send_rate]\nper_sec = 0\nburst = 0\n\n[request_rate]\nper_sec = 0\nburst = 0\n";
/// Messages each sender pipelines before the kill.
const PIPELINED: u64 = 400;
/// Messages alice sends (and bob reads) before the load.
const FIRST: u64 = 30;

fn send(req: ReqId, from: &str, i: u64) -> ClientFrame {
    plain_send(req, format!("{from}{i}"), "bob", ChatType::Chat, format!("hello {i} from {from}"))
}

/// Sender and client id of every message in a backlog, with its id.
fn messages(events: &[SeqEvent]) -> Vec<((UserId, String), MsgId)> {
    events
        .iter()
        .filter_map(|e| match &*e.event {
            ServerEvent::Message { msg } => Some(((msg.from.clone(), msg.client_id.clone()), msg.id)),
            _ => None,
        })
        .collect()
}

fn reads(events: &[SeqEvent]) -> Vec<MsgId> {
    events
        .iter()
        .filter_map(|e| match &*e.event {
            ServerEvent::Read { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect()
}

fn assert_seqs_contiguous(events: &[SeqEvent]) {
    let seqs: Vec<Seq> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as Seq).collect::<Vec<_>>(), "log has holes or repeats");
}

#[test]
fn sigkill_under_load_on_postgres_loses_nothing_and_duplicates_nothing() {
    let Some(db) = receipt_testkit::pg::database() else { return };
    let mut p = ChildServer::start_pg(&db.conninfo, NO_RATE_LIMITS);
    let mut alice = RawClient::login(p.addr(), "alice", "a1");
    let mut first: Vec<MsgId> = Vec::new();
    for i in 0..FIRST {
        let Ok(Response::Sent { msg_id, .. }) = alice.request(|req| send(req, "alice", i)) else { panic!("send {i}") };
        first.push(msg_id);
    }
    // Load: bob pipelines read acks of alice's first messages; alice and carol pipeline sends.
    let mut bob = RawClient::login(p.addr(), "bob", "b1");
    let mut carol = RawClient::login(p.addr(), "carol", "c1");
    let acks: Vec<u8> = first
        .iter()
        .enumerate()
        .flat_map(|(i, id)| encode(&ClientFrame::ReadAck { req: 1000 + i as u64, msg_id: *id, private: false }))
        .collect();
    bob.send_raw(&acks);
    for (client, from) in [(&mut alice, "alice"), (&mut carol, "carol")] {
        let bytes: Vec<u8> = (FIRST..FIRST + PIPELINED).flat_map(|i| encode(&send(5000 + i, from, i))).collect();
        client.send_raw(&bytes);
    }
    let mut acked_reads: BTreeSet<MsgId> = BTreeSet::new();
    let mut acked_sends: BTreeMap<(UserId, String), MsgId> =
        (0..FIRST).map(|i| (("alice".into(), format!("alice{i}")), first[i as usize])).collect();
    let mut collect = |clients: &mut [(&mut RawClient, &str)], rounds: usize, stop_at_first_send: bool| {
        for _ in 0..rounds {
            for (c, who) in clients.iter_mut() {
                match c.recv(Duration::from_millis(2)) {
                    Some(ServerFrame::Result { req, ok: Some(Response::Sent { client_id, msg_id, .. }), .. }) => {
                        assert_eq!(client_id, format!("{who}{}", req - 5000));
                        acked_sends.insert((who.to_string(), client_id), msg_id);
                        if stop_at_first_send {
                            return;
                        }
                    }
                    Some(ServerFrame::Result { req, ok: Some(_), .. }) if *who == "bob" => {
                        acked_reads.insert(first[(req - 1000) as usize]);
                    }
                    _ => {}
                }
            }
        }
    };
    // Killed as soon as the first pipelined send is answered: mid-load.
    collect(&mut [(&mut alice, "alice"), (&mut carol, "carol"), (&mut bob, "bob")], 3000, true);
    p.kill9();
    // Answers already on the wire before the kill count too.
    collect(&mut [(&mut alice, "alice"), (&mut carol, "carol"), (&mut bob, "bob")], 300, false);
    drop((alice, bob, carol));
    eprintln!("before the kill: {} read acks and {} sends answered ok", acked_reads.len(), acked_sends.len());

    // Restart on the same database: every ok is there, nothing twice.
    p.start_again();
    let bob = RawClient::login(p.addr(), "bob", "b2");
    assert_seqs_contiguous(&bob.backlog);
    let got = messages(&bob.backlog);
    let got_map: BTreeMap<_, _> = got.iter().cloned().collect();
    assert_eq!(got_map.len(), got.len(), "a message was delivered twice");
    for (key, id) in &acked_sends {
        assert_eq!(got_map.get(key), Some(id), "ok'd message {key:?} lost or renumbered");
    }
    let alice = RawClient::login(p.addr(), "alice", "a2");
    assert_seqs_contiguous(&alice.backlog);
    let got_reads = reads(&alice.backlog);
    let unique: BTreeSet<MsgId> = got_reads.iter().copied().collect();
    assert_eq!(unique.len(), got_reads.len(), "a read receipt was stored twice");
    assert!(acked_reads.is_subset(&unique), "an ok'd read ack was lost");

    // The clients replay everything they sent (their outboxes): idempotent.
    let (mut alice, mut bob) = (alice, bob);
    let mut carol = RawClient::login(p.addr(), "carol", "c2");
    for (client, from) in [(&mut alice, "alice"), (&mut carol, "carol")] {
        for i in (if from == "alice" { 0 } else { FIRST })..FIRST + PIPELINED {
            let Ok(Response::Sent { msg_id, .. }) = client.request(|req| send(req, from, i)) else { panic!("resend {from}{i}") };
            if let Some(prev) = got_map.get(&(from.to_string(), format!("{from}{i}"))) {
                assert_eq!(*prev, msg_id, "a resend of a stored message got a new id");
            }
        }
    }
    for id in &first {
        bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: *id, private: false });
    }
    let bob = RawClient::login(p.addr(), "bob", "b3");
    assert_seqs_contiguous(&bob.backlog);
    let all = messages(&bob.backlog);
    let keys: BTreeSet<_> = all.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!((keys.len(), all.len()), ((FIRST + 2 * PIPELINED) as usize, (FIRST + 2 * PIPELINED) as usize), "each message exactly once");
    // Unread counts exact: alice's messages but the ones bob read; all of carol's.
    assert_eq!(bob.unread(ChatType::Chat, "alice"), PIPELINED as u32);
    assert_eq!(bob.unread(ChatType::Chat, "carol"), PIPELINED as u32);
    let alice = RawClient::login(p.addr(), "alice", "a3");
    assert_eq!(reads(&alice.backlog).len(), FIRST as usize, "every read receipt exactly once");
}

/// `/readyz`'s status.
fn ready(p: &ChildServer) -> u16 {
    http_get(p.metrics_addr().expect("metrics on"), "/readyz").map_or(0, |(status, _)| status)
}

/// Waits (bounded) until `/readyz` answers `status`.
fn wait_ready(p: &ChildServer, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(p) != status {
        assert!(Instant::now() < deadline, "/readyz did not turn {status} (it says {})", ready(p));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn postgresql_stopped_and_started_under_a_running_server() {
    if receipt_testkit::pg::skip() {
        return;
    }
    // A cluster of this test's own: it is stopped and started.
    let pg = PgCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let db = pg.database();
    let mut p = ChildServer::start_pg(&db.conninfo, &format!("metrics_addr = \"127.0.0.1:0\"\n{NO_RATE_LIMITS}"));
    wait_ready(&p, 200);
    let mut alice = RawClient::login(p.addr(), "alice", "a");
    let mut bob = RawClient::login(p.addr(), "bob", "b");
    let mut acked: Vec<MsgId> = (0..10).map(|_| alice.send_msg("bob", ChatType::Chat, "before")).collect();
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: acked[0], private: false });

    // 1. Stopped and started while the server is idle: readiness says so, and the next
    // request is served (the commit connection is made again; nothing was in flight).
    pg.stop_immediate().unwrap();
    wait_ready(&p, 503);
    pg.start_again().unwrap();
    wait_ready(&p, 200);
    acked.push(alice.send_msg("bob", ChatType::Chat, "after a restart of PostgreSQL"));
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: acked[1], private: false });

    // 2. While PostgreSQL is down: a request that needs a store read is refused with 302
    // SERVER_BUSY (nothing changed); one whose commit fails is not answered, and the server
    // stops serving (the store contract: memory is ahead of the disk) and stays not ready,
    // even once PostgreSQL is back, until it is restarted.
    pg.stop_immediate().unwrap();
    wait_ready(&p, 503);
    let e = bob.request(|req| ClientFrame::ReadAck { req, msg_id: 999_999, private: false }).unwrap_err();
    assert_eq!(e.code, ErrorCode::ServerBusy, "{e:?}");
    let req = bob.next_req();
    bob.send(&ClientFrame::ReadAck { req, msg_id: acked[2], private: false });
    let answer = bob.recv(Duration::from_secs(3));
    assert!(!matches!(answer, Some(ServerFrame::Result { ok: Some(_), .. })), "answered ok while nothing could store it: {answer:?}");
    pg.start_again().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = http_get(p.metrics_addr().unwrap(), "/readyz").unwrap();
    assert_eq!(status, 503, "after a failed commit the server stays not ready until restarted: {body}");
    assert!(body.contains("commit failed"), "{body}");
    drop((alice, bob));
    p.kill9();
    p.start_again();
    wait_ready(&p, 200);
    let bob = RawClient::login(p.addr(), "bob", "b2");
    let got: Vec<MsgId> = messages(&bob.backlog).into_iter().map(|(_, id)| id).collect();
    let got_set: BTreeSet<MsgId> = got.iter().copied().collect();
    assert_eq!(got_set.len(), got.len(), "nothing twice");
    assert!(acked.iter().all(|id| got_set.contains(id)), "an acked message was lost: {acked:?} vs {got:?}");
    assert_eq!(got.len(), acked.len(), "the send that was not answered ok was not stored");
    assert_eq!(bob.unread(ChatType::Chat, "alice"), acked.len() as u32 - 2, "two were read");
}

#[test]
fn a_server_on_postgres_that_cannot_bind_fails_with_the_error_not_a_panic() {
    let Some(db) = receipt_testkit::pg::database() else { return };
    // The store is opened before the listener binds: it is dropped on the runtime's thread.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = receipt_testkit::server_config(None);
    config.addr = taken.local_addr().unwrap();
    config.backend = receipt_server::Backend::Postgres;
    config.pg = Some(db.conninfo);
    let e = receipt_server::ServerHandle::spawn_in_thread(config).err().expect("the port is taken");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
}

#[test]
fn ids_postgresql_cannot_store_are_refused_before_they_reach_a_commit() {
    let Some(db) = receipt_testkit::pg::database() else { return };
    let p = ChildServer::start_pg(&db.conninfo, NO_RATE_LIMITS);
    let mut alice = RawClient::login(p.addr(), "alice", "a");
    let mut bob = RawClient::login(p.addr(), "bob", "b");
    let id = alice.send_msg("bob", ChatType::Chat, "hi");
    let g = create_group(&mut alice, &["bob"]);
    // A NUL is a control character: every id the server stores is refused with it (text
    // columns cannot hold one; a commit that failed on it would stop the server).
    let nul = "x\0y".to_string();
    let frames: Vec<Box<dyn Fn(ReqId) -> ClientFrame>> = vec![
        Box::new(|req| plain_send(req, "c\0", "bob", ChatType::Chat, "x")),
        Box::new(|req| plain_send(req, "c1", "b\0b", ChatType::Chat, "x")),
        Box::new(|req| ClientFrame::ConversationAck { req, chat_type: ChatType::Chat, conversation: nul.clone(), private: false }),
        Box::new(|req| ClientFrame::MarkRead { req, chat_type: ChatType::Chat, conversation: nul.clone(), msg_id: None }),
        Box::new(|req| ClientFrame::ReadAcks { req, conversation: nul.clone(), msg_ids: vec![id], private: false }),
        Box::new(|req| ClientFrame::CreateGroup { req, name: "n".into(), members: vec![nul.clone()], chat_room: false }),
        Box::new(|req| ClientFrame::AddMembers { req, group: g.clone(), members: vec![nul.clone()] }),
        Box::new(|req| ClientFrame::SetRole { req, group: g.clone(), member: nul.clone(), role: GroupRole::Admin }),
    ];
    for (i, f) in frames.iter().enumerate() {
        let r = alice.request(f);
        assert!(r.is_err(), "frame {i} was accepted: {r:?}");
    }
    // The server still stores and answers.
    let id2 = alice.send_msg("bob", ChatType::Chat, "still here");
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: id2, private: false });
}
