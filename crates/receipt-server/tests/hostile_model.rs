//! The findings of issue 12 about the server's data model, as tests on loopback against the real
//! server and its redb store: a group message is stored once, a user in 22,000 groups logs in,
//! only members at send time ack, retention leaves no trace. Every loop is bounded; the figures
//! they print go to docs/reliability.md ("Data model").

use std::io::Write;
use std::time::{Duration, Instant};

use receipt_core::protocol::*;
use receipt_core::*;
use receipt_testkit::raw::*;
use receipt_testkit::*;

/// Bytes of keys and values in the server's store (the server is stopped to read it, then started
/// again on the same data dir).
fn stored_bytes(server: &mut TestServer) -> u64 {
    server.stop();
    let dir = server.root().join("server");
    let n = receipt_server::RedbServerStore::open(&dir).and_then(|s| s.stored_bytes()).expect("open the store");
    server.start_again();
    n
}

/// Sends `n` messages of `size` bytes to `group` as `owner` and returns how many bytes the store
/// grew by per message.
fn growth_per_message(server: &mut TestServer, owner: &str, group: &str, size: usize, n: usize) -> u64 {
    let before = stored_bytes(server);
    let mut c = RawClient::login(server.addr(), owner, "d");
    let content = "x".repeat(size);
    for _ in 0..n {
        c.send_msg(group, ChatType::GroupChat, &content);
    }
    drop(c);
    stored_bytes(server).saturating_sub(before) / n as u64
}

#[test]
fn a_group_message_is_stored_once_whatever_the_number_of_members() {
    let mut server = TestServer::start(|_| {});
    let mut owner = RawClient::login(server.addr(), "owner", "d");
    let members: Vec<String> = (0..4999).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let big = create_group(&mut owner, &refs);
    let small = create_group(&mut owner, &refs[..9]);
    drop(owner);
    let big_1b = growth_per_message(&mut server, "owner", &big, 1, 4);
    let t = Instant::now();
    let big_64k = growth_per_message(&mut server, "owner", &big, MAX_CONTENT_BYTES, 4);
    let per_big_message = t.elapsed() / 4;
    let small_1b = growth_per_message(&mut server, "owner", &small, 1, 4);
    let small_64k = growth_per_message(&mut server, "owner", &small, MAX_CONTENT_BYTES, 4);
    loud(&format!(
        "group message in the store (keys + values): 5,000 members: {big_1b} B per 1-byte message, {big_64k} B per 64 KiB \
         message; 10 members: {small_1b} B per 1-byte, {small_64k} B per 64 KiB message; {per_big_message:?} per 64 KiB \
         message to 5,000 members (debug build, restarts included)"
    ));
    // Before: 172 MB per 64 KiB message to 5,000 members (a copy per member), 0.6 MB per 1-byte one.
    // Now the content is stored once: a 64 KiB message costs its content more than a 1-byte one,
    // whatever the number of members.
    let content_cost = big_64k.saturating_sub(big_1b);
    assert!(content_cost <= MAX_CONTENT_BYTES as u64 + 1024, "content stored more than once: {big_64k} vs {big_1b}");
    assert!(small_64k.saturating_sub(small_1b) <= MAX_CONTENT_BYTES as u64 + 1024);
    // Per member: a watermark record and a log reference of a few bytes, not the message.
    assert!(big_1b <= 5000 * 64, "{big_1b} B per member-wide message");
    // Sending to the big group does not stall another user: four 64 KiB messages pipelined to
    // 5,000 members, and meanwhile a stranger's ping round trip.
    let mut owner = RawClient::login(server.addr(), "owner", "d");
    let mut stranger = RawClient::login(server.addr(), "stranger", "s");
    let content = "y".repeat(MAX_CONTENT_BYTES);
    let reqs: Vec<ReqId> = (0..4)
        .map(|i| {
            let req = owner.next_req();
            owner.send(&plain_send(req, format!("burst{i}"), big.clone(), ChatType::GroupChat, content.clone()));
            req
        })
        .collect();
    let t = Instant::now();
    // Waits past the asserted bound, so that a slow ping fails the assertion below with its
    // figure rather than the kit's 5 s wait for a frame (seen on a loaded 2-core VM).
    stranger.sync_ping_within(Duration::from_secs(30));
    let ping = t.elapsed();
    for req in reqs {
        owner.wait_result(req).expect("sent");
    }
    let burst = t.elapsed();
    loud(&format!("a stranger's ping during 4 x 64 KiB to 5,000 members: {ping:?} (the burst took {burst:?}; before: 11-15 s)"));
    // The ping shares a batch (one commit) with the burst: it waits for the fan-out's watermark
    // writes, which no longer grow with the content. Measured 0.6-1.1 s (debug, x86_64-linux) and
    // 4.3 s (debug, x86_64-ohos, loaded VM); before: 11-15 s in a release build.
    assert!(ping < Duration::from_secs(10), "{ping:?}");
    drop(owner);
    // A member's replay still brings the messages, content and all.
    let m = RawClient::login(server.addr(), "m7", "d");
    let got =
        m.backlog.iter().filter(|e| matches!(&*e.event, ServerEvent::Message { msg } if msg.content.len() == MAX_CONTENT_BYTES)).count();
    assert_eq!(got, 12, "m7 is in both groups, and got the burst");
}

