//! docs/product.md, the rules, end to end: a real server, real client runtimes over TCP, and
//! assertions on what users see (events, message flags, unread counts, error codes).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use receipt_client::{ClientEvent, Completion};
use receipt_core::*;
use receipt_server::{Visibility, WhoMayRequest};
use receipt_testkit::*;

fn with_delivery() -> ChatOptions {
    ChatOptions { require_delivery_ack: true, ..Default::default() }
}

fn is_delivered(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::MessagesDelivered(_))
}

fn is_read(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::MessagesRead(_))
}

fn is_any_receipt(e: &ClientEvent) -> bool {
    matches!(
        e,
        ClientEvent::MessagesDelivered(_)
            | ClientEvent::MessagesRead(_)
            | ClientEvent::GroupMessageRead(_)
            | ClientEvent::ConversationRead { .. }
    )
}

/// Sleeps until the wall clock is `ms` past a server timestamp (same host, same clock).
fn sleep_past(timestamp_ms: u64, ms: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let until = timestamp_ms + ms;
    if until > now {
        std::thread::sleep(Duration::from_millis(until - now));
    }
}

/// Rule 1: delivery acks are automatic (live and for the offline backlog at login), 1:1 only,
/// and only when the sender asked for them.
#[test]
fn rule1_delivery_acks_automatic_one_to_one_only_when_asked() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let alice = Device::online("alice/phone", with_delivery(), p);
    let bob = Device::online("bob/phone", ChatOptions::default(), p);

    // Live: bob's SDK acks delivery on receipt, without any call.
    let m = alice.send_chat("bob", "hi bob");
    assert!(m.require_delivery_ack && !m.delivered);
    let got = bob.received(1);
    assert_eq!(got[0].id, m.id);
    let d = alice.delivered(1);
    assert_eq!(d[0].id, m.id);
    assert!(d[0].delivered);
    assert!(alice.msg(m.id).delivered);

    // Offline backlog: dave has never logged in; his SDK acks both at login.
    let m1 = alice.send_chat("dave", "one");
    let m2 = alice.send_chat("dave", "two");
    alice.hears_nothing("delivery ack while dave is offline", is_delivered);
    let dave = Device::online("dave/phone", ChatOptions::default(), p);
    let got: Vec<MsgId> = dave.received(2).iter().map(|m| m.id).collect();
    assert_eq!(got, vec![m1.id, m2.id]);
    let mut acked: Vec<MsgId> = alice.delivered(2).iter().map(|m| m.id).collect();
    acked.sort_unstable();
    assert_eq!(acked, vec![m1.id, m2.id]);
    assert!(alice.msg(m1.id).delivered && alice.msg(m2.id).delivered);

    // Groups and chat rooms: never, although alice asks for delivery acks.
    let g = alice.create_group(&["bob"], false);
    let room = alice.create_group(&["bob"], true);
    let gm = alice.send(&g, ChatType::GroupChat, "group hello", false);
    let rm = alice.send(&room, ChatType::ChatRoom, "room hello", false);
    assert!(!gm.require_delivery_ack && !rm.require_delivery_ack);
    let got: Vec<MsgId> = bob.received(2).iter().map(|m| m.id).collect();
    assert_eq!(got, vec![gm.id, rm.id]);

    // The sender did not ask: bob's message to alice gets no delivery ack.
    let bm = bob.send_chat("alice", "no receipts please");
    assert!(!bm.require_delivery_ack);
    let got = alice.received(1);
    assert_eq!(got[0].id, bm.id);
    assert!(!got[0].require_delivery_ack);

    alice.hears_nothing("delivery ack for a group or chat-room message", is_delivered);
    bob.hears_nothing("delivery ack for a message that did not ask", is_delivered);
    assert!(!alice.msg(gm.id).delivered && !alice.msg(rm.id).delivered);
    assert!(!bob.msg(bm.id).delivered);
}

