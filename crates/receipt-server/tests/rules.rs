//! One test per server rule of docs/protocol.md, against a real server over loopback.

use std::time::Duration;

use receipt_core::codec::encode;
use receipt_core::protocol::*;
use receipt_core::*;
use receipt_server::{auth, Visibility, WhoMayRequest};
use receipt_testkit::raw::*;
use receipt_testkit::*;

fn login_frame(user: &str, token: String, v: u32) -> ClientFrame {
    ClientFrame::Login { v, user: user.into(), device: "d".into(), token, since: 0 }
}

fn refused(addr: std::net::SocketAddr, frame: ClientFrame) -> ChatError {
    let mut c = RawClient::connect(addr);
    c.send(&frame);
    // Whatever follows an unauthenticated login is never processed.
    c.send(&plain_send(1, "x", "bob", ChatType::Chat, "sneaky"));
    let frames = c.until_closed();
    match frames.as_slice() {
        [ServerFrame::LoginFailed { error }] => error.clone(),
        f => panic!("expected only LoginFailed, got {f:?}"),
    }
}

#[test]
fn auth_refusals_close_the_connection_and_process_nothing() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let bad_sig = auth::token_for("other-secret", "alice", 3600);
    let expired = auth::make_token(SECRET, "alice", 1000);
    let bobs = token("bob");
    // The SDK's codes: a bad signature 202, expired 108, missing or malformed 104.
    let cases = [
        (bad_sig, ErrorCode::UserAuthenticationFailed),
        (expired, ErrorCode::TokenExpired),
        (bobs, ErrorCode::UserAuthenticationFailed),
        (String::new(), ErrorCode::InvalidToken),
        ("garbage".into(), ErrorCode::InvalidToken),
    ];
    for (tok, code) in cases {
        let e = refused(a, login_frame("alice", tok.clone(), PROTOCOL_VERSION));
        assert_eq!(e.code, code, "token {tok:?}: {e}");
    }
    let e = refused(a, login_frame("alice", token("alice"), PROTOCOL_VERSION + 1));
    assert_eq!(e.code, ErrorCode::InvalidParam);
    // A non-Login first frame: Error, then close.
    let mut c = RawClient::connect(a);
    c.send(&ClientFrame::Ping { nonce: 1 });
    assert!(matches!(c.until_closed().as_slice(), [ServerFrame::Error { .. }]));
    // The sneaky sends did nothing: bob has no backlog.
    let bob = RawClient::login(a, "bob", "b1");
    assert!(bob.backlog.is_empty(), "{:?}", bob.backlog);
}

#[test]
fn bad_frames_get_an_error_and_close_and_the_server_stays_up() {
    let s = TestServer::start(|c| c.max_frame = 4096);
    let a = s.addr();
    let cases: Vec<Vec<u8>> = vec![
        {
            let body = b"{not json";
            let mut v = (body.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(body);
            v
        },
        {
            let body = br#"{"t":"teleport"}"#;
            let mut v = (body.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(body);
            v
        },
        u32::MAX.to_be_bytes().to_vec(),
        vec![0, 0, 0, 0],
    ];
    for (i, bytes) in cases.into_iter().enumerate() {
        // Both before and after login.
        for logged_in in [false, true] {
            let mut c = if logged_in { RawClient::login(a, "alice", "a1") } else { RawClient::connect(a) };
            c.send_raw(&bytes);
            let frames = c.until_closed();
            let errs: Vec<_> = frames.iter().filter(|f| matches!(f, ServerFrame::Error { .. })).collect();
            assert_eq!(errs.len(), 1, "case {i}: {frames:?}");
            if let ServerFrame::Error { error } = errs[0] {
                assert!(!error.description.is_empty());
            }
        }
    }
    // A second Login on a logged-in connection is a protocol error too.
    let mut c = RawClient::login(a, "alice", "a1");
    c.send(&login_frame("alice", token("alice"), PROTOCOL_VERSION));
    assert!(c.until_closed().iter().any(|f| matches!(f, ServerFrame::Error { .. })));
    // Still serving.
    let mut alice = RawClient::login(a, "alice", "a1");
    alice.send_msg("bob", ChatType::Chat, "hi");
}

#[test]
fn only_the_recipient_may_ack() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let id = alice.send_msg("bob", ChatType::Chat, "hi");
    carol.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::ReadAck { req, msg_id: id, private: false });
    carol.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::DeliveryAck { req, msg_id: id });
    alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::ReadAck { req, msg_id: id, private: false });
    alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::DeliveryAck { req, msg_id: id });
    bob.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::ReadAck { req, msg_id: 9999, private: false });
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: id, private: false });
    let e = alice.event_matching(|e| matches!(e, ServerEvent::Read { .. }));
    assert!(matches!(e, ServerEvent::Read { msg_id, by, .. } if msg_id == id && by == "bob"));
    assert!(carol.settle().is_empty());
}

