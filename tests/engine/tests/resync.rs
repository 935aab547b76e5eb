//! Device cursors and the full state resync, with real engines against the real server core on
//! simulated time: a device offline while its user's other device drives the log far past it,
//! the log trimmed below the cursors of the devices the server still remembers, then the device
//! logs in and gets the state (docs/server-data-model.md, "Event logs and device cursors").

use receipt_core::engine::{ClientEvent, Completion, CURSOR_REPORT_MS};
use receipt_core::*;
use receipt_engine_tests::{default_config, Cluster, Disk};

// Under the engines' idle timeout (60 s): the online ones stay connected while the clock jumps.
const HORIZON_MS: u64 = 30_000;

fn opts() -> ChatOptions {
    ChatOptions { require_delivery_ack: true, require_read_ack: true, ..Default::default() }
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
    evs.iter().flat_map(|e| if let ClientEvent::MessagesReceived(m) = e { m.iter().map(|m| m.id).collect() } else { vec![] }).collect()
}

/// Receipt callbacks: delivered, read, group read (what a resync must not replay).
fn receipt_callbacks(evs: &[ClientEvent]) -> usize {
    evs.iter()
        .filter(|e| matches!(e, ClientEvent::MessagesDelivered(_) | ClientEvent::MessagesRead(_) | ClientEvent::GroupMessageRead(_)))
        .count()
}

/// Every online device's timer fires after the cursor report interval: each reports its cursor.
fn report_cursors(w: &mut Cluster) {
    w.advance(CURSOR_REPORT_MS + 1);
    let now = w.now;
    for d in &mut w.devices {
        if d.online() {
            assert!(d.engine.handle_timeout(now));
        }
    }
    w.pump();
}

/// alice (a1, a2), bob (b1, b2), carol (c1); alice owns group g1 with bob and carol. Devices
/// unseen for 30 s are forgotten.
fn world() -> (Cluster, GroupId) {
    let mut cfg = default_config();
    cfg.device_horizon_ms = HORIZON_MS;
    let mut w = Cluster::build(
        cfg,
        &[
            ("alice", "a1", opts(), Disk::Mem),
            ("alice", "a2", opts(), Disk::Mem),
            ("bob", "b1", opts(), Disk::Mem),
            ("bob", "b2", opts(), Disk::Mem),
            ("carol", "c1", opts(), Disk::Mem),
            ("bob", "b3", opts(), Disk::Mem),
        ],
    );
    let g = w.create_group("alice", &["bob", "carol"], false);
    for i in 0..5 {
        w.connect(i);
    }
    w.pump();
    (w, g)
}

#[test]
fn an_offline_device_past_the_trimmed_log_resyncs_with_the_servers_counts_and_flags_and_no_replayed_callback() {
    let (mut w, g) = world();
    let m1 = send(&mut w, "a1", "bob", ChatType::Chat, false);
    assert!(w.dev("a2").engine.message_by_id(m1).unwrap().delivered);
    assert!(w.dev("b2").engine.message_by_id(m1).is_some());
    for d in ["a2", "b2"] {
        let i = w.index(d);
        w.disconnect(i);
    }
    for d in &mut w.devices {
        d.events.clear();
    }
    // Meanwhile, far past them: reads, group acks, messages both ways.
    let now = w.now;
    w.dev("b1").engine.ack_message_read(now, m1).unwrap();
    let m2 = send(&mut w, "a1", "bob", ChatType::Chat, false);
    let m3 = send(&mut w, "a1", "bob", ChatType::Chat, false);
    let now = w.now;
    w.dev("b1").engine.ack_message_read(now, m2).unwrap();
    let gm = send(&mut w, "a1", &g, ChatType::GroupChat, true);
    let now = w.now;
    w.dev("b1").engine.ack_group_message_read(now, gm, None).unwrap();
    w.dev("c1").engine.ack_group_message_read(now, gm, None).unwrap();
    let m4 = send(&mut w, "b1", "alice", ChatType::Chat, false);
    let extra: Vec<MsgId> = (0..20).map(|_| send(&mut w, "c1", "bob", ChatType::Chat, false)).collect();
    w.pump();
    // The online devices report their cursors; the offline ones are forgotten past the horizon
    // and the logs are trimmed below what the remembered devices applied.
    w.advance(HORIZON_MS);
    report_cursors(&mut w);
    w.prune();
    let st = w.server.state();
    for (user, dev) in [("alice", "a1"), ("bob", "b1")] {
        assert_eq!(st.cursors[user][dev].seq, st.head(user), "{dev} reported its cursor at the head");
        assert!(!st.cursors[user].contains_key(if user == "alice" { "a2" } else { "b2" }), "forgotten");
        assert_eq!(st.trimmed_up_to(user), st.head(user), "{user}'s log trimmed to the head");
        assert!(st.logs.get(user).is_none_or(Vec::is_empty));
    }
    let (b2_cursor, a2_cursor) = (w.dev("b2").engine.cursor(), w.dev("a2").engine.cursor());
    assert!(b2_cursor < w.server.state().trimmed_up_to("bob") && a2_cursor < w.server.state().trimmed_up_to("alice"));
    let b2_acks_before = w.dev("b2").ack_reqs.clone();
    for d in ["a2", "b2"] {
        let i = w.index(d);
        w.connect(i);
    }
    w.pump();
    // bob's tablet: the messages it never saw arrive once each; m1 (held) is updated silently.
    let b2 = w.dev("b2").take_events();
    let mut want: Vec<MsgId> = vec![m2, m3, gm];
    want.extend(&extra);
    let mut got = received(&b2);
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "each retained message it never saw, once; none it held");
    assert_eq!(receipt_callbacks(&b2), 0, "{b2:?}");
    let b2e = &w.dev("b2").engine;
    let seen = |id| b2e.message_by_id(id).unwrap();
    assert!(!seen(m1).unread && seen(m1).receiver_read && seen(m1).delivered, "{:?}", seen(m1));
    assert!(!seen(m2).unread && seen(m3).unread);
    assert!(!seen(gm).unread && seen(gm).group_ack_sent);
    assert_eq!(seen(m4).direction, MessageDirection::Send, "its own message from the other device");
    assert_eq!(b2e.cursor(), w.server.state().head("bob"), "the cursor jumped to the head");
    for key in [
        ConversationKey::new(ChatType::Chat, "alice"),
        ConversationKey::new(ChatType::Chat, "carol"),
        ConversationKey::new(ChatType::GroupChat, g.clone()),
    ] {
        assert_eq!(w.dev("b2").engine.unread_count(&key), w.server.unread("bob", &key), "{key:?}");
    }
    assert_eq!(w.dev("b2").engine.unread_count(&ConversationKey::new(ChatType::Chat, "alice")), 1);
    assert_eq!(w.dev("b2").engine.unread_count(&ConversationKey::new(ChatType::Chat, "carol")), 20);
    // No delivery ack sent again: b1 sent them all.
    assert_eq!(w.dev("b2").ack_reqs, b2_acks_before, "no ack sent at the resync");
    // alice's second device, the sender: delivered, read and the group ack count, no callbacks.
    let a2 = w.dev("a2").take_events();
    assert_eq!(received(&a2), vec![m4]);
    assert_eq!(receipt_callbacks(&a2), 0, "{a2:?}");
    let a2e = &w.dev("a2").engine;
    let m = |id| a2e.message_by_id(id).unwrap();
    assert!(m(m1).delivered && m(m1).receiver_read);
    assert!(m(m2).delivered && m(m2).receiver_read);
    assert!(m(m3).delivered && !m(m3).receiver_read);
    assert_eq!(m(gm).group_ack_count, 2);
    assert_eq!(
        a2e.unread_count(&ConversationKey::new(ChatType::Chat, "bob")),
        w.server.unread("alice", &ConversationKey::new(ChatType::Chat, "bob"))
    );
    // After the resync the device reported its new cursor (the log is not pinned by it).
    assert_eq!(w.server.state().cursors["bob"]["b2"].seq, w.server.state().head("bob"));
    // Live again: a new message arrives once, as usual.
    let live = send(&mut w, "a1", "bob", ChatType::Chat, false);
    assert_eq!(received(&w.dev("b2").take_events()), vec![live]);
}

