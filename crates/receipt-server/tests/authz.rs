//! The authorization matrix (issue 7), one test per row, over the raw protocol against a real
//! server: what a hostile client can send even when the SDK would refuse it locally. Each
//! refusal carries the SDK's code (docs/errors.md) and changes nothing: the other side hears nothing and
//! the server's state (unread counts, ack lists, logs) is as before.

use std::net::SocketAddr;

use receipt_core::codec::encode_into;
use receipt_core::protocol::*;
use receipt_core::*;
use receipt_server::{auth, WhoMayRequest};
use receipt_testkit::raw::*;
use receipt_testkit::*;

fn acks_of(sender: &mut RawClient, msg_id: MsgId) -> usize {
    match sender.expect_ok(|req| ClientFrame::FetchGroupAcks { req, msg_id, page_size: 100, start_ack_id: None }) {
        Response::GroupAcks { page, .. } => page.data.len(),
        r => panic!("{r:?}"),
    }
}

/// alice, bob, carol, dave online; a group of alice (owner), bob, carol with acks enabled;
/// alice's 1:1 message to bob and her group message asking for acks.
struct World {
    _s: TestServer,
    a: SocketAddr,
    alice: RawClient,
    bob: RawClient,
    carol: RawClient,
    dave: RawClient,
    g: GroupId,
    one: MsgId,
    gm: MsgId,
}

fn world(f: impl FnOnce(&mut receipt_server::ServerConfig)) -> World {
    let s = TestServer::start(|c| {
        c.group_ack.enabled = true;
        f(c)
    });
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let mut dave = RawClient::login(a, "dave", "d1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let one = alice.send_msg("bob", ChatType::Chat, "for bob");
    let gm = alice.send_msg_opts(&g, ChatType::GroupChat, "ack me", false, true).unwrap().0;
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        c.settle();
    }
    World { _s: s, a, alice, bob, carol, dave, g, one, gm }
}

#[test]
fn row1_ack_of_a_message_not_addressed_to_you_is_500() {
    let mut w = world(|_| {});
    w.carol.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::ReadAck { req, msg_id: w.one, private: false });
    w.carol.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::DeliveryAck { req, msg_id: w.one });
    w.dave.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::MarkRead {
        req,
        chat_type: ChatType::Chat,
        conversation: "alice".into(),
        msg_id: Some(w.one),
    });
    assert!(w.alice.settle().is_empty());
    assert!(w.bob.settle().is_empty());
    // bob's unread is untouched and the message is not read.
    assert_eq!(RawClient::login(w.a, "bob", "probe").unread(ChatType::Chat, "alice"), 1);
    w.bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: w.one, private: false });
    assert!(matches!(w.alice.event_matching(|e| matches!(e, ServerEvent::Read { .. })), ServerEvent::Read { by, .. } if by == "bob"));
}

#[test]
fn row2_group_ack_of_a_group_you_are_not_in_is_602() {
    let mut w = world(|_| {});
    w.dave.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::GroupAck { req, msg_id: w.gm, ext: Some("x".into()), private: false });
    w.dave.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::ConversationAck {
        req,
        chat_type: ChatType::GroupChat,
        conversation: w.g.clone(),
        private: false,
    });
    assert!(w.alice.settle().is_empty());
    assert!(w.carol.settle().is_empty());
    assert_eq!(acks_of(&mut w.alice, w.gm), 0);
}

#[test]
fn row3_ack_of_your_own_message_is_500() {
    let mut w = world(|_| {});
    w.alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::ReadAck { req, msg_id: w.one, private: false });
    w.alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::DeliveryAck { req, msg_id: w.one });
    w.alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::GroupAck { req, msg_id: w.gm, ext: None, private: false });
    assert!(w.bob.settle().is_empty());
    assert!(w.alice.settle().is_empty());
    assert_eq!(acks_of(&mut w.alice, w.gm), 0);
    assert_eq!(RawClient::login(w.a, "bob", "probe").unread(ChatType::Chat, "alice"), 1);
}

#[test]
fn row4_requesting_group_acks_when_only_owner_and_admins_may_is_603() {
    let mut w = world(|c| c.group_ack.who_may_request = WhoMayRequest::OwnerAndAdmins);
    let e = w.bob.send_msg_opts(&w.g, ChatType::GroupChat, "acks please", false, true).unwrap_err();
    assert_eq!(e.code, ErrorCode::GroupPermissionDenied);
    // Not delivered, not counted.
    assert!(w.alice.settle().is_empty());
    assert!(w.carol.settle().is_empty());
    assert_eq!(RawClient::login(w.a, "carol", "probe").unread(ChatType::GroupChat, &w.g), 1);
}

