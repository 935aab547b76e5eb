//! Private reading (docs/product.md, "Private reading"): a private ack changes the reader's own
//! read state (unread count, own devices, offline ones at sync) and tells the sender nothing;
//! a later public ack does. Against a real server over loopback.

use receipt_core::protocol::*;
use receipt_core::*;
use receipt_testkit::raw::*;
use receipt_testkit::*;

fn read_ack(msg_id: MsgId, private: bool) -> impl FnOnce(ReqId) -> ClientFrame {
    move |req| ClientFrame::ReadAck { req, msg_id, private }
}

fn is_receipt(e: &ServerEvent) -> bool {
    matches!(e, ServerEvent::Read { .. } | ServerEvent::ConversationRead { .. } | ServerEvent::GroupRead { .. })
}

#[test]
fn a_private_read_ack_tells_the_sender_nothing_and_syncs_own_devices() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut phone = RawClient::login(a, "bob", "phone");
    let mut tablet = RawClient::login(a, "bob", "tablet");
    let id = alice.send_msg("bob", ChatType::Chat, "hi");
    let _ = alice.send_msg("bob", ChatType::Chat, "two");
    phone.settle();
    tablet.settle();

    phone.expect_ok(read_ack(id, true));
    // The own second device hears the read state; the sender hears nothing.
    match tablet.event_matching(|e| matches!(e, ServerEvent::ReadState { .. })) {
        ServerEvent::ReadState { chat_type, conversation, msg_id, .. } => {
            assert_eq!((chat_type, conversation.as_str(), msg_id), (ChatType::Chat, "alice", Some(id)));
        }
        e => panic!("{e:?}"),
    }
    assert!(alice.settle().is_empty(), "the sender is told nothing");
    // Idempotent: a second private ack changes nothing and reaches nobody.
    phone.expect_ok(read_ack(id, true));
    assert!(tablet.settle().is_empty());
    assert!(alice.settle().is_empty());

    // The server's unread count dropped (a fresh device sees 1 of 2), and the sender's copy is
    // not read: a fresh login of alice replays no Read event.
    let fresh = RawClient::login(a, "bob", "laptop");
    assert_eq!(fresh.unread(ChatType::Chat, "alice"), 1);
    let alice2 = RawClient::login(a, "alice", "a2");
    assert!(!alice2.backlog.iter().any(|e| is_receipt(&e.event)), "{:?}", alice2.backlog);
}

#[test]
fn private_then_public_tells_the_sender_once_and_public_then_private_changes_nothing() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let id = alice.send_msg("bob", ChatType::Chat, "hi");
    let id2 = alice.send_msg("bob", ChatType::Chat, "hi again");
    bob.settle();

    bob.expect_ok(read_ack(id, true));
    assert!(alice.settle().is_empty());
    // The mode switched off: the public ack of a message read privately is a receipt.
    bob.expect_ok(read_ack(id, false));
    bob.expect_ok(read_ack(id, false));
    let evs = alice.settle();
    assert_eq!(evs.iter().filter(|e| matches!(e, ServerEvent::Read { msg_id, .. } if *msg_id == id)).count(), 1, "{evs:?}");

    // Public first, then private: nothing more for anybody.
    bob.expect_ok(read_ack(id2, false));
    assert_eq!(alice.settle().len(), 1);
    bob.expect_ok(read_ack(id2, true));
    assert!(alice.settle().is_empty());
    assert!(bob.settle().is_empty(), "no ReadState after a receipt");
}

#[test]
fn private_acks_are_checked_like_acks() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let id = alice.send_msg("bob", ChatType::Chat, "hi");
    carol.expect_err(ErrorCode::MessageInvalid, read_ack(id, true));
    alice.expect_err(ErrorCode::MessageInvalid, read_ack(id, true));
    bob.expect_err(ErrorCode::MessageInvalid, read_ack(9_999, true));
    // A batch with a foreign id: that id fails, the other is read privately.
    let items =
        match bob.expect_ok(|req| ClientFrame::ReadAcks { req, conversation: "alice".into(), msg_ids: vec![id, 9_999], private: true }) {
            Response::ReadAcks { items } => items,
            r => panic!("{r:?}"),
        };
    assert_eq!(items[0].err, None);
    assert_eq!(items[1].err.as_ref().map(|e| e.code), Some(ErrorCode::MessageInvalid));
    assert!(alice.settle().is_empty(), "a private batch tells the sender nothing");
    assert!(carol.settle().is_empty());
}

