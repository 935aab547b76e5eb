//! One test per client-side rule of docs/product.md, driving real engines against the real server
//! core over the simulated network of `receipt_engine_tests`.

use receipt_core::engine::{ClientEvent, Completion};
use receipt_core::protocol::ClientFrame;
use receipt_core::*;
use receipt_engine_tests::{default_config, Cluster, Disk};
use receipt_server::CoreConfig;

/// The group every user of [`world`] is in (the server's first group id).
const GROUP: &str = "g1";

fn opts(delivery: bool, read: bool) -> ChatOptions {
    ChatOptions { require_delivery_ack: delivery, require_read_ack: read, ..Default::default() }
}

/// alice (a1, a2), bob (b1), carol (c1), all online; alice owns [`GROUP`] with bob and carol.
fn world() -> Cluster {
    world_with(default_config(), Disk::Mem)
}

/// [`world`] with the server's rules and b1's disk chosen.
fn world_with(cfg: CoreConfig, b1_disk: Disk) -> Cluster {
    let mut w = Cluster::build(
        cfg,
        &[
            ("alice", "a1", opts(true, true), Disk::Mem),
            ("alice", "a2", opts(true, true), Disk::Mem),
            ("bob", "b1", opts(true, true), b1_disk),
            ("carol", "c1", opts(false, true), Disk::Mem),
        ],
    );
    assert_eq!(w.create_group("alice", &["bob", "carol"], false), GROUP);
    for i in 0..4 {
        w.connect(i);
    }
    w.pump();
    for d in &mut w.devices {
        d.events.clear();
    }
    w
}

fn send(w: &mut Cluster, dev: &str, to: &str, t: ChatType, need_group_ack: bool) -> MsgId {
    let now = w.now;
    let (req, _) = w.dev(dev).engine.send_message(now, to, t, "hi", need_group_ack).unwrap();
    w.pump();
    let evs = w.dev(dev).take_events();
    evs.into_iter()
        .find_map(|e| match e {
            ClientEvent::RequestCompleted { req: r, result: Ok(Completion::Sent(m)) } if r == req => Some(m.id),
            _ => None,
        })
        .expect("send confirmed")
}

fn received(evs: &[ClientEvent]) -> Vec<MsgId> {
    evs.iter()
        .flat_map(|e| match e {
            ClientEvent::MessagesReceived(m) => m.iter().map(|m| m.id).collect(),
            _ => vec![],
        })
        .collect()
}

#[test]
fn rule1_delivery_ack_is_automatic_and_reaches_the_sender() {
    let mut w = world();
    let id = send(&mut w, "a1", "bob", ChatType::Chat, false);
    assert_eq!(received(&w.dev("b1").take_events()), vec![id]);
    assert_eq!(w.server.forwarded_count(AckKind::Delivery, id), 1);
    assert!(w.dev("a1").engine.message_by_id(id).unwrap().delivered);
    // alice's other device learns it too (its copy of the sent message).
    assert!(w.dev("a2").engine.message_by_id(id).unwrap().delivered);
}

#[test]
fn rule1_no_delivery_ack_when_sender_does_not_ask_or_for_groups() {
    let mut w = world();
    let id = send(&mut w, "c1", "bob", ChatType::Chat, false); // carol: requireDeliveryAck=false
    let g = send(&mut w, "a1", GROUP, ChatType::GroupChat, false);
    assert!(w.dev("b1").ack_reqs.keys().all(|(k, m)| *k != AckKind::Delivery || (*m != id && *m != g)));
    assert!(!w.dev("c1").engine.message_by_id(id).unwrap().delivered);
}

#[test]
fn rule1_delivery_acks_for_offline_backlog_are_sent_at_login() {
    let mut w = world();
    w.disconnect(2); // bob offline
    let id = send(&mut w, "a1", "bob", ChatType::Chat, false);
    assert!(!w.dev("a1").engine.message_by_id(id).unwrap().delivered);
    w.connect(2);
    w.pump();
    assert!(w.dev("a1").engine.message_by_id(id).unwrap().delivered);
    let evs = w.dev("a1").take_events();
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::MessagesDelivered(m) if m[0].id == id)));
}

