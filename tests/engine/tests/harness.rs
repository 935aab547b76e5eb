//! The harness itself: a cut loses what is in flight, a server restart keeps exactly what was
//! committed, a client restart keeps what the engine wrote to its disk.

use receipt_core::engine::{ClientEvent, Completion};
use receipt_core::*;
use receipt_engine_tests::{completion, Cluster};

/// a1 and b1 online; bob's second device b2 never connected.
fn pair() -> Cluster {
    let o = ChatOptions::default;
    let mut w = Cluster::new(&[("alice", "a1", o()), ("bob", "b1", o()), ("bob", "b2", o())]);
    w.connect(0);
    w.connect(1);
    w.pump();
    w
}

fn bob_key() -> ConversationKey {
    ConversationKey::new(ChatType::Chat, "alice")
}

#[test]
fn a_cut_loses_frames_in_flight_and_the_outbox_resends_them() {
    let mut w = pair();
    let now = w.now;
    w.devices[0].engine.send_message(now, "bob", ChatType::Chat, "hi", false).unwrap();
    assert_eq!(w.transmit(0), 1);
    assert_eq!(w.in_flight(0), (1, 0));
    w.disconnect(0);
    assert_eq!(w.in_flight(0), (0, 0));
    assert!(w.server.state().messages.is_empty(), "the send never reached the server");
    w.connect(0);
    w.pump();
    assert_eq!(w.server.state().messages.len(), 1, "resent from the outbox, stored once");
    assert_eq!(w.devices[1].engine.unread_count(&bob_key()), 1);
}

#[test]
fn a_server_restart_keeps_what_was_committed_and_drops_every_connection() {
    let mut w = pair();
    let now = w.now;
    let (req, _) = w.devices[0].engine.send_message(now, "bob", ChatType::Chat, "hi", false).unwrap();
    w.pump();
    let evs = w.devices[0].take_events();
    let Some(Ok(Completion::Sent(m))) = completion(&evs, req) else { panic!("{evs:?}") };
    let id = m.id;
    let head = w.server.state().head("bob");
    w.restart_server();
    assert_eq!(w.server.restarts, 1);
    assert!(w.devices.iter().all(|d| !d.online()));
    assert!(w.devices[0].take_events().contains(&ClientEvent::Disconnected));
    assert!(w.server.sessions_of("bob").is_empty(), "sessions are memory only");
    // Reloaded from the redb store: the message, the log and the unread count.
    assert_eq!(w.server.state().messages[&id].msg.content, "hi");
    assert_eq!(w.server.state().head("bob"), head);
    assert_eq!(w.server.unread("bob", &bob_key()), 1);
    // A device that never saw it gets it from the reloaded log.
    w.connect(2);
    w.pump();
    assert_eq!(w.devices[2].engine.message_by_id(id).unwrap().content, "hi");
    assert_eq!(w.devices[2].engine.unread_count(&bob_key()), 1);
}

#[test]
fn a_client_restart_keeps_its_disk_and_goes_offline() {
    let mut w = pair();
    let now = w.now;
    w.devices[0].engine.send_message(now, "bob", ChatType::Chat, "hi", false).unwrap();
    w.pump();
    let id = w.server.state().messages.keys().next().copied().unwrap();
    w.disconnect(1);
    let now = w.now;
    w.devices[1].engine.ack_message_read(now, id).unwrap().unwrap();
    w.restart(1);
    assert!(!w.devices[1].online());
    assert_eq!(w.devices[1].engine.outbox().count(), 1, "the offline ack is on disk");
    assert_eq!(w.devices[1].engine.unread_count(&bob_key()), 0);
    w.connect(1);
    w.pump();
    assert!(w.devices[0].engine.message_by_id(id).unwrap().receiver_read);
}
