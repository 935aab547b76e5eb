//! Unit tests of device cursors, log trimming below them, the full state resync and unread
//! counts at retention (docs/server-data-model.md, "Event logs and device cursors").

use super::*;
use receipt_core::protocol::{RetainedMessage, PROTOCOL_VERSION};

const T0: u64 = 1_000_000;

fn core_with(f: impl FnOnce(&mut CoreConfig)) -> ServerCore {
    let mut cfg = CoreConfig::from(&ServerConfig::default());
    cfg.send_rate = RateLimit::OFF;
    cfg.request_rate = RateLimit::OFF;
    cfg.max_to_unseen_per_user = 0;
    f(&mut cfg);
    ServerCore::new(cfg, State::default())
}

/// Logs `user` in on `device` as session `s` and drives the replay to its end (bounded).
fn login_v(c: &mut ServerCore, now: u64, s: SessionId, user: &str, device: &str, since: u64, v: u32) -> Vec<ServerFrame> {
    let login = ClientFrame::Login { v, user: user.into(), device: device.into(), token: String::new(), since };
    let fx = c.handle(now, s, login);
    let mut frames: Vec<ServerFrame> = fx.out.iter().filter(|o| o.session == s).map(|o| (*o.frame).clone()).collect();
    for _ in 0..1000 {
        if frames.iter().any(|f| matches!(f, ServerFrame::SyncDone { .. })) {
            return frames;
        }
        c.replay_more(s);
        frames.extend(c.take_effects().out.iter().filter(|o| o.session == s).map(|o| (*o.frame).clone()));
    }
    panic!("no SyncDone after 1000 windows");
}

fn login(c: &mut ServerCore, now: u64, s: SessionId, user: &str, device: &str, since: u64) -> Vec<ServerFrame> {
    login_v(c, now, s, user, device, since, PROTOCOL_VERSION)
}

fn req(c: &mut ServerCore, now: u64, s: SessionId, frame: ClientFrame) -> (Result<Response, ChatError>, Effects) {
    let fx = c.handle(now, s, frame);
    let res = fx
        .out
        .iter()
        .find_map(|o| match &*o.frame {
            ServerFrame::Result { ok: Some(r), .. } if o.session == s => Some(Ok(r.clone())),
            ServerFrame::Result { err: Some(e), .. } if o.session == s => Some(Err(e.clone())),
            _ => None,
        })
        .expect("an answer");
    (res, fx)
}

fn send(c: &mut ServerCore, now: u64, s: SessionId, cid: &str, to: &str, t: ChatType, need_group_ack: bool) -> MsgId {
    let frame = ClientFrame::Send {
        req: 1,
        client_id: cid.into(),
        to: to.into(),
        chat_type: t,
        content: format!("content of {cid}"),
        require_delivery_ack: true,
        need_group_ack,
    };
    match req(c, now, s, frame).0 {
        Ok(Response::Sent { msg_id, .. }) => msg_id,
        r => panic!("{r:?}"),
    }
}

fn trims(fx: &Effects) -> Vec<(String, u64)> {
    fx.ops.iter().filter_map(|op| if let StoreOp::TrimLog { user, up_to } = op { Some((user.clone(), *up_to)) } else { None }).collect()
}

fn resync_pages(frames: &[ServerFrame]) -> Vec<RetainedMessage> {
    frames.iter().filter_map(|f| if let ServerFrame::Resync { messages } = f { Some(messages.clone()) } else { None }).flatten().collect()
}

fn sync_done(frames: &[ServerFrame]) -> (u64, bool, Vec<ConversationState>) {
    let mut pages = Vec::new();
    for f in frames {
        match f {
            ServerFrame::SyncConversations { conversations } => pages.extend(conversations.iter().cloned()),
            ServerFrame::SyncDone { head, conversations, resync } => {
                pages.extend(conversations.iter().cloned());
                return (*head, *resync, pages);
            }
            _ => {}
        }
    }
    panic!("no SyncDone")
}

use receipt_core::protocol::ConversationState;

