//! The findings of issue 12 about the server's data model, as tests on loopback against the real
//! server and its redb store: a group message is stored once, a user in 22,000 groups logs in,
//! only members at send time ack, retention leaves no trace. Every loop is bounded; the figures
//! they print go to docs/reliability.md ("Data model").

use std::io::Write;
use std::time::Instant;

use receipt_core::protocol::*;
use receipt_core::*;
use receipt_testkit::raw::*;
use receipt_testkit::*;

/// Prints past libtest's capture: these figures go to docs/reliability.md.
fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Bytes of keys and values in the server's store (the server is stopped to read it, then started
/// again on the same data dir).
fn stored_bytes(server: &mut TestServer) -> u64 {
    server.stop();
    let dir = server.root().join("server");
    let n = receipt_server::RedbServerStore::open(&dir).and_then(|s| s.stored_bytes()).expect("open the store");
    server.start_again();
    n
}

/// Sends `n` messages of `size` bytes to `group` as `owner` and returns how many bytes the store
/// grew by per message.
fn growth_per_message(server: &mut TestServer, owner: &str, group: &str, size: usize, n: usize) -> u64 {
    let before = stored_bytes(server);
    let mut c = RawClient::login(server.addr(), owner, "d");
    let content = "x".repeat(size);
    for _ in 0..n {
        c.send_msg(group, ChatType::GroupChat, &content);
    }
    drop(c);
    stored_bytes(server).saturating_sub(before) / n as u64
}

#[test]
fn a_group_message_is_stored_once_whatever_the_number_of_members() {
    let mut server = TestServer::start(|_| {});
    let mut owner = RawClient::login(server.addr(), "owner", "d");
    let members: Vec<String> = (0..4999).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let big = create_group(&mut owner, &refs);
    let small = create_group(&mut owner, &refs[..9]);
    drop(owner);
    let big_1b = growth_per_message(&mut server, "owner", &big, 1, 4);
    let t = Instant::now();
    let big_64k = growth_per_message(&mut server, "owner", &big, MAX_CONTENT_BYTES, 4);
    let per_big_message = t.elapsed() / 4;
    let small_1b = growth_per_message(&mut server, "owner", &small, 1, 4);
    let small_64k = growth_per_message(&mut server, "owner", &small, MAX_CONTENT_BYTES, 4);
    loud(&format!(
        "group message in the store (keys + values): 5,000 members: {big_1b} B per 1-byte message, {big_64k} B per 64 KiB \
         message; 10 members: {small_1b} B per 1-byte, {small_64k} B per 64 KiB message; {per_big_message:?} per 64 KiB \
         message to 5,000 members (debug build, restarts included)"
    ));
    // Before: 172 MB per 64 KiB message to 5,000 members (a copy per member), 0.6 MB per 1-byte one.
    // Now the content is stored once: a 64 KiB message costs its content more than a 1-byte one,
    // whatever the number of members.
    let content_cost = big_64k.saturating_sub(big_1b);
    assert!(content_cost <= MAX_CONTENT_BYTES as u64 + 1024, "content stored more than once: {big_64k} vs {big_1b}");
    assert!(small_64k.saturating_sub(small_1b) <= MAX_CONTENT_BYTES as u64 + 1024);
    // Per member: a watermark record and a log reference of a few bytes, not the message.
    assert!(big_1b <= 5000 * 64, "{big_1b} B per member-wide message");
    // A member's replay still brings the messages, content and all.
    let m = RawClient::login(server.addr(), "m7", "d");
    let got =
        m.backlog.iter().filter(|e| matches!(&*e.event, ServerEvent::Message { msg } if msg.content.len() == MAX_CONTENT_BYTES)).count();
    assert_eq!(got, 8, "m7 is in both groups");
}
