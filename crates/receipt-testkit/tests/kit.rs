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

/// `receipt_connections` on each node's metrics listener, once they read `want` (bounded: the
/// gauge moves as the nodes accept); panics with the last values.
fn wait_connections_per_node(srv: &TestServer, want: &[f64]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen: Vec<f64> = srv
            .node_metrics_addrs()
            .into_iter()
            .map(|a| ops::sample(&ops::scrape(a), "receipt_connections").expect("receipt_connections"))
            .collect();
        if seen == want {
            return;
        }
        assert!(Instant::now() < deadline, "connections per node (sequencer first): {seen:?}, expected {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cluster topology (RECEIPT_TEST_TOPOLOGY=cluster runs the rule suites on it): three
/// successive connections land on three different nodes, and messages cross nodes, gateway to
/// gateway included; a stop and a start again keep the store (PostgreSQL).
#[test]
fn the_cluster_topology_spreads_connections_over_three_nodes_and_messages_cross_them() {
    if receipt_testkit::nats::skip() || receipt_testkit::pg::skip() {
        return; // SKIPPED said loudly
    }
    let mut srv = TestServer::start_on(Topology::Cluster, |c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap()));
    assert!(srv.is_cluster());
    assert_eq!(srv.config.backend, receipt_server::Backend::Postgres, "the sequencer's store is the cluster's");
    assert_eq!(srv.node_metrics_addrs().len(), 3, "a sequencer and two gateways");
    wait_connections_per_node(&srv, &[0.0, 0.0, 0.0]);

    // Round robin: the sequencer, gateway 2, gateway 3.
    let mut alice = RawClient::login(srv.addr(), "alice", "a1");
    wait_connections_per_node(&srv, &[1.0, 0.0, 0.0]);
    let mut bob = RawClient::login(srv.addr(), "bob", "b1");
    wait_connections_per_node(&srv, &[1.0, 1.0, 0.0]);
    let mut carol = RawClient::login(srv.addr(), "carol", "c1");
    wait_connections_per_node(&srv, &[1.0, 1.0, 1.0]);

    // Sequencer to gateway, gateway to gateway, gateway to sequencer.
    alice.send_msg("bob", ChatType::Chat, "from the sequencer");
    bob.send_msg("carol", ChatType::Chat, "gateway to gateway");
    carol.send_msg("alice", ChatType::Chat, "back to the sequencer");
    for (who, text) in [(&mut bob, "from the sequencer"), (&mut carol, "gateway to gateway"), (&mut alice, "back to the sequencer")] {
        let got = who.event_matching(|e| matches!(e, ServerEvent::Message { .. }));
        assert!(matches!(&got, ServerEvent::Message { msg } if msg.content == text), "{} got {got:?}", who.user);
    }
    drop((alice, bob, carol));
    wait_connections_per_node(&srv, &[0.0, 0.0, 0.0]);

    srv.stop();
    assert!(!srv.is_running());
    assert!(TcpStream::connect(srv.addr()).is_err(), "a stopped cluster's balancer does not listen");
    srv.start_again();
    let bob = RawClient::login(srv.addr(), "bob", "b1");
    assert_eq!(bob.unread(ChatType::Chat, "alice"), 1, "kept across the restart");
    drop(bob);
    let state = srv.stop_and_load();
    assert_eq!(server_unread(&state, "carol", &chat("bob")), 1);
    assert_eq!(server_unread(&state, "alice", &chat("carol")), 1);
}
