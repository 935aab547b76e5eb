//! Group delivery receipts end to end against a real server (redb store, loopback): a group
//! message that asks (`require_delivery_ack` on a group message) is acked by each member's
//! device on its own, backlog included; the sender sees the count and pages the list; the
//! policy switches are the read acks' (`[group_delivery_ack]`); hostile requests are refused
//! with the SDK's codes.

use std::time::Duration;

use receipt_client::{ClientEvent, Completion};
use receipt_core::protocol::*;
use receipt_core::*;
use receipt_server::{ServerConfig, Visibility, WhoMayRequest};
use receipt_testkit::raw::*;
use receipt_testkit::*;

/// A server with group delivery acks on, adjusted by `f`.
fn server(f: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start(|c| {
        c.group_delivery_ack.enabled = true;
        f(c);
    })
}

/// Sends a group message asking for delivery acks (raw); returns (id, whether the server kept
/// the request).
fn send_asking(c: &mut RawClient, group: &str) -> Result<(MsgId, bool), ChatError> {
    let user = c.user.clone();
    match c.request(|req| ClientFrame::Send {
        req,
        client_id: format!("gd-{req}-{user}"),
        to: group.into(),
        chat_type: ChatType::GroupChat,
        content: "did you get it?".into(),
        require_delivery_ack: true,
        need_group_ack: false,
    })? {
        Response::Sent { msg_id, require_delivery_ack, .. } => Ok((msg_id, require_delivery_ack)),
        r => panic!("expected Sent, got {r:?}"),
    }
}

fn page(c: &mut RawClient, msg_id: MsgId, page_size: u32, start_ack_id: Option<AckId>) -> Result<CursorResult<GroupReadAck>, ChatError> {
    match c.request(|req| ClientFrame::FetchGroupDeliveryAcks { req, msg_id, page_size, start_ack_id })? {
        Response::GroupAcks { page, .. } => Ok(page),
        r => panic!("expected GroupAcks, got {r:?}"),
    }
}

fn deliveries(d: &Device) -> Vec<GroupReadAck> {
    d.wait("onGroupMessageDelivered", |e| match e {
        ClientEvent::GroupMessageDelivered(a) => Some(a.clone()),
        _ => None,
    })
}

fn sent_message(d: &Device, req: ReqId) -> ChatMessage {
    match d.ok(req) {
        Completion::Sent(m) => m,
        c => panic!("expected Sent, got {c:?}"),
    }
}

#[test]
fn online_members_ack_on_receipt_an_offline_member_at_login_and_the_sender_pages_the_list() {
    let s = server(|_| {});
    let port = s.port();
    let alice = Device::online("alice/a1", ChatOptions::default(), port);
    let bob = Device::online("bob/b1", ChatOptions::default(), port);
    let carol = Device::new("carol/c1", ChatOptions::default(), port);
    let g = alice.create_group(&["bob", "carol"], false);
    let (req, _) = alice.client.send_text_asking(&g, ChatType::GroupChat, "hello group", false, true).unwrap();
    let sent = sent_message(&alice, req);
    assert!(sent.require_delivery_ack, "the server kept the request: {sent:?}");
    // Bob's device acks by itself on receipt.
    let got = bob.received(1);
    assert_eq!(got[0].id, sent.id);
    let acks = deliveries(&alice);
    assert_eq!((acks[0].from.as_str(), acks[0].count, acks[0].msg_id), ("bob", 1, sent.id));
    assert_eq!(acks[0].content, None);
    alice.wait_until("delivered count 1", |d| d.msg(sent.id).group_delivered_count == 1);
    bob.wait_until("bob's ack went out", |d| d.msg(sent.id).delivered && d.outbox() == 0);
    // Carol was offline: her device acks the backlog at login.
    carol.login();
    let acks = deliveries(&alice);
    assert_eq!((acks[0].from.as_str(), acks[0].count), ("carol", 2));
    alice.wait_until("delivered count 2", |d| d.msg(sent.id).group_delivered_count == 2);
    // The sender never acks its own message; nobody acks twice.
    assert_eq!(alice.outbox(), 0);
    alice.hears_nothing("a third delivery", |e| matches!(e, ClientEvent::GroupMessageDelivered(_)));
    // The list, a page at a time, newest first.
    let req = alice.client.fetch_group_delivery_acks(sent.id, 1, None).unwrap();
    let Completion::GroupAcks(p1) = alice.ok(req) else { panic!() };
    assert_eq!(p1.data.iter().map(|a| a.from.as_str()).collect::<Vec<_>>(), ["carol"]);
    assert!(!p1.cursor.is_empty());
    let req = alice.client.fetch_group_delivery_acks(sent.id, 1, Some(p1.cursor.parse().unwrap())).unwrap();
    let Completion::GroupAcks(p2) = alice.ok(req) else { panic!() };
    assert_eq!(p2.data.iter().map(|a| a.from.as_str()).collect::<Vec<_>>(), ["bob"]);
    assert!(p2.cursor.is_empty(), "the last page");
    // Delivery acks are not read acks: nobody read it.
    let req = alice.client.fetch_group_read_acks(sent.id, 10, None).unwrap();
    let Completion::GroupAcks(reads) = alice.ok(req) else { panic!() };
    assert!(reads.data.is_empty());
    // A member is not the sender: the list is not theirs to see (sender only by default).
    let req = bob.client.fetch_group_delivery_acks(sent.id, 10, None).unwrap();
    bob.refused(req, ErrorCode::GroupPermissionDenied);
    // Page sizes out of bounds are refused before anything is sent.
    for bad in [0, 101] {
        expect_err(alice.client.fetch_group_delivery_acks(sent.id, bad, None), ErrorCode::InvalidParam);
    }
}