#[test]
fn a_log_is_trimmed_below_the_lowest_cursor_of_the_remembered_devices() {
    let mut c = core_with(|_| {});
    login(&mut c, T0, 1, "alice", "a1", 0);
    login(&mut c, T0, 2, "bob", "phone", 0);
    login(&mut c, T0, 3, "bob", "tablet", 0);
    for i in 0..10 {
        send(&mut c, T0, 1, &format!("m{i}"), "bob", ChatType::Chat, false);
    }
    assert_eq!(c.state.head("bob"), 10);
    // The phone applied everything; the tablet nothing yet: nothing is trimmed.
    let fx = c.handle(T0 + 1, 2, ClientFrame::SyncCursor { seq: 10 });
    assert!(trims(&fx).is_empty());
    assert!(fx
        .ops
        .iter()
        .any(|op| matches!(op, StoreOp::PutCursor { user, device, cursor } if user == "bob" && device == "phone" && cursor.seq == 10)));
    assert_eq!(c.state.logs["bob"].len(), 10);
    // The tablet reaches 6: the prefix both applied goes, from memory and the store.
    let fx = c.handle(T0 + 2, 3, ClientFrame::SyncCursor { seq: 6 });
    assert_eq!(trims(&fx), vec![("bob".to_string(), 6)]);
    assert_eq!(c.state.logs["bob"].iter().map(|e| e.seq).collect::<Vec<_>>(), (7..=10).collect::<Vec<_>>());
    assert_eq!((c.state.head("bob"), c.state.trimmed_up_to("bob")), (10, 6));
    // Both at the head: the log is empty, its head stays (seqs never go back).
    c.handle(T0 + 3, 3, ClientFrame::SyncCursor { seq: 10 });
    assert!(!c.state.logs.contains_key("bob"));
    send(&mut c, T0 + 4, 1, "after", "bob", ChatType::Chat, false);
    assert_eq!(c.state.logs["bob"][0].seq, 11);
    // The retention pass copes with the log emptied under its queue entry (no panic, no
    // second entry: one per log).
    c.prune(T0 + 30 * 24 * 3_600_000);
    assert!(c.trim_queue.len() <= c.state.logs.len() + 1);
}

#[test]
fn a_cursor_ahead_of_the_head_or_going_back_is_ignored() {
    let mut c = core_with(|_| {});
    login(&mut c, T0, 1, "alice", "a1", 0);
    login(&mut c, T0, 2, "bob", "phone", 0);
    for i in 0..5 {
        send(&mut c, T0, 1, &format!("m{i}"), "bob", ChatType::Chat, false);
    }
    // Ahead of the head: it would trim events nobody applied.
    let fx = c.handle(T0, 2, ClientFrame::SyncCursor { seq: 1_000 });
    assert!(fx.ops.is_empty() && fx.out.is_empty(), "{fx:?}");
    assert_eq!(c.state.cursors["bob"]["phone"].seq, 0);
    let fx = c.handle(T0, 2, ClientFrame::SyncCursor { seq: 4 });
    assert_eq!(trims(&fx), vec![("bob".to_string(), 4)]);
    // Going back on a live session: ignored; the same cursor again: no write.
    let fx = c.handle(T0, 2, ClientFrame::SyncCursor { seq: 2 });
    assert!(fx.ops.is_empty());
    let fx = c.handle(T0 + 1, 2, ClientFrame::SyncCursor { seq: 4 });
    assert!(fx.ops.is_empty(), "{fx:?}");
    assert_eq!(c.state.cursors["bob"]["phone"].seq, 4);
    // Not logged in: nothing.
    assert!(c.handle(T0, 99, ClientFrame::SyncCursor { seq: 1 }).ops.is_empty());
}

