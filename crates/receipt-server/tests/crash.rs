//! The real binary, killed with SIGKILL in the middle of acked work, restarted on the same data
//! directory: nothing answered `ok` is lost, nothing is delivered twice.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use receipt_core::codec::encode;
use receipt_core::protocol::*;
use receipt_core::*;
use receipt_testkit::raw::*;
use receipt_testkit::*;

const TOTAL: u64 = 1030;

/// The pipelined sends (1,000 at once) are far beyond a user's send rate: this test is about
/// what survives a kill, so the per-user rates are off (tests/hostile_limits.rs tests them).
const NO_RATE_LIMITS: &str = "[send_rate]\nper_sec = 0\nburst = 0\n\n[request_rate]\nper_sec = 0\nburst = 0\n";

/// alice's `i`-th message to bob: client id `m{i}`, content `hello {i}`.
fn hello(req: ReqId, i: u64) -> ClientFrame {
    plain_send(req, format!("m{i}"), "bob", ChatType::Chat, format!("hello {i}"))
}

fn message_ids(events: &[SeqEvent]) -> Vec<(String, MsgId)> {
    events
        .iter()
        .filter_map(|e| match &*e.event {
            ServerEvent::Message { msg } => Some((msg.client_id.clone(), msg.id)),
            _ => None,
        })
        .collect()
}

fn assert_seqs_contiguous(events: &[SeqEvent]) {
    let seqs: Vec<Seq> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as Seq).collect::<Vec<_>>(), "log has holes or repeats");
}