#[test]
fn row5_fetching_another_senders_ack_list_is_603() {
    let mut w = world(|_| {}); // visibility: sender_only
    w.bob.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: w.gm, ext: None, private: false });
    w.alice.settle();
    let fetch = |req| ClientFrame::FetchGroupAcks { req, msg_id: w.gm, page_size: 10, start_ack_id: None };
    w.carol.expect_err(ErrorCode::GroupPermissionDenied, fetch);
    w.bob.expect_err(ErrorCode::GroupPermissionDenied, fetch);
    w.dave.expect_err(ErrorCode::GroupPermissionDenied, fetch);
    assert_eq!(acks_of(&mut w.alice, w.gm), 1);
    assert!(w.alice.settle().is_empty());
}

/// A login refused with `LoginFailed` `code`, its pipelined requests never applied.
fn login_refused(a: SocketAddr, user: &str, token: String, code: ErrorCode) {
    let mut c = RawClient::connect(a);
    // One write: the requests are pipelined behind the refused login, and a second write could
    // race with the server closing the connection.
    let mut bytes = Vec::new();
    encode_into(&ClientFrame::Login { v: PROTOCOL_VERSION, user: user.into(), device: "evil".into(), token, since: 0 }, &mut bytes);
    encode_into(&ClientFrame::ReadAck { req: 1, msg_id: 1, private: false }, &mut bytes);
    encode_into(&plain_send(2, "evil", "carol", ChatType::Chat, "as someone else"), &mut bytes);
    c.send_raw(&bytes);
    match c.until_closed().as_slice() {
        [ServerFrame::LoginFailed { error }] => assert_eq!(error.code, code, "{error}"),
        f => panic!("expected only LoginFailed, got {f:?}"),
    }
}

fn assert_nothing_happened(w: &mut World) {
    assert!(w.alice.settle().is_empty());
    assert!(w.carol.settle().is_empty());
    assert_eq!(RawClient::login(w.a, "bob", "probe").unread(ChatType::Chat, "alice"), 1);
    assert_eq!(RawClient::login(w.a, "carol", "probe").unread(ChatType::Chat, "bob"), 0);
}

#[test]
fn row6_login_with_another_users_token_is_202() {
    let mut w = world(|_| {});
    login_refused(w.a, "bob", token("mallory"), ErrorCode::UserAuthenticationFailed);
    assert_nothing_happened(&mut w);
}

#[test]
fn row7_login_with_an_expired_token_is_108() {
    let mut w = world(|_| {});
    login_refused(
        w.a,
        "bob",
        auth::make_token(SECRET, "bob", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 1),
        ErrorCode::TokenExpired,
    );
    assert_nothing_happened(&mut w);
}

#[test]
fn row8_login_with_a_token_signed_with_another_secret_is_202() {
    let mut w = world(|_| {});
    login_refused(w.a, "bob", auth::token_for("not-the-server-secret", "bob", 3600), ErrorCode::UserAuthenticationFailed);
    assert_nothing_happened(&mut w);
}

#[test]
fn row9_a_removed_member_acking_afterwards_is_602() {
    let mut w = world(|_| {});
    w.alice.expect_ok(|req| ClientFrame::RemoveMembers { req, group: w.g.clone(), members: vec!["bob".into()] });
    w.bob.event_matching(|e| matches!(e, ServerEvent::Membership { role: None, .. }));
    w.alice.settle();
    w.carol.settle();
    w.bob.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::GroupAck { req, msg_id: w.gm, ext: None, private: false });
    w.bob.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::ConversationAck {
        req,
        chat_type: ChatType::GroupChat,
        conversation: w.g.clone(),
        private: false,
    });
    assert!(w.alice.settle().is_empty());
    assert!(w.carol.settle().is_empty());
    assert_eq!(acks_of(&mut w.alice, w.gm), 0);
    // carol (still a member) may.
    w.carol.expect_ok(|req| ClientFrame::GroupAck { req, msg_id: w.gm, ext: None, private: false });
    assert_eq!(acks_of(&mut w.alice, w.gm), 1);
}
