//! Unit tests of the server core: every rule, without sockets or files.

use super::*;
use receipt_core::protocol::PROTOCOL_VERSION;

const T0: u64 = 1_000_000;

fn core_with(f: impl FnOnce(&mut CoreConfig)) -> ServerCore {
    let mut cfg = CoreConfig::from(&ServerConfig::default());
    // The rules, not the per-user limits: these tests send thousands of requests per simulated
    // second to users not logged in (`core::limits` and tests/hostile_limits.rs test the limits).
    cfg.send_rate = RateLimit::OFF;
    cfg.request_rate = RateLimit::OFF;
    cfg.max_to_unseen_per_user = 0;
    f(&mut cfg);
    ServerCore::new(cfg, State::default())
}

fn login(c: &mut ServerCore, s: SessionId, user: &str, since: u64) -> Vec<ServerFrame> {
    let effects = c.handle(
        T0,
        s,
        ClientFrame::Login { v: PROTOCOL_VERSION, user: user.into(), device: format!("d{s}"), token: String::new(), since },
    );
    assert!(
        effects.ops.iter().all(|op| matches!(op, StoreOp::PutCursor { .. } | StoreOp::TrimLog { .. })),
        "login stores only the device's cursor"
    );
    assert!(effects.out.iter().all(|o| o.session == s && o.replay));
    effects.out.into_iter().map(|o| (*o.frame).clone()).collect()
}

fn send(c: &mut ServerCore, now: u64, s: SessionId, cid: &str, to: &str, t: ChatType, need_group_ack: bool) -> (MsgId, Effects) {
    let effects = c.handle(
        now,
        s,
        ClientFrame::Send {
            req: 1,
            client_id: cid.into(),
            to: to.into(),
            chat_type: t,
            content: "hi".into(),
            require_delivery_ack: false,
            need_group_ack,
        },
    );
    match &*effects.out[0].frame {
        ServerFrame::Result { ok: Some(Response::Sent { msg_id, .. }), .. } => (*msg_id, effects),
        f => panic!("{f:?}"),
    }
}

fn result(effects: &Effects, s: SessionId) -> Result<Response, ChatError> {
    for o in &effects.out {
        if o.session == s {
            if let ServerFrame::Result { ok, err, .. } = &*o.frame {
                return match (ok, err) {
                    (Some(r), None) => Ok(r.clone()),
                    (None, Some(e)) => Err(e.clone()),
                    _ => panic!(),
                };
            }
        }
    }
    panic!("no result for {s}: {effects:?}")
}

fn events_for(effects: &Effects, s: SessionId) -> Vec<ServerEvent> {
    effects
        .out
        .iter()
        .filter(|o| o.session == s)
        .filter_map(|o| match &*o.frame {
            ServerFrame::Event { event } => Some((*event.event).clone()),
            _ => None,
        })
        .collect()
}

fn unread(c: &ServerCore, user: &str, t: ChatType, id: &str) -> u32 {
    c.state.convs.get(user).and_then(|m| m.get(&ConversationKey::new(t, id))).map_or(0, |c| c.unread)
}

#[test]
fn per_user_counts_are_rebuilt_from_the_state_at_start() {
    let limits = |cfg: &mut CoreConfig| {
        cfg.max_groups_per_user = 2;
        cfg.max_to_unseen_per_user = 1;
    };
    let mut c = core_with(limits);
    login(&mut c, 1, "alice", 0);
    let create = |c: &mut ServerCore| {
        let e = c.handle(T0, 1, ClientFrame::CreateGroup { req: 1, name: "g".into(), members: vec!["bob".into()], chat_room: false });
        result(&e, 1)
    };
    create(&mut c).unwrap();
    create(&mut c).unwrap();
    assert_eq!(create(&mut c).unwrap_err().code, ErrorCode::ExceedServiceLimit);
    send(&mut c, T0, 1, "c1", "ghost", ChatType::Chat, false);
    let to_ghost = |c: &mut ServerCore, cid: &str, to: &str| {
        let e = c.handle(
            T0,
            1,
            ClientFrame::Send {
                req: 1,
                client_id: cid.into(),
                to: to.into(),
                chat_type: ChatType::Chat,
                content: "x".into(),
                require_delivery_ack: false,
                need_group_ack: false,
            },
        );
        result(&e, 1)
    };
    assert_eq!(to_ghost(&mut c, "c2", "ghost2").unwrap_err().code, ErrorCode::ExceedServiceLimit);
    // A restart counts again from what is stored: still 2 groups, still 1 message to a ghost.
    let mut cfg = CoreConfig::from(&ServerConfig::default());
    limits(&mut cfg);
    let mut c = ServerCore::new(cfg, c.state().clone());
    login(&mut c, 1, "alice", u64::MAX);
    assert_eq!(create(&mut c).unwrap_err().code, ErrorCode::ExceedServiceLimit);
    assert_eq!(to_ghost(&mut c, "c3", "ghost3").unwrap_err().code, ErrorCode::ExceedServiceLimit);
    // Once the ghost logs in, alice's message to it stops counting.
    login(&mut c, 2, "ghost", u64::MAX);
    to_ghost(&mut c, "c4", "ghost4").unwrap();
}

#[test]
fn requests_before_login_are_201() {
    let mut c = core_with(|_| {});
    let effects = c.handle(T0, 9, ClientFrame::ReadAck { req: 4, msg_id: 1, private: false });
    assert_eq!(result(&effects, 9).unwrap_err().code, ErrorCode::UserNotLogin);
    assert!(effects.ops.is_empty());
}

#[test]
fn send_stores_routes_and_counts_unread() {
    let mut c = core_with(|_| {});
    login(&mut c, 1, "alice", 0);
    login(&mut c, 2, "bob", 0);
    login(&mut c, 3, "bob", 0);
    login(&mut c, 4, "alice", 0);
    let (id, effects) = send(&mut c, T0, 1, "c1", "bob", ChatType::Chat, false);
    assert_eq!(id, 1);
    // Answer first, then the events.
    assert!(matches!(&*effects.out[0].frame, ServerFrame::Result { .. }));
    assert_eq!(events_for(&effects, 2).len(), 1);
    assert_eq!(events_for(&effects, 3).len(), 1);
    assert_eq!(events_for(&effects, 4).len(), 1, "the sender's other device");
    assert!(events_for(&effects, 1).is_empty(), "no live echo to the sending device: it has the answer");
    assert_eq!(c.state.logs["alice"].len(), 1, "the sender's log has the message (replays bring it)");
    assert!(effects.ops.iter().any(|o| matches!(o, StoreOp::PutMessage(m) if m.id == 1)));
    assert!(effects.ops.iter().any(|o| matches!(o, StoreOp::PutCounters(_))));
    assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 1);
    assert_eq!(unread(&c, "alice", ChatType::Chat, "bob"), 0);
    // Idempotent resend: same answer, nothing stored.
    let (id2, effects) = send(&mut c, T0 + 5, 1, "c1", "bob", ChatType::Chat, false);
    assert_eq!(id2, id);
    assert!(effects.ops.is_empty());
    assert_eq!(effects.out.len(), 1);
}

