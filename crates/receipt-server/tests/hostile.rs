//! Hostile clients against a real server (issue 7): each attack gets a clear error frame and a
//! closed connection where that is right, the server stays up, its memory stays bounded, and a
//! legitimate pair of users keeps exchanging messages and read acks meanwhile.
//!
//! Memory is measured on the real binary run as a child process (`/proc/<pid>/status` VmRSS),
//! so the figures are the server's alone, not the test process's.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use receipt_core::codec::encode;
use receipt_core::protocol::*;
use receipt_core::*;
use receipt_testkit::child::raise_nofile;
use receipt_testkit::raw::*;
use receipt_testkit::rng::Rng;
use receipt_testkit::*;

/// Two legitimate users: `exchange` sends a message, the peer gets it and acks it, the sender
/// hears the read ack. Panics (bounded waits) if traffic does not flow.
struct Pair {
    alice: RawClient,
    bob: RawClient,
    rounds: u32,
}

impl Pair {
    fn new(addr: SocketAddr) -> Pair {
        Pair { alice: RawClient::login(addr, "legit-a", "la"), bob: RawClient::login(addr, "legit-b", "lb"), rounds: 0 }
    }

    fn exchange(&mut self) {
        self.rounds += 1;
        let id = self.alice.send_msg("legit-b", ChatType::Chat, &format!("round {}", self.rounds));
        self.bob.event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == id));
        self.bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: id, private: false });
        self.alice.event_matching(|e| matches!(e, ServerEvent::Read { msg_id, .. } if *msg_id == id));
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn login_bytes(user: &str, device: &str) -> Vec<u8> {
    encode(&ClientFrame::Login { v: PROTOCOL_VERSION, user: user.into(), device: device.into(), token: token(user), since: 0 })
}

/// Sends `bytes` on a fresh connection (logged in first when `user` is given) and returns
/// what the server sent until it closed the connection (bounded by `WAIT`).
fn attack(addr: SocketAddr, login_as: Option<&str>, bytes: &[u8]) -> Vec<ServerFrame> {
    let mut c = match login_as {
        Some(u) => RawClient::login(addr, u, "attacker"),
        None => RawClient::connect(addr),
    };
    c.send_raw(bytes);
    c.until_closed()
}

/// Exactly one `Error` with a description, and nothing else but events/results of the login.
fn assert_one_error(frames: &[ServerFrame], what: &str) -> ChatError {
    let errs: Vec<&ChatError> =
        frames.iter().filter_map(|f| if let ServerFrame::Error { error } = f { Some(error) } else { None }).collect();
    assert_eq!(errs.len(), 1, "{what}: {frames:?}");
    assert!(!errs[0].description.is_empty(), "{what}: an error without a description");
    errs[0].clone()
}

