//! State survives a restart on the same data directory; many requests share one commit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use receipt_core::codec::encode;
use receipt_core::protocol::*;
use receipt_core::*;
use receipt_server::{RedbServerStore, ServerStore, State, StoreError, StoreOp};
use receipt_testkit::raw::*;
use receipt_testkit::*;

#[test]
fn state_survives_a_restart() {
    let mut s = TestServer::start(|c| c.group_ack.enabled = true);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let gm = alice.send_msg_opts(&g, ChatType::GroupChat, "ack me", false, true).unwrap().0;
    let m1 = alice.send_msg("bob", ChatType::Chat, "one");
    let m2 = alice.send_msg("bob", ChatType::Chat, "two");
    let mut bob = RawClient::login(a, "bob", "b1");
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: m1, private: false });
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: gm, ext: Some("x".into()), private: false });
    let head = RawClient::login(a, "bob", "probe").head;
    drop((alice, bob));

    s.restart();
    let a = s.addr();
    let mut bob = RawClient::login_since(a, "bob", "b1", head);
    assert!(bob.backlog.is_empty());
    assert_eq!(bob.head, head);
    assert_eq!(bob.unread(ChatType::Chat, "alice"), 1);
    assert_eq!(bob.unread(ChatType::GroupChat, &g), 0);
    // Idempotency survives: no second Read, no second group ack.
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: m1, private: false });
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: gm, ext: None, private: false });
    assert_eq!(RawClient::login(a, "bob", "probe2").head, head);
    let mut alice = RawClient::login(a, "alice", "a2");
    let Response::GroupAcks { page, .. } =
        alice.expect_ok(|req| ClientFrame::FetchGroupAcks { req, msg_id: gm, page_size: 10, start_ack_id: None })
    else {
        panic!()
    };
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.data[0].content.as_deref(), Some("x"));
    // Ids keep increasing; groups are still there.
    let m3 = alice.send_msg("bob", ChatType::Chat, "three");
    assert!(m3 > m2);
    let mut carol = RawClient::login(a, "carol", "c1");
    carol.send_msg(&g, ChatType::GroupChat, "still a member");
    let Response::GroupCreated { group: g2 } =
        alice.expect_ok(|req| ClientFrame::CreateGroup { req, name: "second".into(), members: vec![], chat_room: false })
    else {
        panic!()
    };
    assert_ne!(g2, g);
}

/// A redb store that counts commits and operations.
struct Counting {
    inner: RedbServerStore,
    commits: Arc<AtomicUsize>,
}

impl ServerStore for Counting {
    fn load(&mut self) -> Result<State, StoreError> {
        self.inner.load()
    }
    fn commit(&mut self, parts: &[&[StoreOp]]) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(parts)
    }
}

#[test]
fn many_requests_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let commits = Arc::new(AtomicUsize::new(0));
    let store = Counting { inner: RedbServerStore::open(dir.path()).unwrap(), commits: commits.clone() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = server_config(None);
    let server = rt.block_on(receipt_server::start_with_store(config, Box::new(store))).unwrap();
    let a = server.local_addr();
    const CLIENTS: usize = 6;
    const EACH: u64 = 200;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = RawClient::login(a, &format!("u{i}"), "d");
                let mut bytes = Vec::new();
                for n in 0..EACH {
                    bytes.extend(encode(&plain_send(10 + n, format!("c{n}"), "sink", ChatType::Chat, "x")));
                }
                c.send_raw(&bytes);
                for n in 0..EACH {
                    c.wait_result(10 + n).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = commits.load(Ordering::SeqCst);
    let requests = CLIENTS * EACH as usize;
    eprintln!("{requests} requests in {n} commits");
    assert!(n < requests, "{requests} requests took {n} commits: no group commit");
    let sink = RawClient::login(a, "sink", "s");
    assert_eq!(sink.backlog.len(), requests);
    rt.block_on(server.shutdown());
}