#[test]
fn delivery_acks_are_one_to_one_only() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let g = create_group(&mut alice, &["bob"]);
    let gm = alice.send_msg(&g, ChatType::GroupChat, "to all");
    // Group delivery acks are off by default: 505, like a group read ack while they are off
    // (tests/group_delivery.rs has them on).
    bob.expect_err(ErrorCode::ServiceNotEnabled, |req| ClientFrame::DeliveryAck { req, msg_id: gm });
    let (id, _) = alice.send_msg_opts("bob", ChatType::Chat, "1:1", true, false).unwrap();
    // require_delivery_ack is kept for 1:1.
    let m = bob.event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == id));
    assert!(matches!(m, ServerEvent::Message { msg } if msg.require_delivery_ack));
    bob.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: id });
    let e = alice.event_matching(|e| matches!(e, ServerEvent::Delivered { .. }));
    assert!(matches!(e, ServerEvent::Delivered { msg_id, by, .. } if msg_id == id && by == "bob"));
    // The acker's log gets it too (for its other devices and replays; the acking device itself
    // has the answer and gets no live echo).
    let later = RawClient::login(a, "bob", "b2");
    assert!(later.backlog.iter().any(|e| matches!(*e.event, ServerEvent::Delivered { msg_id, .. } if msg_id == id)));
    // The group message does not ask for them while the feature is off (the request is dropped).
    let room_msg = alice.send_msg_opts(&g, ChatType::GroupChat, "x", true, false).unwrap().0;
    let m = bob.event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == room_msg));
    assert!(matches!(m, ServerEvent::Message { msg } if !msg.require_delivery_ack));
}

#[test]
fn acks_are_idempotent_and_not_forwarded_twice() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let id = alice.send_msg("bob", ChatType::Chat, "hi");
    for _ in 0..3 {
        bob.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: id });
        bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: id, private: false });
    }
    let evs = alice.settle();
    let delivered = evs.iter().filter(|e| matches!(e, ServerEvent::Delivered { .. })).count();
    let read = evs.iter().filter(|e| matches!(e, ServerEvent::Read { .. })).count();
    assert_eq!((delivered, read), (1, 1), "{evs:?}");
    // A read ack covered by an earlier conversation ack is not forwarded either.
    let id2 = alice.send_msg("bob", ChatType::Chat, "again");
    bob.expect_ok(|req| ClientFrame::ConversationAck { req, chat_type: ChatType::Chat, conversation: "alice".into(), private: false });
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: id2, private: false });
    let evs = alice.settle();
    assert_eq!(evs.iter().filter(|e| matches!(e, ServerEvent::ConversationRead { .. })).count(), 1);
    assert_eq!(evs.iter().filter(|e| matches!(e, ServerEvent::Read { .. })).count(), 0, "{evs:?}");
}

#[test]
fn read_ack_past_retention_is_506() {
    let s = TestServer::start(|c| c.retention_secs = 1);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let old = alice.send_msg("bob", ChatType::Chat, "old");
    std::thread::sleep(Duration::from_millis(1300));
    // Expired (maybe not yet pruned).
    bob.expect_err(ErrorCode::MessageExpired, |req| ClientFrame::ReadAck { req, msg_id: old, private: false });
    std::thread::sleep(Duration::from_millis(1500));
    // Pruned by now: still 506.
    bob.expect_err(ErrorCode::MessageExpired, |req| ClientFrame::ReadAck { req, msg_id: old, private: false });
    let fresh = alice.send_msg("bob", ChatType::Chat, "fresh");
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: fresh, private: false });
}