/// Sends `frames` pipelined (without waiting), `CHUNK` at a time, and returns their answers in
/// order.
fn pipelined(c: &mut RawClient, n: usize, mut frame: impl FnMut(ReqId, usize) -> ClientFrame) -> Vec<Response> {
    const CHUNK: usize = 500;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(CHUNK) {
        let reqs: Vec<ReqId> = (start..(start + CHUNK).min(n))
            .map(|i| {
                let req = c.next_req();
                c.send(&frame(req, i));
                req
            })
            .collect();
        for req in reqs {
            out.push(c.wait_result(req).expect("accepted"));
        }
    }
    out
}

#[test]
fn a_user_added_to_22000_groups_still_logs_in_under_the_frame_limit() {
    const GROUPS: usize = 22_000;
    // The limits (groups per user, request rate) are set above the attack: the sync must hold
    // whatever they are configured to.
    let server = TestServer::start(|c| {
        c.max_groups_per_user = 2 * GROUPS;
        c.request_rate = receipt_server::RateLimit::OFF;
        c.send_rate = receipt_server::RateLimit::OFF;
    });
    let mut attacker = RawClient::login(server.addr(), "attacker", "d");
    let t = Instant::now();
    let groups: Vec<GroupId> = pipelined(&mut attacker, GROUPS, |req, i| ClientFrame::CreateGroup {
        req,
        name: format!("spam {i}"),
        members: vec!["victim".into()],
        chat_room: false,
    })
    .into_iter()
    .map(|r| match r {
        Response::GroupCreated { group } => group,
        r => panic!("{r:?}"),
    })
    .collect();
    pipelined(&mut attacker, GROUPS, |req, i| plain_send(req, format!("c{i}"), groups[i].clone(), ChatType::GroupChat, "hi"));
    let attack = t.elapsed();
    drop(attacker);
    // The victim's login: every frame under the 1 MiB limit, every group's unread count there.
    let mut victim = RawClient::connect(server.addr());
    victim.send(&ClientFrame::Login {
        v: PROTOCOL_VERSION,
        user: "victim".into(),
        device: "phone".into(),
        token: token("victim"),
        since: 0,
    });
    let t = Instant::now();
    let (mut largest, mut frames, mut unread) = (0usize, 0usize, 0u64);
    let mut sync_done = 0usize;
    while t.elapsed() < Duration::from_secs(60) {
        let f = victim.recv_required();
        let size = receipt_core::codec::encode(&f).len();
        largest = largest.max(size);
        frames += 1;
        match f {
            ServerFrame::SyncConversations { conversations } => unread += conversations.iter().map(|c| u64::from(c.unread)).sum::<u64>(),
            ServerFrame::SyncDone { conversations, .. } => {
                unread += conversations.iter().map(|c| u64::from(c.unread)).sum::<u64>();
                sync_done = size;
                break;
            }
            _ => {}
        }
    }
    let login = t.elapsed();
    loud(&format!(
        "22,000 groups: attack {attack:?} (debug build); victim's login {login:?}, {frames} frames, largest {largest} B, \
         SyncDone {sync_done} B (before: one SyncDone of 1,110,942 B)"
    ));
    assert!(sync_done > 0, "the sync ended");
    assert_eq!(unread, GROUPS as u64, "every group's unread count arrived");
    assert!(largest < receipt_core::codec::DEFAULT_MAX_FRAME / 4, "largest frame {largest} B");
    // Online: a request gets its answer.
    victim.sync_ping();
}