#[test]
fn a_message_that_does_not_ask_gets_no_delivery_acks() {
    let s = server(|_| {});
    let port = s.port();
    let alice = Device::online("alice/a1", ChatOptions { require_delivery_ack: true, ..Default::default() }, port);
    let bob = Device::online("bob/b1", ChatOptions::default(), port);
    let g = alice.create_group(&["bob"], false);
    // Rule 1 stays the default: a group message that does not ask, even from a client whose
    // options ask for 1:1 delivery acks.
    let sent = alice.send(&g, ChatType::GroupChat, "plain", true);
    assert!(!sent.require_delivery_ack);
    bob.received(1);
    bob.hears_nothing("a delivery", |e| matches!(e, ClientEvent::GroupMessageDelivered(_)));
    assert_eq!(bob.outbox(), 0, "no delivery ack queued");
    alice.hears_nothing("a delivery", |e| matches!(e, ClientEvent::GroupMessageDelivered(_) | ClientEvent::MessagesDelivered(_)));
    let req = alice.client.fetch_group_delivery_acks(sent.id, 10, None).unwrap();
    let Completion::GroupAcks(p) = alice.ok(req) else { panic!() };
    assert!(p.data.is_empty());
}

#[test]
fn with_the_feature_off_the_request_is_dropped_and_a_delivery_ack_refused() {
    let s = TestServer::start(|_| {});
    assert!(!s.config.group_delivery_ack.enabled, "off by default");
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let g = create_group(&mut alice, &["bob"]);
    // The message goes out without the request (the flag predates the feature: docs/protocol.md).
    let (id, kept) = send_asking(&mut alice, &g).unwrap();
    assert!(!kept);
    let m = bob.event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == id));
    assert!(matches!(m, ServerEvent::Message { msg } if !msg.require_delivery_ack));
    let e = bob.expect_err(ErrorCode::ServiceNotEnabled, |req| ClientFrame::DeliveryAck { req, msg_id: id });
    assert!(e.description.contains("delivery"), "{e}");
    alice.sync_ping();
    assert!(!alice.events.iter().any(|e| matches!(&*e.event, ServerEvent::GroupDelivered { .. })));
}