#[test]
fn garbage_bytes_get_an_error_and_a_close() {
    let s = TestServer::start(|c| c.max_frame = 64 * 1024);
    let a = s.addr();
    let mut pair = Pair::new(a);
    let mut rng = Rng(0x5eed_1234);
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("an HTTP request".into(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a TLS client hello".into(), vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
        ("a small header and a binary body".into(), framed(&[0xff, 0xfe, 0x00, 0x01, 0x80])),
        ("a zero-length frame".into(), vec![0, 0, 0, 0]),
    ];
    for i in 0..8 {
        let n = rng.range(1, 4096) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        cases.push((format!("{n} random bytes (#{i})"), bytes));
    }
    for (what, bytes) in &cases {
        for login in [None, Some("mallory")] {
            let frames = attack(a, login, bytes);
            let e = assert_one_error(&frames, what);
            assert_eq!(e.code, ErrorCode::InvalidParam, "{what}: {e}");
        }
        pair.exchange();
    }
    // Nothing any attacker sent reached anybody: mallory's log is empty.
    let probe = RawClient::login(a, "mallory", "probe");
    assert!(probe.backlog.is_empty(), "{:?}", probe.backlog);
}

#[test]
fn a_frame_header_announcing_4_gib_is_refused_from_the_header_alone() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut pair = Pair::new(a);
    for login in [None, Some("mallory")] {
        let mut c = match login {
            Some(u) => RawClient::login(a, u, "big"),
            None => RawClient::connect(a),
        };
        // Only the 4-byte header: the server must answer without waiting for (or buffering)
        // any of the announced 4 GiB.
        let started = Instant::now();
        c.send_raw(&u32::MAX.to_be_bytes());
        let frames = c.until_closed();
        let e = assert_one_error(&frames, "4 GiB header");
        assert!(e.description.contains("exceeds the limit"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
        // One byte over the configured limit is refused the same way.
        let mut c = RawClient::connect(a);
        c.send_raw(&((receipt_core::codec::DEFAULT_MAX_FRAME + 1) as u32).to_be_bytes());
        assert_one_error(&c.until_closed(), "max_frame + 1");
        pair.exchange();
    }
}

#[test]
fn frames_cut_in_the_middle() {
    let s = TestServer::start(|c| c.login_timeout_secs = 1);
    let a = s.addr();
    let mut pair = Pair::new(a);
    let login = login_bytes("mallory", "cut");
    let half = &login[..login.len() / 2];
    // (1) Half a frame, then the client half-closes: the server says the frame was truncated.
    let mut c = RawClient::connect(a);
    c.send_raw(half);
    c.stream.shutdown(Shutdown::Write).unwrap();
    let e = assert_one_error(&c.until_closed(), "half a login, then EOF");
    assert!(e.description.contains("middle of a frame"), "{e}");
    // (2) Half a frame, then silence: closed at the login timeout.
    let mut c = RawClient::connect(a);
    c.send_raw(half);
    let e = assert_one_error(&c.until_closed(), "half a login, then silence");
    assert!(e.description.contains("login timeout"), "{e}");
    // (3) Logged in, half a Send, then EOF: the Send is not applied.
    let mut c = RawClient::login(a, "mallory", "cut2");
    let send = encode(&plain_send(9, "cut", "legit-b", ChatType::Chat, "never"));
    c.send_raw(&send[..send.len() - 3]);
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_one_error(&c.until_closed(), "half a send, then EOF");
    pair.exchange();
    // legit-b got only the legit message, not the cut one.
    let probe = RawClient::login(a, "legit-b", "probe");
    assert!(
        probe.backlog.iter().all(|e| !matches!(&*e.event, ServerEvent::Message { msg } if msg.from == "mallory")),
        "{:?}",
        probe.backlog
    );
}

#[test]
fn valid_json_of_the_wrong_shape_and_unknown_frame_types() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut pair = Pair::new(a);
    let bodies: &[&str] = &[
        r#"{"t":"teleport","to":"mars"}"#,
        r#"{"t":"pong","nonce":1}"#, // a server frame type
        r#"{"t":"send","req":"one","client_id":5}"#,
        r#"{"t":"login"}"#,
        r#"{"t":"read_ack","req":1,"msg_id":-1}"#,
        r#"{"type":"ping","nonce":1}"#,
        r#"{}"#,
        r#"[1,2,3]"#,
        r#""ping""#,
        r#"null"#,
        r#"42"#,
    ];
    for body in bodies {
        for login in [None, Some("mallory")] {
            let frames = attack(a, login, &framed(body.as_bytes()));
            let e = assert_one_error(&frames, body);
            assert_eq!(e.code, ErrorCode::InvalidParam, "{body}: {e}");
        }
    }
    pair.exchange();
    let probe = RawClient::login(a, "mallory", "probe");
    assert!(probe.backlog.is_empty(), "{:?}", probe.backlog);
}

#[test]
fn a_slowloris_login_is_cut_at_the_login_timeout() {
    let s = TestServer::start(|c| {
        c.login_timeout_secs = 1;
        c.idle_timeout_secs = 60;
    });
    let a = s.addr();
    let mut pair = Pair::new(a);
    let bytes = login_bytes("mallory", "slow");
    let mut c = RawClient::connect(a);
    let started = Instant::now();
    // One byte every 200 ms (the "one byte a minute" attack, sped up): each byte would reset
    // an idle timer, but not the login deadline.
    let mut sent = 0;
    let mut cut = false;
    for b in &bytes {
        if c.stream.write_all(std::slice::from_ref(b)).is_err() {
            cut = true;
            break;
        }
        sent += 1;
        if let Some(f) = c.recv(Duration::from_millis(200)) {
            assert!(matches!(&f, ServerFrame::Error { error } if error.description.contains("login timeout")), "{f:?}");
            cut = true;
            break;
        }
        if c.closed {
            cut = true;
            break;
        }
    }
    assert!(cut, "the server waited for the whole trickled login");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "cut only after {took:?}");
    assert!(sent < bytes.len());
    assert!(c.until_closed().is_empty() || c.closed);
    loud(&format!("hostile: slowloris cut after {:.2} s and {sent} of {} bytes (login_timeout_secs = 1)", took.as_secs_f64(), bytes.len()));
    pair.exchange();
    // A normal login well within the timeout is unaffected, even on a slow start.
    let mut c = RawClient::connect(a);
    std::thread::sleep(Duration::from_millis(300));
    c.send_raw(&bytes);
    assert!(matches!(c.recv_required(), ServerFrame::LoginOk { .. }));
    c.read_sync();
    std::thread::sleep(Duration::from_millis(1200));
    c.sync_ping();
}

