//! Hostile and greedy users against the server's per-user limits (issue 12, item 5): each
//! finding of the issue is a test that asserts the refusal (with the SDK's code) or the bound,
//! and prints the figure docs/reliability.md ("Limits") quotes. Loopback only, every loop
//! bounded in count and time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use receipt_client::{ClientEvent, Completion};
use receipt_core::codec::{encode, DEFAULT_MAX_FRAME};
use receipt_core::protocol::*;
use receipt_core::*;
use receipt_testkit::raw::*;
use receipt_testkit::*;

/// Reads answers until every one of `reqs` requests (req ids `first..first + n`) has its
/// `Result` (events are skipped); returns them in req order.
fn results(c: &mut RawClient, first: ReqId, n: u64) -> Vec<Result<Response, ChatError>> {
    let mut out: Vec<Option<Result<Response, ChatError>>> = vec![None; n as usize];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < n {
        assert!(Instant::now() < deadline, "{got} of {n} answers in 60 s");
        match c.recv(WAIT).expect("an answer") {
            ServerFrame::Result { req, ok, err } => {
                let slot = &mut out[(req - first) as usize];
                assert!(slot.is_none(), "two answers to {req}");
                *slot = Some(match (ok, err) {
                    (Some(ok), None) => Ok(ok),
                    (None, Some(e)) => Err(e),
                    x => panic!("bad result {x:?}"),
                });
                got += 1;
            }
            ServerFrame::Event { .. } => {}
            f => panic!("unexpected {f:?}"),
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// `n` frames built by `f(req)` pipelined in one write; req ids start at 1,000,000.
fn pipeline(c: &mut RawClient, n: u64, mut f: impl FnMut(ReqId) -> ClientFrame) -> ReqId {
    const FIRST: ReqId = 1_000_000;
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.extend(encode(&f(FIRST + i)));
    }
    c.send_raw(&bytes);
    FIRST
}

fn codes(rs: &[Result<Response, ChatError>]) -> Vec<Option<ErrorCode>> {
    rs.iter().map(|r| r.as_ref().err().map(|e| e.code)).collect()
}

/// Logs `user` in on `device`, retrying (bounded) while the server is at its connection cap
/// (a replaced or closed connection frees its slot a moment later).
fn login_retrying(a: SocketAddr, user: &str, device: &str) -> RawClient {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = RawClient::connect(a);
        c.user = user.into();
        c.send(&ClientFrame::Login { v: PROTOCOL_VERSION, user: user.into(), device: device.into(), token: token(user), since: 0 });
        match c.recv_required() {
            ServerFrame::LoginOk { .. } => {
                c.read_sync();
                return c;
            }
            ServerFrame::Error { error } if error.code == ErrorCode::ServerBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            f => panic!("{user}/{device}: {f:?}"),
        }
    }
}

/// The one `Error` a replaced session gets before its connection closes.
fn assert_replaced(old: &mut RawClient, what: &str) {
    let frames = old.until_closed();
    let errors: Vec<&ChatError> =
        frames.iter().filter_map(|f| if let ServerFrame::Error { error } = f { Some(error) } else { None }).collect();
    match errors.as_slice() {
        [e] => assert_eq!(e.code, ErrorCode::UserLoginAnotherDevice, "{what}: {e}"),
        _ => panic!("{what}: expected one Error 206, got {frames:?}"),
    }
}

#[test]
fn a_new_login_on_the_same_device_replaces_the_old_session_with_206() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut old = RawClient::login(a, "alice", "phone");
    let mut tablet = RawClient::login(a, "alice", "tablet");
    let mut new = RawClient::login(a, "alice", "phone");
    assert_replaced(&mut old, "the older phone session");
    // The new session and the other device get alice's traffic; the old one is gone.
    let mut bob = RawClient::login(a, "bob", "b");
    let id = bob.send_msg("alice", ChatType::Chat, "after the replacement");
    for c in [&mut new, &mut tablet] {
        c.event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == id));
    }
    new.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: id, private: false });
    bob.event_matching(|e| matches!(e, ServerEvent::Read { msg_id, .. } if *msg_id == id));
}