#[test]
fn only_members_at_send_time_ack_a_group_message() {
    let mut server = TestServer::start(|_| {});
    let mut owner = RawClient::login(server.addr(), "owner", "d");
    let g = create_group(&mut owner, &["early"]);
    let (before, _) = owner.send_msg_opts(&g, ChatType::GroupChat, "before", false, true).expect("sent");
    owner.expect_ok(|req| ClientFrame::AddMembers { req, group: g.clone(), members: vec!["late".into()] });
    let (after, _) = owner.send_msg_opts(&g, ChatType::GroupChat, "after", false, true).expect("sent");
    drop(owner);
    // Also across a restart: the join mark is stored.
    server.restart();
    let mut late = RawClient::login(server.addr(), "late", "d");
    let e = late.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::GroupAck { req, msg_id: before, ext: None, private: false });
    assert!(e.description.contains("after message"), "{e:?}");
    late.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: after, ext: None, private: false });
    let mut early = RawClient::login(server.addr(), "early", "d");
    early.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: before, ext: None, private: false });
    // The sender's ack lists: the late joiner is in the second message's only.
    let mut owner = RawClient::login(server.addr(), "owner", "d");
    let ackers = |owner: &mut RawClient, msg_id| match owner.expect_ok(|req| ClientFrame::FetchGroupAcks {
        req,
        msg_id,
        page_size: 100,
        start_ack_id: None,
    }) {
        Response::GroupAcks { page, .. } => page.data.into_iter().map(|a| a.from).collect::<Vec<_>>(),
        r => panic!("{r:?}"),
    };
    assert_eq!(ackers(&mut owner, before), vec!["early".to_string()]);
    assert_eq!(ackers(&mut owner, after), vec!["late".to_string()]);
    // Removed and added again: a member again from then on only.
    owner.expect_ok(|req| ClientFrame::RemoveMembers { req, group: g.clone(), members: vec!["early".into()] });
    owner.expect_ok(|req| ClientFrame::AddMembers { req, group: g.clone(), members: vec!["early".into()] });
    early.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::GroupAck { req, msg_id: after, ext: None, private: false });
}

/// Every file under `dir` that holds `needle`, with the number of times.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read the data dir") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read a data file");
                let n = bytes.windows(needle.len()).filter(|w| *w == needle).count();
                if n > 0 {
                    out.push((p.display().to_string(), n));
                }
            }
        }
    }
    out
}

/// Logs in as a protocol version 1 client (no `Resync`) from `since` 0 and reads up to `SyncDone`.
fn login_v1(addr: std::net::SocketAddr, user: &str, device: &str) -> RawClient {
    let mut c = RawClient::connect(addr);
    c.user = user.into();
    c.send(&ClientFrame::Login { v: 1, user: user.into(), device: device.into(), token: token(user), since: 0 });
    match c.recv_required() {
        ServerFrame::LoginOk { .. } => {}
        f => panic!("expected LoginOk, got {f:?}"),
    }
    c.read_sync();
    c
}