#[test]
fn conversation_ack_one_to_one_reaches_peer_and_own_other_devices_and_clears_unread() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut b1 = RawClient::login(a, "bob", "b1");
    let mut b2 = RawClient::login(a, "bob", "b2");
    let ids: Vec<MsgId> = (0..3).map(|i| alice.send_msg("bob", ChatType::Chat, &format!("m{i}"))).collect();
    // bob also wrote one: not affected, and not what the count is about.
    b1.send_msg("alice", ChatType::Chat, "reply");
    assert_eq!(RawClient::login(a, "bob", "probe").unread(ChatType::Chat, "alice"), 3);
    b1.expect_ok(|req| ClientFrame::ConversationAck { req, chat_type: ChatType::Chat, conversation: "alice".into(), private: false });
    let check = |e: &ServerEvent| {
        matches!(e, ServerEvent::ConversationRead { chat_type: ChatType::Chat, from, to, up_to, device, .. }
            if from == "bob" && to == "alice" && *up_to >= ids[2] && device == "b1")
    };
    assert!(check(&alice.event_matching(|e| matches!(e, ServerEvent::ConversationRead { .. }))));
    assert!(check(&b2.event_matching(|e| matches!(e, ServerEvent::ConversationRead { .. }))));
    assert!(check(&b1.event_matching(|e| matches!(e, ServerEvent::ConversationRead { .. }))));
    assert_eq!(RawClient::login(a, "bob", "b3").unread(ChatType::Chat, "alice"), 0);
    // Alice's own unread count (bob's reply) is untouched.
    assert_eq!(RawClient::login(a, "alice", "a2").unread(ChatType::Chat, "bob"), 1);
    // A repeat with nothing new: ok, nothing emitted.
    b1.expect_ok(|req| ClientFrame::ConversationAck { req, chat_type: ChatType::Chat, conversation: "alice".into(), private: false });
    assert!(alice.settle().iter().all(|e| !matches!(e, ServerEvent::ConversationRead { .. })));
}

#[test]
fn group_conversation_ack_reaches_only_own_devices() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    alice.send_msg(&g, ChatType::GroupChat, "one");
    alice.send_msg(&g, ChatType::GroupChat, "two");
    let mut b1 = RawClient::login(a, "bob", "b1");
    let mut b2 = RawClient::login(a, "bob", "b2");
    assert_eq!(b1.unread(ChatType::GroupChat, &g), 2);
    alice.settle();
    carol.settle();
    b1.expect_ok(|req| ClientFrame::ConversationAck { req, chat_type: ChatType::GroupChat, conversation: g.clone(), private: false });
    let is_read = |e: &ServerEvent| matches!(e, ServerEvent::ConversationRead { from, to, .. } if from == "bob" && *to == g);
    assert!(is_read(&b2.next_event()));
    assert!(is_read(&b1.next_event()));
    assert!(alice.settle().is_empty());
    assert!(carol.settle().is_empty());
    assert_eq!(RawClient::login(a, "bob", "b3").unread(ChatType::GroupChat, &g), 0);
    assert_eq!(RawClient::login(a, "carol", "c2").unread(ChatType::GroupChat, &g), 2);
    // Non-members are refused.
    let mut dave = RawClient::login(a, "dave", "d1");
    dave.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::ConversationAck {
        req,
        chat_type: ChatType::GroupChat,
        conversation: g.clone(),
        private: false,
    });
}

#[test]
fn group_acks_disabled_is_505() {
    let s = TestServer::start(|c| c.group_ack.enabled = false);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let g = create_group(&mut alice, &["bob"]);
    let e = alice.send_msg_opts(&g, ChatType::GroupChat, "x", false, true).unwrap_err();
    assert_eq!(e.code, ErrorCode::ServiceNotEnabled);
    let id = alice.send_msg(&g, ChatType::GroupChat, "plain");
    bob.expect_err(ErrorCode::ServiceNotEnabled, |req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: false });
}

fn enabled(f: impl FnOnce(&mut receipt_server::GroupAckPolicy)) -> TestServer {
    TestServer::start(|c| {
        c.group_ack.enabled = true;
        f(&mut c.group_ack)
    })
}