#[test]
fn one_user_cannot_hold_every_connection_slot() {
    // Before: 300 sessions on one device id were accepted and one user could hold all of
    // max_connections. Now a new login on a device replaces the older session, so one user
    // holds at most max_devices_per_user (10) connections however often it logs in.
    const CAP: usize = 50;
    let s = TestServer::start(|c| c.max_connections = CAP);
    let a = s.addr();
    let started = Instant::now();
    let mut sessions: Vec<RawClient> = Vec::new();
    for round in 0..30 {
        for d in 0..10 {
            sessions.push(login_retrying(a, "mallory", &format!("d{d}")));
            let _ = round;
        }
    }
    let took = started.elapsed();
    // Every session but the newest on each device was replaced (206) and closed.
    let newest = sessions.split_off(sessions.len() - 10);
    for (i, old) in sessions.iter_mut().enumerate() {
        assert_replaced(old, &format!("mallory's login {i}"));
    }
    // The 11th device is still refused (214), replacing nothing.
    let mut eleventh = RawClient::connect(a);
    eleventh.send(&ClientFrame::Login {
        v: PROTOCOL_VERSION,
        user: "mallory".into(),
        device: "d10".into(),
        token: token("mallory"),
        since: 0,
    });
    assert!(matches!(eleventh.recv_required(), ServerFrame::LoginFailed { error } if error.code == ErrorCode::UserLoginTooManyDevices));
    // The other 40 slots are everyone else's: 39 other users log in (one slot spare).
    let mut others: Vec<RawClient> = (0..CAP - 10 - 1).map(|i| login_retrying(a, &format!("user{i}"), "p")).collect();
    let id = others[0].send_msg("user1", ChatType::Chat, "still room");
    others[1].event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == id));
    // And mallory's ten newest sessions are live: each gets a message to mallory.
    let id = others[2].send_msg("mallory", ChatType::Chat, "to all ten");
    let mut newest = newest;
    for c in &mut newest {
        c.event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == id));
    }
    loud(&format!(
        "limits: 300 logins of one user on 10 device ids in {:.1} s with max_connections = {CAP}: 290 replaced (206), \
         the user holds 10 connections, {} other users logged in",
        took.as_secs_f64(),
        others.len()
    ));
}

#[test]
fn a_replaced_client_runtime_surfaces_206_as_a_logout_and_does_not_reconnect() {
    let s = TestServer::start(|_| {});
    let old = Device::online("alice/phone", ChatOptions::default(), s.port());
    let new = Device::online("alice/phone", ChatOptions::default(), s.port());
    let e = old.wait("LoggedOut 206", |e| match e {
        ClientEvent::LoggedOut(e) => Some(e.clone()),
        _ => None,
    });
    assert_eq!(e.code, ErrorCode::UserLoginAnotherDevice, "{e}");
    // No reconnect loop: for 2 s the old runtime does not come back (which would replace the
    // new one in turn), and the new one stays online and gets alice's messages.
    let bad = old.heard(Duration::from_secs(2), |e| matches!(e, ClientEvent::Connected));
    assert!(bad.is_none(), "the replaced runtime reconnected: {bad:?}");
    assert!(new.heard(Duration::ZERO, |e| matches!(e, ClientEvent::LoggedOut(_) | ClientEvent::Disconnected)).is_none());
    let mut bob = RawClient::login(s.addr(), "bob", "b");
    let id = bob.send_msg("alice", ChatType::Chat, "to the new phone");
    let m = new.try_received_where("the message", |m| m.content == "to the new phone").unwrap();
    assert_eq!(m.id, id);
}