/// Rule 2: with requireReadAck = false, ack calls send nothing and return 505.
#[test]
fn rule2_require_read_ack_false_sends_nothing_and_says_505() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let alice = Device::online("alice/phone", ChatOptions::default(), p);
    let bob = Device::online("bob/phone", ChatOptions { require_read_ack: false, ..Default::default() }, p);
    let g = alice.create_group(&["bob"], false);

    let m = alice.send_chat("bob", "did you read this?");
    let gm = alice.send(&g, ChatType::GroupChat, "group: did you read this?", true);
    assert!(gm.need_group_ack);
    let got = bob.received(2);
    assert_eq!((got[0].id, got[1].id), (m.id, gm.id));

    expect_err(bob.client.ack_message_read(m.id), ErrorCode::ServiceNotEnabled);
    expect_err(bob.client.ack_conversation_read("alice"), ErrorCode::ServiceNotEnabled);
    expect_err(bob.client.ack_group_message_read(gm.id, Some("seen")), ErrorCode::ServiceNotEnabled);
    assert_eq!(bob.outbox(), 0, "nothing was queued");
    assert!(!bob.msg(m.id).receiver_read);

    // Reading stays possible, privately: own read state only.
    let req = bob.client.mark_message_read(m.id).unwrap().expect("mark-read goes out");
    bob.ok(req);
    assert_eq!(bob.unread(&chat("alice")), 0);

    alice.hears_nothing("a receipt from a reader with requireReadAck = false", is_any_receipt);
    assert!(!alice.msg(m.id).receiver_read);
    assert_eq!(alice.msg(gm.id).group_ack_count, 0);
}

/// Rule 3: acks of own, chat-room and unknown messages are refused with their code; a repeated
/// ack changes nothing and is not forwarded: the sender hears exactly one onMessageRead.
#[test]
fn rule3_bad_acks_refused_and_acks_idempotent() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let alice = Device::online("alice/phone", ChatOptions::default(), p);
    let bob = Device::online("bob/phone", ChatOptions::default(), p);
    let tablet = Device::online("bob/tablet", ChatOptions::default(), p);
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let room = alice.create_group(&["bob"], true);
    let g = alice.create_group(&["bob"], false);

    let m = alice.send_chat("bob", "read me once");
    let rm = alice.send(&room, ChatType::ChatRoom, "room message", false);
    let gm = alice.send(&g, ChatType::GroupChat, "group message", true);
    let to_carol = alice.send_chat("carol", "not for bob");
    let got: Vec<MsgId> = bob.received(3).iter().map(|m| m.id).collect();
    assert_eq!(got, vec![m.id, rm.id, gm.id]);
    tablet.received(3);
    carol.received(1);

    // Own message (1:1 and group): 500.
    expect_err(alice.client.ack_message_read(m.id), ErrorCode::MessageInvalid);
    expect_err(alice.client.ack_group_message_read(gm.id, None), ErrorCode::MessageInvalid);
    // Chat-room message: 500, with either ack; and no conversation ack for a room.
    expect_err(bob.client.ack_message_read(rm.id), ErrorCode::MessageInvalid);
    expect_err(bob.client.ack_group_message_read(rm.id, None), ErrorCode::MessageInvalid);
    expect_err(bob.client.ack_conversation_read(&room), ErrorCode::MessageInvalid);
    // A group message with the 1:1 ack: 500.
    expect_err(bob.client.ack_message_read(gm.id), ErrorCode::MessageInvalid);
    // A message bob did not receive (sent to carol), and an id nobody knows: 500.
    expect_err(bob.client.ack_message_read(to_carol.id), ErrorCode::MessageInvalid);
    expect_err(bob.client.ack_message_read(987_654), ErrorCode::MessageInvalid);
    expect_err(bob.client.ack_group_message_read(987_654, None), ErrorCode::MessageInvalid);
    assert_eq!(bob.outbox(), 0);
    alice.hears_nothing("a receipt after refused acks", is_any_receipt);

    // The tablet goes offline before bob's phone acks, so it cannot know the ack went out.
    tablet.client.set_network_enabled(false);
    tablet.wait_disconnected();

    // The ack, then the same ack again: the second sends nothing.
    bob.ack_read(m.id);
    let r = alice.read(1);
    assert_eq!(r[0].id, m.id);
    assert!(r[0].receiver_read);
    assert_eq!(bob.client.ack_message_read(m.id).unwrap(), None, "a repeated ack goes out again");
    // Group ack twice: once.
    let req = bob.client.ack_group_message_read(gm.id, Some("ok")).unwrap().expect("group ack goes out");
    bob.ok(req);
    let acks = alice.group_acks();
    assert_eq!((acks.len(), acks[0].count), (1, 1));
    assert_eq!(bob.client.ack_group_message_read(gm.id, Some("ok")).unwrap(), None);

    // The offline tablet acks the same message: it goes out on reconnect; the server answers ok
    // and forwards nothing.
    let req = tablet.client.ack_message_read(m.id).unwrap().expect("the tablet does not know yet");
    tablet.client.set_network_enabled(true);
    tablet.wait_connected();
    tablet.ok(req);
    assert!(tablet.msg(m.id).receiver_read);

    let events = alice.collect(QUIET);
    assert_eq!(read_ids(&events), Vec::<MsgId>::new(), "the sender heard a repeated ack: {events:?}");
    assert!(!events.iter().any(|e| matches!(e, ClientEvent::GroupMessageRead(_))), "{events:?}");
    assert_eq!(alice.msg(gm.id).group_ack_count, 1);
    assert!(alice.msg(m.id).receiver_read);
}