#[test]
fn reading_everything_one_by_one_moves_the_watermark_and_empties_the_read_set() {
    let mut c = core_with(|_| {});
    login(&mut c, 1, "alice", 0);
    login(&mut c, 2, "bob", 0);
    let ids: Vec<MsgId> = (0..3).map(|i| send(&mut c, T0, 1, &format!("c{i}"), "bob", ChatType::Chat, false).0).collect();
    let key = ConversationKey::new(ChatType::Chat, "alice");
    let conv = |c: &ServerCore| c.state.convs["bob"][&key].clone();
    // Out of order: the last message first, then the first; one is still unread.
    for id in [ids[2], ids[0]] {
        let effects = c.handle(T0, 2, ClientFrame::ReadAck { req: 2, msg_id: id, private: false });
        assert!(effects.ops.iter().any(|o| matches!(o, StoreOp::AddRead { msg_id, .. } if *msg_id == id)));
    }
    assert_eq!((conv(&c).unread, conv(&c).read.up_to, conv(&c).read.singles.len()), (1, 0, 2));
    // The last unread one: nothing unread is left, so the watermark moves to the newest
    // received message and the stored one-by-one reads are trimmed instead of growing.
    let effects = c.handle(T0, 2, ClientFrame::ReadAck { req: 3, msg_id: ids[1], private: false });
    assert_eq!((conv(&c).unread, conv(&c).read.up_to, conv(&c).read.singles.len()), (0, ids[2], 0));
    assert!(!effects.ops.iter().any(|o| matches!(o, StoreOp::AddRead { .. })));
    assert!(effects.ops.iter().any(|o| matches!(o, StoreOp::TrimReads { up_to, .. } if *up_to == ids[2])));
    assert!(effects.ops.iter().any(|o| matches!(o, StoreOp::PutConversation { state, .. } if state.read.up_to == ids[2])));
    // Counting goes on above the watermark; a read of an already read message changes nothing.
    let (next, _) = send(&mut c, T0, 1, "c9", "bob", ChatType::Chat, false);
    assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 1);
    let effects =
        c.handle(T0, 2, ClientFrame::MarkRead { req: 4, chat_type: ChatType::Chat, conversation: "alice".into(), msg_id: Some(ids[0]) });
    assert!(effects.ops.is_empty());
    // A single unread message read: the watermark moves with nothing to trim.
    let effects =
        c.handle(T0, 2, ClientFrame::MarkRead { req: 5, chat_type: ChatType::Chat, conversation: "alice".into(), msg_id: Some(next) });
    assert_eq!((conv(&c).unread, conv(&c).read.up_to), (0, next));
    assert!(!effects.ops.iter().any(|o| matches!(o, StoreOp::AddRead { .. } | StoreOp::TrimReads { .. })));
}

#[test]
fn an_event_for_two_users_is_one_shared_allocation_under_each_users_seq() {
    let mut c = core_with(|_| {});
    login(&mut c, 1, "alice", 0);
    login(&mut c, 2, "bob", 0);
    send(&mut c, T0, 2, "warmup", "carol", ChatType::Chat, false); // bob's log is one ahead
    let (id, _) = send(&mut c, T0, 1, "c1", "bob", ChatType::Chat, false);
    c.handle(T0, 2, ClientFrame::DeliveryAck { req: 3, msg_id: id });
    let (a, b) = (c.state.logs["alice"].last().unwrap(), c.state.logs["bob"].last().unwrap());
    assert!(matches!(*a.event, ServerEvent::Delivered { msg_id, .. } if msg_id == id));
    assert!(Arc::ptr_eq(&a.event, &b.event), "the sender's and the acker's copies are one");
    assert_eq!((a.seq, b.seq), (2, 3));
    // The message itself: one event in both logs, sharing the stored message.
    let (a, b) = (&c.state.logs["alice"][0], &c.state.logs["bob"][1]);
    assert!(Arc::ptr_eq(&a.event, &b.event));
    let ServerEvent::Message { msg } = &*a.event else { panic!("{a:?}") };
    assert!(Arc::ptr_eq(msg, &c.state.messages[&id].msg));
}

#[test]
fn refused_requests_change_nothing() {
    let mut c = core_with(|_| {});
    login(&mut c, 1, "alice", 0);
    for f in [
        ClientFrame::ReadAck { req: 1, msg_id: 5, private: false },
        ClientFrame::DeliveryAck { req: 1, msg_id: 5 },
        ClientFrame::GroupAck { req: 1, msg_id: 5, ext: None, private: false },
        ClientFrame::FetchGroupAcks { req: 1, msg_id: 5, page_size: 0, start_ack_id: None },
        ClientFrame::AddMembers { req: 1, group: "g1".into(), members: vec!["x".into()] },
        ClientFrame::ConversationAck { req: 1, chat_type: ChatType::GroupChat, conversation: "nope".into(), private: false },
    ] {
        let effects = c.handle(T0, 1, f);
        assert!(result(&effects, 1).is_err());
        assert!(effects.ops.is_empty());
    }
}

