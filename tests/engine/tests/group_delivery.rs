//! Group delivery acks in the client engine, against the real server core and store (with a
//! 2 KiB cache: counts and "already acked" are read back from the store): a member's device acks
//! a group message that asks, on receipt and for backlog; never the sender's devices; a second
//! device of a member does not ack again; an ack cut off with the connection is kept and sent
//! later, once.

use receipt_core::engine::{ClientEvent, Completion};
use receipt_core::*;
use receipt_engine_tests::{default_config, Cluster, Disk};

const GROUP: &str = "g1";

/// alice (a1, a2), bob (b1, b2), carol (c1, on disk); a1, a2 and b1 online; alice owns GROUP
/// with bob and carol; group delivery acks on.
fn world() -> Cluster {
    let mut cfg = default_config();
    cfg.group_delivery_ack.enabled = true;
    let o = ChatOptions::default;
    let mut w = Cluster::build(
        cfg,
        &[
            ("alice", "a1", o(), Disk::Mem),
            ("alice", "a2", o(), Disk::Mem),
            ("bob", "b1", o(), Disk::Mem),
            ("bob", "b2", o(), Disk::Mem),
            ("carol", "c1", o(), Disk::Redb),
        ],
    );
    assert_eq!(w.create_group("alice", &["bob", "carol"], false), GROUP);
    for i in 0..3 {
        w.connect(i);
    }
    w.pump();
    for d in &mut w.devices {
        d.events.clear();
    }
    w
}

/// a1 sends a group message asking for delivery acks; returns its id and what a1 heard.
fn send_asking(w: &mut Cluster) -> (MsgId, Vec<ClientEvent>) {
    let now = w.now;
    let (req, queued) = w.dev("a1").engine.send_message_asking(now, GROUP, ChatType::GroupChat, "arrived?", false, true).unwrap();
    assert!(queued.require_delivery_ack);
    w.pump();
    let evs = w.dev("a1").take_events();
    let id = evs
        .iter()
        .find_map(|e| match e {
            ClientEvent::RequestCompleted { req: r, result: Ok(Completion::Sent(m)) } if *r == req => Some(m.id),
            _ => None,
        })
        .expect("send confirmed");
    (id, evs)
}

fn delivery_reqs(w: &mut Cluster, dev: &str, id: MsgId) -> usize {
    w.dev(dev).ack_reqs.get(&(AckKind::Delivery, id)).map_or(0, |r| r.len())
}

fn delivered_count(w: &mut Cluster, dev: &str, id: MsgId) -> u32 {
    w.dev(dev).engine.message_by_id(id).unwrap().group_delivered_count
}

#[test]
fn members_ack_on_receipt_and_backlog_never_the_sender_and_each_member_counts_once() {
    let mut w = world();
    let (id, evs) = send_asking(&mut w);
    // b1 acked on receipt; the sender's devices never ack their own message.
    assert_eq!(delivery_reqs(&mut w, "b1", id), 1);
    assert_eq!(delivery_reqs(&mut w, "a1", id) + delivery_reqs(&mut w, "a2", id), 0);
    assert_eq!(delivered_count(&mut w, "a1", id), 1);
    assert_eq!(delivered_count(&mut w, "a2", id), 1, "the sender's other device hears it too");
    let heard: Vec<GroupReadAck> = evs
        .into_iter()
        .flat_map(|e| match e {
            ClientEvent::GroupMessageDelivered(a) => a,
            _ => vec![],
        })
        .collect();
    assert_eq!(heard.iter().map(|a| (a.from.as_str(), a.count)).collect::<Vec<_>>(), [("bob", 1)]);
    // b2 logs in later: it replays the message and b1's ack (bob's own echo): no second ack.
    let b2 = w.index("b2");
    w.connect(b2);
    w.pump();
    assert_eq!(delivery_reqs(&mut w, "b2", id), 0, "b2 sent {:?}", w.dev("b2").ack_reqs);
    assert!(w.dev("b2").engine.message_by_id(id).unwrap().delivered);
    assert_eq!(w.dev("b2").engine.outbox().count(), 0);
    // carol was offline: her device acks the backlog at login.
    let c1 = w.index("c1");
    w.connect(c1);
    w.pump();
    assert_eq!(delivery_reqs(&mut w, "c1", id), 1);
    assert_eq!(delivered_count(&mut w, "a1", id), 2);
    let state = w.server.state();
    assert_eq!(state.messages[&id].delivery.count, 2);
    assert!(state.messages[&id].delivery.ackers.iter().all(|u| u == "bob" || u == "carol"));
    // Delivery is not reading: nothing is read, no read ack exists.
    assert_eq!(state.messages[&id].ack_count, 0);
    assert!(w.dev("c1").engine.message_by_id(id).unwrap().unread);
}

#[test]
fn an_ack_cut_off_with_the_connection_survives_a_restart_and_is_sent_once() {
    let mut w = world();
    let (id, _) = send_asking(&mut w);
    let c1 = w.index("c1");
    // carol logs in, gets the backlog and acks it, but the connection is cut before the ack
    // reaches the server; then the app is killed.
    w.connect(c1);
    w.transmit(c1);
    w.deliver_to_server(c1);
    w.deliver_to_client(c1);
    w.transmit(c1);
    assert_eq!(delivery_reqs(&mut w, "c1", id), 1, "the ack went out");
    w.disconnect(c1);
    assert_eq!(w.dev("c1").engine.outbox().count(), 1, "kept in the outbox");
    assert_eq!(w.server.state().messages[&id].delivery.count, 1, "only bob's reached the server");
    w.restart(c1);
    w.connect(c1);
    w.pump();
    assert_eq!(w.dev("c1").engine.outbox().count(), 0);
    assert_eq!(w.server.state().messages[&id].delivery.count, 2);
    assert_eq!(delivered_count(&mut w, "a1", id), 2);
    // A restart of the server keeps it all; a repeat changes nothing.
    w.restart_server();
    for i in 0..5 {
        w.connect(i);
    }
    w.pump();
    assert_eq!(w.server.state().messages[&id].delivery.count, 2);
    assert_eq!(delivered_count(&mut w, "a1", id), 2);
}

#[test]
fn a_message_that_does_not_ask_or_a_server_with_the_feature_off_gets_no_acks() {
    let mut w = world();
    let now = w.now;
    let (req, _) = w.dev("a1").engine.send_message(now, GROUP, ChatType::GroupChat, "plain", true).unwrap();
    w.pump();
    let id = match receipt_engine_tests::completion(&w.dev("a1").take_events(), req) {
        Some(Ok(Completion::Sent(m))) => m.id,
        r => panic!("{r:?}"),
    };
    assert_eq!(delivery_reqs(&mut w, "b1", id), 0);

    // Feature off: the request is dropped at send; nobody acks.
    let mut w = Cluster::new(&[("alice", "a1", ChatOptions::default()), ("bob", "b1", ChatOptions::default())]);
    w.create_group("alice", &["bob"], false);
    w.connect(0);
    w.connect(1);
    w.pump();
    let now = w.now;
    let (req, _) = w.dev("a1").engine.send_message_asking(now, GROUP, ChatType::GroupChat, "x", false, true).unwrap();
    w.pump();
    let m = match receipt_engine_tests::completion(&w.dev("a1").take_events(), req) {
        Some(Ok(Completion::Sent(m))) => m.clone(),
        r => panic!("{r:?}"),
    };
    assert!(!m.require_delivery_ack, "the server did not keep the request");
    assert_eq!(delivery_reqs(&mut w, "b1", m.id), 0);
}