/// Rule 4: a 1:1 read ack is valid while the server keeps the message; past retention: 506.
#[test]
fn rule4_read_ack_valid_while_retained_then_506() {
    // 4 s: the send -> receive -> ack round trip must fit in it, and takes over a second on
    // aarch64-ohos under qemu on a loaded machine (scripts/test-ohos.sh).
    let srv = TestServer::start(|c| c.retention_secs = 4);
    let p = srv.port();
    let alice = Device::online("alice/phone", ChatOptions::default(), p);
    let bob = Device::online("bob/phone", ChatOptions::default(), p);

    // Within retention: accepted and forwarded.
    let m1 = alice.send_chat("bob", "fresh");
    bob.received(1);
    bob.ack_read(m1.id);
    assert_eq!(alice.read(1)[0].id, m1.id);

    // Past retention (4 s): 506, nobody hears anything, the "ack sent" flag is rolled back.
    let m2 = alice.send_chat("bob", "stale soon");
    bob.received(1);
    sleep_past(m2.timestamp, 4_300);
    let req = bob.client.ack_message_read(m2.id).unwrap().expect("the ack goes out");
    let e = bob.refused(req, ErrorCode::MessageExpired);
    assert!(e.description.contains("retention"), "{e}");
    assert!(!bob.msg(m2.id).receiver_read);
    alice.hears_nothing("a read receipt for an expired message", is_read);
    assert!(!alice.msg(m2.id).receiver_read);
}

/// Rule 5, 1:1: the peer's devices and the acker's other device get onConversationRead, the
/// peer's sent messages all show isReceiverRead, unread is 0 on every acker device; the acker's
/// own sent messages are not affected.
#[test]
fn rule5_conversation_ack_one_to_one() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let alice = Device::online("alice/phone", ChatOptions::default(), p);
    let tablet = Device::online("alice/tablet", ChatOptions::default(), p);
    let bob = Device::online("bob/phone", ChatOptions::default(), p);
    let bob2 = Device::online("bob/laptop", ChatOptions::default(), p);

    let mine = alice.send_chat("bob", "from alice");
    let sent: Vec<ChatMessage> = (0..3).map(|i| bob.send_chat("alice", &format!("from bob {i}"))).collect();
    bob.received(1);
    for d in [&alice, &tablet] {
        d.wait_unread(&chat("bob"), 3);
    }
    bob.wait_unread(&chat("alice"), 1);
    bob2.wait_unread(&chat("alice"), 1);
    bob2.wait_until("the laptop holds bob's sent messages", |d| {
        sent.iter().all(|m| d.client.message(&m.id.to_string()).unwrap().is_some())
    });
    for d in [&alice, &tablet, &bob, &bob2] {
        d.clear();
    }

    let req = alice.client.ack_conversation_read("bob").unwrap().expect("the ack goes out");
    alice.ok(req);
    assert_eq!(alice.unread(&chat("bob")), 0);

    for d in [&bob, &bob2, &tablet] {
        assert_eq!(d.conversation_read(), ("alice".to_string(), "bob".to_string()), "{}", d.label);
    }
    tablet.wait_unread(&chat("bob"), 0);
    for m in &sent {
        assert!(tablet.msg(m.id).receiver_read && !tablet.msg(m.id).unread);
        for d in [&bob, &bob2] {
            d.wait_until("isReceiverRead", |d| d.msg(m.id).receiver_read);
        }
    }
    // The acker's device does not hear its own ack; the acker's own sent message is not read.
    alice.hears_nothing("onConversationRead for its own ack", |e| matches!(e, ClientEvent::ConversationRead { .. }));
    assert!(!alice.msg(mine.id).receiver_read);
    assert_eq!(bob.unread(&chat("alice")), 1);
    assert_eq!(bob2.unread(&chat("alice")), 1);
    // Nothing new: a second conversation ack sends nothing.
    assert_eq!(alice.client.ack_conversation_read("bob").unwrap(), None);
    bob.hears_nothing("a second onConversationRead", |e| matches!(e, ClientEvent::ConversationRead { .. }));
}