#[test]
fn retention_leaves_no_trace_in_memory_replay_or_the_data_directory() {
    const MARK: &str = "zq-retained-content-";
    let mut server = TestServer::start(|c| c.retention_secs = 3);
    let mut alice = RawClient::login(server.addr(), "alice", "a");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let mut ids = Vec::new();
    let mut bob = RawClient::login(server.addr(), "bob", "b");
    for i in 0..300 {
        let to = if i % 3 == 0 { g.as_str() } else { "bob" };
        let t = if i % 3 == 0 { ChatType::GroupChat } else { ChatType::Chat };
        let (id, _) = alice.send_msg_opts(to, t, &format!("{MARK}{i}"), true, t == ChatType::GroupChat).expect("sent");
        ids.push((id, t));
        // Acks of the first 30, each right after its message (long before it expires).
        if i < 30 {
            match t {
                ChatType::Chat => bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: id, private: false }),
                _ => bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id, ext: Some(format!("{MARK}ext")), private: false }),
            };
        }
    }
    drop((alice, bob));
    let on_disk_before = files_holding(&server.root().join("server"), MARK.as_bytes()).iter().map(|(_, n)| n).sum::<usize>();
    // Past retention (3 s) and a prune tick (1 s), bounded.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut replayed = usize::MAX;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        // A version-1 login: it is replayed what bob's stored log retains, so an empty replay
        // means the log was trimmed. (A version-2 device below a log trimmed in part gets a
        // resync, with no backlog, as soon as anything is trimmed: no signal; the logs of a
        // store are swept by retention a tick at a time.)
        let bob = login_v1(server.addr(), "bob", "b2");
        replayed = bob.backlog.len();
        if replayed == 0 {
            break;
        }
    }
    assert_eq!(replayed, 0, "bob's replay after retention still holds events");
    let mut bob = RawClient::login(server.addr(), "bob", "b");
    bob.expect_err(ErrorCode::MessageExpired, |req| ClientFrame::ReadAck { req, msg_id: ids[1].0, private: false });
    drop(bob);
    let state = server.stop_and_load();
    assert!(state.messages.is_empty(), "{} messages left", state.messages.len());
    assert!(state.logs.values().all(Vec::is_empty), "events left in the stored logs");
    let left = files_holding(&server.root().join("server"), MARK.as_bytes());
    loud(&format!("retention: {on_disk_before} copies of the marker on disk before, {left:?} after (300 messages, 30 acks)"));
    // Compaction moves live pages down and truncates the file; a freed page that stays inside
    // the file keeps its old bytes until reused (redb does not zero it). Measured: 0 copies alone,
    // 1 copy in 1 of 3 runs under parallel load (of ~350): bounded here, a known residue.
    let copies: usize = left.iter().map(|(_, n)| n).sum();
    assert!(copies <= 3, "content past retention still on disk: {left:?}");
    // The ids go on after a restart (seqs and message ids never go back).
    server.start_again();
    let mut alice = RawClient::login(server.addr(), "alice", "a");
    let (id, _) = alice.send_msg_opts("bob", ChatType::Chat, "after", false, false).expect("sent");
    assert!(id > ids.last().unwrap().0);
    let bob = RawClient::login(server.addr(), "bob", "b3");
    // A new device below the log's trimmed prefix (retention): a full state resync, which
    // holds the one retained message.
    assert!(bob.resynced && bob.backlog.is_empty());
    assert_eq!(bob.resync.iter().map(|m| m.msg.id).collect::<Vec<_>>(), vec![id]);
    assert!(bob.head > 300, "head {} went back", bob.head);
}

#[test]
fn a_login_storm_that_never_reads_holds_one_replay_window_per_socket() {
    use receipt_testkit::child::ChildServer;
    const MESSAGES: usize = 300;
    const SOCKETS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let srv = ChildServer::start(&dir.path().join("data"), "");
    let mut alice = RawClient::login(srv.addr(), "alice", "a");
    let content = "x".repeat(MAX_CONTENT_BYTES);
    pipelined(&mut alice, MESSAGES, |req, i| plain_send(req, format!("big{i}"), "bob", ChatType::Chat, content.clone()));
    drop(alice);
    let rss0 = srv.rss_kib();
    // Devices of bob logging in from cursor 0 and never reading (distinct device ids within
    // the device limit would be refused past 10: one device id, as the storm of the issue).
    let socks: Vec<std::net::TcpStream> = (0..SOCKETS)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(srv.addr()).unwrap();
            let login = ClientFrame::Login {
                v: PROTOCOL_VERSION,
                user: "bob".into(),
                device: format!("storm{}", i % 5),
                token: token("bob"),
                since: 0,
            };
            s.write_all(&receipt_core::codec::encode(&login)).unwrap();
            s
        })
        .collect();
    // Bounded wait for the server to do what it will with them.
    let mut rss1 = 0;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        rss1 = rss1.max(srv.rss_kib());
    }
    let per_socket_kib = rss1.saturating_sub(rss0) / SOCKETS as u64;
    loud(&format!(
        "login storm: {SOCKETS} sockets logging in from cursor 0 without reading, backlog {MESSAGES} x 64 KiB: \
         RSS {rss0} KiB -> {rss1} KiB, {per_socket_kib} KiB per socket (before: +71 MB per socket for 1,000 x 64 KiB)"
    ));
    // One replay window (~1 MiB estimated) and the socket buffers, not the ~19 MiB backlog.
    assert!(per_socket_kib < 4 * 1024, "{per_socket_kib} KiB per socket");
    drop(socks);
    // A device that reads gets the whole backlog, window after window, then goes online.
    let mut bob = RawClient::login(srv.addr(), "bob", "reader");
    let got =
        bob.backlog.iter().filter(|e| matches!(&*e.event, ServerEvent::Message { msg } if msg.content.len() == MAX_CONTENT_BYTES)).count();
    assert_eq!(got, MESSAGES);
    assert!(bob.backlog.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    bob.sync_ping();
}

