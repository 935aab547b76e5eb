//! The README's main command: the demo runs to the end against its embedded server and shows
//! every receipt of the guide.

use std::process::Command;

/// Lines the transcript must hold, plaintext or TLS.
const TOUR: &[&str] = &[
    "onMessageDelivered msg 1 ✓",
    "onMessageRead msg 1 ✓✓",
    "acks again: nothing sent",
    "bob/phone      onConversationRead (from: \"alice\", to: \"bob\")",
    "alice/tablet   onConversationRead (from: \"alice\", to: \"bob\")",
    "unread from bob: 0 (synced from the phone)",
    "count 2",
    "message.groupAckCount = 2",
    "page 2: [\"dave\"], cursor \"\"",
    "outbox holds 1",
    "refused 500",
    "refused 505",
    "refused 110",
    "refused 603",
    "refused 202",
    "refused 506",
    "not read by [\"erin\"], cursor \"\"",
    "erin asks who has not read carol's message (sender only): refused 603",
    ": 2 read, ",
    ": 1 read",
    "one round trip, 2 of 2 acked",
    "ackMessagesRead with 21 ids: refused 110",
    "onGroupMessageDelivered dave's phone got it (no app call), count 1",
    "onGroupMessageDelivered erin's phone got it, count 2",
    "message.groupDeliveredCount() = 2",
    "delivered to [\"erin\", \"dave\"], cursor \"\"",
    "dave lists who got carol's message (sender only): refused 603",
    "unread 2 → 1: his own devices follow",
    "read privately stays unreported",
    "acked publicly later, erin is told then, once",
    "acks privately: nothing is sent at all, not even to his devices: refused 505",
    "groupAckCount() = 3 in ",
    "no onGroupMessageRead per ack",
    "fetchGroupReadAcks on demand: read by [\"bob\", \"dave\", \"erin\"]",
    "All receipts behaved as the guide promises.",
];

fn run_demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_receipt-cli")).args(args).output().expect("run the demo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "demo failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in TOUR {
        assert!(text.contains(line), "transcript lacks {line:?}:\n{text}");
    }
    text
}

#[test]
fn demo_walks_through_every_receipt() {
    let text = run_demo(&["demo", "--plain"]);
    assert!(!text.contains("transport: TLS"), "{text}");
}

/// `demo --tls`: the whole tour over TLS (the server requires it, so no step fell back to plaintext).
#[test]
fn demo_tls_walks_through_every_receipt_over_tls() {
    let text = run_demo(&["demo", "--plain", "--tls"]);
    assert!(text.contains("transport: TLS required by the server"), "{text}");
}