#[test]
fn devices_unseen_past_the_horizon_or_over_the_cap_are_forgotten_and_the_log_follows() {
    let mut c = core_with(|cfg| {
        cfg.device_horizon_ms = 10_000;
        cfg.max_remembered_devices = 2;
        cfg.retention_ms = 365 * 24 * 3_600_000;
    });
    login(&mut c, T0, 1, "alice", "a1", 0);
    login(&mut c, T0, 2, "bob", "old", 0);
    c.disconnect(2);
    for i in 0..5 {
        send(&mut c, T0, 1, &format!("m{i}"), "bob", ChatType::Chat, false);
    }
    login(&mut c, T0 + 5_000, 3, "bob", "phone", 0);
    c.handle(T0 + 5_000, 3, ClientFrame::SyncCursor { seq: 5 });
    assert_eq!(c.state.logs["bob"].len(), 5, "the old device still holds the log");
    // Past the horizon of the old device (not of the phone, online): forgotten, log trimmed.
    let fx = c.prune(T0 + 12_000);
    assert!(fx.ops.iter().any(|op| matches!(op, StoreOp::DeleteCursor { device, .. } if device == "old")));
    assert_eq!(trims(&fx), vec![("bob".to_string(), 5)]);
    assert!(!c.state.cursors["bob"].contains_key("old"));
    // An online device is kept however long it stays silent.
    c.prune(T0 + 100_000);
    assert!(c.state.cursors["bob"].contains_key("phone"));
    // The cap: a third device forgets the least recently seen offline one.
    login(&mut c, T0 + 100_001, 4, "bob", "watch", 5);
    c.disconnect(4);
    login(&mut c, T0 + 100_002, 5, "bob", "laptop", 5);
    let devices: Vec<&str> = c.state.cursors["bob"].keys().map(String::as_str).collect();
    assert_eq!(devices, vec!["laptop", "phone"], "the phone is online, the watch was the oldest offline");
}

#[test]
fn a_device_below_the_trimmed_prefix_gets_the_retained_state_with_its_flags() {
    let mut c = core_with(|cfg| cfg.group_ack.enabled = true);
    login(&mut c, T0, 1, "alice", "a1", 0);
    login(&mut c, T0, 2, "bob", "phone", 0);
    login(&mut c, T0, 3, "carol", "c1", 0);
    let m1 = send(&mut c, T0, 1, "m1", "bob", ChatType::Chat, false);
    let m2 = send(&mut c, T0, 1, "m2", "bob", ChatType::Chat, false);
    let m3 = send(&mut c, T0, 2, "m3", "alice", ChatType::Chat, false);
    req(&mut c, T0, 2, ClientFrame::DeliveryAck { req: 2, msg_id: m1 }).0.unwrap();
    req(&mut c, T0, 2, ClientFrame::ReadAck { req: 3, msg_id: m1, private: false }).0.unwrap();
    let members = vec!["bob".to_string(), "carol".to_string()];
    let Ok(Response::GroupCreated { group }) =
        req(&mut c, T0, 1, ClientFrame::CreateGroup { req: 4, name: "g".into(), members, chat_room: false }).0
    else {
        panic!()
    };
    let g1 = send(&mut c, T0, 1, "g1", &group, ChatType::GroupChat, true);
    req(&mut c, T0, 3, ClientFrame::GroupAck { req: 5, msg_id: g1, ext: None, private: false }).0.unwrap();
    // Bob's and alice's only devices applied everything: their logs are trimmed to the head.
    for (s, user) in [(1, "alice"), (2, "bob")] {
        let head = c.state.head(user);
        c.handle(T0, s, ClientFrame::SyncCursor { seq: head });
        assert_eq!(c.state.trimmed_up_to(user), head);
    }
    // A new device of bob's: the log cannot replay what it missed, so the state comes instead.
    let head = c.state.head("bob");
    let frames = login(&mut c, T0 + 1, 10, "bob", "new", 0);
    assert!(!frames.iter().any(|f| matches!(f, ServerFrame::Backlog { .. })), "nothing to replay after the head");
    let got = resync_pages(&frames);
    let by_id = |id| got.iter().find(|m| m.msg.id == id).unwrap_or_else(|| panic!("{id} missing: {got:?}"));
    assert_eq!(got.len(), 4, "every retained message of bob's conversations, once");
    let r1 = by_id(m1);
    assert!(r1.delivered && r1.read_acked && r1.read, "{r1:?}");
    let r2 = by_id(m2);
    assert!(!r2.delivered && !r2.read_acked && !r2.read, "{r2:?}");
    assert!(!by_id(m3).read, "bob's own message is not 'read by bob'");
    let rg = by_id(g1);
    assert!(!rg.group_ack_sent && rg.group_ack_count == 0, "sender-only visibility: bob does not see the count: {rg:?}");
    let (done_head, resync, convs) = sync_done(&frames);
    assert_eq!((done_head, resync), (head, true));
    let unread_of = |id: &str| convs.iter().find(|s| s.id == id).map(|s| s.unread);
    assert_eq!((unread_of("alice"), unread_of(&group)), (Some(1), Some(1)));
    assert_eq!(c.state.cursors["bob"]["new"].seq, head, "the resync brought the device to the head");
    // The sender's side: delivered and read for m1, the group ack count for g1.
    let frames = login(&mut c, T0 + 2, 11, "alice", "a-new", 0);
    let got = resync_pages(&frames);
    let a1 = got.iter().find(|m| m.msg.id == m1).unwrap();
    assert!(a1.delivered && a1.read_acked && !a1.read);
    assert_eq!(got.iter().find(|m| m.msg.id == g1).unwrap().group_ack_count, 1);
    assert!(!got.iter().find(|m| m.msg.id == m3).unwrap().read_acked, "alice has not read m3");
    // A device at the head logs in normally: no resync.
    let frames = login(&mut c, T0 + 3, 12, "bob", "phone", head);
    assert!(resync_pages(&frames).is_empty());
    assert!(!sync_done(&frames).1);
}