#[test]
fn group_ack_rules_with_feature_enabled() {
    let s = enabled(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut dave = RawClient::login(a, "dave", "d1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let id = alice.send_msg_opts(&g, ChatType::GroupChat, "ack me", false, true).unwrap().0;
    let plain = alice.send_msg(&g, ChatType::GroupChat, "plain");
    let one = alice.send_msg("bob", ChatType::Chat, "1:1");
    bob.expect_err(ErrorCode::ServiceNotEnabled, |req| ClientFrame::GroupAck { req, msg_id: plain, ext: None, private: false });
    bob.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::GroupAck { req, msg_id: one, ext: None, private: false });
    bob.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::ReadAck { req, msg_id: id, private: false });
    alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: false });
    dave.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: false });
    bob.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::GroupAck { req, msg_id: 777, ext: None, private: false });
    assert_eq!(RawClient::login(a, "bob", "probe").unread(ChatType::GroupChat, &g), 2);
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id, ext: Some("seen".into()), private: false });
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id, ext: Some("seen".into()), private: false });
    let evs = alice.settle();
    let acks: Vec<_> = evs.iter().filter_map(|e| if let ServerEvent::GroupRead { ack, .. } = e { Some(ack) } else { None }).collect();
    assert_eq!(acks.len(), 1, "{evs:?}");
    assert_eq!((acks[0].count, acks[0].from.as_str(), acks[0].content.as_deref()), (1, "bob", Some("seen")));
    // The ack marked it read for bob.
    assert_eq!(RawClient::login(a, "bob", "probe2").unread(ChatType::GroupChat, &g), 1);
}

#[test]
fn group_ack_owner_and_admins_policy_is_603_for_members() {
    let s = enabled(|p| p.who_may_request = WhoMayRequest::OwnerAndAdmins);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let e = bob.send_msg_opts(&g, ChatType::GroupChat, "x", false, true).unwrap_err();
    assert_eq!(e.code, ErrorCode::GroupPermissionDenied);
    // Plain messages are fine.
    bob.send_msg(&g, ChatType::GroupChat, "plain");
    alice.send_msg_opts(&g, ChatType::GroupChat, "owner", false, true).unwrap();
    alice.expect_ok(|req| ClientFrame::SetRole { req, group: g.clone(), member: "bob".into(), role: GroupRole::Admin });
    bob.send_msg_opts(&g, ChatType::GroupChat, "admin now", false, true).unwrap();
}

#[test]
fn group_ack_past_validity_is_506() {
    let s = enabled(|p| p.validity_secs = 1);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let g = create_group(&mut alice, &["bob"]);
    let id = alice.send_msg_opts(&g, ChatType::GroupChat, "quick", false, true).unwrap().0;
    std::thread::sleep(Duration::from_millis(1300));
    bob.expect_err(ErrorCode::MessageExpired, |req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: false });
    let id2 = alice.send_msg_opts(&g, ChatType::GroupChat, "again", false, true).unwrap().0;
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id2, ext: None, private: false });
}

#[test]
fn groups_over_the_member_cap_get_no_acks() {
    let s = enabled(|p| p.member_cap = 2);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let small = create_group(&mut alice, &["bob"]);
    let big = create_group(&mut alice, &["bob", "carol"]);
    let ok = alice.send_msg_opts(&small, ChatType::GroupChat, "small", false, true).unwrap().0;
    let capped = alice.send_msg_opts(&big, ChatType::GroupChat, "big", false, true).unwrap().0;
    let m = bob.event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == capped));
    assert!(matches!(m, ServerEvent::Message { msg } if !msg.need_group_ack));
    bob.expect_err(ErrorCode::ServiceNotEnabled, |req| ClientFrame::GroupAck { req, msg_id: capped, ext: None, private: false });
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: ok, ext: None, private: false });
}

fn visibility_case(v: Visibility) {
    let s = enabled(|p| p.visibility = v);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let mut dave = RawClient::login(a, "dave", "d1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let id = alice.send_msg_opts(&g, ChatType::GroupChat, "q", false, true).unwrap().0;
    carol.settle();
    bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: false });
    let fetch = |req| ClientFrame::FetchGroupAcks { req, msg_id: id, page_size: 10, start_ack_id: None };
    // The sender always sees them.
    assert!(matches!(alice.expect_ok(fetch), Response::GroupAcks { page, .. } if page.data.len() == 1));
    alice.event_matching(|e| matches!(e, ServerEvent::GroupRead { .. }));
    let carol_events = carol.settle();
    let carol_saw = carol_events.iter().any(|e| matches!(e, ServerEvent::GroupRead { .. }));
    dave.expect_err(ErrorCode::GroupPermissionDenied, fetch);
    match v {
        Visibility::SenderOnly => {
            carol.expect_err(ErrorCode::GroupPermissionDenied, fetch);
            assert!(!carol_saw, "{carol_events:?}");
        }
        Visibility::AllMembers => {
            assert!(matches!(carol.expect_ok(fetch), Response::GroupAcks { page, .. } if page.data.len() == 1));
            assert!(carol_saw, "{carol_events:?}");
        }
    }
}