/// Rule 5, group: a conversation ack clears only the acker's own count (own devices synced);
/// nobody else hears anything.
#[test]
fn rule5_group_conversation_ack_clears_only_own_count() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let alice = Device::online("alice/phone", ChatOptions::default(), p);
    let tablet = Device::online("alice/tablet", ChatOptions::default(), p);
    let bob = Device::online("bob/phone", ChatOptions::default(), p);
    let g = carol.create_group(&["alice", "bob"], false);

    let c1 = carol.send(&g, ChatType::GroupChat, "c1", true);
    let c2 = carol.send(&g, ChatType::GroupChat, "c2", false);
    let b1 = bob.send(&g, ChatType::GroupChat, "b1", false);
    for d in [&alice, &tablet] {
        d.wait_unread(&group(&g), 3);
    }
    bob.wait_unread(&group(&g), 2);
    carol.wait_unread(&group(&g), 1);
    for d in [&carol, &alice, &tablet, &bob] {
        d.clear();
    }

    let req = alice.client.ack_conversation_read(&g).unwrap().expect("the ack goes out");
    alice.ok(req);
    assert_eq!(alice.unread(&group(&g)), 0);
    tablet.wait_unread(&group(&g), 0);
    for id in [c1.id, c2.id, b1.id] {
        assert!(!tablet.msg(id).unread);
    }

    for d in [&carol, &bob] {
        d.hears_nothing("anything about alice's group conversation ack", is_any_receipt);
    }
    tablet.hears_nothing("onConversationRead for a group", |e| matches!(e, ClientEvent::ConversationRead { .. }));
    assert_eq!(bob.unread(&group(&g)), 2);
    assert_eq!(carol.unread(&group(&g)), 1);
    assert_eq!(carol.msg(c1.id).group_ack_count, 0, "a conversation ack is no group read ack");
    assert!(!carol.msg(c1.id).receiver_read);
}