#[test]
fn rule1_backlog_delivery_ack_not_resent_when_another_device_sent_it() {
    let mut w = Cluster::new(&[("alice", "a1", opts(true, true)), ("bob", "b1", opts(true, true)), ("bob", "b2", opts(true, true))]);
    w.connect(0);
    w.connect(1);
    w.pump();
    let id = send(&mut w, "a1", "bob", ChatType::Chat, false);
    assert_eq!(w.dev("b1").ack_reqs.len(), 1);
    // b2 logs in later: replays the message and b1's delivery ack: it must not ack again.
    w.connect(2);
    w.pump();
    assert!(w.dev("b2").ack_reqs.is_empty(), "b2 sent {:?}", w.dev("b2").ack_reqs);
    assert!(w.dev("b2").engine.message_by_id(id).unwrap().delivered);
    assert_eq!(w.dev("b2").engine.outbox().count(), 0);
}

#[test]
fn rule2_require_read_ack_false_sends_nothing_and_says_so() {
    let mut w = Cluster::new(&[("alice", "a1", opts(false, true)), ("bob", "b1", opts(false, false))]);
    w.connect(0);
    w.connect(1);
    w.pump();
    let id = send(&mut w, "a1", "bob", ChatType::Chat, false);
    let now = w.now;
    let e = w.dev("b1").engine.ack_message_read(now, id).unwrap_err();
    assert_eq!(e.code, ErrorCode::ServiceNotEnabled);
    let e = w.dev("b1").engine.ack_conversation_read(now, "alice").unwrap_err();
    assert_eq!(e.code, ErrorCode::ServiceNotEnabled);
    w.pump();
    assert!(w.dev("b1").ack_reqs.keys().all(|(k, _)| *k == AckKind::Delivery));
    assert!(!w.dev("a1").engine.message_by_id(id).unwrap().receiver_read);
}

#[test]
fn rule3_bad_acks_are_refused_and_change_nothing() {
    let mut w = world();
    let own = send(&mut w, "a1", "bob", ChatType::Chat, false);
    let room_id = w.create_group("alice", &["bob"], true);
    let room = send(&mut w, "a1", &room_id, ChatType::ChatRoom, false);
    let now = w.now;
    let a1 = &mut w.dev("a1").engine;
    assert_eq!(a1.ack_message_read(now, own).unwrap_err().code, ErrorCode::MessageInvalid);
    assert_eq!(a1.ack_message_read(now, 999_999).unwrap_err().code, ErrorCode::MessageInvalid);
    let b1 = &mut w.dev("b1").engine;
    assert_eq!(b1.ack_message_read(now, room).unwrap_err().code, ErrorCode::MessageInvalid);
    assert_eq!(b1.ack_group_message_read(now, room, None).unwrap_err().code, ErrorCode::MessageInvalid);
    assert_eq!(b1.outbox().count(), 0);
    assert_eq!(w.dev("a1").engine.outbox().count(), 0);
}

#[test]
fn rule3_read_ack_is_idempotent() {
    let mut w = world();
    let id = send(&mut w, "a1", "bob", ChatType::Chat, false);
    let now = w.now;
    assert!(w.dev("b1").engine.ack_message_read(now, id).unwrap().is_some());
    assert_eq!(w.dev("b1").engine.ack_message_read(now, id).unwrap(), None);
    w.pump();
    assert_eq!(w.dev("b1").ack_reqs[&(AckKind::Read, id)].len(), 1);
    assert_eq!(w.server.forwarded_count(AckKind::Read, id), 1);
    let evs = w.dev("a1").take_events();
    let reads: Vec<_> = evs.iter().filter(|e| matches!(e, ClientEvent::MessagesRead(_))).collect();
    assert_eq!(reads.len(), 1);
    assert!(w.dev("a1").engine.message_by_id(id).unwrap().receiver_read);
}

#[test]
fn rule5_conversation_ack_reaches_peer_and_own_other_devices() {
    let mut w = world();
    let ids: Vec<MsgId> = (0..3).map(|_| send(&mut w, "b1", "alice", ChatType::Chat, false)).collect();
    for d in ["a1", "a2"] {
        assert_eq!(w.dev(d).engine.unread_count(&ConversationKey::new(ChatType::Chat, "bob")), 3);
        w.dev(d).events.clear();
    }
    w.dev("b1").events.clear();
    let now = w.now;
    assert!(w.dev("a1").engine.ack_conversation_read(now, "bob").unwrap().is_some());
    w.pump();
    let conv_read =
        |evs: &[ClientEvent]| evs.iter().any(|e| matches!(e, ClientEvent::ConversationRead { from, to } if from == "alice" && to == "bob"));
    assert!(conv_read(&w.dev("b1").take_events()), "peer hears onConversationRead");
    assert!(conv_read(&w.dev("a2").take_events()), "acker's other device hears it");
    assert!(!conv_read(&w.dev("a1").take_events()), "the acking device itself does not");
    for id in &ids {
        assert!(w.dev("b1").engine.message_by_id(*id).unwrap().receiver_read);
        assert!(!w.dev("a2").engine.message_by_id(*id).unwrap().unread);
    }
    for d in ["a1", "a2"] {
        assert_eq!(w.dev(d).engine.unread_count(&ConversationKey::new(ChatType::Chat, "bob")), 0);
    }
    // Nothing new: a second conversation ack sends nothing.
    assert_eq!(w.dev("a1").engine.ack_conversation_read(now, "bob").unwrap(), None);
    // A message ack for a covered message is not sent either.
    assert_eq!(w.dev("a2").engine.ack_message_read(now, ids[0]).unwrap(), None);
}

