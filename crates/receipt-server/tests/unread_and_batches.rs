//! Who has not read a group message, read counts of a screen of group messages, and 1:1 read
//! acks in one trip (issue 16, items 1 and 2), against a real server over loopback.

use receipt_core::protocol::*;
use receipt_core::*;
use receipt_server::Visibility;
use receipt_testkit::raw::*;
use receipt_testkit::*;

fn enabled(f: impl FnOnce(&mut receipt_server::GroupAckPolicy)) -> TestServer {
    TestServer::start(|c| {
        c.group_ack.enabled = true;
        f(&mut c.group_ack)
    })
}

/// Every page of the unread members of `id` as `viewer` sees them, `page_size` at a time.
fn unread_pages(viewer: &mut RawClient, id: MsgId, page_size: u32) -> Vec<Vec<UserId>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let Response::GroupUnread { page, .. } =
            viewer.expect_ok(|req| ClientFrame::FetchGroupUnread { req, msg_id: id, page_size, cursor: cursor.clone() })
        else {
            panic!("not a page of unread members")
        };
        pages.push(page.data);
        if page.cursor.is_empty() {
            return pages;
        }
        cursor = Some(page.cursor);
    }
    panic!("more than 100 pages")
}

fn ack_count(viewer: &mut RawClient, id: MsgId) -> u32 {
    match viewer.expect_ok(|req| ClientFrame::FetchGroupAckCounts { req, msg_ids: vec![id] }) {
        Response::GroupAckCounts { items } => {
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].err, None);
            items[0].count
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn unread_members_are_the_members_at_send_time_still_in_the_group_who_have_not_acked() {
    let s = enabled(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let members: Vec<String> = (0..7).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let g = create_group(&mut alice, &refs);
    let id = alice.send_msg_opts(&g, ChatType::GroupChat, "who read?", false, true).unwrap().0;
    // m0 and m3 read it; m6 leaves; late joins after the send.
    for m in ["m0", "m3"] {
        RawClient::login(a, m, "d").expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: false });
    }
    RawClient::login(a, "m6", "d").expect_ok(|req| ClientFrame::LeaveGroup { req, group: g.clone() });
    alice.expect_ok(|req| ClientFrame::AddMembers { req, group: g.clone(), members: vec!["late".into()] });

    let pages = unread_pages(&mut alice, id, 2);
    assert_eq!(pages, vec![vec!["m1".to_string(), "m2".into()], vec!["m4".into(), "m5".into()]]);
    let unread: usize = pages.iter().map(Vec::len).sum();
    // read + unread = members at send time still in the group (m0..m5; the sender is not a reader).
    assert_eq!(ack_count(&mut alice, id) as usize + unread, 6);
    // One page big enough holds them all and ends the listing.
    assert_eq!(unread_pages(&mut alice, id, 100), vec![vec!["m1".to_string(), "m2".into(), "m4".into(), "m5".into()]]);

    // An ack moves a member from unread to read.
    RawClient::login(a, "m4", "d").expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: false });
    assert_eq!(unread_pages(&mut alice, id, 100), vec![vec!["m1".to_string(), "m2".into(), "m5".into()]]);
    assert_eq!(ack_count(&mut alice, id), 3);

    // A reader who leaves drops out of the read count too: read + unread stays exact.
    RawClient::login(a, "m0", "d").expect_ok(|req| ClientFrame::LeaveGroup { req, group: g.clone() });
    assert_eq!(ack_count(&mut alice, id), 2);
    let unread: usize = unread_pages(&mut alice, id, 100).iter().map(Vec::len).sum();
    assert_eq!(ack_count(&mut alice, id) as usize + unread, 5);
}

