//! Property tests: random interleavings of commands, network progress, disconnects and client
//! and server restarts, with real engines against the real server core.

use std::collections::BTreeMap;

use proptest::prelude::*;
use receipt_core::engine::Retention;
use receipt_core::protocol::ClientFrame;
use receipt_core::*;
use receipt_engine_tests::Cluster;
use receipt_engine_tests::TEST_MESSAGE_CACHE;

/// The group every user is in (the server's first group id).
const GROUP: &str = "g1";

const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// `Transmit`, `ToServer`, `ToClient`: one hop of one device's connection, so a cut can catch
/// frames in flight either way. `LoseAnswers`: the server gets everything the device sends,
/// then the connection dies before any answer comes back (the device resends from its outbox).
#[derive(Debug, Clone)]
enum Op {
    Send {
        dev: usize,
        to: usize,
        group: bool,
        need_ack: bool,
    },
    AckRead {
        dev: usize,
        pick: usize,
    },
    AckConversation {
        dev: usize,
        peer: usize,
        group: bool,
    },
    AckGroup {
        dev: usize,
        pick: usize,
    },
    MarkRead {
        dev: usize,
        pick: usize,
    },
    MarkAll {
        dev: usize,
        peer: usize,
    },
    Disconnect {
        dev: usize,
    },
    Connect {
        dev: usize,
    },
    Restart {
        dev: usize,
    },
    RestartServer,
    Transmit {
        dev: usize,
    },
    ToServer {
        dev: usize,
    },
    ToClient {
        dev: usize,
    },
    LoseAnswers {
        dev: usize,
    },
    Step,
    Pump,
    /// Local retention keeps 2 messages per conversation: a few bounded steps.
    Retain {
        dev: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 0..4usize;
    prop_oneof![
        4 => (dev.clone(), 0..3usize, any::<bool>(), any::<bool>()).prop_map(|(dev, to, group, need_ack)| Op::Send { dev, to, group, need_ack }),
        3 => (dev.clone(), any::<usize>()).prop_map(|(dev, pick)| Op::AckRead { dev, pick }),
        2 => (dev.clone(), 0..3usize, any::<bool>()).prop_map(|(dev, peer, group)| Op::AckConversation { dev, peer, group }),
        2 => (dev.clone(), any::<usize>()).prop_map(|(dev, pick)| Op::AckGroup { dev, pick }),
        2 => (dev.clone(), any::<usize>()).prop_map(|(dev, pick)| Op::MarkRead { dev, pick }),
        1 => (dev.clone(), 0..3usize).prop_map(|(dev, peer)| Op::MarkAll { dev, peer }),
        1 => dev.clone().prop_map(|dev| Op::Disconnect { dev }),
        5 => dev.clone().prop_map(|dev| Op::Connect { dev }),
        1 => dev.clone().prop_map(|dev| Op::Restart { dev }),
        1 => Just(Op::RestartServer),
        1 => dev.clone().prop_map(|dev| Op::Transmit { dev }),
        1 => dev.clone().prop_map(|dev| Op::ToServer { dev }),
        1 => dev.clone().prop_map(|dev| Op::ToClient { dev }),
        1 => dev.prop_map(|dev| Op::LoseAnswers { dev }),
        3 => Just(Op::Step),
        1 => Just(Op::Pump),
        2 => (0..4usize).prop_map(|dev| Op::Retain { dev }),
    ]
}

/// alice (a1, a2), bob (b1), carol (c1), all offline; alice owns [`GROUP`] with bob and carol.
fn world() -> Cluster {
    let o = |d: bool| ChatOptions { require_delivery_ack: d, ..Default::default() };
    let mut w = Cluster::new(&[("alice", "a1", o(true)), ("alice", "a2", o(true)), ("bob", "b1", o(true)), ("carol", "c1", o(false))]);
    assert_eq!(w.create_group("alice", &USERS[1..], false), GROUP);
    w
}

fn received_ids(w: &Cluster, dev: usize, chat_type: ChatType) -> Vec<MsgId> {
    let d = &w.devices[dev];
    let mut ids: Vec<MsgId> = d
        .engine
        .conversations()
        .filter(|c| c.key.chat_type == chat_type)
        .flat_map(|c| d.engine.conversation_messages(&c.key))
        .filter(|m| m.direction == MessageDirection::Receive)
        .map(|m| m.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// Counts match the messages on every device, and no ack is sent or forwarded twice.
fn check_invariants(w: &Cluster) -> Result<(), TestCaseError> {
    for d in &w.devices {
        // The cache stays bounded: the counts above and below come from the store.
        prop_assert!(d.engine.cached_message_count() <= TEST_MESSAGE_CACHE, "{} caches {}", d.name, d.engine.cached_message_count());
        for c in d.engine.conversations() {
            let unread = d.engine.conversation_messages(&c.key).iter().filter(|m| m.unread).count() as u32;
            prop_assert_eq!(c.local_unread, unread, "{} {:?}: count vs unread messages", d.name, c.key);
            prop_assert_eq!(c.remote_unread, 0, "{} holds the full history", d.name);
        }
        for (k, reqs) in &d.ack_reqs {
            prop_assert!(reqs.len() <= 1, "{} sent {:?} {} times", d.name, k, reqs.len());
        }
    }
    for (k, n) in &w.server.forwarded() {
        prop_assert!(*n <= 1, "server forwarded {:?} {} times", k, n);
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w = world();
    // acks the app asked for and that were queued: (dev, kind, msg)
    let mut queued: Vec<(usize, AckKind, MsgId)> = Vec::new();
    for op in ops {
        let now = w.now;
        match op {
            Op::Send { dev, to, group, need_ack } => {
                let (to, t) = if group { (GROUP.to_string(), ChatType::GroupChat) } else { (USERS[to].to_string(), ChatType::Chat) };
                let r = w.devices[dev].engine.send_message(now, &to, t, "m", need_ack);
                if t == ChatType::Chat && to == w.devices[dev].user {
                    prop_assert_eq!(r.unwrap_err().code, ErrorCode::InvalidParam);
                } else {
                    r.unwrap();
                }
            }
            Op::AckRead { dev, pick } => {
                let ids = received_ids(&w, dev, ChatType::Chat);
                if !ids.is_empty() {
                    let id = ids[pick % ids.len()];
                    if w.devices[dev].engine.ack_message_read(now, id).unwrap().is_some() {
                        queued.push((dev, AckKind::Read, id));
                    }
                }
            }
            Op::AckGroup { dev, pick } => {
                let mut ids = received_ids(&w, dev, ChatType::GroupChat);
                // Half the picks go to messages that take group acks (when there are any):
                // uniform picks would mostly hit ones that refuse them.
                let taking: Vec<MsgId> =
                    ids.iter().copied().filter(|id| w.devices[dev].engine.message_by_id(*id).unwrap().need_group_ack).collect();
                if pick % 2 == 0 && !taking.is_empty() {
                    ids = taking;
                }
                if !ids.is_empty() {
                    let id = ids[(pick / 2) % ids.len()];
                    let need = w.devices[dev].engine.message_by_id(id).unwrap().need_group_ack;
                    match w.devices[dev].engine.ack_group_message_read(now, id, Some("x")) {
                        Ok(Some(_)) => queued.push((dev, AckKind::Group, id)),
                        Ok(None) => {}
                        Err(e) => prop_assert!(!need && e.code == ErrorCode::ServiceNotEnabled),
                    }
                }
            }
            Op::AckConversation { dev, peer, group } => {
                let id = if group { GROUP } else { USERS[peer] };
                let _ = w.devices[dev].engine.ack_conversation_read(now, id);
            }
            Op::MarkRead { dev, pick } => {
                let mut ids = received_ids(&w, dev, ChatType::Chat);
                ids.extend(received_ids(&w, dev, ChatType::GroupChat));
                if !ids.is_empty() {
                    w.devices[dev].engine.mark_message_read(now, ids[pick % ids.len()]).unwrap();
                }
            }
            Op::MarkAll { dev, peer } => {
                let key = ConversationKey::new(ChatType::Chat, USERS[peer]);
                if w.devices[dev].engine.conversation(&key).is_some() {
                    w.devices[dev].engine.mark_all_messages_read(now, &key).unwrap();
                }
            }
            Op::Disconnect { dev } => w.disconnect(dev),
            Op::Connect { dev } => {
                w.connect(dev);
            }
            Op::Restart { dev } => {
                let before: Vec<ClientFrame> = w.devices[dev].engine.outbox().cloned().collect();
                w.restart(dev);
                let after: Vec<ClientFrame> = w.devices[dev].engine.outbox().cloned().collect();
                prop_assert_eq!(before, after, "outbox survives a restart");
            }
            Op::RestartServer => w.restart_server(),
            Op::Transmit { dev } => {
                w.transmit(dev);
            }
            Op::ToServer { dev } => {
                w.deliver_to_server(dev);
            }
            Op::ToClient { dev } => {
                w.deliver_to_client(dev);
            }
            Op::LoseAnswers { dev } => {
                w.transmit(dev);
                w.deliver_to_server(dev);
                w.disconnect(dev);
            }
            Op::Step => {
                w.step();
            }
            Op::Pump => w.pump(),
            Op::Retain { dev } => {
                let e = &mut w.devices[dev].engine;
                e.set_retention(Retention { max_age_ms: None, max_per_conversation: Some(2) });
                for _ in 0..4 {
                    e.retention_step(now);
                }
            }
        }
        check_invariants(&w)?;
    }
    // Everyone comes back online and the network settles.
    for i in 0..w.devices.len() {
        w.connect(i);
    }
    w.pump();
    check_invariants(&w)?;
    for d in &w.devices {
        prop_assert_eq!(d.engine.outbox().count(), 0, "{} flushed its outbox", d.name);
    }
    // Local retention down to one message per conversation: counts and flags below still hold.
    let now = w.now;
    for d in &mut w.devices {
        d.engine.set_retention(Retention { max_age_ms: None, max_per_conversation: Some(1) });
        for _ in 0..8 {
            d.engine.retention_step(now);
        }
    }
    check_invariants(&w)?;
    for (dev, kind, id) in queued {
        let user = w.devices[dev].user.clone();
        match kind {
            AckKind::Read => prop_assert!(w.server.read_receipt_of(id), "read ack of {} lost", id),
            _ => prop_assert!(w.server.group_acked_by(id, &user), "group ack of {} lost", id),
        }
    }
    // Devices agree with the server and with each other.
    for d in &w.devices {
        for key in w.server.conversations_of(&d.user) {
            prop_assert_eq!(d.engine.unread_count(&key), w.server.unread(&d.user, &key), "{} {:?}", d.name, key);
        }
    }
    let flags = |i: usize| -> BTreeMap<MsgId, (bool, bool, bool, u32)> {
        let e = &w.devices[i].engine;
        e.conversations()
            .flat_map(|c| e.conversation_messages(&c.key))
            .map(|m| (m.id, (m.unread, m.receiver_read, m.delivered, m.group_ack_count)))
            .collect()
    };
    // On the messages both hold (retention may have dropped different old ones on each).
    let (mut a, b) = (flags(0), flags(1));
    a.retain(|id, _| b.contains_key(id));
    let b: BTreeMap<_, _> = b.into_iter().filter(|(id, _)| a.contains_key(id)).collect();
    prop_assert_eq!(a, b, "alice's two devices converge");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]
    #[test]
    fn random_interleavings_keep_counts_acks_and_outbox_right(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