/// Rule 6: group read acks: once per member, a running count, the sender never acks its own,
/// sender-only visibility by default; rule 7: paging newest first through a cursor.
#[test]
fn rule6_group_read_acks_count_once_per_member_and_paging() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let members = ["dave", "erin", "frank", "gina"];
    let devs: Vec<Device> = members.iter().map(|u| Device::online(&format!("{u}/phone"), ChatOptions::default(), p)).collect();
    let g = carol.create_group(&members, false);

    let m = carol.send(&g, ChatType::GroupChat, "who is coming?", true);
    assert!(m.need_group_ack);
    expect_err(carol.client.ack_group_message_read(m.id, None), ErrorCode::MessageInvalid);

    for (i, d) in devs.iter().enumerate() {
        let got = d.received(1);
        assert!(got[0].need_group_ack && got[0].unread);
        let req = d.client.ack_group_message_read(m.id, Some(&format!("ext-{}", d.user))).unwrap().expect("goes out");
        d.ok(req);
        assert!(d.msg(m.id).group_ack_sent && !d.msg(m.id).unread);
        assert_eq!(d.unread(&group(&g)), 0);
        let acks = carol.group_acks();
        assert_eq!(acks.len(), 1);
        assert_eq!((acks[0].from.as_str(), acks[0].count, acks[0].msg_id), (d.user.as_str(), i as u32 + 1, m.id));
        assert_eq!(acks[0].content.as_deref(), Some(format!("ext-{}", d.user).as_str()));
        assert_eq!(carol.msg(m.id).group_ack_count, i as u32 + 1);
        // Once per member.
        assert_eq!(d.client.ack_group_message_read(m.id, None).unwrap(), None);
    }
    carol.hears_nothing("a second ack from the same member", |e| matches!(e, ClientEvent::GroupMessageRead(_)));
    assert_eq!(carol.msg(m.id).group_ack_count, 4);
    // Sender only (the default): members hear nothing about each other's acks and may not list.
    for d in &devs {
        d.hears_nothing("another member's group ack", |e| matches!(e, ClientEvent::GroupMessageRead(_)));
    }
    let req = devs[0].client.fetch_group_read_acks(m.id, 10, None).unwrap();
    devs[0].refused(req, ErrorCode::GroupPermissionDenied);

    // Paging: page size 3, newest first, then the rest from the cursor.
    let page = |start: Option<AckId>, size: u32| -> CursorResult<GroupReadAck> {
        let req = carol.client.fetch_group_read_acks(m.id, size, start).unwrap();
        match carol.ok(req) {
            Completion::GroupAcks(p) => p,
            other => panic!("fetch answered {other:?}"),
        }
    };
    let p1 = page(None, 3);
    assert_eq!(p1.data.iter().map(|a| a.from.as_str()).collect::<Vec<_>>(), vec!["gina", "frank", "erin"]);
    assert_eq!(p1.data.iter().map(|a| a.count).collect::<Vec<_>>(), vec![4, 3, 2]);
    assert!(!p1.cursor.is_empty());
    let p2 = page(Some(p1.cursor.parse().expect("numeric cursor")), 3);
    assert_eq!(p2.data.iter().map(|a| a.from.as_str()).collect::<Vec<_>>(), vec!["dave"]);
    assert_eq!(p2.cursor, "");
    let ids: Vec<AckId> = p1.data.iter().chain(&p2.data).map(|a| a.ack_id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "not newest first: {ids:?}");
    // One page holding everything.
    let all = page(None, 100);
    assert_eq!((all.data.len(), all.cursor.as_str()), (4, ""));
}

/// Rule 7: page sizes outside 1..=100 are refused with 110; the bounds work.
#[test]
fn rule7_fetch_page_size_out_of_range_is_110() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let dave = Device::online("dave/phone", ChatOptions::default(), p);
    let g = carol.create_group(&["dave"], false);
    let m = carol.send(&g, ChatType::GroupChat, "ack me", true);
    dave.received(1);
    let req = dave.client.ack_group_message_read(m.id, None).unwrap().unwrap();
    dave.ok(req);
    carol.group_acks();

    for bad in [0, 101, u32::MAX] {
        expect_err(carol.client.fetch_group_read_acks(m.id, bad, None), ErrorCode::InvalidParam);
    }
    for good in [1, 100] {
        let req = carol.client.fetch_group_read_acks(m.id, good, None).unwrap();
        match carol.ok(req) {
            Completion::GroupAcks(p) => assert_eq!((p.data.len(), p.cursor.as_str()), (1, "")),
            other => panic!("fetch answered {other:?}"),
        }
    }
}

// ----- rule 6: each policy setting, on a server configured for it -----

/// `enabled = false`: asking for acks is refused with 505; plain group messages still go.
#[test]
fn rule6_policy_disabled_is_505() {
    let srv = TestServer::start(|c| c.group_ack.enabled = false);
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let dave = Device::online("dave/phone", ChatOptions::default(), p);
    let g = carol.create_group(&["dave"], false);
    let (req, _) = carol.client.send_text(&g, ChatType::GroupChat, "acks?", true).unwrap();
    carol.refused(req, ErrorCode::ServiceNotEnabled);
    let m = carol.send(&g, ChatType::GroupChat, "no acks", false);
    let got = dave.received(1);
    assert_eq!(got[0].id, m.id, "the refused message was not delivered");
    expect_err(dave.client.ack_group_message_read(m.id, None), ErrorCode::ServiceNotEnabled);
}

