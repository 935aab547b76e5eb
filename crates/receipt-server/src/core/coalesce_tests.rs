//! Large groups at flat per-ack cost: coalesced count updates on simulated time.

use super::*;
use receipt_core::protocol::PROTOCOL_VERSION;

const T0: u64 = 1_000_000;
/// The interval of these tests' count updates (ms).
const IV: u64 = 500;

fn core(coalesce_above: usize, visibility: crate::config::Visibility) -> ServerCore {
    let mut cfg = CoreConfig::from(&ServerConfig::default());
    cfg.send_rate = RateLimit::OFF;
    cfg.request_rate = RateLimit::OFF;
    cfg.max_to_unseen_per_user = 0;
    cfg.max_group_size = 10_000;
    cfg.group_ack = GroupAckPolicy { enabled: true, member_cap: 10_000, coalesce_above, coalesce_ms: IV, visibility, ..Default::default() };
    ServerCore::new(cfg, State::default())
}

fn login_v(c: &mut ServerCore, s: SessionId, user: &str, device: &str, since: u64, v: u32) -> Vec<ServerFrame> {
    let fx = c.handle(T0, s, ClientFrame::Login { v, user: user.into(), device: device.into(), token: String::new(), since });
    fx.out.iter().filter(|o| o.session == s).map(|o| (*o.frame).clone()).collect()
}

fn member(i: usize) -> String {
    format!("u{i:05}")
}

/// A group of `size` members (the owner "owner" included) and one message of the owner asking
/// for read acks.
fn group_and_message(c: &mut ServerCore, size: usize) -> (String, MsgId) {
    group_and_message_then(c, size, |_, _| {})
}

/// [`group_and_message`], handing each request's effects to `done` (a store commits them).
fn group_and_message_then(c: &mut ServerCore, size: usize, mut done: impl FnMut(&mut ServerCore, Effects)) -> (String, MsgId) {
    let members: Vec<String> = (1..size).map(member).collect();
    let (r, fx) = c.apply_as(T0, "owner", ClientFrame::CreateGroup { req: 1, name: "big".into(), members, chat_room: false });
    let Ok(Response::GroupCreated { group }) = r else { panic!("{r:?}") };
    done(c, fx);
    let send = ClientFrame::Send {
        req: 2,
        client_id: "m".into(),
        to: group.clone(),
        chat_type: ChatType::GroupChat,
        content: "hello".into(),
        require_delivery_ack: false,
        need_group_ack: true,
    };
    let (r, fx) = c.apply_as(T0, "owner", send);
    let Ok(Response::Sent { msg_id, need_group_ack: true, .. }) = r else { panic!("{r:?}") };
    done(c, fx);
    (group, msg_id)
}

fn ack(c: &mut ServerCore, now: u64, user: &str, msg_id: MsgId) -> Effects {
    let (r, fx) = c.apply_as(now, user, ClientFrame::GroupAck { req: 3, msg_id, ext: None, private: false });
    r.unwrap();
    fx
}

fn events_to(fx: &Effects, s: SessionId) -> Vec<ServerEvent> {
    fx.out
        .iter()
        .filter(|o| o.session == s)
        .filter_map(|o| match &*o.frame {
            ServerFrame::Event { event } => Some((*event.event).clone()),
            _ => None,
        })
        .collect()
}

fn counts(evs: &[ServerEvent]) -> Vec<u32> {
    evs.iter().filter_map(|e| if let ServerEvent::GroupAckCount { count, .. } = e { Some(*count) } else { None }).collect()
}

fn group_reads(evs: &[ServerEvent]) -> usize {
    evs.iter().filter(|e| matches!(e, ServerEvent::GroupRead { .. })).count()
}

/// The events of `user`'s log (everything resident: no store).
fn log_of(c: &ServerCore, user: &str) -> Vec<ServerEvent> {
    c.state.logs.get(user).map(|l| l.iter().map(|e| (*e.event).clone()).collect()).unwrap_or_default()
}