#[test]
fn a_private_conversation_ack_clears_own_unread_and_a_public_one_still_tells_the_peer() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut bob2 = RawClient::login(a, "bob", "b2");
    for i in 0..3 {
        alice.send_msg("bob", ChatType::Chat, &format!("m{i}"));
    }
    bob.settle();
    bob2.settle();
    let conv_ack =
        |private| move |req| ClientFrame::ConversationAck { req, chat_type: ChatType::Chat, conversation: "alice".into(), private };
    bob.expect_ok(conv_ack(true));
    assert!(alice.settle().is_empty(), "the peer is told nothing");
    let evs = bob2.settle();
    assert!(matches!(evs.as_slice(), [ServerEvent::ReadState { msg_id: None, .. }]), "{evs:?}");
    assert_eq!(RawClient::login(a, "bob", "b3").unread(ChatType::Chat, "alice"), 0);
    bob.expect_ok(conv_ack(true));
    assert!(bob2.settle().is_empty(), "idempotent");
    // Now public: the peer hears onConversationRead once.
    bob.expect_ok(conv_ack(false));
    bob.expect_ok(conv_ack(false));
    let evs = alice.settle();
    assert_eq!(evs.iter().filter(|e| matches!(e, ServerEvent::ConversationRead { .. })).count(), 1, "{evs:?}");
}

#[test]
fn an_offline_own_device_gets_the_private_read_at_its_sync() {
    let s = TestServer::start(|_| {});
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let tablet = RawClient::login(a, "bob", "tablet");
    let head = tablet.head;
    drop(tablet);
    let id = alice.send_msg("bob", ChatType::Chat, "hi");
    let mut phone = RawClient::login(a, "bob", "phone");
    phone.expect_ok(read_ack(id, true));
    let tablet = RawClient::login_since(a, "bob", "tablet", head);
    let read = tablet.backlog.iter().any(|e| matches!(&*e.event, ServerEvent::ReadState { msg_id: Some(m), .. } if *m == id));
    assert!(read, "{:?}", tablet.backlog);
    assert_eq!(tablet.unread(ChatType::Chat, "alice"), 0);
}

#[test]
fn a_private_group_ack_leaves_the_count_and_the_lists_alone() {
    let s = TestServer::start(|c| c.group_ack.enabled = true);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut bob2 = RawClient::login(a, "bob", "b2");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let (id, _) = alice.send_msg_opts(&g, ChatType::GroupChat, "hi", false, true).unwrap();
    alice.settle();
    bob.settle();
    bob2.settle();
    let group_ack = |private| move |req| ClientFrame::GroupAck { req, msg_id: id, ext: Some("x".into()), private };
    bob.expect_ok(group_ack(true));
    assert!(alice.settle().is_empty(), "the sender is told nothing");
    let evs = bob2.settle();
    assert!(matches!(evs.as_slice(), [ServerEvent::ReadState { msg_id: Some(m), .. }] if *m == id), "{evs:?}");
    let counts = |alice: &mut RawClient| match alice.expect_ok(|req| ClientFrame::FetchGroupAckCounts { req, msg_ids: vec![id] }) {
        Response::GroupAckCounts { items } => items[0].count,
        r => panic!("{r:?}"),
    };
    let unread =
        |alice: &mut RawClient| match alice.expect_ok(|req| ClientFrame::FetchGroupUnread { req, msg_id: id, page_size: 10, cursor: None })
        {
            Response::GroupUnread { page, .. } => page.data,
            r => panic!("{r:?}"),
        };
    let acks = |alice: &mut RawClient| match alice.expect_ok(|req| ClientFrame::FetchGroupAcks {
        req,
        msg_id: id,
        page_size: 10,
        start_ack_id: None,
    }) {
        Response::GroupAcks { page, .. } => page.data.len(),
        r => panic!("{r:?}"),
    };
    assert_eq!(counts(&mut alice), 0);
    assert_eq!(acks(&mut alice), 0);
    assert_eq!(unread(&mut alice), vec!["bob".to_string(), "carol".to_string()], "a private reader is still listed as not read");
    assert_eq!(RawClient::login(a, "bob", "b3").unread(ChatType::GroupChat, &g), 0, "own unread count dropped");
    // The same checks as an ack: the sender cannot ack their own message, privately or not.
    alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::GroupAck { req, msg_id: id, ext: None, private: true });
    // Then public: counted once.
    bob.expect_ok(group_ack(false));
    bob.expect_ok(group_ack(true));
    assert_eq!(counts(&mut alice), 1);
    assert_eq!(unread(&mut alice), vec!["carol".to_string()]);
}

#[test]
fn a_version_2_client_still_logs_in() {
    let s = TestServer::start(|_| {});
    let mut c = RawClient::connect(s.addr());
    c.send(&ClientFrame::Login { v: 2, user: "bob".into(), device: "d".into(), token: token("bob"), since: 0 });
    assert!(matches!(c.recv_required(), ServerFrame::LoginOk { .. }));
}