#[test]
fn group_ack_visibility_sender_only() {
    visibility_case(Visibility::SenderOnly);
}

#[test]
fn group_ack_visibility_all_members() {
    visibility_case(Visibility::AllMembers);
}

#[test]
fn fetch_group_acks_pages_newest_first_with_a_cursor() {
    let s = enabled(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let members: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let g = create_group(&mut alice, &refs);
    let id = alice.send_msg_opts(&g, ChatType::GroupChat, "count me", false, true).unwrap().0;
    for m in &members {
        let mut c = RawClient::login(a, m, "d");
        c.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: false });
    }
    for bad in [0, 101] {
        alice.expect_err(ErrorCode::InvalidParam, |req| ClientFrame::FetchGroupAcks {
            req,
            msg_id: id,
            page_size: bad,
            start_ack_id: None,
        });
    }
    alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::FetchGroupAcks { req, msg_id: 4242, page_size: 5, start_ack_id: None });
    let mut all = Vec::new();
    let mut start = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 10);
        let Response::GroupAcks { page, .. } =
            alice.expect_ok(|req| ClientFrame::FetchGroupAcks { req, msg_id: id, page_size: 5, start_ack_id: start })
        else {
            panic!()
        };
        assert!(page.data.len() <= 5);
        all.extend(page.data.clone());
        if page.cursor.is_empty() {
            break;
        }
        let next: u64 = page.cursor.parse().unwrap();
        // The cursor is the next (older) ack, and the next page starts at it.
        assert!(next < page.data.last().unwrap().ack_id);
        start = Some(next);
    }
    assert_eq!(pages, 3);
    assert_eq!(all.len(), 12);
    assert!(all.windows(2).all(|w| w[0].ack_id > w[1].ack_id), "newest first");
    let counts: Vec<u32> = all.iter().map(|a| a.count).collect();
    assert_eq!(counts, (1..=12).rev().collect::<Vec<_>>());
    let mut who: Vec<String> = all.iter().map(|a| a.from.clone()).collect();
    who.sort();
    assert_eq!(who, members);
}

#[test]
fn offline_backlog_arrives_in_order_exactly_once() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let ids: Vec<MsgId> = (0..250).map(|i| alice.send_msg("bob", ChatType::Chat, &format!("m{i}"))).collect();
    let bob = RawClient::login(a, "bob", "b1");
    let got: Vec<MsgId> = bob
        .backlog
        .iter()
        .map(|e| match &*e.event {
            ServerEvent::Message { msg } => msg.id,
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(got, ids);
    let seqs: Vec<Seq> = bob.backlog.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=250).collect::<Vec<_>>());
    assert_eq!(bob.head, 250);
    assert_eq!(bob.unread(ChatType::Chat, "alice"), 250);
    // From a cursor: only what is after it.
    let bob2 = RawClient::login_since(a, "bob", "b2", 240);
    assert_eq!(bob2.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), (241..=250).collect::<Vec<_>>());
    let mut bob3 = RawClient::login_since(a, "bob", "b3", 250);
    assert!(bob3.backlog.is_empty());
    // Then live, continuing the sequence.
    alice.send_msg("bob", ChatType::Chat, "live");
    assert_eq!(bob3.next_seq_event().seq, 251);
}

#[test]
fn login_backlog_and_live_stream_have_no_gap_or_duplicate() {
    // A sender hammers while the receiver logs in repeatedly: backlog + live must be exactly
    // the seqs 1..=head with no hole and no repeat.
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let sender = std::thread::spawn(move || {
        let mut alice = RawClient::login(a, "alice", "a1");
        for i in 0..300 {
            alice.send_msg("bob", ChatType::Chat, &format!("m{i}"));
        }
    });
    let mut cursor = 0;
    for _ in 0..6 {
        let mut bob = RawClient::login_since(a, "bob", "b1", cursor);
        let mut seqs: Vec<Seq> = bob.backlog.iter().map(|e| e.seq).collect();
        for _ in 0..20 {
            match bob.recv(Duration::from_millis(20)) {
                Some(ServerFrame::Event { event }) => seqs.push(event.seq),
                Some(f) => panic!("{f:?}"),
                None => break,
            }
        }
        let expect: Vec<Seq> = (cursor + 1..=cursor + seqs.len() as u64).collect();
        assert_eq!(seqs, expect);
        cursor += seqs.len() as u64;
    }
    sender.join().unwrap();
    let bob = RawClient::login_since(a, "bob", "b1", cursor);
    let seqs: Vec<Seq> = bob.backlog.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (cursor + 1..=300).collect::<Vec<_>>());
}