#[test]
fn logs_stay_bounded_by_device_cursors_under_load_and_a_forgotten_device_resyncs() {
    const MESSAGES: usize = 2_000;
    // Devices unseen for 2 s are forgotten (the retention tick's clock: wall time).
    let mut server = TestServer::start(|c| {
        c.device_horizon_secs = 2;
        c.send_rate = receipt_server::RateLimit::OFF;
    });
    let opts = ChatOptions { require_delivery_ack: false, ..Default::default() };
    let key = ConversationKey::new(ChatType::Chat, "alice");
    // 2,001 messages through the real client runtime: minutes under qemu or a loaded musl build,
    // not the default 5 s a wait may take (a time bound, not a behaviour).
    let slow = Duration::from_secs(60);
    let phone = Device::online("bob/phone", opts.clone(), server.port()).wait_limit(slow);
    let old = Device::online("bob/old", opts.clone(), server.port()).wait_limit(slow);
    let mut alice = RawClient::login(server.addr(), "alice", "a");
    let (first, _) = alice.send_msg_opts("bob", ChatType::Chat, "first", false, false).expect("sent");
    assert_eq!(old.received(1)[0].id, first);
    old.wait_unread(&key, 1);
    // The old device goes away (the app killed, its data kept); the phone reads all along.
    let old = old.reopen(server.port());
    let t = Instant::now();
    pipelined(&mut alice, MESSAGES, |req, i| plain_send(req, format!("load{i}"), "bob", ChatType::Chat, format!("m{i}")));
    phone.wait_unread(&key, MESSAGES as u32 + 1);
    let load = t.elapsed();
    // Past the horizon (the old device is forgotten) and the phone's 5 s cursor report: bounded.
    std::thread::sleep(Duration::from_millis(receipt_core::engine::CURSOR_REPORT_MS + 1_500));
    drop(alice);
    drop(phone);
    let state = server.stop_and_load();
    let (held, head) = (state.logs.get("bob").map_or(0, Vec::len), state.head("bob"));
    let remembered: Vec<&String> = state.cursors["bob"].keys().collect();
    loud(&format!(
        "cursors: {} messages to bob in {load:?} with his phone reading: bob's stored log holds {held} events of {head} \
         logged (retention-only trimming keeps all {head}); remembered devices {remembered:?}",
        MESSAGES + 1
    ));
    assert_eq!(remembered, vec!["bob-phone"], "the old device is forgotten");
    assert!(held < 256, "{held} events stored of {head}");
    // The old device comes back below the trimmed log: a full state resync, nothing lost, the
    // one message it held not received again, the count the server's.
    server.start_again();
    old.login();
    let got = old.received(MESSAGES);
    assert!(got.iter().all(|m| m.id != first), "the held message is not received again");
    let mut ids: Vec<MsgId> = got.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), MESSAGES, "each message once");
    old.wait_unread(&key, MESSAGES as u32 + 1);
    old.hears_nothing("a second copy", |e| matches!(e, receipt_core::engine::ClientEvent::MessagesReceived(_)));
}

#[test]
fn unread_counts_drop_when_unread_messages_pass_retention() {
    let server = TestServer::start(|c| c.retention_secs = 2);
    let key = ConversationKey::new(ChatType::Chat, "alice");
    let mut alice = RawClient::login(server.addr(), "alice", "a");
    let old: Vec<MsgId> = (0..3).map(|i| alice.send_msg("bob", ChatType::Chat, &format!("old{i}"))).collect();
    let mut bob = RawClient::login(server.addr(), "bob", "b");
    assert_eq!(bob.unread(ChatType::Chat, "alice"), 3);
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: old[0], private: false });
    drop(bob);
    // Past retention (2 s) and a retention tick (1 s): the two unread ones stop counting. Bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let unread = loop {
        std::thread::sleep(Duration::from_millis(500));
        let n = RawClient::login(server.addr(), "bob", "b").unread(ChatType::Chat, "alice");
        if n == 0 || Instant::now() > deadline {
            break n;
        }
    };
    assert_eq!(unread, 0, "expired unread messages still counted");
    // A young one counts; a device that never held the old ones (the real client) says 1 too.
    alice.send_msg("bob", ChatType::Chat, "young");
    assert_eq!(RawClient::login(server.addr(), "bob", "b").unread(ChatType::Chat, "alice"), 1);
    let phone = Device::online("bob/phone", ChatOptions::default(), server.port());
    phone.wait_unread(&key, 1);
    loud("retention: 2 unread 1:1 messages past a 2 s retention: the server's count 2 -> 0, a young one counts 1 on a new device");
}