#[test]
fn sends_beyond_the_rate_get_502_and_are_not_stored() {
    // Before: 37,600 tiny messages/s to a user who does not exist were accepted and kept.
    let s = TestServer::start(|c| c.send_rate = receipt_server::RateLimit { per_sec: 100, burst: 200 });
    let a = s.addr();
    let mut m = RawClient::login(a, "mallory", "m");
    const N: u64 = 3000;
    let started = Instant::now();
    let first = pipeline(&mut m, N, |req| plain_send(req, format!("c{req}"), "nobody-at-all", ChatType::Chat, "x"));
    let rs = results(&mut m, first, N);
    let took = started.elapsed().as_secs_f64();
    let accepted = rs.iter().filter(|r| r.is_ok()).count();
    let codes = codes(&rs);
    assert!(codes.iter().all(|c| matches!(c, None | Some(ErrorCode::MessageSendTrafficLimit))), "{codes:?}");
    assert!(accepted >= 200, "the burst is allowed: {accepted}");
    let allowed = 200.0 + 100.0 * took + 1.0;
    assert!(accepted as f64 <= allowed, "{accepted} accepted in {took:.2} s, the bucket allows {allowed:.0}");
    // What was refused was not stored: the recipient's backlog holds exactly the accepted ones.
    let nobody = RawClient::login(a, "nobody-at-all", "n");
    let stored = nobody.backlog.iter().filter(|e| matches!(&*e.event, ServerEvent::Message { .. })).count();
    assert_eq!(stored, accepted);
    // Other users have their own buckets.
    let mut bob = RawClient::login(a, "bob", "b");
    bob.send_msg("nobody-at-all", ChatType::Chat, "bob is not limited by mallory");
    loud(&format!(
        "limits: {N} pipelined sends to an unknown user with send_rate 100/s, burst 200: {accepted} accepted in {took:.2} s \
         ({:.0}/s), {} refused with 502, {stored} stored",
        accepted as f64 / took,
        N as usize - accepted
    ));
}

#[test]
fn other_requests_beyond_the_rate_get_4() {
    let s = TestServer::start(|c| c.request_rate = receipt_server::RateLimit { per_sec: 100, burst: 200 });
    let a = s.addr();
    let mut m = RawClient::login(a, "mallory", "m");
    const N: u64 = 2000;
    let started = Instant::now();
    // Acks of messages that do not exist: 500 while the bucket lasts, 4 after.
    let first = pipeline(&mut m, N, |req| ClientFrame::ReadAck { req, msg_id: 9_000_000 + req, private: false });
    let rs = results(&mut m, first, N);
    let took = started.elapsed().as_secs_f64();
    let codes = codes(&rs);
    let applied = codes.iter().filter(|c| **c == Some(ErrorCode::MessageInvalid)).count();
    let limited = codes.iter().filter(|c| **c == Some(ErrorCode::ExceedServiceLimit)).count();
    assert_eq!(applied + limited, N as usize, "{codes:?}");
    assert!(applied >= 200 && applied as f64 <= 200.0 + 100.0 * took + 1.0, "{applied} applied in {took:.2} s");
    // Sends have their own bucket.
    m.send_msg("bob", ChatType::Chat, "sends are not charged to the request bucket");
    loud(&format!(
        "limits: {N} pipelined acks with request_rate 100/s, burst 200: {applied} applied in {took:.2} s, {limited} refused with 4"
    ));
}