/// `who_may_request = owner_and_admins`: a member asking is refused with 603; the owner and
/// (after promotion) an admin may ask.
#[test]
fn rule6_policy_owner_and_admins_may_request() {
    let srv = TestServer::start(|c| c.group_ack.who_may_request = WhoMayRequest::OwnerAndAdmins);
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let dave = Device::online("dave/phone", ChatOptions::default(), p);
    let g = carol.create_group(&["dave"], false);
    let (req, _) = dave.client.send_text(&g, ChatType::GroupChat, "acks?", true).unwrap();
    dave.refused(req, ErrorCode::GroupPermissionDenied);
    assert!(carol.send(&g, ChatType::GroupChat, "owner asks", true).need_group_ack);
    let req = carol.client.with_engine(|e, now| e.set_group_role(now, &g, "dave", GroupRole::Admin)).unwrap();
    carol.ok(req);
    let m = dave.send(&g, ChatType::GroupChat, "admin asks", true);
    assert!(m.need_group_ack);
    // carol acks dave's message; dave sees it.
    let got = carol.received(1);
    assert_eq!(got[0].id, m.id);
    let req = carol.client.ack_group_message_read(m.id, None).unwrap().unwrap();
    carol.ok(req);
    assert_eq!(dave.group_acks()[0].from, "carol");
}

/// `validity_secs`: an ack within the validity counts; after it: 506.
#[test]
fn rule6_policy_validity_then_506() {
    // 4 s: the send -> receive -> ack round trip must fit in it, and takes over a second on
    // aarch64-ohos under qemu on a loaded machine (scripts/test-ohos.sh).
    let srv = TestServer::start(|c| c.group_ack.validity_secs = 4);
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let dave = Device::online("dave/phone", ChatOptions::default(), p);
    let erin = Device::online("erin/phone", ChatOptions::default(), p);
    let g = carol.create_group(&["dave", "erin"], false);
    let m = carol.send(&g, ChatType::GroupChat, "quick!", true);
    dave.received(1);
    erin.received(1);
    let req = dave.client.ack_group_message_read(m.id, None).unwrap().unwrap();
    dave.ok(req);
    assert_eq!(carol.group_acks()[0].count, 1);

    sleep_past(m.timestamp, 4_300);
    let req = erin.client.ack_group_message_read(m.id, None).unwrap().unwrap();
    erin.refused(req, ErrorCode::MessageExpired);
    assert!(!erin.msg(m.id).group_ack_sent, "a refused ack is not marked sent");
    carol.hears_nothing("an expired group ack", |e| matches!(e, ClientEvent::GroupMessageRead(_)));
    assert_eq!(carol.msg(m.id).group_ack_count, 1);
}

/// `member_cap`: a group with more members than the cap gets no acks (the request is dropped,
/// the message still goes); a group at the cap gets them.
#[test]
fn rule6_policy_member_cap() {
    let srv = TestServer::start(|c| c.group_ack.member_cap = 2);
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let dave = Device::online("dave/phone", ChatOptions::default(), p);
    let _erin = Device::online("erin/phone", ChatOptions::default(), p);
    let big = carol.create_group(&["dave", "erin"], false);
    let small = carol.create_group(&["dave"], false);

    let m = carol.send(&big, ChatType::GroupChat, "3 members", true);
    assert!(!m.need_group_ack, "over the cap: no acks");
    let got = dave.received(1);
    assert!(!got[0].need_group_ack);
    expect_err(dave.client.ack_group_message_read(m.id, None), ErrorCode::ServiceNotEnabled);

    let m = carol.send(&small, ChatType::GroupChat, "2 members", true);
    assert!(m.need_group_ack, "at the cap: acks");
    dave.received(1);
    let req = dave.client.ack_group_message_read(m.id, None).unwrap().unwrap();
    dave.ok(req);
    assert_eq!(carol.group_acks()[0].from, "dave");
}

/// `visibility`: sender only by default (see `rule6_group_read_acks_count_once_per_member_and_paging`);
/// `all_members`: every member hears the acks and may list them.
#[test]
fn rule6_policy_visibility_all_members() {
    let srv = TestServer::start(|c| c.group_ack.visibility = Visibility::AllMembers);
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let dave = Device::online("dave/phone", ChatOptions::default(), p);
    let erin = Device::online("erin/phone", ChatOptions::default(), p);
    let g = carol.create_group(&["dave", "erin"], false);
    let m = carol.send(&g, ChatType::GroupChat, "everyone sees", true);
    dave.received(1);
    erin.received(1);
    let req = dave.client.ack_group_message_read(m.id, Some("d")).unwrap().unwrap();
    dave.ok(req);
    assert_eq!(carol.group_acks()[0].from, "dave");
    let seen = erin.group_acks();
    assert_eq!((seen[0].from.as_str(), seen[0].count), ("dave", 1));
    assert_eq!(erin.msg(m.id).group_ack_count, 1);
    let req = erin.client.fetch_group_read_acks(m.id, 10, None).unwrap();
    match erin.ok(req) {
        Completion::GroupAcks(p) => assert_eq!(p.data.iter().map(|a| a.from.as_str()).collect::<Vec<_>>(), vec!["dave"]),
        other => panic!("fetch answered {other:?}"),
    }
}