#[test]
fn live_events_fan_out_to_every_device() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut a1 = RawClient::login(a, "alice", "a1");
    let mut a2 = RawClient::login(a, "alice", "a2");
    let mut b1 = RawClient::login(a, "bob", "b1");
    let mut b2 = RawClient::login(a, "bob", "b2");
    let id = a1.send_msg("bob", ChatType::Chat, "hello");
    // Every device, except that the sending device gets the answer instead of its own echo.
    for c in [&mut b1, &mut b2, &mut a2] {
        let e = c.next_seq_event();
        assert!(matches!(&*e.event, ServerEvent::Message { msg } if msg.id == id), "{e:?}");
    }
    b2.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: id, private: false });
    for c in [&mut a1, &mut a2, &mut b1] {
        assert!(matches!(c.next_event(), ServerEvent::Read { msg_id, .. } if msg_id == id));
    }
    assert!(b2.settle().is_empty(), "the acking device gets its answer, not its own echo");
    // Mark-read is own state only: bob's other device hears it, alice does not.
    let id2 = a1.send_msg("bob", ChatType::Chat, "again");
    for c in [&mut a2, &mut b1, &mut b2] {
        c.next_event();
    }
    assert!(a1.settle().is_empty());
    b1.expect_ok(|req| ClientFrame::MarkRead { req, chat_type: ChatType::Chat, conversation: "alice".into(), msg_id: Some(id2) });
    assert!(matches!(b2.next_event(), ServerEvent::ReadState { msg_id: Some(m), .. } if m == id2));
    assert!(a1.settle().is_empty());
}

#[test]
fn sync_done_carries_unread_counts() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let g = create_group(&mut carol, &["bob", "alice"]);
    let m: Vec<MsgId> = (0..4).map(|i| alice.send_msg("bob", ChatType::Chat, &format!("{i}"))).collect();
    carol.send_msg("bob", ChatType::Chat, "from carol");
    carol.send_msg(&g, ChatType::GroupChat, "g1");
    carol.send_msg(&g, ChatType::GroupChat, "g2");
    let mut bob = RawClient::login(a, "bob", "b1");
    assert_eq!(bob.unread(ChatType::Chat, "alice"), 4);
    assert_eq!(bob.unread(ChatType::Chat, "carol"), 1);
    assert_eq!(bob.unread(ChatType::GroupChat, &g), 2);
    bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: m[1], private: false });
    bob.expect_ok(|req| ClientFrame::MarkRead { req, chat_type: ChatType::Chat, conversation: "alice".into(), msg_id: Some(m[3]) });
    bob.expect_ok(|req| ClientFrame::MarkRead { req, chat_type: ChatType::GroupChat, conversation: g.clone(), msg_id: None });
    // A message bob did not receive cannot be marked.
    bob.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::MarkRead {
        req,
        chat_type: ChatType::Chat,
        conversation: "alice".into(),
        msg_id: Some(9999),
    });
    let bob2 = RawClient::login(a, "bob", "b2");
    assert_eq!(bob2.unread(ChatType::Chat, "alice"), 2);
    assert_eq!(bob2.unread(ChatType::Chat, "carol"), 1);
    assert_eq!(bob2.unread(ChatType::GroupChat, &g), 0);
    // Senders have no unread for their own messages.
    assert_eq!(RawClient::login(a, "alice", "a2").unread(ChatType::Chat, "bob"), 0);
}