#[test]
fn groups_per_user_are_capped_with_4_and_a_member_may_leave() {
    let s = TestServer::start(|c| c.max_groups_per_user = 5);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a");
    let mut bob = RawClient::login(a, "bob", "b");
    let mut carol = RawClient::login(a, "carol", "c");
    let groups: Vec<GroupId> = (0..5).map(|_| create_group(&mut alice, &["bob"])).collect();
    // alice and bob are in 5 groups: neither may be in a 6th, whoever asks.
    let e = alice.expect_err(ErrorCode::ExceedServiceLimit, |req| ClientFrame::CreateGroup {
        req,
        name: "6th".into(),
        members: vec![],
        chat_room: false,
    });
    assert!(e.description.contains("max_groups_per_user"), "{e}");
    let e = carol.expect_err(ErrorCode::ExceedServiceLimit, |req| ClientFrame::CreateGroup {
        req,
        name: "x".into(),
        members: vec!["bob".into()],
        chat_room: false,
    });
    assert!(e.description.contains("bob"), "{e}");
    let g = create_group(&mut carol, &["dave"]);
    carol.expect_err(ErrorCode::ExceedServiceLimit, |req| ClientFrame::AddMembers {
        req,
        group: g.clone(),
        members: vec!["dave".into(), "bob".into()],
    });
    // The refused add changed nothing: dave was not added a second time, bob is not in g.
    let e = bob.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::LeaveGroup { req, group: g.clone() });
    assert!(e.description.contains("bob"), "{e}");
    // bob leaves one of alice's groups: he hears it, and has room for carol's.
    bob.expect_ok(|req| ClientFrame::LeaveGroup { req, group: groups[0].clone() });
    bob.event_matching(|e| matches!(e, ServerEvent::Membership { group, role: None, .. } if *group == groups[0]));
    bob.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::Send {
        req,
        client_id: "after-leaving".into(),
        to: groups[0].clone(),
        chat_type: ChatType::GroupChat,
        content: "hi".into(),
        require_delivery_ack: false,
        need_group_ack: false,
    });
    carol.expect_ok(|req| ClientFrame::AddMembers { req, group: g.clone(), members: vec!["bob".into()] });
    // The owner cannot leave; an unknown group is 600.
    alice.expect_err(ErrorCode::GroupPermissionDenied, |req| ClientFrame::LeaveGroup { req, group: groups[1].clone() });
    alice.expect_err(ErrorCode::GroupInvalidId, |req| ClientFrame::LeaveGroup { req, group: "g999999".into() });
}

#[test]
fn invitations_stop_at_max_groups_per_user_and_the_victim_logs_in() {
    // Before: a user added to 22,000 groups got a 1,110,942-byte SyncDone, over the frame limit,
    // and never got online again. Now the 1,001st invitation is refused (default 1,000).
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let max = s.config.max_groups_per_user;
    assert_eq!(max, 1000);
    let mut m = RawClient::login(a, "mallory", "m");
    let n = max as u64 + 50;
    let started = Instant::now();
    let first = pipeline(&mut m, n, |req| ClientFrame::CreateGroup {
        req,
        name: format!("spam {req}"),
        members: vec!["victim".into()],
        chat_room: false,
    });
    let rs = results(&mut m, first, n);
    let took = started.elapsed();
    let created = rs.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, max, "exactly max_groups_per_user invitations pass");
    assert!(codes(&rs)[max..].iter().all(|c| *c == Some(ErrorCode::ExceedServiceLimit)));
    // The victim logs in, and every frame of its login fits the frame limit.
    let mut victim = RawClient::connect(a);
    victim.send(&ClientFrame::Login { v: PROTOCOL_VERSION, user: "victim".into(), device: "v".into(), token: token("victim"), since: 0 });
    let mut largest = 0;
    let mut total = 0;
    loop {
        let f = victim.recv_required();
        let size = encode(&f).len();
        largest = largest.max(size);
        total += size;
        if matches!(f, ServerFrame::SyncDone { .. }) {
            break;
        }
    }
    assert!(largest < DEFAULT_MAX_FRAME, "a login frame of {largest} bytes");
    loud(&format!(
        "limits: {n} group invitations of one user in {:.1} s: {created} accepted, {} refused with 4; the victim's login: \
         {total} bytes, largest frame {largest} bytes (limit {DEFAULT_MAX_FRAME})",
        took.as_secs_f64(),
        n as usize - created
    ));
}

/// A group of `members` + owner "sender" with one message asking for acks, acked by every
/// member with an ext of `ext_bytes` control characters (each 6 bytes once JSON-escaped).
fn acked_group_message(a: SocketAddr, members: usize, ext_bytes: usize) -> (RawClient, MsgId) {
    let mut sender = RawClient::login(a, "sender", "s");
    let names: Vec<String> = (0..members).map(|i| format!("colluder{i}")).collect();
    let g = create_group(&mut sender, &names.iter().map(String::as_str).collect::<Vec<_>>());
    let (id, _) = sender.send_msg_opts(&g, ChatType::GroupChat, "read me", false, true).unwrap();
    let ext = "\u{1}".repeat(ext_bytes);
    for n in &names {
        let mut c = RawClient::login(a, n, "d");
        c.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id, ext: Some(ext.clone()), private: false });
    }
    (sender, id)
}

