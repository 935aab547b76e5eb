//! Large groups at flat per-ack cost, end to end: a real server and real client runtimes over
//! TCP, a group of 3,000 members with a low coalescing threshold.

use std::time::{Duration, Instant};

use receipt_client::ClientEvent;
use receipt_core::*;
use receipt_testkit::*;

/// Group members (the owner included).
const MEMBERS: usize = 3_000;
/// Members who read the message, each on its own real device.
const READERS: usize = 12;
/// The server's interval of count updates (ms).
const INTERVAL_MS: u64 = 200;
/// Longest wait for an answer or an event: a send to 3,000 members takes over 5 s in a debug
/// build under qemu (aarch64-ohos), seconds less natively.
const LIMIT: Duration = Duration::from_secs(60);

fn online(label: &str, port: u16) -> Device {
    let d = Device::new(label, ChatOptions::default(), port).wait_limit(LIMIT);
    d.login();
    d
}

fn counts(e: &ClientEvent) -> Option<Vec<(MsgId, u32)>> {
    match e {
        ClientEvent::ReadAckForGroupMessageUpdated(ms) => Some(ms.iter().map(|m| (m.id, m.group_ack_count)).collect()),
        _ => None,
    }
}

#[test]
fn a_large_groups_sender_gets_coalesced_counts_and_the_readers_devices_stay_in_sync() {
    let srv = TestServer::start(|c| {
        c.max_group_size = MEMBERS;
        c.group_ack.member_cap = 10_000;
        c.group_ack.coalesce_above = 50;
        c.group_ack.coalesce_ms = INTERVAL_MS;
    });
    let p = srv.port();
    let owner = online("owner/phone", p);
    let members: Vec<String> = (1..MEMBERS).map(|i| format!("m{i:04}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let g = owner.create_group(&refs, false);
    let msg = owner.send(&g, ChatType::GroupChat, "all hands", true);
    assert!(msg.need_group_ack, "a group of {MEMBERS} is within the member cap");
    // The first reader also has a second device: its read state must follow.
    let tablet = online("m0001/tablet", p);
    tablet.received(1);
    let readers: Vec<Device> = members[..READERS].iter().map(|m| online(&format!("{m}/phone"), p)).collect();
    let started = Instant::now();
    for r in &readers {
        let m = r.received(1).pop().unwrap();
        let req = r.client.ack_group_message_read(m.id, Some("seen")).unwrap().unwrap();
        r.ok(req);
    }
    // The sender's count reaches READERS through coalesced updates; never one event per ack.
    let mut updates: Vec<(Instant, u32)> = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while updates.last().is_none_or(|&(_, n)| n < READERS as u32) {
        assert!(Instant::now() < deadline, "the count did not reach {READERS}: {updates:?}");
        let got = owner.wait("onReadAckForGroupMessageUpdated", counts);
        assert!(got.iter().all(|&(id, _)| id == msg.id));
        updates.extend(got.iter().map(|&(_, n)| (Instant::now(), n)));
    }
    let acking = started.elapsed();
    assert!(
        updates.len() as u128 <= acking.as_millis() / u128::from(INTERVAL_MS) + 2,
        "{} updates in {acking:?}: more than one per interval",
        updates.len()
    );
    assert!(updates.windows(2).all(|w| w[1].1 > w[0].1), "counts only grow: {updates:?}");
    assert_eq!(owner.msg(msg.id).group_ack_count, READERS as u32);
    owner.hears_nothing("a per-ack onGroupMessageRead", |e| matches!(e, ClientEvent::GroupMessageRead(_)));
    // The reader's other device: the message read there too, as before coalescing.
    tablet.wait_until("the message read on the other device", |d| !d.msg(msg.id).unread && d.msg(msg.id).group_ack_sent);
    // Members hear nothing of the others' acks (sender-only visibility, and coalesced anyway).
    readers[1].hears_nothing("another member's ack", |e| matches!(e, ClientEvent::GroupMessageRead(_)) || counts(e).is_some());
    // A device of the sender that logs in later gets the count from its log's replay.
    let laptop = online("owner/laptop", p);
    laptop.wait_until("the count at sync", |d| d.msg(msg.id).group_ack_count == READERS as u32);
    // The list is fetched on demand, complete.
    let req = owner.client.fetch_group_read_acks(msg.id, 100, None).unwrap();
    match owner.ok(req) {
        receipt_client::Completion::GroupAcks(page) => {
            assert_eq!(page.data.len(), READERS);
            assert!(page.data.iter().all(|a| a.content.as_deref() == Some("seen")));
        }
        other => panic!("fetch answered {other:?}"),
    }
}