#[test]
fn sigkill_mid_stream_loses_no_ok_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ChildServer::start(dir.path(), NO_RATE_LIMITS);

    // Phase 1: alice sends 30 messages, each answered ok.
    let mut alice = RawClient::login(p.addr(), "alice", "a1");
    let mut sent: BTreeMap<String, MsgId> = BTreeMap::new();
    for i in 0..30 {
        let cid = format!("m{i}");
        let r = alice.request(|req| hello(req, i));
        let Ok(Response::Sent { msg_id, .. }) = r else { panic!("{r:?}") };
        sent.insert(cid, msg_id);
    }

    // Phase 2: bob pipelines read acks for all of them and alice pipelines 200 more messages;
    // the server is killed while they are in flight.
    let mut bob = RawClient::login(p.addr(), "bob", "b1");
    let ids: Vec<MsgId> = sent.values().copied().collect();
    let mut bytes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        bytes.extend(encode(&ClientFrame::ReadAck { req: 1000 + i as u64, msg_id: *id, private: false }));
    }
    bob.send_raw(&bytes);
    let mut bytes = Vec::new();
    for i in 30..TOTAL {
        bytes.extend(encode(&hello(5000 + i, i)));
    }
    alice.send_raw(&bytes);
    // Collect some answers, then kill.
    let mut acked_reads: BTreeSet<MsgId> = BTreeSet::new();
    let mut acked_sends: BTreeMap<String, MsgId> = BTreeMap::new();
    let mut collect = |alice: &mut RawClient, bob: &mut RawClient, max: usize, stop_at_first: bool| {
        for _ in 0..max {
            if let Some(ServerFrame::Result { req, ok: Some(_), .. }) = bob.recv(Duration::from_millis(2)) {
                acked_reads.insert(ids[(req - 1000) as usize]);
            }
            if let Some(ServerFrame::Result { req, ok: Some(Response::Sent { client_id, msg_id, .. }), .. }) =
                alice.recv(Duration::from_millis(2))
            {
                assert_eq!(client_id, format!("m{}", req - 5000));
                acked_sends.insert(client_id, msg_id);
                if stop_at_first {
                    return;
                }
            }
        }
    };
    // Kill as soon as the first of alice's pipelined sends is answered: mid-stream.
    collect(&mut alice, &mut bob, 2000, true);
    p.kill9();
    // Answers already on the wire before the kill count too.
    collect(&mut alice, &mut bob, 400, false);
    drop((alice, bob));
    eprintln!("before the kill: {} read acks and {} sends answered ok", acked_reads.len(), acked_sends.len());

    // Phase 3: restart on the same data directory.
    let p2 = ChildServer::start(dir.path(), NO_RATE_LIMITS);
    let alice = RawClient::login(p2.addr(), "alice", "a2");
    assert_seqs_contiguous(&alice.backlog);
    let reads: Vec<MsgId> = alice
        .backlog
        .iter()
        .filter_map(|e| match &*e.event {
            ServerEvent::Read { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect();
    let unique: BTreeSet<MsgId> = reads.iter().copied().collect();
    assert_eq!(unique.len(), reads.len(), "a read receipt was stored twice");
    assert!(acked_reads.is_subset(&unique), "an ok'd read ack was lost");

    let mut bob = RawClient::login(p2.addr(), "bob", "b2");
    assert_seqs_contiguous(&bob.backlog);
    let got = message_ids(&bob.backlog);
    let got_map: BTreeMap<String, MsgId> = got.iter().cloned().collect();
    assert_eq!(got_map.len(), got.len(), "a message was delivered twice");
    for (cid, id) in sent.iter().chain(acked_sends.iter()) {
        assert_eq!(got_map.get(cid), Some(id), "ok'd message {cid} lost or renumbered");
    }

    // Phase 4: the clients replay their outboxes (every request again): idempotent.
    let mut alice = alice;
    for i in 0..TOTAL {
        let cid = format!("m{i}");
        let r = alice.request(|req| hello(req, i));
        let Ok(Response::Sent { msg_id, .. }) = r else { panic!("{r:?}") };
        if let Some(prev) = got_map.get(&cid) {
            assert_eq!(*prev, msg_id, "a resend of a stored message got a new id");
        }
    }
    for id in &ids {
        bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: *id, private: false });
    }
    let bob2 = RawClient::login(p2.addr(), "bob", "b3");
    assert_seqs_contiguous(&bob2.backlog);
    let all = message_ids(&bob2.backlog);
    let cids: BTreeSet<String> = all.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(cids.len(), all.len(), "duplicate delivery after replay");
    assert_eq!(cids.len(), TOTAL as usize);
    let alice2 = RawClient::login(p2.addr(), "alice", "a3");
    let reads: Vec<MsgId> = alice2
        .backlog
        .iter()
        .filter_map(|e| match &*e.event {
            ServerEvent::Read { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect();
    assert_eq!(reads.len(), 30, "every read receipt exactly once");
    assert_eq!(reads.iter().copied().collect::<BTreeSet<_>>().len(), 30);
}

#[test]
fn binary_prints_tokens_and_manages_groups_offline() {
    let out = Command::new(env!("CARGO_BIN_EXE_receipt-server"))
        .args(["token", "--user", "alice", "--secret", SECRET, "--ttl", "60"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_receipt-server")).arg("group").arg("--data-dir").arg(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let g = run(&["create", "--owner", "alice", "--name", "team", "--members", "bob,carol"]);
    run(&["add", "--group", &g, "--members", "dave"]);
    run(&["remove", "--group", &g, "--members", "carol"]);
    run(&["role", "--group", &g, "--member", "bob", "--role", "admin"]);

    let p = ChildServer::start(dir.path(), "");
    // While the server runs, the offline tool refuses to touch the database.
    let out = Command::new(env!("CARGO_BIN_EXE_receipt-server"))
        .arg("group")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["add", "--group", &g, "--members", "erin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let mut c = RawClient::connect(p.addr());
    c.user = "alice".into();
    c.send(&ClientFrame::Login { v: PROTOCOL_VERSION, user: "alice".into(), device: "a".into(), token: tok, since: 0 });
    assert!(matches!(c.recv_required(), ServerFrame::LoginOk { .. }));
    c.read_sync();
    c.send_msg(&g, ChatType::GroupChat, "hi team");
    let bob = RawClient::login(p.addr(), "bob", "b");
    let roles: Vec<Option<GroupRole>> = bob
        .backlog
        .iter()
        .filter_map(|e| match &*e.event {
            ServerEvent::Membership { role, .. } => Some(*role),
            _ => None,
        })
        .collect();
    assert_eq!(roles, vec![Some(GroupRole::Member), Some(GroupRole::Admin)]);
    assert_eq!(bob.unread(ChatType::GroupChat, &g), 1);
    let carol = RawClient::login(p.addr(), "carol", "c");
    assert_eq!(carol.unread(ChatType::GroupChat, &g), 0);
    let dave = RawClient::login(p.addr(), "dave", "d");
    assert_eq!(dave.unread(ChatType::GroupChat, &g), 1);
}