#[test]
fn an_ack_page_stays_under_the_frame_limit_whatever_its_exts() {
    // Before: 4 colluding 64 KiB exts made a 1,573,343-byte page, over the client's frame limit.
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let max_result = s.config.max_result_bytes;
    let (mut sender, id) = acked_group_message(a, 4, MAX_CONTENT_BYTES);
    let mut start = None;
    let mut got = 0;
    let mut largest = 0;
    for _ in 0..10 {
        let req = sender.next_req();
        sender.send(&ClientFrame::FetchGroupAcks { req, msg_id: id, page_size: 100, start_ack_id: start });
        let frame = loop {
            if let f @ ServerFrame::Result { .. } = sender.recv_required() {
                break f;
            }
        };
        largest = largest.max(encode(&frame).len());
        let ServerFrame::Result { ok: Some(Response::GroupAcks { page, .. }), .. } = frame else { panic!("{frame:?}") };
        assert!(!page.data.is_empty());
        got += page.data.len();
        if page.cursor.is_empty() {
            break;
        }
        start = Some(page.cursor.parse().unwrap());
    }
    assert_eq!(got, 4, "every ack, page after page");
    // One ack alone may pass max_result_bytes (a page holds at least one), never the frame limit.
    assert!(largest <= max_result.max(7 * MAX_CONTENT_BYTES) && largest < DEFAULT_MAX_FRAME, "a page of {largest} bytes");
    loud(&format!("limits: 4 acks with {MAX_CONTENT_BYTES}-byte exts of control characters: pages of at most {largest} bytes (frame limit {DEFAULT_MAX_FRAME})"));
}