#[test]
fn an_ack_storm_on_a_large_group_gives_the_sender_one_count_per_interval_with_the_exact_total() {
    let mut c = core(200, crate::config::Visibility::SenderOnly);
    let (_, id) = group_and_message(&mut c, 2_000);
    login_v(&mut c, 1, "owner", "phone", u64::MAX, PROTOCOL_VERSION);
    // One acker with two devices: the one acking (10) and another (11).
    login_v(&mut c, 10, &member(1), "a", u64::MAX, PROTOCOL_VERSION);
    login_v(&mut c, 11, &member(1), "b", u64::MAX, PROTOCOL_VERSION);
    let log_before = log_of(&c, "owner").len();
    let mut to_sender = Vec::new();
    // 1,000 acks within one interval (one every 0.4 ms), the pipeline flushing after each.
    for i in 1..=1000usize {
        let now = T0 + 10 + (i as u64 * 2) / 5;
        let fx = if i == 1 {
            c.handle(now, 10, ClientFrame::GroupAck { req: 3, msg_id: id, ext: Some("seen".into()), private: false })
        } else {
            ack(&mut c, now, &member(i), id)
        };
        if i == 1 {
            assert_eq!(group_reads(&events_to(&fx, 11)), 1, "the acker's other device gets its echo");
            assert!(events_to(&fx, 10).is_empty(), "the acking device has the answer");
        }
        assert!(fx.ops.iter().any(|o| matches!(o, StoreOp::PutGroupAck(_))), "every ack is stored");
        assert!(fx.ops.len() <= 8, "an ack's store ops do not grow with the group: {}", fx.ops.len());
        to_sender.extend(events_to(&fx, 1));
        c.flush_counts(now, false);
        to_sender.extend(events_to(&c.take_effects(), 1));
    }
    assert_eq!(group_reads(&to_sender), 0, "no per-ack event to the sender");
    assert!(counts(&to_sender).is_empty(), "nothing before the interval ended");
    assert_eq!(c.pending_counts(), 1, "one pending entry for the message, whatever the acks");
    c.flush_counts(T0 + 10 + IV - 1, false);
    assert!(counts(&events_to(&c.take_effects(), 1)).is_empty());
    c.flush_counts(T0 + 10 + IV, false);
    let fx = c.take_effects();
    assert_eq!(counts(&events_to(&fx, 1)), vec![1000], "one update with the exact count");
    assert!(events_to(&fx, 10).is_empty() && events_to(&fx, 11).is_empty(), "the acker hears no count update");
    // The update is in the sender's log (an offline device gets it at sync), once.
    let log: Vec<ServerEvent> = log_of(&c, "owner")[log_before..].to_vec();
    assert_eq!((counts(&log), group_reads(&log)), (vec![1000], 0));
    assert_eq!(c.pending_counts(), 0);
    // Nothing changed since: the next ticks send nothing.
    c.flush_counts(T0 + 10 + 5 * IV, false);
    assert!(events_to(&c.take_effects(), 1).is_empty());
    // A later ack: one more update, one interval after it.
    ack(&mut c, T0 + 2_000, &member(1500), id);
    c.flush_counts(T0 + 2_000 + IV, false);
    assert_eq!(counts(&events_to(&c.take_effects(), 1)), vec![1001]);
    // The acker's read state synced as before: the message is read for it.
    assert_eq!(c.state.convs[&member(1)][&ConversationKey::new(ChatType::GroupChat, &c.state.messages[&id].msg.to)].unread, 0);
}

#[test]
fn over_several_intervals_the_sender_gets_at_most_one_update_per_interval() {
    let mut c = core(200, crate::config::Visibility::SenderOnly);
    let (_, id) = group_and_message(&mut c, 2_000);
    login_v(&mut c, 1, "owner", "phone", u64::MAX, PROTOCOL_VERSION);
    // 1,500 acks over 3 s, a tick every 100 ms and a flush after every ack.
    let mut updates: Vec<(u64, u32)> = Vec::new();
    for i in 1..=1500usize {
        let now = T0 + i as u64 * 2;
        ack(&mut c, now, &member(i), id);
        c.flush_counts(now, false);
        updates.extend(counts(&events_to(&c.take_effects(), 1)).into_iter().map(|n| (now, n)));
    }
    c.flush_counts(T0 + 10_000, false);
    updates.extend(counts(&events_to(&c.take_effects(), 1)).into_iter().map(|n| (T0 + 10_000, n)));
    assert!(updates.len() <= 3_000 / IV as usize + 1, "{} updates for 3 s of acks", updates.len());
    for w in updates.windows(2) {
        assert!(w[1].0 - w[0].0 >= IV, "two updates within one interval: {w:?}");
        assert!(w[1].1 > w[0].1, "counts only grow: {w:?}");
    }
    assert_eq!(updates.last().unwrap().1, 1500, "the last update has the exact count");
}

#[test]
fn with_visibility_all_members_a_large_group_sends_no_per_ack_event_to_the_members() {
    let mut c = core(200, crate::config::Visibility::AllMembers);
    let (_, id) = group_and_message(&mut c, 2_000);
    login_v(&mut c, 1, "owner", "phone", u64::MAX, PROTOCOL_VERSION);
    login_v(&mut c, 2, &member(7), "p", u64::MAX, PROTOCOL_VERSION);
    let mut fx = Effects::default();
    for i in 100..200 {
        fx.append(ack(&mut c, T0 + 1, &member(i), id));
    }
    // 100 acks: without coalescing, 2,000 logs x 100 events; here one echo per acker.
    let appended = fx.ops.iter().filter(|o| matches!(o, StoreOp::AppendEvent { .. })).count();
    assert_eq!(appended, 100, "one log event per ack (the acker's echo)");
    assert!(events_to(&fx, 2).is_empty() && events_to(&fx, 1).is_empty());
    c.flush_counts(T0 + 1 + IV, false);
    let fx = c.take_effects();
    assert_eq!(counts(&events_to(&fx, 1)), vec![100]);
    assert!(events_to(&fx, 2).is_empty(), "members fetch counts on demand");
    // A member may still ask for the counts (visibility all).
    let (r, _) = c.apply_as(T0 + 2, &member(7), ClientFrame::FetchGroupAckCounts { req: 4, msg_ids: vec![id] });
    let Ok(Response::GroupAckCounts { items }) = r else { panic!("{r:?}") };
    assert_eq!((items[0].count, items[0].err.is_none()), (100, true));
}

