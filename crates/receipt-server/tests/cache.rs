//! The hot-state cache against the real server and its redb store, on loopback: with a budget far
//! smaller than what is stored, every answer (idempotent sends, receipts, unread counts, ack pages,
//! backlogs) stays right after eviction and after a restart (docs/server-data-model.md, "Hot state
//! and start-up"). Every loop is bounded.

use receipt_core::protocol::*;
use receipt_core::*;
use receipt_testkit::raw::*;
use receipt_testkit::*;

fn send_cid(c: &mut RawClient, cid: &str, to: &str, chat_type: ChatType) -> MsgId {
    match c.request(|req| ClientFrame::Send {
        req,
        client_id: cid.into(),
        to: to.into(),
        chat_type,
        content: format!("content of {cid}"),
        require_delivery_ack: true,
        need_group_ack: chat_type == ChatType::GroupChat,
    }) {
        Ok(Response::Sent { msg_id, .. }) => msg_id,
        r => panic!("{r:?}"),
    }
}

fn ackers(c: &mut RawClient, msg_id: MsgId) -> Vec<String> {
    match c.request(|req| ClientFrame::FetchGroupAcks { req, msg_id, page_size: 50, start_ack_id: None }) {
        Ok(Response::GroupAcks { page, .. }) => page.data.into_iter().map(|a| a.from).collect(),
        r => panic!("{r:?}"),
    }
}

#[test]
fn answers_stay_right_with_a_cache_far_smaller_than_the_store_and_after_a_restart() {
    // 8 KiB: a few dozen entries, against 500 messages, their logs and conversations.
    let mut server = TestServer::start(|c| {
        c.cache_bytes = 8 << 10;
        c.group_ack.enabled = true;
    });
    let mut alice = RawClient::login(server.addr(), "alice", "a");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let mut ids = Vec::new();
    for i in 0..400 {
        ids.push(send_cid(&mut alice, &format!("m{i}"), "bob", ChatType::Chat));
    }
    let gids: Vec<MsgId> = (0..100).map(|i| send_cid(&mut alice, &format!("g{i}"), &g, ChatType::GroupChat)).collect();
    // bob was offline: his whole backlog, read back from the store window by window.
    let mut bob = RawClient::login_since(server.addr(), "bob", "b", 0);
    assert_eq!(bob.backlog.iter().filter(|e| matches!(&*e.event, ServerEvent::Message { .. })).count(), 500);
    assert_eq!((bob.unread(ChatType::Chat, "alice"), bob.unread(ChatType::GroupChat, &g)), (400, 100));
    // Receipts on long-evicted messages; a repeated ack changes nothing.
    bob.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: ids[6] });
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: ids[5], private: false });
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: ids[5], private: false });
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: gids[3], ext: None, private: false });
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: gids[3], ext: None, private: false });
    let mut carol = RawClient::login(server.addr(), "carol", "c");
    carol.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: gids[3], ext: None, private: false });
    drop((bob, carol));
    let check = |server: &TestServer, alice: &mut RawClient| {
        // An idempotent resend of an evicted message: the same id.
        assert_eq!(send_cid(alice, "m10", "bob", ChatType::Chat), ids[10]);
        assert_eq!(ackers(alice, gids[3]), vec!["carol".to_string(), "bob".to_string()]);
        let bob = RawClient::login(server.addr(), "bob", "b");
        assert_eq!((bob.unread(ChatType::Chat, "alice"), bob.unread(ChatType::GroupChat, &g)), (399, 99));
        // His whole log, every seq once and in order, from the store.
        assert_eq!(bob.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=bob.head).collect::<Vec<_>>());
        assert_eq!(bob.backlog.iter().filter(|e| matches!(&*e.event, ServerEvent::Message { .. })).count(), 500);
    };
    check(&server, &mut alice);
    drop(alice);
    server.restart();
    let mut alice = RawClient::login(server.addr(), "alice", "a");
    check(&server, &mut alice);
    // Seqs go on from the stored heads after the restart.
    let head = RawClient::login(server.addr(), "bob", "b").head;
    send_cid(&mut alice, "after", "bob", ChatType::Chat);
    let bob = RawClient::login_since(server.addr(), "bob", "b2", head);
    assert_eq!(bob.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![head + 1]);
}

/// The sample of the series whose name ends with `suffix` (the registry's prefix aside).
fn gauge(text: &str, suffix: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        name.ends_with(suffix).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn the_metrics_report_the_cache_bytes_under_the_budget() {
    let server = TestServer::start(|c| {
        c.cache_bytes = 16 << 10;
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    });
    let m = server.metrics_addr().expect("metrics listener");
    let mut alice = RawClient::login(server.addr(), "alice", "a");
    for i in 0..200 {
        send_cid(&mut alice, &format!("m{i}"), &format!("u{}", i % 20), ChatType::Chat);
    }
    // Reported after each batch: one more request makes sure the last one is counted.
    alice.sync_ping();
    send_cid(&mut alice, "last", "bob", ChatType::Chat);
    let text = ops::scrape(m);
    assert_eq!(gauge(&text, "cache_budget_bytes"), Some((16 << 10) as f64), "{text}");
    let used = gauge(&text, "cache_bytes").expect("cache gauge");
    assert!(
        used > 0.0 && used <= (16 << 10) as f64 + 4096.0,
        "cache bytes {used} (budget 16 KiB; a batch in flight may be pinned over it)"
    );
}