#[test]
fn per_user_device_limit_refuses_the_eleventh_device_and_changes_nothing_else() {
    let s = TestServer::start(|_| {}); // max_devices_per_user = 10 by default
    let a = s.addr();
    assert_eq!(s.config.max_devices_per_user, 10);
    let mut pair = Pair::new(a);
    let mut devices: Vec<RawClient> = (0..10).map(|i| RawClient::login(a, "alice", &format!("d{i}"))).collect();
    // The 11th device: LoginFailed 214 (USER_LOGIN_TOO_MANY_DEVICES) with a clear description, then the connection closes.
    let mut c = RawClient::connect(a);
    c.send(&ClientFrame::Login { v: PROTOCOL_VERSION, user: "alice".into(), device: "d10".into(), token: token("alice"), since: 0 });
    // Pipelined behind it: must not be applied.
    c.send(&plain_send(1, "sneak", "legit-b", ChatType::Chat, "from the 11th"));
    let frames = c.until_closed();
    match frames.as_slice() {
        [ServerFrame::LoginFailed { error }] => {
            assert_eq!(error.code, ErrorCode::UserLoginTooManyDevices);
            assert!(error.description.contains("max_devices_per_user"), "{error}");
        }
        f => panic!("expected only LoginFailed, got {f:?}"),
    }
    // Nothing else changed: all ten still get alice's traffic; legit-b got nothing from alice.
    let id = pair.bob.send_msg("alice", ChatType::Chat, "to all ten");
    for d in devices.iter_mut() {
        d.event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == id));
    }
    pair.exchange();
    let probe = RawClient::login(a, "legit-b", "probe");
    assert!(probe.backlog.iter().all(|e| !matches!(&*e.event, ServerEvent::Message { msg } if msg.from == "alice")));
    // Other users are not limited by alice's devices.
    let _other = RawClient::login(a, "carol", "c0");
    // A device already online logging in again (same id) is not refused: it replaces its older
    // session (206; tests/hostile_limits.rs), still ten devices.
    let again = RawClient::login(a, "alice", "d3");
    drop(again);
    // One device leaves: the 11th may come in (once the server noticed; bounded retry).
    drop(devices.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = RawClient::connect(a);
        c.send(&ClientFrame::Login { v: PROTOCOL_VERSION, user: "alice".into(), device: "d10".into(), token: token("alice"), since: 0 });
        match c.recv_required() {
            ServerFrame::LoginOk { .. } => break,
            ServerFrame::LoginFailed { error } if error.code == ErrorCode::UserLoginTooManyDevices && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            f => panic!("{f:?}"),
        }
    }
}

#[test]
fn the_global_connection_cap_refuses_sockets_beyond_it() {
    let s = TestServer::start(|c| c.max_connections = 6);
    let a = s.addr();
    let mut pair = Pair::new(a); // 2 connections
    let mut held: Vec<RawClient> = (0..4).map(|_| RawClient::connect(a)).collect(); // 6 open
                                                                                    // Make sure the server has accepted them all (a ping round trip on a logged-in one).
    pair.alice.sync_ping();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let mut c = RawClient::connect(a);
        let frames = c.until_closed();
        match frames.as_slice() {
            [ServerFrame::Error { error }] => {
                assert_eq!(error.code, ErrorCode::ServerBusy);
                assert!(error.description.contains("connections open"), "{error}");
            }
            f => panic!("expected Error 302, got {f:?}"),
        }
    }
    // The connections inside the cap are untouched.
    pair.exchange();
    // A slot frees when one closes (bounded retry while the server notices).
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = RawClient::connect(a);
        c.send_raw(&login_bytes("carol", "c1"));
        match c.recv_required() {
            ServerFrame::LoginOk { .. } => break,
            ServerFrame::Error { error } if error.code == ErrorCode::ServerBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            f => panic!("{f:?}"),
        }
    }
    pair.exchange();
}

