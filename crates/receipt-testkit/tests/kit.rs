//! The kit's own promises: servers keep their data across a restart, tokens log in, devices'
//! waits are bounded and see what arrives, the child server can be killed and restarted.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use receipt_client::ClientEvent;
use receipt_core::protocol::ServerEvent;
use receipt_core::{ChatOptions, ChatType};
use receipt_testkit::raw::RawClient;
use receipt_testkit::*;

/// bob's messages in his backlog, by content.
fn backlog_texts(c: &RawClient) -> Vec<String> {
    c.backlog
        .iter()
        .filter_map(|e| match &*e.event {
            ServerEvent::Message { msg } => Some(msg.content.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn test_server_starts_again_on_its_data_and_loads_its_state() {
    let mut srv = TestServer::start(|c| c.retention_secs = 3600);
    assert_eq!(srv.config.retention_secs, 3600, "the closure adjusts the config");
    assert!(srv.config.group_ack.enabled, "group read acks are on by default");
    let mut alice = RawClient::login(srv.addr(), "alice", "a1");
    alice.send_msg("bob", ChatType::Chat, "kept");
    drop(alice);

    srv.stop();
    assert!(!srv.is_running());
    assert!(TcpStream::connect(srv.addr()).is_err(), "a stopped server does not listen");
    let port = srv.start_again();
    assert_eq!(port, srv.port());
    let bob = RawClient::login(srv.addr(), "bob", "b1");
    assert_eq!(backlog_texts(&bob), ["kept"]);
    assert_eq!(bob.unread(ChatType::Chat, "alice"), 1);
    drop(bob);

    let state = srv.stop_and_load();
    assert_eq!(server_unread(&state, "bob", &chat("alice")), 1);
    assert_eq!(server_unread(&state, "alice", &chat("bob")), 0);
}

#[test]
fn devices_wait_for_events_and_hear_nothing_else() {
    let srv = TestServer::start(|_| {});
    let alice = Device::online("alice/phone", ChatOptions::default(), srv.port());
    let bob = Device::online("bob/phone", ChatOptions::default(), srv.port());
    assert_eq!(bob.user, "bob");

    let m = alice.send_chat("bob", "hello");
    let got = bob.received(1);
    assert_eq!((got[0].id, got[0].content.as_str()), (m.id, "hello"));
    bob.wait_unread(&chat("alice"), 1);
    bob.ack_read(m.id);
    assert_eq!(read_ids(&alice.collect(QUIET)), [m.id]);
    alice.hears_nothing("a second read receipt", |e| matches!(e, ClientEvent::MessagesRead(_)));

    // A wait that runs out says what it waited for, and is bounded by its limit.
    let t = Instant::now();
    let e = bob.try_wait_for(Duration::from_millis(200), "a message nobody sent", |e| match e {
        ClientEvent::MessagesReceived(m) => Some(m.clone()),
        _ => None,
    });
    let elapsed = t.elapsed();
    assert!(e.as_ref().is_err_and(|e| e.contains("no a message nobody sent within")), "{e:?}");
    assert!(elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(2), "{elapsed:?}");

    // heard() reports an event that did arrive and leaves it queued.
    alice.send_chat("bob", "again");
    assert!(bob.heard(QUIET, |e| matches!(e, ClientEvent::MessagesReceived(_))).is_some());
    assert_eq!(bob.received(1)[0].content, "again");
}

#[test]
fn a_wait_limit_bounds_every_wait_and_a_refused_login_is_an_error() {
    let srv = TestServer::start(|_| {});
    // Not logged in: no Connected ever comes.
    let d = Device::new("carol/phone", ChatOptions::default(), srv.port()).wait_limit(Duration::from_millis(300));
    let t = Instant::now();
    let r = d.try_wait_connected();
    assert!(r.as_ref().is_err_and(|e| e.contains("carol/phone: no Connected within 300ms")), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Nobody listens: the login fails, as an error naming the device.
    let d = Device::new("carol/phone", ChatOptions::default(), dead_port());
    let r = d.try_login();
    assert!(r.as_ref().is_err_and(|e| e.starts_with("carol/phone: login refused")), "{r:?}");
}

#[test]
fn a_token_for_one_user_does_not_log_in_another() {
    let srv = TestServer::start(|_| {});
    let d = Device::new("mallory/phone", ChatOptions::default(), srv.port());
    d.client.login("mallory", &token("alice")).unwrap();
    let refused = d.wait("LoginFailed", |e| match e {
        ClientEvent::LoginFailed(e) => Some(e.clone()),
        _ => None,
    });
    assert_eq!(refused.code.as_u32(), 202, "{refused}");
}

#[test]
fn child_server_is_killed_and_restarted_on_its_data() {
    build_server_binary_once();
    let data = tempfile::tempdir().unwrap();
    let mut srv = ChildServer::start(data.path(), "login_timeout_secs = 5");
    assert!(srv.rss_kib() > 0);
    assert!(srv.fds() > 0);
    let pid = srv.pid();
    let mut alice = RawClient::login(srv.addr(), "alice", "a1");
    alice.send_msg("bob", ChatType::Chat, "survives a SIGKILL");
    drop(alice);

    let addr = srv.addr();
    srv.kill9();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the killed child is reaped");
    srv.start_again();
    assert_eq!(srv.addr(), addr, "a restart keeps the address");
    let bob = RawClient::login(srv.addr(), "bob", "b1");
    assert_eq!(backlog_texts(&bob), ["survives a SIGKILL"]);
    drop(bob);
    srv.stop();
    assert!(TcpStream::connect(addr).is_err(), "a stopped child does not listen");
}

/// `cargo test -p receipt-testkit` does not build the server binary.
fn build_server_binary_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let bin = receipt_testkit::child::build_server_binary();
        if std::env::var_os("RECEIPT_SERVER_BIN").is_none() {
            assert_eq!(server_binary().ok(), Some(bin), "the binary is found where cargo put it");
        }
    });
}