#[test]
fn unread_members_refusals() {
    let s = enabled(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let g = create_group(&mut alice, &["bob"]);
    let asked = alice.send_msg_opts(&g, ChatType::GroupChat, "q", false, true).unwrap().0;
    let unasked = alice.send_msg_opts(&g, ChatType::GroupChat, "no acks", false, false).unwrap().0;
    let one_to_one = alice.send_msg("bob", ChatType::Chat, "hi");
    let fetch = |msg_id, page_size| move |req| ClientFrame::FetchGroupUnread { req, msg_id, page_size, cursor: None };
    // A non-sender (sender-only visibility, the default).
    bob.expect_err(ErrorCode::GroupPermissionDenied, fetch(asked, 10));
    for bad in [0, 101] {
        alice.expect_err(ErrorCode::InvalidParam, fetch(asked, bad));
    }
    alice.expect_err(ErrorCode::MessageInvalid, fetch(4242, 10));
    alice.expect_err(ErrorCode::MessageInvalid, fetch(one_to_one, 10));
    alice.expect_err(ErrorCode::ServiceNotEnabled, fetch(unasked, 10));
}

#[test]
fn members_see_unread_members_when_the_policy_lets_them_see_acks() {
    let s = enabled(|p| p.visibility = Visibility::AllMembers);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut dave = RawClient::login(a, "dave", "d1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let id = alice.send_msg_opts(&g, ChatType::GroupChat, "q", false, true).unwrap().0;
    assert_eq!(unread_pages(&mut bob, id, 10), vec![vec!["bob".to_string(), "carol".into()]]);
    dave.expect_err(ErrorCode::GroupPermissionDenied, |req| ClientFrame::FetchGroupUnread { req, msg_id: id, page_size: 10, cursor: None });
}

#[test]
fn ack_counts_answer_one_item_per_id_in_the_order_asked() {
    let s = enabled(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let two = alice.send_msg_opts(&g, ChatType::GroupChat, "two", false, true).unwrap().0;
    let none = alice.send_msg_opts(&g, ChatType::GroupChat, "none", false, true).unwrap().0;
    let bobs = bob.send_msg_opts(&g, ChatType::GroupChat, "bob's", false, true).unwrap().0;
    let one_to_one = alice.send_msg("bob", ChatType::Chat, "hi");
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: two, ext: None, private: false });
    carol.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: two, ext: None, private: false });
    let ids = vec![two, none, bobs, 4242, one_to_one, two];
    let Response::GroupAckCounts { items } = alice.expect_ok(|req| ClientFrame::FetchGroupAckCounts { req, msg_ids: ids.clone() }) else {
        panic!()
    };
    assert_eq!(items.iter().map(|i| i.msg_id).collect::<Vec<_>>(), ids);
    let codes: Vec<Option<ErrorCode>> = items.iter().map(|i| i.err.as_ref().map(|e| e.code)).collect();
    assert_eq!(
        codes,
        vec![
            None,
            None,
            Some(ErrorCode::GroupPermissionDenied), // another member's message
            Some(ErrorCode::MessageInvalid),        // unknown id
            Some(ErrorCode::MessageInvalid),        // a 1:1 message
            None
        ]
    );
    assert_eq!(items.iter().map(|i| i.count).collect::<Vec<_>>(), vec![2, 0, 0, 0, 0, 2]);
    // 1..=20 ids.
    alice.expect_err(ErrorCode::InvalidParam, |req| ClientFrame::FetchGroupAckCounts { req, msg_ids: vec![] });
    alice.expect_err(ErrorCode::InvalidParam, |req| ClientFrame::FetchGroupAckCounts { req, msg_ids: vec![two; 21] });
    assert!(matches!(alice.expect_ok(|req| ClientFrame::FetchGroupAckCounts { req, msg_ids: vec![two; 20] }),
        Response::GroupAckCounts { items } if items.len() == 20 && items.iter().all(|i| i.count == 2)));
}