#[test]
fn backlog_then_sync_done_then_live() {
    let mut c = core_with(|_| {});
    login(&mut c, 1, "alice", 0);
    for i in 0..(BACKLOG_BATCH + 5) {
        send(&mut c, T0 + i as u64, 1, &format!("c{i}"), "bob", ChatType::Chat, false);
    }
    let frames = login(&mut c, 2, "bob", 3);
    assert!(matches!(frames[0], ServerFrame::LoginOk { .. }));
    let mut seqs = Vec::new();
    for f in &frames[1..frames.len() - 1] {
        let ServerFrame::Backlog { events } = f else { panic!("{f:?}") };
        assert!(events.len() <= BACKLOG_BATCH);
        seqs.extend(events.iter().map(|e| e.seq));
    }
    assert_eq!(seqs, (4..=(BACKLOG_BATCH as u64 + 5)).collect::<Vec<_>>());
    let ServerFrame::SyncDone { head, conversations, .. } = frames.last().unwrap() else { panic!() };
    assert_eq!(*head, BACKLOG_BATCH as u64 + 5);
    assert_eq!(conversations[0].unread, BACKLOG_BATCH as u32 + 5);
    let (_, effects) = send(&mut c, T0 + 999, 1, "live", "bob", ChatType::Chat, false);
    let live: Vec<u64> = effects
        .out
        .iter()
        .filter(|o| o.session == 2)
        .filter_map(|o| match &*o.frame {
            ServerFrame::Event { event } => Some(event.seq),
            _ => None,
        })
        .collect();
    assert_eq!(live, vec![*head + 1]);
    c.disconnect(2);
    let (_, effects) = send(&mut c, T0 + 1000, 1, "after", "bob", ChatType::Chat, false);
    assert!(events_for(&effects, 2).is_empty());
}

#[test]
fn read_watermark_and_individual_reads() {
    let mut c = core_with(|_| {});
    login(&mut c, 1, "alice", 0);
    login(&mut c, 2, "bob", 0);
    let ids: Vec<MsgId> = (0..5).map(|i| send(&mut c, T0, 1, &format!("c{i}"), "bob", ChatType::Chat, false).0).collect();
    assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 5);
    let effects = c.handle(T0, 2, ClientFrame::ReadAck { req: 2, msg_id: ids[1], private: false });
    assert!(result(&effects, 2).is_ok());
    assert_eq!(events_for(&effects, 1).len(), 1);
    let effects = c.handle(T0, 2, ClientFrame::ReadAck { req: 3, msg_id: ids[1], private: false });
    assert!(result(&effects, 2).is_ok());
    assert!(effects.ops.is_empty() && events_for(&effects, 1).is_empty(), "idempotent");
    assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 4);
    let effects =
        c.handle(T0, 2, ClientFrame::ConversationAck { req: 4, chat_type: ChatType::Chat, conversation: "alice".into(), private: false });
    assert!(matches!(events_for(&effects, 1)[..], [ServerEvent::ConversationRead { up_to, .. }] if up_to == ids[4]));
    assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 0);
    let conv = &c.state.convs["bob"][&ConversationKey::new(ChatType::Chat, "alice")];
    assert!(conv.read.singles.is_empty(), "reads below the watermark are dropped");
    // Read acks covered by the conversation ack are not forwarded again.
    let effects = c.handle(T0, 2, ClientFrame::ReadAck { req: 5, msg_id: ids[3], private: false });
    assert!(result(&effects, 2).is_ok() && effects.ops.is_empty());
    let (late, _) = send(&mut c, T0, 1, "late", "bob", ChatType::Chat, false);
    assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 1);
    let effects =
        c.handle(T0, 2, ClientFrame::MarkRead { req: 6, chat_type: ChatType::Chat, conversation: "alice".into(), msg_id: Some(late) });
    assert!(events_for(&effects, 1).is_empty(), "mark-read is own state only");
    assert!(events_for(&effects, 2).is_empty(), "the acting device gets the answer, not its echo");
    assert!(matches!(c.state.logs["bob"].last().map(|e| &*e.event), Some(ServerEvent::ReadState { msg_id: Some(m), .. }) if *m == late));
    assert_eq!(unread(&c, "bob", ChatType::Chat, "alice"), 0);
}

#[test]
fn group_delivery_acks_are_kept_and_paged_apart_from_read_acks_with_everything_resident() {
    // The in-memory store's path: no reader, every ack resident in its record.
    let mut c = core_with(|cfg| {
        cfg.group_ack.enabled = true;
        cfg.group_delivery_ack.enabled = true;
    });
    login(&mut c, 1, "owner", 0);
    let members: Vec<String> = (0..5).map(|i| format!("u{i}")).collect();
    let effects = c.handle(T0, 1, ClientFrame::CreateGroup { req: 1, name: "g".into(), members: members.clone(), chat_room: false });
    let Ok(Response::GroupCreated { group }) = result(&effects, 1) else { panic!() };
    let effects = c.handle(
        T0,
        1,
        ClientFrame::Send {
            req: 2,
            client_id: "d".into(),
            to: group,
            chat_type: ChatType::GroupChat,
            content: "hi".into(),
            require_delivery_ack: true,
            need_group_ack: true,
        },
    );
    let Ok(Response::Sent { msg_id: id, need_group_ack: true, require_delivery_ack: true, .. }) = result(&effects, 1) else {
        panic!("{effects:?}")
    };
    for m in &members {
        let (r, effects) = c.apply_as(T0 + 1, m, ClientFrame::DeliveryAck { req: 1, msg_id: id });
        r.unwrap();
        assert!(effects.ops.iter().any(|o| matches!(o, StoreOp::PutGroupDeliveryAck(_))));
        assert!(!effects.ops.iter().any(|o| matches!(o, StoreOp::PutGroupAck(_) | StoreOp::AddRead { .. })), "no read state");
    }
    let (r, effects) = c.apply_as(T0 + 1, "u0", ClientFrame::DeliveryAck { req: 1, msg_id: id });
    assert!(r.is_ok() && effects.ops.is_empty(), "one delivery ack per member");
    c.apply_as(T0 + 1, "u0", ClientFrame::GroupAck { req: 1, msg_id: id, ext: None, private: false }).0.unwrap();
    let rec = &c.state.messages[&id];
    assert_eq!((rec.delivery.count, rec.ack_count), (5, 1));
    let page = |c: &mut ServerCore, start| {
        let effects = c.handle(T0, 1, ClientFrame::FetchGroupDeliveryAcks { req: 9, msg_id: id, page_size: 2, start_ack_id: start });
        let Ok(Response::GroupAcks { page, .. }) = result(&effects, 1) else { panic!() };
        page
    };
    let mut counts = Vec::new();
    let mut start = None;
    for _ in 0..5 {
        let p = page(&mut c, start);
        counts.extend(p.data.iter().map(|a| a.count));
        if p.cursor.is_empty() {
            break;
        }
        start = Some(p.cursor.parse().unwrap());
    }
    assert_eq!(counts, vec![5, 4, 3, 2, 1], "newest first, the read ack not among them");
}