/// Rule 8: a read or mark-read on one device reaches the user's other devices; receipts reach
/// every device of the sender; a device logging in later gets the backlog with the same flags
/// and counts; every device's count equals the server's.
#[test]
fn rule8_multi_device_read_state_and_late_device() {
    let mut srv = TestServer::start(|_| {});
    let p = srv.port();
    let alice = Device::online("alice/phone", ChatOptions::default(), p);
    let alice_tab = Device::online("alice/tablet", ChatOptions::default(), p);
    let phone = Device::online("bob/phone", ChatOptions::default(), p);
    let tablet = Device::online("bob/tablet", ChatOptions::default(), p);
    let key = chat("alice");

    let ms: Vec<ChatMessage> = (0..5).map(|i| alice.send_chat("bob", &format!("m{i}"))).collect();
    for d in [&phone, &tablet] {
        assert_eq!(d.received(5).iter().map(|m| m.id).collect::<Vec<_>>(), ms.iter().map(|m| m.id).collect::<Vec<_>>());
        assert_eq!(d.unread(&key), 5);
    }
    alice_tab.wait_until("alice's tablet holds her sent messages", |d| {
        ms.iter().all(|m| d.client.message(&m.id.to_string()).unwrap().is_some())
    });

    // A read ack on the phone: the tablet marks it read and will not ack it again; both of
    // alice's devices hear the receipt.
    phone.ack_read(ms[0].id);
    tablet.wait_until("m0 read via the phone", |d| d.msg(ms[0].id).receiver_read && !d.msg(ms[0].id).unread);
    assert_eq!(tablet.unread(&key), 4);
    assert_eq!(tablet.client.ack_message_read(ms[0].id).unwrap(), None);
    for d in [&alice, &alice_tab] {
        assert_eq!(d.read(1)[0].id, ms[0].id, "{}", d.label);
        assert!(d.msg(ms[0].id).receiver_read);
    }

    // A private mark-read on the tablet: the phone follows; alice hears nothing.
    let req = tablet.client.mark_message_read(ms[1].id).unwrap().expect("goes out");
    tablet.ok(req);
    phone.wait_until("m1 read via the tablet", |d| !d.msg(ms[1].id).unread);
    assert_eq!(phone.unread(&key), 3);
    assert!(!phone.msg(ms[1].id).receiver_read, "a mark-read is no read receipt");
    alice.hears_nothing("a receipt for a private mark-read", is_read);

    // A device that logs in later: the whole backlog with the same flags and count.
    let laptop = Device::online("bob/laptop", ChatOptions::default(), p);
    assert_eq!(laptop.received(5).len(), 5);
    laptop.wait_unread(&key, 3);
    assert!(laptop.msg(ms[0].id).receiver_read && !laptop.msg(ms[0].id).unread);
    assert!(!laptop.msg(ms[1].id).receiver_read && !laptop.msg(ms[1].id).unread);
    assert!(laptop.msg(ms[2].id).unread);

    // Mark all read on the phone; then two new messages: 2 everywhere.
    let req = phone.client.mark_all_messages_read(&key).unwrap().expect("goes out");
    phone.ok(req);
    for d in [&tablet, &laptop] {
        d.wait_unread(&key, 0);
    }
    let late: Vec<ChatMessage> = (0..2).map(|i| alice.send_chat("bob", &format!("late {i}"))).collect();
    for d in [&phone, &tablet, &laptop] {
        d.wait_unread(&key, 2);
        d.wait_until("the late messages", |d| late.iter().all(|m| d.client.message(&m.id.to_string()).unwrap().is_some()));
    }

    let state = srv.stop_and_load();
    assert_eq!(server_unread(&state, "bob", &key), 2);
    assert_eq!(server_unread(&state, "alice", &chat("bob")), 0);
    for d in [&phone, &tablet, &laptop] {
        assert_eq!(d.unread(&key), server_unread(&state, "bob", &key), "{}", d.label);
    }
}