#[test]
fn read_acks_ack_several_messages_in_one_trip_with_one_result_per_id() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let m1 = alice.send_msg("bob", ChatType::Chat, "one");
    let m2 = alice.send_msg("bob", ChatType::Chat, "two");
    let from_carol = carol.send_msg("bob", ChatType::Chat, "other conversation");
    let to_carol = alice.send_msg("carol", ChatType::Chat, "not bob's");
    let bobs_own = bob.send_msg("alice", ChatType::Chat, "mine");
    let ids = vec![m1, from_carol, to_carol, bobs_own, 4242, m2, m1];
    let Response::ReadAcks { items } =
        bob.expect_ok(|req| ClientFrame::ReadAcks { req, conversation: "alice".into(), msg_ids: ids.clone(), private: false })
    else {
        panic!()
    };
    assert_eq!(items.iter().map(|i| i.msg_id).collect::<Vec<_>>(), ids);
    let codes: Vec<Option<ErrorCode>> = items.iter().map(|i| i.err.as_ref().map(|e| e.code)).collect();
    assert_eq!(
        codes,
        vec![
            None,
            Some(ErrorCode::MessageInvalid), // from carol: another conversation
            Some(ErrorCode::MessageInvalid), // not sent to bob
            Some(ErrorCode::MessageInvalid), // bob's own (the single ack's code: 500)
            Some(ErrorCode::MessageInvalid), // unknown
            None,
            None, // acked twice: done, as a single ack would be
        ]
    );
    // Alice hears one Read receipt per acked message, as from single acks.
    let mut read = Vec::new();
    for _ in 0..2 {
        match alice.event_matching(|e| matches!(e, ServerEvent::Read { .. })) {
            ServerEvent::Read { msg_id, by, .. } => {
                assert_eq!(by, "bob");
                read.push(msg_id)
            }
            _ => unreachable!(),
        }
    }
    read.sort();
    assert_eq!(read, vec![m1, m2]);
    // Carol heard nothing of bob's batch.
    carol.sync_ping();
    assert!(!carol.events.iter().any(|e| matches!(&*e.event, ServerEvent::Read { .. })));
    // 1..=20 ids; a bad conversation id is refused whole.
    bob.expect_err(ErrorCode::InvalidParam, |req| ClientFrame::ReadAcks {
        req,
        conversation: "alice".into(),
        msg_ids: vec![],
        private: false,
    });
    bob.expect_err(ErrorCode::InvalidParam, |req| ClientFrame::ReadAcks {
        req,
        conversation: "alice".into(),
        msg_ids: vec![m1; 21],
        private: false,
    });
    bob.expect_err(ErrorCode::InvalidParam, |req| ClientFrame::ReadAcks {
        req,
        conversation: String::new(),
        msg_ids: vec![m1],
        private: false,
    });
}

/// With a hot-state cache far smaller than the store, and after a restart (every ack then comes
/// from the store, none from a resident record), the unread list, the counts and batch read acks
/// stay right.
#[test]
fn unread_counts_and_batch_acks_read_acks_from_the_store_through_a_tiny_cache_and_a_restart() {
    let mut server = TestServer::start(|c| {
        c.cache_bytes = 1;
        c.group_ack.enabled = true;
    });
    let mut alice = RawClient::login(server.addr(), "alice", "a1");
    let g = create_group(&mut alice, &["m0", "m1", "m2", "m3"]);
    let id = alice.send_msg_opts(&g, ChatType::GroupChat, "who read?", false, true).unwrap().0;
    // Enough traffic to push the message out of a 1-byte cache.
    for i in 0..50 {
        alice.send_msg("bob", ChatType::Chat, &format!("filler {i}"));
    }
    for m in ["m1", "m3"] {
        RawClient::login(server.addr(), m, "d").expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: false });
    }
    let one = alice.send_msg("bob", ChatType::Chat, "one");
    let two = alice.send_msg("bob", ChatType::Chat, "two");
    drop(alice);
    for round in 0..2 {
        let mut alice = RawClient::login(server.addr(), "alice", "a1");
        assert_eq!(unread_pages(&mut alice, id, 1), vec![vec!["m0".to_string()], vec!["m2".into()]], "round {round}");
        assert_eq!(ack_count(&mut alice, id), 2, "round {round}");
        drop(alice);
        server.restart();
    }
    let mut bob = RawClient::login(server.addr(), "bob", "b1");
    let Response::ReadAcks { items } =
        bob.expect_ok(|req| ClientFrame::ReadAcks { req, conversation: "alice".into(), msg_ids: vec![one, two], private: false })
    else {
        panic!()
    };
    assert!(items.iter().all(|i| i.err.is_none()), "{items:?}");
    server.restart();
    // Acked before the restart: a second batch is done and tells alice nothing new.
    let mut bob = RawClient::login(server.addr(), "bob", "b1");
    let Response::ReadAcks { items } =
        bob.expect_ok(|req| ClientFrame::ReadAcks { req, conversation: "alice".into(), msg_ids: vec![one], private: false })
    else {
        panic!()
    };
    assert_eq!(items[0].err, None);
    assert_eq!(bob.unread(ChatType::Chat, "alice"), 50);
}