#[test]
fn group_ack_pages_are_range_scans_newest_first() {
    let mut c = core_with(|cfg| cfg.group_ack.enabled = true);
    login(&mut c, 1, "owner", 0);
    let members: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    let effects = c.handle(T0, 1, ClientFrame::CreateGroup { req: 1, name: "g".into(), members: members.clone(), chat_room: false });
    let Ok(Response::GroupCreated { group }) = result(&effects, 1) else { panic!() };
    let (id, _) = send(&mut c, T0, 1, "q", &group, ChatType::GroupChat, true);
    for m in &members {
        let (r, effects) = c.apply_as(T0 + 1, m, ClientFrame::GroupAck { req: 1, msg_id: id, ext: None, private: false });
        r.unwrap();
        assert!(effects.ops.iter().any(|o| matches!(o, StoreOp::PutGroupAck(_))));
    }
    let (r, effects) = c.apply_as(T0 + 1, "u0", ClientFrame::GroupAck { req: 1, msg_id: id, ext: None, private: false });
    assert!(r.is_ok() && effects.ops.is_empty(), "one ack per member");
    let page = |c: &mut ServerCore, start| {
        let effects = c.handle(T0, 1, ClientFrame::FetchGroupAcks { req: 9, msg_id: id, page_size: 3, start_ack_id: start });
        let Ok(Response::GroupAcks { page, .. }) = result(&effects, 1) else { panic!() };
        page
    };
    let p1 = page(&mut c, None);
    assert_eq!(p1.data.iter().map(|a| a.count).collect::<Vec<_>>(), vec![7, 6, 5]);
    let p2 = page(&mut c, Some(p1.cursor.parse().unwrap()));
    assert_eq!(p2.data.iter().map(|a| a.count).collect::<Vec<_>>(), vec![4, 3, 2]);
    let p3 = page(&mut c, Some(p2.cursor.parse().unwrap()));
    assert_eq!(p3.data.len(), 1);
    assert_eq!(p3.cursor, "");
    // Past validity.
    let late = T0 + c.cfg.group_ack.validity_ms() + 1;
    let (id2, _) = send(&mut c, T0, 1, "q2", &group, ChatType::GroupChat, true);
    let (r, _) = c.apply_as(late, "u1", ClientFrame::GroupAck { req: 1, msg_id: id2, ext: None, private: false });
    assert_eq!(r.unwrap_err().code, ErrorCode::MessageExpired);
}

#[test]
fn prune_drops_expired_messages_and_read_acks_get_506() {
    let mut c = core_with(|cfg| cfg.retention_ms = 1000);
    login(&mut c, 1, "alice", 0);
    login(&mut c, 2, "bob", 0);
    let (old, _) = send(&mut c, T0, 1, "old", "bob", ChatType::Chat, false);
    let (new, _) = send(&mut c, T0 + 900, 1, "new", "bob", ChatType::Chat, false);
    let effects = c.prune(T0 + 1500);
    // Bob had not read it: his count drops with it (docs/server-data-model.md, "Retention").
    assert!(
        matches!(&effects.ops[..], [StoreOp::PutConversation { user, state, .. }, StoreOp::DeleteMessage(id)] if user == "bob" && state.unread == 1 && *id == old)
    );
    // A replay skips the pruned message at once; the logs keep its event a grace period (the
    // retention again) longer, with the receipts logged around it.
    let frames = login(&mut c, 3, "bob", 0);
    let replayed: Vec<u64> = frames
        .iter()
        .filter_map(|f| if let ServerFrame::Backlog { events } = f { Some(events) } else { None })
        .flatten()
        .map(|e| e.seq)
        .collect();
    assert_eq!(replayed, vec![2], "only the retained message");
    c.disconnect(3);
    let effects = c.handle(T0 + 1500, 2, ClientFrame::ReadAck { req: 1, msg_id: old, private: false });
    assert_eq!(result(&effects, 2).unwrap_err().code, ErrorCode::MessageExpired);
    let effects = c.handle(T0 + 1500, 2, ClientFrame::DeliveryAck { req: 1, msg_id: old });
    assert_eq!(result(&effects, 2).unwrap_err().code, ErrorCode::MessageInvalid);
    let effects = c.handle(T0 + 1500, 2, ClientFrame::ReadAck { req: 1, msg_id: new, private: false });
    assert!(result(&effects, 2).is_ok());
    assert!(c.prune(T0 + 1500).ops.is_empty());
    // Past the grace: both logs lose the old message's event (and with it the last reference
    // to its content); the new message's events (sent at T0 + 900, read at T0 + 1500) stay.
    let effects = c.prune(T0 + 2500);
    let mut trims: Vec<_> = effects
        .ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::TrimLog { user, up_to } => Some((user.clone(), *up_to)),
            _ => None,
        })
        .collect();
    trims.sort();
    assert_eq!(trims, vec![("alice".to_string(), 1), ("bob".to_string(), 1)]);
    assert_eq!(c.state.logs["bob"].len(), 2, "the new message's event and its read stay");
    assert_eq!(c.state.head("bob"), 3);
}

#[test]
fn a_long_replay_is_streamed_in_windows_and_the_session_goes_online_at_its_end() {
    let mut c = core_with(|_| {});
    login(&mut c, 1, "alice", 0);
    // ~10 windows of backlog for bob (each event is estimated at >= 256 bytes).
    let n = 10 * REPLAY_WINDOW_BYTES / 256;
    for i in 0..n {
        send(&mut c, T0 + i as u64, 1, &format!("c{i}"), "bob", ChatType::Chat, false);
    }
    let first = login(&mut c, 2, "bob", 0);
    assert!(!first.iter().any(|f| matches!(f, ServerFrame::SyncDone { .. })), "one window, not the whole backlog");
    let seqs_of = |frames: &[ServerFrame]| -> Vec<u64> {
        frames
            .iter()
            .filter_map(|f| if let ServerFrame::Backlog { events } = f { Some(events) } else { None })
            .flatten()
            .map(|e| e.seq)
            .collect()
    };
    let mut seqs = seqs_of(&first);
    assert!(seqs.len() < n / 5, "{} events in the first window", seqs.len());
    // Meanwhile: a live message for bob (not sent live: the replay brings it) and a ping of
    // bob's (its pong is held until SyncDone).
    let (_, fx) = send(&mut c, T0 + n as u64, 1, "during", "bob", ChatType::Chat, false);
    assert!(fx.out.iter().all(|o| o.session != 2), "nothing live to a replaying session");
    let fx = c.handle(T0, 2, ClientFrame::Ping { nonce: 7 });
    assert!(fx.out.is_empty(), "the pong waits for the end of the replay");
    let mut windows = 1;
    let last = loop {
        assert!(windows < 100, "bounded");
        c.replay_more(2);
        let fx = c.take_effects();
        assert!(fx.ops.is_empty());
        windows += 1;
        let frames: Vec<ServerFrame> = fx.out.iter().map(|o| (*o.frame).clone()).collect();
        seqs.extend(seqs_of(&frames));
        if frames.iter().any(|f| matches!(f, ServerFrame::SyncDone { .. })) {
            break frames;
        }
    };
    assert_eq!(seqs, (1..=n as u64 + 1).collect::<Vec<_>>(), "every event once, in order, the live one included");
    assert!(windows >= 5, "{windows} windows");
    let done = last.iter().position(|f| matches!(f, ServerFrame::SyncDone { .. })).unwrap();
    assert_eq!(last[done + 1..], [ServerFrame::Pong { nonce: 7 }]);
    assert_eq!(c.sessions_of("bob"), &[2]);
    // Online now: live events flow.
    let (_, fx) = send(&mut c, T0 + n as u64 + 1, 1, "after", "bob", ChatType::Chat, false);
    assert!(fx.out.iter().any(|o| o.session == 2));
}