#[test]
fn pipelined_fetches_that_are_never_read_cost_bounded_memory() {
    // Before: 3,000 pipelined fetches on a socket that does not read cost +1.36 GB: the outbound
    // bound counted frames, not bytes. Now the connection is dropped at outbound_bytes (8 MiB).
    let dir = tempfile::tempdir().unwrap();
    let srv = ChildServer::start(&dir.path().join("data"), "");
    let a = srv.addr();
    let (_sender, id) = acked_group_message(a, 4, MAX_CONTENT_BYTES);
    let mut legit = RawClient::login(a, "legit", "l");
    legit.sync_ping();
    let rss0 = srv.rss_kib();
    let sock = TcpStream::connect(a).unwrap();
    {
        use std::os::fd::AsRawFd;
        let v: libc::c_int = 4096;
        // SAFETY: setsockopt on a live socket with a pointer to a local int of the right size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let mut w = sock.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut bytes = encode(&ClientFrame::Login {
        v: PROTOCOL_VERSION,
        user: "sender".into(),
        device: "flood".into(),
        token: token("sender"),
        since: u64::MAX,
    });
    for req in 1..=3000u64 {
        bytes.extend(encode(&ClientFrame::FetchGroupAcks { req, msg_id: id, page_size: 100, start_ack_id: None }));
    }
    let started = Instant::now();
    let write = w.write_all(&bytes);
    let mut peak = rss0;
    // The server drops the connection; meanwhile sample its memory and check legit traffic.
    let mut r = sock;
    r.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut dropped = false;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut slowest_ping = Duration::ZERO;
    while Instant::now() < deadline && !dropped {
        peak = peak.max(srv.rss_kib());
        let t = Instant::now();
        legit.sync_ping();
        slowest_ping = slowest_ping.max(t.elapsed());
        // At most 64 KiB per 50 ms, far slower than the answers come: the server's queue grows
        // until it drops the connection, then the read reaches the end.
        match r.read(&mut buf) {
            Ok(0) => dropped = true,
            Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => dropped = true,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    peak = peak.max(srv.rss_kib());
    let grew = peak.saturating_sub(rss0);
    loud(&format!(
        "limits: 3,000 pipelined fetches of ~400 KB pages on a socket that does not read: dropped={dropped} after {:.1} s \
         (write: {:?}); server RSS {rss0} -> peak {peak} KiB (+{grew} KiB); another user's slowest ping {slowest_ping:?}",
        started.elapsed().as_secs_f64(),
        write.err().map(|e| e.kind())
    ));
    assert!(dropped, "the server never dropped a reader that does not read");
    assert!(grew < 64 * 1024, "server RSS grew by {grew} KiB");
    legit.sync_ping();
}

#[test]
fn messages_kept_for_users_never_seen_are_capped_per_sender() {
    // The send rate bounds how fast messages to ids nobody uses come, not how many are kept
    // (each +0.65 KB memory, +0.23 KB disk, +1.7 KB per distinct recipient, until retention).
    const MAX: usize = 50;
    let s = TestServer::start(|c| {
        c.max_to_unseen_per_user = MAX;
        c.send_rate = receipt_server::RateLimit::OFF;
    });
    let a = s.addr();
    let mut bob = RawClient::login(a, "bob", "b");
    let mut m = RawClient::login(a, "mallory", "m");
    let n = MAX as u64 + 20;
    let first = pipeline(&mut m, n, |req| plain_send(req, format!("c{req}"), format!("ghost{}", req % 30), ChatType::Chat, "x"));
    let rs = results(&mut m, first, n);
    let codes = codes(&rs);
    assert!(codes[..MAX].iter().all(Option::is_none), "{codes:?}");
    assert!(codes[MAX..].iter().all(|c| *c == Some(ErrorCode::ExceedServiceLimit)), "{codes:?}");
    // A resend of a stored message is still answered with its id (idempotent, nothing stored).
    let resend = m.request(|req| plain_send(req, format!("c{first}"), "ghost0", ChatType::Chat, "x"));
    assert!(matches!(resend, Ok(Response::Sent { .. })), "{resend:?}");
    // Users the server has seen still get mallory's messages; other senders are not limited.
    m.send_msg("bob", ChatType::Chat, "bob logged in, so he counts as seen");
    bob.send_msg("ghost99", ChatType::Chat, "bob has his own quota");
    // A ghost that logs in stops counting: its messages free room for more.
    let ghost = RawClient::login(a, "ghost1", "g");
    let kept = ghost.backlog.iter().filter(|e| matches!(&*e.event, ServerEvent::Message { .. })).count();
    assert!(kept > 0);
    let more: Vec<_> =
        (0..kept).map(|i| m.request(|req| plain_send(req, format!("more{i}"), format!("ghost-new{i}"), ChatType::Chat, "x"))).collect();
    assert!(more.iter().all(Result::is_ok), "{more:?}");
    let over = m.request(|req| plain_send(req, "one-too-many", "ghost-new-last", ChatType::Chat, "x"));
    assert_eq!(over.unwrap_err().code, ErrorCode::ExceedServiceLimit);
    loud(&format!(
        "limits: {n} messages to 30 users never seen with max_to_unseen_per_user = {MAX}: {MAX} stored, {} refused with 4; \
         a recipient logging in freed {kept}",
        n as usize - MAX
    ));
}

#[test]
fn a_member_leaves_a_group_through_the_client_runtime() {
    let s = TestServer::start(|_| {});
    let owner = Device::online("owner/o", ChatOptions::default(), s.port());
    let member = Device::online("member/m", ChatOptions::default(), s.port());
    let Completion::GroupCreated(g) = owner.ok(owner.client.create_group("team", &["member".to_string()]).unwrap()) else {
        panic!("no group")
    };
    member.wait("joined", |e| matches!(e, ClientEvent::MembershipChanged { group, role: Some(_) } if *group == g).then_some(()));
    assert_eq!(member.ok(member.client.leave_group(&g).unwrap()), Completion::Done);
    member.wait("left", |e| matches!(e, ClientEvent::MembershipChanged { group, role: None } if *group == g).then_some(()));
    // The owner cannot leave: 603.
    let e = owner.completed(owner.client.leave_group(&g).unwrap()).unwrap_err();
    assert_eq!(e.code, ErrorCode::GroupPermissionDenied, "{e}");
}