#[test]
fn a_version_1_client_below_the_prefix_gets_what_the_log_retains() {
    let mut c = core_with(|_| {});
    login(&mut c, T0, 1, "alice", "a1", 0);
    login(&mut c, T0, 2, "bob", "phone", 0);
    for i in 0..4 {
        send(&mut c, T0, 1, &format!("m{i}"), "bob", ChatType::Chat, false);
    }
    c.handle(T0, 2, ClientFrame::SyncCursor { seq: 2 });
    let frames = login_v(&mut c, T0, 3, "bob", "old-app", 0, 1);
    assert!(resync_pages(&frames).is_empty(), "a v1 client does not know Resync");
    let seqs: Vec<u64> = frames
        .iter()
        .filter_map(|f| if let ServerFrame::Backlog { events } = f { Some(events) } else { None })
        .flatten()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![3, 4]);
    let (_, resync, convs) = sync_done(&frames);
    assert!(!resync);
    assert_eq!(convs[0].unread, 4, "the counts are right all the same");
}

#[test]
fn a_long_resync_is_streamed_in_windows_of_pages_under_the_frame_limit() {
    let mut c = core_with(|_| {});
    login(&mut c, T0, 1, "alice", "a1", 0);
    login(&mut c, T0, 2, "bob", "phone", 0);
    // ~4 windows of 16 KiB messages.
    let n = 4 * REPLAY_WINDOW_BYTES / (16 * 1024);
    for i in 0..n {
        let frame = ClientFrame::Send {
            req: 1,
            client_id: format!("m{i}"),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            content: "x".repeat(16 * 1024),
            require_delivery_ack: false,
            need_group_ack: false,
        };
        req(&mut c, T0, 1, frame).0.unwrap();
    }
    let head = c.state.head("bob");
    c.handle(T0, 2, ClientFrame::SyncCursor { seq: head });
    let fx = c.handle(
        T0,
        3,
        ClientFrame::Login { v: PROTOCOL_VERSION, user: "bob".into(), device: "new".into(), token: String::new(), since: 0 },
    );
    let first: Vec<ServerFrame> = fx.out.iter().map(|o| (*o.frame).clone()).collect();
    assert!(!first.iter().any(|f| matches!(f, ServerFrame::SyncDone { .. })), "one window, not the whole state");
    let mut ids: Vec<MsgId> = resync_pages(&first).iter().map(|m| m.msg.id).collect();
    assert!(ids.len() < n / 2, "{} messages in the first window", ids.len());
    // A message while the resync runs: it comes as a backlog event after the pages.
    let late = send(&mut c, T0, 1, "late", "bob", ChatType::Chat, false);
    let mut backlog = Vec::new();
    let mut windows = 1;
    loop {
        assert!(windows < 100, "bounded");
        c.replay_more(3);
        windows += 1;
        let frames: Vec<ServerFrame> = c.take_effects().out.iter().filter(|o| o.session == 3).map(|o| (*o.frame).clone()).collect();
        for f in &frames {
            assert!(receipt_core::codec::encode(f).len() < 512 * 1024, "a frame far under the 1 MiB limit");
            if let ServerFrame::Backlog { events } = f {
                backlog.extend(events.iter().map(|e| e.seq));
            }
        }
        ids.extend(resync_pages(&frames).iter().map(|m| m.msg.id));
        if frames.iter().any(|f| matches!(f, ServerFrame::SyncDone { .. })) {
            break;
        }
    }
    assert!(windows >= 4, "{windows} windows");
    let mut want: Vec<MsgId> = (1..=n as MsgId).collect();
    if ids.contains(&late) {
        want.push(late);
    }
    assert_eq!(ids, want, "every retained message once, in order");
    assert_eq!(backlog, vec![head + 1], "the live message as the event after the resync's head");
}