#[test]
fn rule5_group_conversation_ack_only_clears_own_count() {
    let mut w = world();
    send(&mut w, "b1", GROUP, ChatType::GroupChat, false);
    send(&mut w, "c1", GROUP, ChatType::GroupChat, false);
    let key = ConversationKey::new(ChatType::GroupChat, GROUP);
    assert_eq!(w.dev("a2").engine.unread_count(&key), 2);
    for d in &mut w.devices {
        d.events.clear();
    }
    let now = w.now;
    w.dev("a1").engine.ack_conversation_read(now, GROUP).unwrap().unwrap();
    w.pump();
    assert_eq!(w.dev("a2").engine.unread_count(&key), 0, "own devices synced");
    for d in ["b1", "c1"] {
        let evs = w.dev(d).take_events();
        assert!(evs.iter().all(|e| !matches!(e, ClientEvent::ConversationRead { .. })), "{d} told nothing");
    }
    assert!(w.dev("a2").take_events().iter().all(|e| !matches!(e, ClientEvent::ConversationRead { .. })));
}

#[test]
fn rule6_group_acks_count_list_and_once_per_member() {
    let mut w = world();
    let id = send(&mut w, "a1", GROUP, ChatType::GroupChat, true);
    let now = w.now;
    w.dev("b1").engine.ack_group_message_read(now, id, Some("seen")).unwrap().unwrap();
    assert_eq!(w.dev("b1").engine.ack_group_message_read(now, id, None).unwrap(), None);
    w.dev("c1").engine.ack_group_message_read(now, id, None).unwrap().unwrap();
    w.pump();
    assert_eq!(w.dev("a1").engine.message_by_id(id).unwrap().group_ack_count, 2);
    assert_eq!(w.dev("a2").engine.message_by_id(id).unwrap().group_ack_count, 2);
    let acks: Vec<GroupReadAck> = w
        .dev("a1")
        .take_events()
        .into_iter()
        .flat_map(|e| match e {
            ClientEvent::GroupMessageRead(a) => a,
            _ => vec![],
        })
        .collect();
    assert_eq!(acks.iter().map(|a| (a.from.as_str(), a.count)).collect::<Vec<_>>(), vec![("bob", 1), ("carol", 2)]);
    assert_eq!(acks[0].content.as_deref(), Some("seen"));
    assert_eq!(w.server.forwarded_count(AckKind::Group, id), 2);
    // The sender cannot ack its own message; a 1:1 message is not a group message.
    assert_eq!(w.dev("a1").engine.ack_group_message_read(now, id, None).unwrap_err().code, ErrorCode::MessageInvalid);
    // Paging: newest first.
    let req = w.dev("a1").engine.fetch_group_read_acks(now, id, 1, None).unwrap();
    w.pump();
    let page = w
        .dev("a1")
        .take_events()
        .into_iter()
        .find_map(|e| match e {
            ClientEvent::RequestCompleted { req: r, result: Ok(Completion::GroupAcks(p)) } if r == req => Some(p),
            _ => None,
        })
        .unwrap();
    assert_eq!(page.data[0].from, "carol");
    assert_eq!(page.cursor, acks[0].ack_id.to_string());
    assert_eq!(w.dev("a1").engine.fetch_group_read_acks(now, id, 0, None).unwrap_err().code, ErrorCode::InvalidParam);
    assert_eq!(w.dev("a1").engine.fetch_group_read_acks(now, id, 101, None).unwrap_err().code, ErrorCode::InvalidParam);
}