#[test]
fn at_the_threshold_every_ack_is_an_event_and_one_member_more_coalesces() {
    for (size, coalesced) in [(200, false), (201, true)] {
        let mut c = core(200, crate::config::Visibility::SenderOnly);
        let (_, id) = group_and_message(&mut c, size);
        login_v(&mut c, 1, "owner", "phone", u64::MAX, PROTOCOL_VERSION);
        let mut evs = Vec::new();
        for i in 1..=5 {
            evs.extend(events_to(&ack(&mut c, T0 + 1, &member(i), id), 1));
        }
        c.flush_counts(T0 + 1 + IV, false);
        evs.extend(events_to(&c.take_effects(), 1));
        if coalesced {
            assert_eq!((group_reads(&evs), counts(&evs)), (0, vec![5]), "{size} members");
        } else {
            assert_eq!((group_reads(&evs), counts(&evs)), (5, vec![]), "{size} members: as before");
        }
    }
}

#[test]
fn a_version_2_device_is_never_sent_a_count_update_live_or_replayed() {
    let mut c = core(200, crate::config::Visibility::SenderOnly);
    let (_, id) = group_and_message(&mut c, 300);
    login_v(&mut c, 1, "owner", "new", u64::MAX, PROTOCOL_VERSION);
    login_v(&mut c, 2, "owner", "old", u64::MAX, 2);
    ack(&mut c, T0 + 1, &member(1), id);
    c.flush_counts(T0 + 1 + IV, false);
    let fx = c.take_effects();
    assert_eq!(counts(&events_to(&fx, 1)), vec![1]);
    assert!(events_to(&fx, 2).is_empty(), "a v2 decoder would refuse the event");
    let replay = |frames: &[ServerFrame]| -> Vec<ServerEvent> {
        frames
            .iter()
            .flat_map(
                |f| if let ServerFrame::Backlog { events } = f { events.iter().map(|e| (*e.event).clone()).collect() } else { vec![] },
            )
            .collect()
    };
    let v3 = replay(&login_v(&mut c, 3, "owner", "tablet", 0, PROTOCOL_VERSION));
    let v2 = replay(&login_v(&mut c, 4, "owner", "watch", 0, 2));
    assert_eq!(counts(&v3), vec![1]);
    assert!(counts(&v2).is_empty() && v2.len() + 1 == v3.len(), "the v2 replay skips only the count update");
}

#[test]
fn after_a_restart_the_stored_acks_count_and_pending_updates_are_flushed_at_shutdown() {
    use crate::store::ServerStore;
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::RedbServerStore::open(dir.path()).unwrap();
    let open = |store: &mut crate::store::RedbServerStore| {
        let mut c = core(200, crate::config::Visibility::SenderOnly);
        let cfg = c.cfg.clone();
        c = ServerCore::with_store(cfg, store.load_hot().unwrap(), store.reader().unwrap(), 1 << 20);
        c
    };
    let mut c = open(&mut store);
    let commit = |c: &mut ServerCore, store: &mut crate::store::RedbServerStore, fx: Effects| {
        store.commit(&[&fx.ops]).unwrap();
        c.committed(fx.batch);
        fx
    };
    let (_, id) = group_and_message_then(&mut c, 500, |c, fx| {
        commit(c, &mut store, fx);
    });
    for i in 1..=40 {
        let fx = ack(&mut c, T0 + 1, &member(i), id);
        commit(&mut c, &mut store, fx);
    }
    // Shutdown: what is pending is logged now, not lost with the process.
    c.flush_counts(T0 + 2, true);
    let fx = c.take_effects();
    commit(&mut c, &mut store, fx);
    drop(c);
    let mut c = open(&mut store);
    let frames = login_v(&mut c, 1, "owner", "phone", 0, PROTOCOL_VERSION);
    let replayed: Vec<u32> = frames
        .iter()
        .flat_map(|f| {
            if let ServerFrame::Backlog { events } = f {
                counts(&events.iter().map(|e| (*e.event).clone()).collect::<Vec<_>>())
            } else {
                vec![]
            }
        })
        .collect();
    assert_eq!(replayed, vec![40], "the flushed update survived the restart");
    // The count goes on from the stored acks.
    for i in 41..=45 {
        let fx = ack(&mut c, T0 + 10, &member(i), id);
        commit(&mut c, &mut store, fx);
    }
    c.flush_counts(T0 + 10 + IV, false);
    let fx = c.take_effects();
    assert_eq!(counts(&events_to(&fx, 1)), vec![45]);
    commit(&mut c, &mut store, fx);
    let (r, _) = c.apply_as(T0 + 11, &member(3), ClientFrame::GroupAck { req: 5, msg_id: id, ext: None, private: false });
    r.unwrap();
    assert_eq!(c.pending_counts(), 0, "a repeated ack (read back from the store) changes no count");
}