/// Shrinks a socket's receive buffer, so a client that does not read stops the server's writes
/// soon (on loopback the kernel would otherwise absorb megabytes of answers).
fn small_rcvbuf(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = 4096;
    // SAFETY: setsockopt on a live socket with a pointer to a local int of the right size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[test]
fn a_pipelined_flood_that_never_reads_is_dropped_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // The real binary with the default limits (outbound_queue 4096, core channel 8192).
    let srv = ChildServer::start(&dir.path().join("data"), "");
    let a = srv.addr();
    let mut pair = Pair::new(a);
    pair.exchange();
    let rss0 = srv.rss_kib();

    let flood = TcpStream::connect(a).unwrap();
    small_rcvbuf(&flood);
    let mut w = flood.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut bytes = login_bytes("mallory", "flood");
            w.write_all(&bytes).unwrap();
            // Requests the server answers cheaply (unknown message: 500), 512 per write, never
            // reading a single answer. Stops when the server drops the connection.
            let started = Instant::now();
            let mut sent: u64 = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(25) {
                bytes.clear();
                for _ in 0..512 {
                    sent += 1;
                    bytes.extend(encode(&ClientFrame::ReadAck { req: sent, msg_id: 4_000_000_000 + sent, private: false }));
                }
                if let Err(e) = w.write_all(&bytes) {
                    return (sent, Some(e.kind()), started.elapsed());
                }
            }
            (sent, None, started.elapsed())
        })
    };
    // Legit traffic flows during the flood; RSS is sampled meanwhile.
    let mut peak = rss0;
    let mut rounds = 0;
    while !writer.is_finished() && rounds < 400 {
        pair.exchange();
        rounds += 1;
        peak = peak.max(srv.rss_kib());
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, err, took) = writer.join().unwrap();
    peak = peak.max(srv.rss_kib());
    loud(&format!(
        "hostile: flood of {sent} pipelined requests in {:.1} s, never read: connection dropped ({err:?}); \
         {rounds} legit rounds meanwhile; server RSS {} -> peak {} KiB (+{} KiB)",
        took.as_secs_f64(),
        rss0,
        peak,
        peak.saturating_sub(rss0)
    ));
    assert!(err.is_some(), "the server never dropped a client that does not read ({sent} requests sent)");
    assert!(rounds > 0);
    assert!(peak.saturating_sub(rss0) < 200 * 1024, "server RSS grew by {} KiB", peak - rss0);
    // The dropped connection reads to its end (what was queued, then EOF or reset).
    let mut r = flood;
    r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    pair.exchange();
}

#[test]
fn two_thousand_idle_connections_cost_bounded_memory_and_are_reaped_at_the_login_timeout() {
    const N: usize = 2000;
    let limit = raise_nofile(2 * N as u64 + 512);
    if limit < 2 * N as u64 + 256 {
        loud(&format!("!!!!!!!! SKIPPED two_thousand_idle_connections: RLIMIT_NOFILE is {limit}, need {} !!!!!!!!", 2 * N + 256));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = ChildServer::start(&dir.path().join("data"), "login_timeout_secs = 5");
    let a = srv.addr();
    let mut pair = Pair::new(a);
    pair.exchange();
    let (rss0, fds0) = (srv.rss_kib(), srv.fds());
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(N);
    for _ in 0..N {
        idle.push(TcpStream::connect(a).expect("connect"));
    }
    // Wait until the server holds them all.
    let deadline = Instant::now() + Duration::from_secs(4);
    while srv.fds() < fds0 + N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let fds1 = srv.fds();
    let rss1 = srv.rss_kib();
    let opened = started.elapsed();
    assert!(fds1 >= fds0 + N, "server holds {} of {N} connections after {opened:?}", fds1 - fds0);
    // Legit traffic is unaffected while they sit there.
    for _ in 0..5 {
        pair.exchange();
    }
    let delta = rss1.saturating_sub(rss0);
    loud(&format!(
        "hostile: {N} idle connections opened in {:.2} s: server fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB (+{delta} KiB, {:.1} KiB per connection)",
        opened.as_secs_f64(),
        delta as f64 / N as f64
    ));
    assert!(delta < 200 * 1024, "{N} idle connections cost {delta} KiB");
    // Never logging in, each is closed at the login timeout with an Error frame.
    let mut closed_with_error = 0;
    let deadline = started + Duration::from_secs(15);
    let mut dec = receipt_core::codec::FrameDecoder::default();
    for s in &mut idle {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 512];
        let mut got_error = false;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    dec.push(&buf[..n]);
                    while let Ok(Some(f)) = dec.next_frame::<ServerFrame>() {
                        got_error |= matches!(f, ServerFrame::Error { error } if error.description.contains("login timeout"));
                    }
                }
                Err(_) => break,
            }
        }
        closed_with_error += got_error as usize;
    }
    let reaped = started.elapsed();
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(3);
    while srv.fds() > fds0 + 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    loud(&format!(
        "hostile: {closed_with_error}/{N} idle connections closed with a login-timeout Error after {:.1} s; server fds back to {}",
        reaped.as_secs_f64(),
        srv.fds()
    ));
    assert_eq!(closed_with_error, N);
    pair.exchange();
}