#[test]
fn rule6_unconfirmed_group_ack_is_resent_after_reconnect_and_counted_once() {
    let mut w = world();
    let id = send(&mut w, "a1", GROUP, ChatType::GroupChat, true);
    let now = w.now;
    w.dev("b1").engine.ack_group_message_read(now, id, None).unwrap().unwrap();
    // The ack reaches the server, but the connection dies before the answer comes back.
    assert_eq!(w.transmit(2), 1);
    assert_eq!(w.deliver_to_server(2), 1);
    w.disconnect(2);
    assert_eq!(w.dev("b1").engine.outbox().count(), 1);
    w.connect(2);
    w.pump();
    assert_eq!(w.dev("b1").engine.outbox().count(), 0);
    assert_eq!(w.server.forwarded_count(AckKind::Group, id), 1);
    assert_eq!(w.dev("a1").engine.message_by_id(id).unwrap().group_ack_count, 1);
}

#[test]
fn rule6_message_without_group_ack_request_takes_none() {
    let mut w = world();
    let id = send(&mut w, "a1", GROUP, ChatType::GroupChat, false);
    let now = w.now;
    assert_eq!(w.dev("b1").engine.ack_group_message_read(now, id, None).unwrap_err().code, ErrorCode::ServiceNotEnabled);
}

#[test]
fn rule8_read_on_one_device_updates_the_others_without_a_second_ack() {
    let mut w = world();
    let id = send(&mut w, "b1", "alice", ChatType::Chat, false);
    let now = w.now;
    w.dev("a1").engine.ack_message_read(now, id).unwrap().unwrap();
    w.pump();
    let m = w.dev("a2").engine.message_by_id(id).unwrap();
    assert!(m.receiver_read && !m.unread);
    assert_eq!(w.dev("a2").engine.ack_message_read(now, id).unwrap(), None);
    assert_eq!(w.dev("a2").engine.unread_count(&ConversationKey::new(ChatType::Chat, "bob")), 0);
    // mark-read without receipts also syncs.
    let id2 = send(&mut w, "b1", "alice", ChatType::Chat, false);
    let now = w.now;
    w.dev("a2").engine.mark_message_read(now, id2).unwrap().unwrap();
    w.pump();
    assert!(!w.dev("a1").engine.message_by_id(id2).unwrap().unread);
    assert!(!w.dev("b1").engine.message_by_id(id2).unwrap().receiver_read, "no receipt for a mark-read");
}