#[test]
fn send_rules_and_idempotent_resend() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let send = |client_id: &str, to: &str, chat_type: ChatType, content: &str| {
        let (client_id, to, content) = (client_id.to_string(), to.to_string(), content.to_string());
        move |req| plain_send(req, client_id, to, chat_type, content)
    };
    alice.expect_err(ErrorCode::InvalidParam, send("c1", "bob", ChatType::Chat, ""));
    alice.expect_err(ErrorCode::InvalidParam, send("c1", "bob", ChatType::Chat, &"x".repeat(MAX_CONTENT_BYTES + 1)));
    alice.expect_err(ErrorCode::InvalidParam, send("", "bob", ChatType::Chat, "x"));
    alice.expect_err(ErrorCode::GroupInvalidId, send("c1", "nogroup", ChatType::GroupChat, "x"));
    let g = create_group(&mut bob, &["carol"]);
    alice.expect_err(ErrorCode::GroupNotJoined, send("c1", &g, ChatType::GroupChat, "x"));
    let first = alice.expect_ok(send("same", "bob", ChatType::Chat, "once"));
    let again = alice.expect_ok(send("same", "bob", ChatType::Chat, "once"));
    assert_eq!(first, again);
    let evs = bob.settle();
    assert_eq!(evs.iter().filter(|e| matches!(e, ServerEvent::Message { .. })).count(), 1, "{evs:?}");
}

#[test]
fn group_management_through_the_protocol() {
    let s = TestServer::start(|c| c.max_group_size = 4);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut carol = RawClient::login(a, "carol", "c1");
    alice.expect_err(ErrorCode::GroupMembersFull, |req| ClientFrame::CreateGroup {
        req,
        name: "big".into(),
        members: vec!["b".into(), "c".into(), "d".into(), "e".into()],
        chat_room: false,
    });
    let g = create_group(&mut alice, &["bob"]);
    assert!(matches!(bob.next_event(), ServerEvent::Membership { group, role: Some(GroupRole::Member), .. } if group == g));
    bob.expect_err(ErrorCode::GroupPermissionDenied, |req| ClientFrame::AddMembers {
        req,
        group: g.clone(),
        members: vec!["carol".into()],
    });
    carol.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::AddMembers { req, group: g.clone(), members: vec!["carol".into()] });
    alice.expect_err(ErrorCode::GroupInvalidId, |req| ClientFrame::AddMembers { req, group: "g999".into(), members: vec!["carol".into()] });
    alice.expect_ok(|req| ClientFrame::SetRole { req, group: g.clone(), member: "bob".into(), role: GroupRole::Admin });
    assert!(matches!(bob.next_event(), ServerEvent::Membership { role: Some(GroupRole::Admin), .. }));
    bob.expect_ok(|req| ClientFrame::AddMembers { req, group: g.clone(), members: vec!["carol".into(), "dave".into()] });
    assert!(matches!(carol.next_event(), ServerEvent::Membership { role: Some(GroupRole::Member), .. }));
    bob.expect_err(ErrorCode::GroupMembersFull, |req| ClientFrame::AddMembers { req, group: g.clone(), members: vec!["erin".into()] });
    bob.expect_err(ErrorCode::GroupPermissionDenied, |req| ClientFrame::SetRole {
        req,
        group: g.clone(),
        member: "carol".into(),
        role: GroupRole::Admin,
    });
    bob.expect_err(ErrorCode::GroupPermissionDenied, |req| ClientFrame::RemoveMembers {
        req,
        group: g.clone(),
        members: vec!["alice".into()],
    });
    bob.expect_ok(|req| ClientFrame::RemoveMembers { req, group: g.clone(), members: vec!["carol".into()] });
    assert!(matches!(carol.next_event(), ServerEvent::Membership { role: None, .. }));
    carol.expect_err(ErrorCode::GroupNotJoined, |req| plain_send(req, "x", g.clone(), ChatType::GroupChat, "x"));
    // Chat rooms: their own chat type; no acks of any kind.
    let Response::GroupCreated { group: room } =
        alice.expect_ok(|req| ClientFrame::CreateGroup { req, name: "room".into(), members: vec!["bob".into()], chat_room: true })
    else {
        panic!()
    };
    let rm = alice.send_msg(&room, ChatType::ChatRoom, "room msg");
    alice.expect_err(ErrorCode::InvalidParam, |req| plain_send(req, "wrong-type", room.clone(), ChatType::GroupChat, "x"));
    bob.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::ReadAck { req, msg_id: rm, private: false });
    bob.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::GroupAck { req, msg_id: rm, ext: None, private: false });
}