#[test]
fn unread_counts_drop_when_unread_messages_leave_at_retention() {
    let mut c = core_with(|cfg| cfg.retention_ms = 1_000);
    login(&mut c, T0, 1, "alice", "a1", 0);
    login(&mut c, T0, 2, "bob", "b1", 0);
    login(&mut c, T0, 3, "carol", "c1", 0);
    let unread = |c: &ServerCore, user: &str, key: ConversationKey| c.state.convs[user][&key].unread;
    let m: Vec<MsgId> = (0..3).map(|i| send(&mut c, T0, 1, &format!("m{i}"), "bob", ChatType::Chat, false)).collect();
    req(&mut c, T0, 2, ClientFrame::ReadAck { req: 2, msg_id: m[1], private: false }).0.unwrap();
    let members = vec!["bob".to_string(), "carol".to_string()];
    let Ok(Response::GroupCreated { group }) =
        req(&mut c, T0, 1, ClientFrame::CreateGroup { req: 4, name: "g".into(), members, chat_room: false }).0
    else {
        panic!()
    };
    send(&mut c, T0, 1, "g0", &group, ChatType::GroupChat, false);
    // Carol read the group message; dave joins after it (he never had it).
    req(&mut c, T0, 3, ClientFrame::MarkRead { req: 5, chat_type: ChatType::GroupChat, conversation: group.clone(), msg_id: None })
        .0
        .unwrap();
    req(&mut c, T0, 1, ClientFrame::AddMembers { req: 6, group: group.clone(), members: vec!["dave".into()] }).0.unwrap();
    let young = send(&mut c, T0 + 800, 1, "young", "bob", ChatType::Chat, false);
    let chat = ConversationKey::new(ChatType::Chat, "alice");
    let gkey = ConversationKey::new(ChatType::GroupChat, group.clone());
    assert_eq!((unread(&c, "bob", chat.clone()), unread(&c, "bob", gkey.clone()), unread(&c, "carol", gkey.clone())), (3, 1, 0));
    // The first four leave at retention: bob's two unread 1:1 messages and his unread group
    // message stop counting; carol's read one changes nothing.
    let fx = c.prune(T0 + 1_500);
    assert_eq!(fx.ops.iter().filter(|op| matches!(op, StoreOp::DeleteMessage(_))).count(), 4);
    assert_eq!((unread(&c, "bob", chat.clone()), unread(&c, "bob", gkey.clone()), unread(&c, "carol", gkey)), (1, 0, 0));
    assert!(c.state.convs.get("dave").is_none_or(|m| m.is_empty()));
    // The next sync tells the device.
    let frames = login(&mut c, T0 + 1_600, 4, "bob", "b2", 0);
    let (_, _, convs) = sync_done(&frames);
    assert_eq!(convs.iter().find(|s| s.id == "alice").unwrap().unread, 1);
    // The young one leaves too, unread: 0.
    c.prune(T0 + 2_000);
    assert_eq!(unread(&c, "bob", chat), 0);
    assert!(!c.state.messages.contains_key(&young));
    assert!(c.state.conv_messages.is_empty(), "the index follows the messages");
}