#[test]
fn rule9_offline_acks_are_kept_on_disk_and_flushed_in_order() {
    let mut w = world_with(default_config(), Disk::Redb);
    let ids: Vec<MsgId> = (0..3).map(|_| send(&mut w, "a1", "bob", ChatType::Chat, false)).collect();
    w.disconnect(2);
    let now = w.now;
    for id in &ids {
        w.dev("b1").engine.ack_message_read(now, *id).unwrap().unwrap();
    }
    w.restart(2); // the app is killed while offline
    let out: Vec<MsgId> = w
        .dev("b1")
        .engine
        .outbox()
        .map(|f| match f {
            ClientFrame::ReadAck { msg_id, .. } => *msg_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(out, ids);
    w.connect(2);
    w.pump();
    assert_eq!(w.dev("b1").engine.outbox().count(), 0);
    for id in &ids {
        assert!(w.dev("a1").engine.message_by_id(*id).unwrap().receiver_read);
        assert_eq!(w.server.forwarded_count(AckKind::Read, *id), 1);
    }
}

#[test]
fn rule9_unconfirmed_ack_is_resent_after_reconnect_and_counted_once() {
    let mut w = world();
    let id = send(&mut w, "a1", "bob", ChatType::Chat, false);
    let now = w.now;
    w.dev("b1").engine.ack_message_read(now, id).unwrap().unwrap();
    // The ack reaches the server, but the connection dies before the answer comes back.
    assert_eq!(w.transmit(2), 1);
    assert_eq!(w.deliver_to_server(2), 1);
    assert_eq!(w.in_flight(2), (0, 1), "the answer is on its way");
    w.disconnect(2);
    assert_eq!(w.dev("b1").engine.outbox().count(), 1);
    w.connect(2);
    w.pump();
    assert_eq!(w.dev("b1").engine.outbox().count(), 0);
    assert_eq!(w.server.forwarded_count(AckKind::Read, id), 1);
    let reads = w.dev("a1").take_events().into_iter().filter(|e| matches!(e, ClientEvent::MessagesRead(_))).count();
    assert_eq!(reads, 1);
}

#[test]
fn unread_counts_follow_watermark_and_single_reads() {
    let mut w = world();
    let key = ConversationKey::new(ChatType::Chat, "bob");
    let ids: Vec<MsgId> = (0..4).map(|_| send(&mut w, "b1", "alice", ChatType::Chat, false)).collect();
    let now = w.now;
    w.dev("a1").engine.mark_message_read(now, ids[1]).unwrap().unwrap();
    assert_eq!(w.dev("a1").engine.unread_count(&key), 3);
    w.dev("a1").engine.mark_all_messages_read(now, &key).unwrap().unwrap();
    assert_eq!(w.dev("a1").engine.unread_count(&key), 0);
    w.pump();
    assert_eq!(w.dev("a2").engine.unread_count(&key), 0);
    assert_eq!(w.server.unread("alice", &key), 0);
    send(&mut w, "b1", "alice", ChatType::Chat, false);
    assert_eq!(w.dev("a2").engine.unread_count(&key), 1);
    let evs = w.dev("a2").take_events();
    assert!(evs.iter().any(|e| matches!(e, ClientEvent::UnreadCountChanged { unread: 1, .. })));
}

#[test]
fn queries_need_a_connection_and_fail_when_it_drops() {
    let mut w = world();
    let id = send(&mut w, "a1", GROUP, ChatType::GroupChat, true);
    let now = w.now;
    let req = w.dev("a1").engine.fetch_group_read_acks(now, id, 10, None).unwrap();
    w.disconnect(0);
    let evs = w.dev("a1").take_events();
    assert!(evs.iter().any(
        |e| matches!(e, ClientEvent::RequestCompleted { req: r, result: Err(er) } if r == &req && er.code == ErrorCode::ServerNotReachable)
    ));
    assert_eq!(w.dev("a1").engine.fetch_group_read_acks(now, id, 10, None).unwrap_err().code, ErrorCode::ServerNotReachable);
}

#[test]
fn keepalive_pings_and_idle_timeout() {
    let mut w = world();
    let e = &mut w.devices[0].engine;
    // The first timeouts may be the local store's (a checkpoint): step through them, bounded,
    // up to the keepalive's ping.
    let mut ping_at = None;
    for _ in 0..8 {
        let t = e.poll_timeout().unwrap();
        assert!(e.handle_timeout(t));
        let mut pinged = false;
        while let Some(f) = e.poll_transmit(t) {
            pinged |= matches!(f, ClientFrame::Ping { .. });
        }
        if pinged {
            ping_at = Some(t);
            break;
        }
    }
    let t = ping_at.expect("a keepalive ping");
    assert!(!e.handle_timeout(t + 120_000), "nothing received for the idle timeout: dead");
}

#[test]
fn rule9_ack_confirmed_by_the_servers_event_survives_a_late_refusal_of_its_resend() {
    const RETENTION_MS: u64 = 60_000;
    let mut w = world_with(CoreConfig { retention_ms: RETENTION_MS, ..default_config() }, Disk::Mem);
    let id = send(&mut w, "a1", "bob", ChatType::Chat, false);
    // Bob reads it shortly before it expires: the message leaves the server (and every log)
    // before the `Read` event does, which was logged later (logs are trimmed by event time).
    w.advance(RETENTION_MS - 1_000);
    let now = w.now;
    let req = w.dev("b1").engine.ack_message_read(now, id).unwrap().unwrap();
    // The server accepts the ack; its answer and the event are lost with the connection.
    assert_eq!(w.transmit(2), 1);
    assert_eq!(w.deliver_to_server(2), 1);
    w.disconnect(2);
    // Meanwhile the message leaves the server (past retention): the resend after the reconnect
    // is refused.
    w.advance(2_000);
    w.prune();
    assert!(!w.server.state().messages.contains_key(&id), "pruned");
    w.dev("b1").events.clear();
    w.connect(2);
    w.pump();
    let evs = w.dev("b1").take_events();
    let done: Vec<_> = evs.iter().filter(|e| matches!(e, ClientEvent::RequestCompleted { req: r, .. } if *r == req)).collect();
    assert!(matches!(done.as_slice(), [ClientEvent::RequestCompleted { result: Ok(Completion::Done), .. }]), "{done:?}");
    assert!(w.dev("b1").engine.message_by_id(id).unwrap().receiver_read, "the refusal of the resend must not undo the ack");
    assert_eq!(w.dev("b1").engine.outbox().count(), 0);
    assert_eq!(w.server.forwarded_count(AckKind::Read, id), 1);
}