#[test]
fn the_retention_pass_trims_loaded_logs_and_only_the_logs_that_expired() {
    let mut c = core_with(|cfg| cfg.retention_ms = 1000);
    login(&mut c, 1, "alice", 0);
    send(&mut c, T0, 1, "old", "bob", ChatType::Chat, false);
    send(&mut c, T0 + 900, 1, "young", "carol", ChatType::Chat, false);
    // As after a restart: a core built on the state loaded from the store.
    let mut c = ServerCore::new(c.cfg.clone(), c.state.clone());
    let trimmed = |fx: &Effects| -> Vec<String> {
        let mut v: Vec<String> =
            fx.ops.iter().filter_map(|op| if let StoreOp::TrimLog { user, .. } = op { Some(user.clone()) } else { None }).collect();
        v.sort();
        v
    };
    // Retention 1 s, and the logs keep events the retention again past it.
    let fx = c.prune(T0 + 2500);
    assert_eq!(trimmed(&fx), vec!["alice".to_string(), "bob".to_string()], "carol's log is young");
    assert!(!c.state.logs.contains_key("bob"));
    assert_eq!(c.state.logs["alice"].len(), 1, "alice's echo of the young message stays");
    assert_eq!(c.state.head("bob"), 1, "the head survives an emptied log");
    let fx = c.prune(T0 + 3500);
    assert_eq!(trimmed(&fx), vec!["alice".to_string(), "carol".to_string()]);
    assert!(c.state.logs.is_empty());
    assert!(trimmed(&c.prune(T0 + 9000)).is_empty());
}

// ----- the hot-state cache: a core reading misses from a real redb store -----

/// A core with the hot-state cache over a redb store in a temp dir; `handle` commits each
/// batch and reports it committed, as the pipeline does.
struct Cached {
    core: ServerCore,
    store: crate::store::RedbServerStore,
    _dir: tempfile::TempDir,
    budget: usize,
}

