//! Who has not read a group message, read counts for a screen, and 1:1 read acks in one trip,
//! end to end: a real server and real client runtimes over TCP.

use receipt_client::{ClientEvent, Completion};
use receipt_core::protocol::BatchItem;
use receipt_core::*;
use receipt_server::Visibility;
use receipt_testkit::*;

fn unread_page(d: &Device, id: MsgId, size: u32, cursor: Option<&str>) -> CursorResult<UserId> {
    let req = d.client.fetch_group_unread_members(id, size, cursor).unwrap();
    match d.ok(req) {
        Completion::GroupUnread(p) => p,
        other => panic!("fetch answered {other:?}"),
    }
}

fn items(c: Completion) -> Vec<BatchItem> {
    match c {
        Completion::GroupAckCounts(i) | Completion::ReadAcks(i) => i,
        other => panic!("not a batch answer: {other:?}"),
    }
}

fn codes(items: &[BatchItem]) -> Vec<Option<ErrorCode>> {
    items.iter().map(|i| i.err.as_ref().map(|e| e.code)).collect()
}

#[test]
fn unread_members_and_counts_follow_acks_joins_and_leaves() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let dave = Device::online("dave/phone", ChatOptions::default(), p);
    let erin = Device::online("erin/phone", ChatOptions::default(), p);
    let frank = Device::online("frank/phone", ChatOptions::default(), p);
    let g = carol.create_group(&["dave", "erin", "frank"], false);
    let m = carol.send(&g, ChatType::GroupChat, "who read?", true);
    let quiet = carol.send(&g, ChatType::GroupChat, "nobody reads this", true);
    dave.received(2);
    let req = dave.client.ack_group_message_read(m.id, None).unwrap().unwrap();
    dave.ok(req);
    carol.group_acks();

    // Paged by user id: erin, then frank; the cursor is the last id returned.
    let p1 = unread_page(&carol, m.id, 1, None);
    assert_eq!((p1.data.clone(), p1.cursor.as_str()), (vec!["erin".to_string()], "erin"));
    let p2 = unread_page(&carol, m.id, 1, Some(&p1.cursor));
    assert_eq!((p2.data, p2.cursor.as_str()), (vec!["frank".to_string()], ""));

    // Frank leaves, gina joins after the send: neither is unread; counts stay exact.
    let req = frank.client.leave_group(&g).unwrap();
    frank.ok(req);
    let req = carol.client.add_group_members(&g, &["gina".into()]).unwrap();
    carol.ok(req);
    let unread = unread_page(&carol, m.id, 100, None);
    assert_eq!((unread.data.clone(), unread.cursor.as_str()), (vec!["erin".to_string()], ""));
    let req = carol.client.fetch_group_ack_counts(&[m.id, quiet.id, 999_999]).unwrap();
    let counts = items(carol.ok(req));
    assert_eq!(counts.iter().map(|i| (i.msg_id, i.count)).collect::<Vec<_>>(), vec![(m.id, 1), (quiet.id, 0), (999_999, 0)]);
    assert_eq!(codes(&counts), vec![None, None, Some(ErrorCode::MessageInvalid)]);
    assert_eq!(counts[0].count as usize + unread.data.len(), 2, "read + unread = dave and erin");

    // A member may not list (sender only by default); 21 ids and page size 0 are refused here.
    let req = erin.client.fetch_group_unread_members(m.id, 10, None).unwrap();
    erin.refused(req, ErrorCode::GroupPermissionDenied);
    let req = erin.client.fetch_group_ack_counts(&[m.id]).unwrap();
    assert_eq!(codes(&items(erin.ok(req))), vec![Some(ErrorCode::GroupPermissionDenied)]);
    expect_err(carol.client.fetch_group_ack_counts(&[m.id; 21]), ErrorCode::InvalidParam);
    expect_err(carol.client.fetch_group_ack_counts(&[]), ErrorCode::InvalidParam);
    expect_err(carol.client.fetch_group_unread_members(m.id, 0, None), ErrorCode::InvalidParam);
}

#[test]
fn members_list_unread_when_the_policy_lets_them_see_acks() {
    let srv = TestServer::start(|c| c.group_ack.visibility = Visibility::AllMembers);
    let p = srv.port();
    let carol = Device::online("carol/phone", ChatOptions::default(), p);
    let dave = Device::online("dave/phone", ChatOptions::default(), p);
    let g = carol.create_group(&["dave", "erin"], false);
    let m = carol.send(&g, ChatType::GroupChat, "q", true);
    dave.received(1);
    assert_eq!(unread_page(&dave, m.id, 10, None).data, vec!["dave".to_string(), "erin".into()]);
}

#[test]
fn ack_messages_read_acks_a_batch_in_one_trip_and_marks_them_read() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let alice = Device::online("alice/phone", ChatOptions::default(), p);
    let bob = Device::online("bob/phone", ChatOptions::default(), p);
    let mallory = Device::online("mallory/phone", ChatOptions::default(), p);
    let m1 = alice.send_chat("bob", "one");
    let m2 = alice.send_chat("bob", "two");
    let other = mallory.send_chat("bob", "another conversation");
    bob.received(3);
    let alice_key = ConversationKey::new(ChatType::Chat, "alice");
    bob.wait_unread(&alice_key, 2);

    let req = bob.client.ack_messages_read("alice", &[m1.id, other.id, 424_242, m2.id]).unwrap();
    let got = items(bob.ok(req));
    assert_eq!(got.iter().map(|i| i.msg_id).collect::<Vec<_>>(), vec![m1.id, other.id, 424_242, m2.id]);
    assert_eq!(codes(&got), vec![None, Some(ErrorCode::MessageInvalid), Some(ErrorCode::MessageInvalid), None]);
    // Alice hears both reads; bob's copies are read, mallory's stays unread.
    let mut read: Vec<MsgId> = alice.read(2).iter().map(|m| m.id).collect();
    read.sort();
    assert_eq!(read, vec![m1.id, m2.id]);
    bob.wait_unread(&alice_key, 0);
    assert!(bob.msg(m1.id).receiver_read && bob.msg(m2.id).receiver_read);
    assert_eq!(bob.unread(&ConversationKey::new(ChatType::Chat, "mallory")), 1);
    mallory.hears_nothing("a read of a message bob did not ack", |e| matches!(e, ClientEvent::MessagesRead(_)));

    // Acking again: done, no second receipt.
    let req = bob.client.ack_messages_read("alice", &[m1.id]).unwrap();
    assert_eq!(codes(&items(bob.ok(req))), vec![None]);
    alice.hears_nothing("a second read receipt", |e| matches!(e, ClientEvent::MessagesRead(_)));
    expect_err(bob.client.ack_messages_read("alice", &[m1.id; 21]), ErrorCode::InvalidParam);
    expect_err(bob.client.ack_messages_read("", &[m1.id]), ErrorCode::InvalidParam);
}