#[test]
fn ping_pong_and_idle_timeout() {
    let s = TestServer::start(|c| c.idle_timeout_secs = 1);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    alice.send(&ClientFrame::Ping { nonce: 77 });
    assert_eq!(alice.recv_required(), ServerFrame::Pong { nonce: 77 });
    let frames = alice.until_closed();
    assert!(matches!(frames.as_slice(), [ServerFrame::Error { .. }]), "{frames:?}");
    // Silent unauthenticated connections are closed too.
    let mut raw = RawClient::connect(a);
    raw.until_closed();
}

#[test]
fn requests_pipelined_after_login_are_handled_in_order() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut c = RawClient::connect(a);
    c.user = "alice".into();
    let mut bytes =
        encode(&ClientFrame::Login { v: PROTOCOL_VERSION, user: "alice".into(), device: "a1".into(), token: token("alice"), since: 0 });
    for i in 0..20u64 {
        bytes.extend(encode(&plain_send(100 + i, format!("p{i}"), "bob", ChatType::Chat, format!("{i}"))));
    }
    c.send_raw(&bytes);
    assert!(matches!(c.recv_required(), ServerFrame::LoginOk { .. }));
    c.read_sync();
    let mut last = 0;
    for i in 0..20u64 {
        match c.wait_result(100 + i).unwrap() {
            Response::Sent { msg_id, .. } => {
                assert!(msg_id > last);
                last = msg_id;
            }
            r => panic!("{r:?}"),
        }
    }
}

#[test]
fn a_slow_reader_is_dropped_and_loses_nothing() {
    let s = TestServer::start(|c| c.outbound_queue = 16);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    // bob logs in and never reads.
    let mut slow = RawClient::login(a, "bob", "slow");
    let big = "x".repeat(60 * 1024);
    let n = 300; // ~18 MB: far more than the socket buffers hold
    let start = std::time::Instant::now();
    for _ in 0..n {
        alice.send_msg("bob", ChatType::Chat, &big);
    }
    // 60 s: these 18 MB take 5 s on glibc but 15 to 21 s on x86_64-ohos (musl) on a loaded
    // machine. A core blocked by the reader would hold each send past WAIT, or everything until
    // the 120 s idle timeout, so 60 s still tells the two apart.
    assert!(start.elapsed() < Duration::from_secs(60), "the core was blocked by the slow reader");
    // The slow connection was dropped: reading it ends in a close.
    let mut closed = false;
    for _ in 0..2000 {
        match slow.recv(Duration::from_millis(500)) {
            Some(_) => {}
            None => {
                closed = slow.closed;
                break;
            }
        }
    }
    assert!(closed, "slow connection still open");
    let bob = RawClient::login(a, "bob", "slow");
    assert_eq!(bob.backlog.len(), n);
}

#[test]
fn token_refusals_carry_the_sdk_codes_at_login_and_at_renew() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expired = auth::make_token(SECRET, "alice", now - 1);
    // The expired token's signature on a payload with a later expiry: the signature no longer
    // matches, so the answer is 202 and says nothing about the expiry.
    let later = auth::make_token(SECRET, "alice", now + 3600);
    let parts: Vec<&str> = expired.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], later.split('.').nth(1).unwrap(), parts[2]);
    let cases = [
        ("1234.zz".to_string(), ErrorCode::InvalidToken),
        // The old `<expiry>.<hex mac>` format is no token any more.
        (format!("{}.{}", now + 3600, "ab".repeat(32)), ErrorCode::InvalidToken),
        ("no-dot".to_string(), ErrorCode::InvalidToken),
        (String::new(), ErrorCode::InvalidToken),
        (expired.clone(), ErrorCode::TokenExpired),
        (forged.clone(), ErrorCode::UserAuthenticationFailed),
        (auth::make_token("other-secret", "alice", now - 1), ErrorCode::UserAuthenticationFailed),
    ];
    for (tok, code) in &cases {
        let e = refused(a, login_frame("alice", tok.clone(), PROTOCOL_VERSION));
        assert_eq!(e.code, *code, "login with {tok:?}: {e}");
    }
    // The same codes at RenewToken, on a live session that goes on after each refusal.
    let mut alice = RawClient::login(a, "alice", "d1");
    for (tok, code) in &cases {
        alice.expect_err(*code, |req| ClientFrame::RenewToken { req, token: tok.clone() });
    }
    alice.expect_ok(|req| ClientFrame::RenewToken { req, token: token("alice") });
}