impl Cached {
    fn new(budget: usize, f: impl FnOnce(&mut CoreConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::store::RedbServerStore::open(dir.path()).unwrap();
        let core = Self::core_on(&mut store, budget, f);
        Cached { core, store, _dir: dir, budget }
    }

    fn core_on(store: &mut crate::store::RedbServerStore, budget: usize, f: impl FnOnce(&mut CoreConfig)) -> ServerCore {
        use crate::store::ServerStore;
        let mut cfg = core_with(|_| {}).cfg;
        cfg.group_ack.enabled = true;
        f(&mut cfg);
        let state = store.load_hot().unwrap();
        ServerCore::with_store(cfg, state, store.reader().unwrap(), budget)
    }

    /// Applies without committing (the store lags, as while the store thread commits).
    fn apply(&mut self, now: u64, s: SessionId, frame: ClientFrame) -> Effects {
        self.core.handle(now, s, frame)
    }

    fn commit(&mut self, fx: &Effects) {
        use crate::store::ServerStore;
        self.store.commit(&[&fx.ops]).unwrap();
        self.core.committed(fx.batch);
    }

    /// Applies and commits: with nothing in flight, what is cached is under the budget.
    fn handle(&mut self, now: u64, s: SessionId, frame: ClientFrame) -> Effects {
        let fx = self.apply(now, s, frame);
        self.commit(&fx);
        assert!(
            self.core.cache_bytes_used() <= self.budget,
            "{} bytes cached over a budget of {}",
            self.core.cache_bytes_used(),
            self.budget
        );
        fx
    }

    fn login(&mut self, s: SessionId, user: &str, since: u64) -> Vec<ServerFrame> {
        let frame = ClientFrame::Login { v: PROTOCOL_VERSION, user: user.into(), device: format!("d{s}"), token: String::new(), since };
        self.handle(T0, s, frame).out.into_iter().map(|o| (*o.frame).clone()).collect()
    }

    fn send(&mut self, now: u64, s: SessionId, cid: &str, to: &str, t: ChatType) -> Result<Response, ChatError> {
        let frame = ClientFrame::Send {
            req: 1,
            client_id: cid.into(),
            to: to.into(),
            chat_type: t,
            content: format!("content of {cid}"),
            require_delivery_ack: true,
            need_group_ack: t == ChatType::GroupChat,
        };
        result(&self.handle(now, s, frame), s)
    }

    fn req(&mut self, now: u64, s: SessionId, frame: ClientFrame) -> Result<Response, ChatError> {
        result(&self.handle(now, s, frame), s)
    }

    /// The process restarts on the same store: a new core from the hot state.
    fn restart(&mut self) {
        self.core = Self::core_on(&mut self.store, self.budget, |_| {});
    }
}

fn sent_id(r: Result<Response, ChatError>) -> MsgId {
    match r {
        Ok(Response::Sent { msg_id, .. }) => msg_id,
        r => panic!("{r:?}"),
    }
}

fn sync_unread(frames: &[ServerFrame], t: ChatType, id: &str) -> Option<u32> {
    frames
        .iter()
        .flat_map(|f| match f {
            ServerFrame::SyncConversations { conversations } | ServerFrame::SyncDone { conversations, .. } => conversations.clone(),
            _ => Vec::new(),
        })
        .find(|c| c.chat_type == t && c.id == id)
        .map(|c| c.unread)
}

#[test]
fn with_a_one_byte_cache_every_answer_is_read_back_from_the_store() {
    // Constant eviction: after every committed batch nothing is left in the cache.
    let mut c = Cached::new(1, |_| {});
    c.login(1, "alice", u64::MAX);
    c.login(2, "bob", u64::MAX);
    c.login(3, "carol", u64::MAX);
    let g = match c.req(
        T0,
        1,
        ClientFrame::CreateGroup { req: 1, name: "g".into(), members: vec!["bob".into(), "carol".into()], chat_room: false },
    ) {
        Ok(Response::GroupCreated { group }) => group,
        r => panic!("{r:?}"),
    };
    let ids: Vec<MsgId> = (0..10).map(|i| sent_id(c.send(T0 + i, 1, &format!("m{i}"), "bob", ChatType::Chat))).collect();
    assert_eq!(c.core.cache_bytes_used(), 0, "nothing cached past the budget once committed");
    assert!(c.core.state.messages.is_empty() && c.core.state.convs.is_empty());
    // An idempotent resend of an evicted message: the same id, nothing stored again.
    let again = ClientFrame::Send {
        req: 1,
        client_id: "m3".into(),
        to: "bob".into(),
        chat_type: ChatType::Chat,
        content: "content of m3".into(),
        require_delivery_ack: true,
        need_group_ack: false,
    };
    let fx = c.handle(T0 + 20, 1, again);
    assert_eq!(sent_id(result(&fx, 1)), ids[3]);
    assert!(!fx.ops.iter().any(|op| matches!(op, StoreOp::PutMessage(_))));
    // Receipts on evicted messages: flags read back, a second ack is a no-op.
    c.req(T0 + 30, 2, ClientFrame::DeliveryAck { req: 1, msg_id: ids[0] }).unwrap();
    let fx = c.handle(T0 + 31, 2, ClientFrame::DeliveryAck { req: 1, msg_id: ids[0] });
    assert!(fx.ops.is_empty(), "delivered flag read back from the store: {:?}", fx.ops);
    c.req(T0 + 32, 2, ClientFrame::ReadAck { req: 1, msg_id: ids[1], private: false }).unwrap();
    let fx = c.handle(T0 + 33, 2, ClientFrame::ReadAck { req: 1, msg_id: ids[1], private: false });
    assert!(fx.ops.is_empty(), "read flag and read single read back: {:?}", fx.ops);
    // bob's unread count: 10 - 1, from the stored conversation, at a new login.
    let frames = c.login(4, "bob", u64::MAX);
    assert_eq!(sync_unread(&frames, ChatType::Chat, "alice"), Some(9));
    // Group acks: the already-acked check and the pages read the store.
    let gm = sent_id(c.send(T0 + 40, 1, "gm", &g, ChatType::GroupChat));
    c.req(T0 + 41, 2, ClientFrame::GroupAck { req: 1, msg_id: gm, ext: None, private: false }).unwrap();
    let fx = c.handle(T0 + 42, 2, ClientFrame::GroupAck { req: 1, msg_id: gm, ext: None, private: false });
    assert!(fx.ops.is_empty(), "acked once: {:?}", fx.ops);
    c.req(T0 + 43, 3, ClientFrame::GroupAck { req: 1, msg_id: gm, ext: Some("x".into()), private: false }).unwrap();
    let page = |c: &mut Cached, start| match c.req(
        T0 + 44,
        1,
        ClientFrame::FetchGroupAcks { req: 1, msg_id: gm, page_size: 1, start_ack_id: start },
    ) {
        Ok(Response::GroupAcks { page, .. }) => page,
        r => panic!("{r:?}"),
    };
    let first = page(&mut c, None);
    assert_eq!((first.data[0].from.as_str(), first.data[0].count), ("carol", 2), "the count continues the stored acks");
    let second = page(&mut c, Some(first.cursor.parse().unwrap()));
    assert_eq!((second.data[0].from.as_str(), second.cursor.as_str()), ("bob", ""));
    // Conversation ack on an evicted conversation: bob reads everything.
    c.req(T0 + 50, 2, ClientFrame::ConversationAck { req: 1, chat_type: ChatType::Chat, conversation: "alice".into(), private: false })
        .unwrap();
    let frames = c.login(5, "bob", u64::MAX);
    assert_eq!(sync_unread(&frames, ChatType::Chat, "alice"), Some(0));
    // The same after a restart (nothing of the hot state but groups, counters and logs).
    c.restart();
    let frames = c.login(6, "bob", u64::MAX);
    assert_eq!(sync_unread(&frames, ChatType::Chat, "alice"), Some(0));
    assert_eq!(sync_unread(&frames, ChatType::GroupChat, &g), Some(0));
    assert_eq!(sync_unread(&frames, ChatType::GroupChat, &g), Some(0));
    c.login(7, "alice", u64::MAX);
    let fx = c.handle(
        T0 + 60,
        7,
        ClientFrame::Send {
            req: 1,
            client_id: "m9".into(),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            content: "x".into(),
            require_delivery_ack: true,
            need_group_ack: false,
        },
    );
    assert_eq!(sent_id(result(&fx, 7)), ids[9], "client ids survive the restart");
    assert_eq!(c.core.cache_bytes_used(), 0);
}

#[test]
fn what_a_batch_changed_stays_in_memory_until_the_batch_is_committed() {
    let mut c = Cached::new(1, |_| {});
    c.login(1, "alice", u64::MAX);
    c.login(2, "bob", u64::MAX);
    // Applied, not committed: the store does not have the message yet.
    let fx1 = c.apply(
        T0,
        1,
        ClientFrame::Send {
            req: 1,
            client_id: "a".into(),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            content: "hi".into(),
            require_delivery_ack: true,
            need_group_ack: false,
        },
    );
    let id = sent_id(result(&fx1, 1));
    assert!(c.core.cache_bytes_used() > 1, "pinned over the budget");
    assert!(c.core.state.messages.contains_key(&id));
    // The next batch still finds it (from memory) while the first is being committed.
    let fx2 = c.apply(T0 + 1, 2, ClientFrame::DeliveryAck { req: 1, msg_id: id });
    result(&fx2, 2).unwrap();
    c.commit(&fx1);
    assert!(c.core.state.messages.contains_key(&id), "changed again by batch 2, not committed yet");
    c.commit(&fx2);
    assert!(!c.core.state.messages.contains_key(&id));
    // Read back: delivered.
    let fx = c.handle(T0 + 2, 2, ClientFrame::DeliveryAck { req: 1, msg_id: id });
    assert!(fx.ops.is_empty());
}

#[test]
fn the_cache_stays_under_its_budget_and_keeps_the_recently_used() {
    let budget = 16 * 1024;
    let mut c = Cached::new(budget, |_| {});
    c.login(1, "alice", u64::MAX);
    let mut peak = 0;
    for i in 0..300u64 {
        // 300 messages to 30 users: ~300 message and 60 conversation entries, over 16 KiB.
        sent_id(c.send(T0 + i, 1, &format!("m{i}"), &format!("u{}", i % 30), ChatType::Chat));
        peak = peak.max(c.core.cache_bytes_used());
    }
    assert!(peak <= budget && peak > budget / 2, "peak {peak}");
    assert!(c.core.state.messages.len() < 300, "some were evicted");
    assert!(c.core.state.messages.contains_key(&300), "the newest stays");
    // Every user's unread count is right whatever was evicted.
    for u in 0..30 {
        let frames = c.login(100 + u, &format!("u{u}"), u64::MAX);
        assert_eq!(sync_unread(&frames, ChatType::Chat, "alice"), Some(10), "u{u}");
    }
}

#[test]
fn retention_with_the_cache_drops_stored_messages_oldest_first_in_bounded_steps() {
    let mut c = Cached::new(1, |cfg| cfg.retention_ms = 1000);
    c.login(1, "alice", u64::MAX);
    let ids: Vec<MsgId> = (0..5).map(|i| sent_id(c.send(T0 + i * 100, 1, &format!("m{i}"), "bob", ChatType::Chat))).collect();
    let fx = c.core.prune(T0 + 1250);
    let deleted: Vec<MsgId> = fx.ops.iter().filter_map(|op| if let StoreOp::DeleteMessage(id) = op { Some(*id) } else { None }).collect();
    assert_eq!(deleted, ids[..3].to_vec(), "expired: sent at +0, +100, +200");
    // Not committed yet: the store still has them, the core does not answer from it.
    assert_eq!(
        c.req(T0 + 1260, 1, ClientFrame::ReadAck { req: 1, msg_id: ids[0], private: false }).unwrap_err().code,
        ErrorCode::MessageExpired
    );
    c.commit(&fx);
    let fx = c.core.prune(T0 + 1260);
    assert!(!fx.ops.iter().any(|op| matches!(op, StoreOp::DeleteMessage(_))), "nothing new expired: {:?}", fx.ops);
    c.commit(&fx);
    // A resend of a pruned message's client id is a new message.
    let again = sent_id(c.send(T0 + 1300, 1, "m0", "bob", ChatType::Chat));
    assert!(again > ids[4]);
}

fn backlog_seqs(frames: &[ServerFrame]) -> Vec<u64> {
    frames
        .iter()
        .flat_map(|f| match f {
            ServerFrame::Backlog { events } => events.iter().map(|e| e.seq).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_replay_reads_the_stored_log_then_what_is_not_committed_yet() {
    let mut c = Cached::new(1, |_| {});
    c.login(1, "alice", u64::MAX);
    // 20 KiB messages: the 120 of them take three windows of ~1 MiB.
    let big = "x".repeat(20 * 1024);
    for i in 0..120u64 {
        let frame = ClientFrame::Send {
            req: 1,
            client_id: format!("m{i}"),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            content: big.clone(),
            require_delivery_ack: false,
            need_group_ack: false,
        };
        sent_id(result(&c.handle(T0 + i, 1, frame), 1));
    }
    // One more, applied but not committed (the store thread is still at it).
    let pending = c.apply(
        T0 + 200,
        1,
        ClientFrame::Send {
            req: 1,
            client_id: "pending".into(),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            content: "last".into(),
            require_delivery_ack: false,
            need_group_ack: false,
        },
    );
    assert!(c.core.state.logs.is_empty(), "no log is resident");
    let frame = ClientFrame::Login { v: PROTOCOL_VERSION, user: "bob".into(), device: "d2".into(), token: String::new(), since: 0 };
    let mut frames: Vec<ServerFrame> = c.core.handle(T0 + 201, 2, frame).out.into_iter().map(|o| (*o.frame).clone()).collect();
    let mut windows = 1;
    while !frames.iter().any(|f| matches!(f, ServerFrame::SyncDone { .. })) {
        assert!(windows < 10, "the replay ends");
        c.core.replay_more(2);
        frames.extend(c.core.take_effects().out.into_iter().map(|o| (*o.frame).clone()));
        windows += 1;
    }
    assert!(windows >= 3, "streamed in windows: {windows}");
    assert_eq!(backlog_seqs(&frames), (1..=121).collect::<Vec<u64>>(), "every event once, in order, the pending one last");
    let done_head = frames.iter().find_map(|f| if let ServerFrame::SyncDone { head, .. } = f { Some(*head) } else { None });
    assert_eq!(done_head, Some(121));
    c.commit(&pending);
    // After a restart the head is read back: the next event is 122.
    c.restart();
    c.login(3, "alice", u64::MAX);
    c.send(T0 + 300, 3, "after", "bob", ChatType::Chat).unwrap();
    let frames = c.login(4, "bob", 121);
    assert_eq!(backlog_seqs(&frames), vec![122]);
}

#[test]
fn the_log_sweep_trims_stored_logs_past_retention_and_its_grace() {
    let mut c = Cached::new(1, |cfg| cfg.retention_ms = 1000);
    c.login(1, "alice", u64::MAX);
    c.send(T0, 1, "old", "bob", ChatType::Chat).unwrap();
    c.send(T0 + 900, 1, "young", "carol", ChatType::Chat).unwrap();
    let trims = |fx: &Effects| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = fx
            .ops
            .iter()
            .filter_map(|op| if let StoreOp::TrimLog { user, up_to } = op { Some((user.clone(), *up_to)) } else { None })
            .collect();
        v.sort();
        v
    };
    // Retention 1 s and a grace of 1 s: at +2500 the old message's events go, not the young one's.
    let fx = c.core.prune(T0 + 2500);
    c.commit(&fx);
    assert_eq!(trims(&fx), vec![("alice".to_string(), 1), ("bob".to_string(), 1)]);
    let fx = c.core.prune(T0 + 3500);
    c.commit(&fx);
    assert_eq!(trims(&fx), vec![("alice".to_string(), 2), ("carol".to_string(), 1)]);
    assert!(trims(&c.core.prune(T0 + 9000)).is_empty(), "trimmed logs are not trimmed again");
    let state = c.store.load_all().unwrap();
    assert!(state.logs.is_empty(), "{:?}", state.logs);
    assert_eq!(state.head("bob"), 1, "the head survives an emptied log");
}

#[test]
fn after_a_restart_a_recipient_who_sent_a_stored_message_still_counts_as_seen() {
    let mut c = Cached::new(1, |cfg| cfg.max_to_unseen_per_user = 1);
    c.login(1, "carol", u64::MAX);
    c.send(T0, 1, "c1", "dave", ChatType::Chat).unwrap();
    c.core = Cached::core_on(&mut c.store, 1, |cfg| cfg.max_to_unseen_per_user = 1);
    c.login(2, "dave", u64::MAX);
    // carol sent a message still stored: seen, so dave's messages to her do not count.
    c.send(T0 + 1, 2, "d1", "carol", ChatType::Chat).unwrap();
    c.send(T0 + 2, 2, "d2", "carol", ChatType::Chat).unwrap();
    // A user never seen: the limit holds (1).
    c.send(T0 + 3, 2, "d3", "ghost", ChatType::Chat).unwrap();
    assert_eq!(c.send(T0 + 4, 2, "d4", "ghost", ChatType::Chat).unwrap_err().code, ErrorCode::ExceedServiceLimit);
}

// ----- the hot-state cache with device cursors and resync (the two designs together) -----

fn frames_of(fx: &Effects, s: SessionId) -> Vec<ServerFrame> {
    fx.out.iter().filter(|o| o.session == s).map(|o| (*o.frame).clone()).collect()
}

fn resynced(frames: &[ServerFrame]) -> Vec<receipt_core::protocol::RetainedMessage> {
    frames.iter().flat_map(|f| if let ServerFrame::Resync { messages } = f { messages.clone() } else { Vec::new() }).collect()
}

#[test]
fn a_resync_with_the_cache_reads_retained_messages_from_the_store() {
    // A 1-byte budget: every message and conversation the resync needs is read back from the
    // store (conv_messages by range, then each message and conversation).
    let mut c = Cached::new(1, |_| {});
    c.login(1, "alice", u64::MAX);
    c.login(2, "bob", u64::MAX);
    let g = match c.req(T0, 1, ClientFrame::CreateGroup { req: 1, name: "g".into(), members: vec!["bob".into()], chat_room: false }) {
        Ok(Response::GroupCreated { group }) => group,
        r => panic!("{r:?}"),
    };
    let m: Vec<MsgId> = (0..3).map(|i| sent_id(c.send(T0 + i, 1, &format!("m{i}"), "bob", ChatType::Chat))).collect();
    let gm = sent_id(c.send(T0 + 5, 1, "gm", &g, ChatType::GroupChat));
    c.req(T0 + 6, 2, ClientFrame::ReadAck { req: 1, msg_id: m[0], private: false }).unwrap();
    c.req(T0 + 7, 2, ClientFrame::GroupAck { req: 1, msg_id: gm, ext: None, private: false }).unwrap();
    // Not committed yet when the new device logs in: a message, and bob's cursor report (the
    // trim) — the login must see both.
    let late = c.apply(
        T0 + 8,
        1,
        ClientFrame::Send {
            req: 9,
            client_id: "late".into(),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            content: "late".into(),
            require_delivery_ack: true,
            need_group_ack: false,
        },
    );
    let late_id = sent_id(result(&late, 1));
    let head = c.core.head_of("bob");
    let report = c.apply(T0 + 9, 2, ClientFrame::SyncCursor { seq: head });
    assert!(report.ops.iter().any(|op| matches!(op, StoreOp::TrimLog { user, up_to } if user == "bob" && *up_to == head)));
    let login = c.apply(
        T0 + 10,
        3,
        ClientFrame::Login { v: PROTOCOL_VERSION, user: "bob".into(), device: "new".into(), token: String::new(), since: 0 },
    );
    for fx in [&late, &report, &login] {
        c.commit(fx);
    }
    let frames = frames_of(&login, 3);
    let got = resynced(&frames);
    let mut ids: Vec<MsgId> = got.iter().map(|r| r.msg.id).collect();
    ids.sort_unstable();
    let mut want = vec![m[0], m[1], m[2], gm, late_id];
    want.sort_unstable();
    assert_eq!(ids, want, "every retained message once, the one not committed yet included");
    let by_id = |id| got.iter().find(|r| r.msg.id == id).unwrap();
    assert!(by_id(m[0]).read && by_id(m[0]).read_acked && !by_id(m[1]).read);
    assert!(by_id(gm).group_ack_sent, "bob's group ack, read from group_ackers");
    assert!(matches!(frames.last(), Some(ServerFrame::SyncDone { resync: true, .. })), "{:?}", frames.last());
    assert_eq!(c.core.state.cursors["bob"]["new"].seq, head, "the resync brought the device to the head");
    // After the commits a restart starts from the hot state and still knows the trim.
    c.restart();
    let frames = c.login(4, "bob", 0);
    assert_eq!(resynced(&frames).len(), 5);
}

#[test]
fn retention_with_the_cache_drops_unread_counts_of_messages_read_back_from_the_store() {
    let mut c = Cached::new(1, |cfg| cfg.retention_ms = 1_000);
    c.login(1, "alice", u64::MAX);
    c.login(2, "bob", u64::MAX);
    let m: Vec<MsgId> = (0..3).map(|i| sent_id(c.send(T0 + i, 1, &format!("m{i}"), "bob", ChatType::Chat))).collect();
    c.req(T0 + 5, 2, ClientFrame::ReadAck { req: 1, msg_id: m[1], private: false }).unwrap();
    let young = sent_id(c.send(T0 + 800, 1, "young", "bob", ChatType::Chat));
    assert_eq!(sync_unread(&c.login(3, "bob", u64::MAX), ChatType::Chat, "alice"), Some(3));
    assert!(c.core.state.convs.is_empty(), "nothing cached: retention reads the conversations");
    let fx = c.core.prune(T0 + 1_500);
    c.commit(&fx);
    assert_eq!(fx.ops.iter().filter(|op| matches!(op, StoreOp::DeleteMessage(_))).count(), 3);
    assert_eq!(sync_unread(&c.login(4, "bob", u64::MAX), ChatType::Chat, "alice"), Some(1), "the two unread ones stopped counting");
    let fx = c.core.prune(T0 + 2_000);
    c.commit(&fx);
    assert!(fx.ops.iter().any(|op| matches!(op, StoreOp::DeleteMessage(id) if *id == young)));
    assert_eq!(sync_unread(&c.login(5, "bob", u64::MAX), ChatType::Chat, "alice"), Some(0));
}