#[test]
fn hostile_delivery_acks_and_fetches_get_the_sdks_codes() {
    let s = server(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap()));
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let mut dave = RawClient::login(a, "dave", "d1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let other = create_group(&mut dave, &["carol"]);
    let (id, kept) = send_asking(&mut alice, &g).unwrap();
    assert!(kept);
    let (foreign, _) = send_asking(&mut dave, &other).unwrap();
    // Unknown id: 500.
    bob.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::DeliveryAck { req, msg_id: 4242 });
    alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::FetchGroupDeliveryAcks {
        req,
        msg_id: 4242,
        page_size: 5,
        start_ack_id: None,
    });
    // A message of another group: not a member there (602); not the sender of it (603).
    bob.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::DeliveryAck { req, msg_id: foreign });
    alice.expect_err(ErrorCode::GroupPermissionDenied, |req| ClientFrame::FetchGroupDeliveryAcks {
        req,
        msg_id: foreign,
        page_size: 5,
        start_ack_id: None,
    });
    // The sender's own message: 500.
    alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::DeliveryAck { req, msg_id: id });
    // A 1:1 message has no group delivery list: 500.
    let one = alice.send_msg("bob", ChatType::Chat, "1:1");
    alice.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::FetchGroupDeliveryAcks {
        req,
        msg_id: one,
        page_size: 5,
        start_ack_id: None,
    });
    // Over-long (and empty) pages: 110.
    for bad in [0, 101, u32::MAX] {
        alice.expect_err(ErrorCode::InvalidParam, |req| ClientFrame::FetchGroupDeliveryAcks {
            req,
            msg_id: id,
            page_size: bad,
            start_ack_id: None,
        });
    }
    // Idempotent: the same member's second ack changes nothing and tells nobody.
    bob.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: id });
    alice.event_matching(|e| matches!(e, ServerEvent::GroupDelivered { ack, .. } if ack.from == "bob" && ack.count == 1));
    bob.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: id });
    alice.sync_ping();
    assert!(!alice.events.iter().any(|e| matches!(&*e.event, ServerEvent::GroupDelivered { .. })), "{:?}", alice.events);
    assert_eq!(page(&mut alice, id, 10, None).unwrap().data.len(), 1);
    // Relayed live once (the repeat relayed nothing), under its own kind.
    let text = receipt_testkit::ops::scrape(s.metrics_addr().expect("metrics listener"));
    assert_eq!(receipt_testkit::ops::sample(&text, r#"receipt_receipts_relayed_total{kind="group_delivered"}"#), Some(1.0), "{text}");
    // A non-member and a member asking for the list (sender only by default): 603.
    dave.expect_err(ErrorCode::GroupPermissionDenied, |req| ClientFrame::FetchGroupDeliveryAcks {
        req,
        msg_id: id,
        page_size: 5,
        start_ack_id: None,
    });
    carol.expect_err(ErrorCode::GroupPermissionDenied, |req| ClientFrame::FetchGroupDeliveryAcks {
        req,
        msg_id: id,
        page_size: 5,
        start_ack_id: None,
    });
    // A member who joined after the message was sent does not ack it (602, as read acks).
    alice.expect_ok(|req| ClientFrame::AddMembers { req, group: g.clone(), members: vec!["erin".into()] });
    let mut erin = RawClient::login(a, "erin", "e1");
    erin.expect_err(ErrorCode::GroupNotJoined, |req| ClientFrame::DeliveryAck { req, msg_id: id });
    assert_eq!(page(&mut alice, id, 10, None).unwrap().data.len(), 1, "nothing changed");
}

#[test]
fn the_policy_switches_are_the_read_acks_under_their_own_section() {
    // Who may ask: owner and admins only.
    let s = server(|c| c.group_delivery_ack.who_may_request = WhoMayRequest::OwnerAndAdmins);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let g = create_group(&mut alice, &["bob"]);
    assert_eq!(send_asking(&mut bob, &g).unwrap_err().code, ErrorCode::GroupPermissionDenied);
    assert!(send_asking(&mut alice, &g).unwrap().1);
    drop(s);

    // Member cap: a larger group's message goes out without the request.
    let s = server(|c| c.group_delivery_ack.member_cap = 2);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let big = create_group(&mut alice, &["bob", "carol"]);
    let (id, kept) = send_asking(&mut alice, &big).unwrap();
    assert!(!kept);
    let m = bob.event_matching(|e| matches!(e, ServerEvent::Message { msg } if msg.id == id));
    assert!(matches!(m, ServerEvent::Message { msg } if !msg.require_delivery_ack));
    bob.expect_err(ErrorCode::ServiceNotEnabled, |req| ClientFrame::DeliveryAck { req, msg_id: id });
    drop(s);

    // Validity: an ack past it is refused with 506.
    let s = server(|c| c.group_delivery_ack.validity_secs = 0);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let g = create_group(&mut alice, &["bob"]);
    let (id, _) = send_asking(&mut alice, &g).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    bob.expect_err(ErrorCode::MessageExpired, |req| ClientFrame::DeliveryAck { req, msg_id: id });
    drop(s);

    // Visibility: every member sees the list and hears the acks; read acks stay sender-only.
    let s = server(|c| c.group_delivery_ack.visibility = Visibility::AllMembers);
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a1");
    let mut bob = RawClient::login(a, "bob", "b1");
    let mut carol = RawClient::login(a, "carol", "c1");
    let g = create_group(&mut alice, &["bob", "carol"]);
    let (id, _) = send_asking(&mut alice, &g).unwrap();
    bob.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: id });
    carol.event_matching(|e| matches!(e, ServerEvent::GroupDelivered { ack, .. } if ack.from == "bob"));
    assert_eq!(page(&mut carol, id, 10, None).unwrap().data.len(), 1);
    carol.expect_err(ErrorCode::GroupPermissionDenied, |req| ClientFrame::FetchGroupAcks {
        req,
        msg_id: id,
        page_size: 5,
        start_ack_id: None,
    });
}

#[test]
fn a_restart_keeps_the_delivered_list_and_count() {
    let mut s = server(|_| {});
    let a = s.addr();
    let (id, g) = {
        let mut alice = RawClient::login(a, "alice", "a1");
        let mut bob = RawClient::login(a, "bob", "b1");
        let g = create_group(&mut alice, &["bob", "carol", "dave"]);
        let (id, _) = send_asking(&mut alice, &g).unwrap();
        bob.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: id });
        (id, g)
    };
    s.restart();
    let a = s.addr();
    let mut alice = RawClient::login(a, "alice", "a2");
    let p = page(&mut alice, id, 10, None).unwrap();
    assert_eq!(p.data.iter().map(|a| (a.from.as_str(), a.count)).collect::<Vec<_>>(), [("bob", 1)]);
    // The count goes on from the stored one; bob's ack is still known (idempotent).
    let mut bob = RawClient::login(a, "bob", "b2");
    bob.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: id });
    let mut carol = RawClient::login(a, "carol", "c1");
    carol.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: id });
    let p = page(&mut alice, id, 10, None).unwrap();
    assert_eq!(p.data.iter().map(|a| (a.from.as_str(), a.count)).collect::<Vec<_>>(), [("carol", 2), ("bob", 1)]);
    let state = s.stop_and_load();
    let rec = &state.messages[&id];
    assert_eq!((rec.delivery.count, rec.ack_count), (2, 0), "delivery acks are stored apart from read acks");
    assert_eq!(rec.msg.to, g);
}