#[test]
fn a_new_device_after_trimming_gets_every_retained_message_once_with_the_counts() {
    let (mut w, g) = world();
    let ids: Vec<MsgId> = (0..5).map(|_| send(&mut w, "a1", "bob", ChatType::Chat, false)).collect();
    let gm = send(&mut w, "c1", &g, ChatType::GroupChat, false);
    let now = w.now;
    w.dev("b1").engine.ack_message_read(now, ids[0]).unwrap();
    w.pump();
    // b2 is online too: both bob devices report, the log is trimmed below them.
    report_cursors(&mut w);
    assert!(w.server.state().trimmed_up_to("bob") > 0);
    let b3 = w.index("b3");
    w.connect(b3);
    w.pump();
    let evs = w.dev("b3").take_events();
    let mut want = ids.clone();
    want.push(gm);
    assert_eq!(received(&evs), want, "every retained message once, in conversation order");
    assert_eq!(receipt_callbacks(&evs), 0);
    let chat = ConversationKey::new(ChatType::Chat, "alice");
    assert_eq!(w.dev("b3").engine.unread_count(&chat), 4);
    assert_eq!(w.dev("b3").engine.unread_count(&ConversationKey::new(ChatType::GroupChat, g)), 1);
    assert!(!w.dev("b3").engine.message_by_id(ids[0]).unwrap().unread);
    assert!(w.dev("b3").engine.is_connected());
    // Nothing outstanding: every delivery ack was already sent by b1 (the server said so).
    assert_eq!(w.dev("b3").engine.outbox().count(), 0);
}

/// Events held in the logs of the users (memory; the `events` rows hold the same events).
fn logged_events(w: &Cluster) -> usize {
    w.server.state().logs.values().map(Vec::len).sum()
}

#[test]
fn logs_stay_bounded_by_the_cursors_while_every_device_reads() {
    const MESSAGES: usize = 2_000;
    let (mut w, _) = world();
    let mut peak = 0;
    for i in 0..MESSAGES {
        let now = w.now;
        w.dev("a1").engine.send_message(now, "bob", ChatType::Chat, "hi", false).unwrap();
        w.pump();
        if i % 50 == 49 {
            report_cursors(&mut w);
        }
        peak = peak.max(logged_events(&w));
    }
    // Without trimming below the cursors a log keeps one retention period (7 days here): every
    // event of the run.
    let st = w.server.state();
    let logged: u64 = ["alice", "bob", "carol"].iter().map(|u| st.head(u)).sum();
    println!(
        "logs: {MESSAGES} messages with their delivery receipts, every device online and reading: \
         events held at most {peak}, at the end {}; retention-only trimming would hold all {logged}",
        logged_events(&w)
    );
    // Every device reads: the logs hold what arrived since the last reports (every 5 s or 256
    // events), not the whole run.
    assert!(peak < 1_200 && (peak as u64) < logged / 5, "{peak} events held of {logged}");
}
