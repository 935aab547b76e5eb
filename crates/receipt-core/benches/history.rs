//! History on a phone: fills a client store with N received 1:1 messages over C conversations,
//! then, in a fresh process per store (so RSS is the engine's own), measures the cold open, the
//! RSS it adds, an ack of an old (uncached) message, a conversation read, a page of 20
//! messages, and the store's bytes on disk per message. Figures: docs/benchmarks.md.
//!
//! `cargo bench -p receipt-core --bench history` (all sizes), or with `-- quick` (10k/100k).
//! One store at a time, to compare builds on the same file: `history fill PATH N CONVS`, then
//! `history measure PATH N CONVS`, `history killed PATH N CONVS idle|burst` and
//! `history reopen PATH` on copies of it (the binary is in target/release/deps/).

use std::time::{Duration, Instant};

use receipt_core::engine::{ClientEngine, EngineConfig};
use receipt_core::store::{ClientStore, Conversation, Meta, RedbStore, StoreBatch};
use receipt_core::*;

/// Messages per fill transaction.
const FILL_CHUNK: u64 = 20_000;
/// Unread messages at the end of every conversation (the rest is read and acked).
const UNREAD_TAIL: u64 = 20;
const SAMPLES: usize = 41;

fn peer(c: u64) -> String {
    format!("peer{c:05}")
}

/// Writes `n` messages (ids 1..=n, round robin over `convs` peers) as the engine would have.
fn fill(path: &std::path::Path, n: u64, convs: u64) {
    let mut store = RedbStore::open(path).unwrap();
    let mut summaries: Vec<Conversation> = (0..convs).map(|c| Conversation::new(ConversationKey::new(ChatType::Chat, peer(c)))).collect();
    let mut id = 1;
    while id <= n {
        let mut batch = StoreBatch::default();
        for id in id..=(id + FILL_CHUNK - 1).min(n) {
            let c = (id - 1) % convs;
            let from = peer(c);
            let m = ChatMessage {
                id,
                client_id: format!("{from}-{id}"),
                from,
                to: "alice".into(),
                chat_type: ChatType::Chat,
                direction: MessageDirection::Receive,
                content: format!("message number {id}: a line of chat of a usual length"),
                timestamp: 1_700_000_000_000 + id,
                require_delivery_ack: false,
                need_group_ack: false,
                status: SendStatus::Sent,
                delivered: false,
                receiver_read: false,
                unread: true,
                group_ack_count: 0,
                group_ack_sent: false,
                group_delivered_count: 0,
            };
            summaries[c as usize].note_held(&m);
            batch.messages.push(m);
        }
        store.commit(&batch).unwrap();
        id += FILL_CHUNK;
    }
    // Read and acked up to the last UNREAD_TAIL messages of each conversation.
    for s in &mut summaries {
        let mark = s.newest.saturating_sub(UNREAD_TAIL * convs);
        s.read_up_to = mark;
        s.receipt_up_to = mark;
        s.local_unread = (s.held as u64).min(UNREAD_TAIL) as u32;
    }
    let batch = StoreBatch {
        meta: Some(Meta { cursor: n, next_req: 0, next_client_msg: 0 }),
        conversations: summaries,
        durable: true,
        ..Default::default()
    };
    store.commit(&batch).unwrap();
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// One store, in this (fresh) process: prints one table row.
fn measure(path: &std::path::Path, n: u64, convs: u64) {
    let rss_before = rss_kib();
    let t = Instant::now();
    let store = RedbStore::open(path).unwrap();
    let mut e = ClientEngine::open(EngineConfig::new("alice", "a1", ChatOptions::default()), store).unwrap();
    let open = t.elapsed();
    let rss_open = rss_kib().saturating_sub(rss_before);
    let bytes = std::fs::metadata(path).unwrap().len();

    // A page of 20, newest first: from the top, and from the middle of a conversation.
    let pages: Vec<Duration> = (0..SAMPLES as u64)
        .map(|i| {
            let key = ConversationKey::new(ChatType::Chat, peer(i % convs));
            let start = if i % 2 == 0 { None } else { Some(n / 2) };
            let t = Instant::now();
            let page = e.load_messages(&key, start, 20);
            let d = t.elapsed();
            assert!(page.len() == 20 || n / convs < 40, "a full page");
            d
        })
        .collect();
    // A read ack of an unread message of conversation i (none is cached after the open: its
    // facts come from the store by key). Durable, as the app's ack is: the time includes the
    // commit to disk (one fsync).
    let per = n / convs;
    let acks: Vec<Duration> = (0..SAMPLES as u64)
        .map(|i| {
            let c = i % convs;
            let newest = c + 1 + (n - 1 - c) / convs * convs; // conversation c's newest id
                                                              // The middle of the unread tail (another one each time a conversation comes again).
            let tail = per.min(UNREAD_TAIL);
            let id = newest - ((tail / 2 + i / convs) % tail) * convs;
            let t = Instant::now();
            let sent = e.ack_message_read(1, id).unwrap();
            let d = t.elapsed();
            assert!(sent.is_some(), "message {id} takes an ack");
            d
        })
        .collect();
    // A conversation read: the user opens a chat with its UNREAD_TAIL new messages.
    // (Not the last conversation: the kill runs after this one ack a message it left unread.)
    let reads: Vec<Duration> = (0..SAMPLES.min(convs as usize - 1) as u64)
        .map(|i| {
            let t = Instant::now();
            e.ack_conversation_read(2, &peer(i)).unwrap().expect("something to ack");
            t.elapsed()
        })
        .collect();
    while e.poll_event().is_some() {}
    let rss_after = rss_kib().saturating_sub(rss_before);
    // The checkpoint the engine's timer makes once the app is quiet (redb's allocator state in
    // an empty durable commit): paid once per burst, not per ack.
    let due = e.poll_timeout().expect("a checkpoint is due after durable commits");
    let t = Instant::now();
    e.handle_timeout(due);
    let checkpoint = t.elapsed();
    assert!(!e.store().needs_checkpoint(), "the timer checkpointed");
    println!(
        "| {n:>9} | {convs:>5} | {:>8.1} | {:>8.1} | {:>8.1} | {:>8} | {:>8} | {:>8} | {:>6} | {:>8} |",
        open.as_secs_f64() * 1e3,
        rss_open as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        us(median(acks)),
        us(median(reads)),
        us(median(pages)),
        bytes / n,
        us(checkpoint),
    );
}

/// The app is killed while the store is open (no clean close): opens it, makes one durable
/// ack, and exits without running any destructor: right after the ack ("burst": the kill comes
/// before the checkpoint, the ack is in the journal) or once the engine's timer made its
/// checkpoint ("idle").
fn killed(path: &std::path::Path, n: u64, convs: u64, idle: bool) {
    let store = RedbStore::open(path).unwrap();
    let mut e = ClientEngine::open(EngineConfig::new("alice", "a1", ChatOptions::default()), store).unwrap();
    let _ = (n, convs);
    // An unread message (the measuring run read some conversations whole: which ones depends on
    // the sizes), so the ack is a real durable write.
    let unread = e
        .conversations()
        .filter(|c| c.unread() > 0)
        .map(|c| c.key.clone())
        .collect::<Vec<_>>()
        .into_iter()
        .find_map(|k| e.load_messages(&k, None, 400).into_iter().find(|m| m.unread))
        .expect("an unread message to ack");
    assert!(e.ack_message_read(1, unread.id).unwrap().is_some(), "the ack is written");
    if idle {
        let due = e.poll_timeout().expect("a checkpoint is due");
        e.handle_timeout(due);
        assert!(!e.store().needs_checkpoint(), "the timer checkpointed");
    }
    std::process::exit(0);
}

/// The open after a kill: redb walks the file first unless its last durable commit recorded
/// the allocator state (a checkpoint); the store replays its journal.
fn reopen(path: &std::path::Path, what: &str) {
    let t = Instant::now();
    let store = RedbStore::open(path).unwrap();
    let walked = store.repaired_at_open();
    let replayed = store.replayed_at_open();
    let e = ClientEngine::open(EngineConfig::new("alice", "a1", ChatOptions::default()), store).unwrap();
    println!(
        "    open after a kill ({what}): {:.1} ms ({} conversations; {}; {replayed} journal entries replayed)",
        t.elapsed().as_secs_f64() * 1e3,
        e.conversations().count(),
        if walked { "walked the file" } else { "no walk" }
    );
}

fn child(args: &[&str]) {
    let status = std::process::Command::new(std::env::current_exe().unwrap()).args(args).status().unwrap();
    assert!(status.success());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "killed") {
        let idle = args.get(pos + 4).is_some_and(|m| m == "idle");
        killed(std::path::Path::new(&args[pos + 1]), args[pos + 2].parse().unwrap(), args[pos + 3].parse().unwrap(), idle);
    }
    if let Some(pos) = args.iter().position(|a| a == "reopen") {
        reopen(std::path::Path::new(&args[pos + 1]), args.get(pos + 2).map_or("", String::as_str));
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "fill") {
        fill(std::path::Path::new(&args[pos + 1]), args[pos + 2].parse().unwrap(), args[pos + 3].parse().unwrap());
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "measure") {
        let path = std::path::PathBuf::from(&args[pos + 1]);
        measure(&path, args[pos + 2].parse().unwrap(), args[pos + 3].parse().unwrap());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it (in
    // the debug profile): then a smoke run of one small store checks that the bench works.
    let (sizes, conv_counts): (&[u64], &[u64]) = if !args.iter().any(|a| a == "--bench") {
        (&[2_000], &[10])
    } else if args.iter().any(|a| a == "quick") {
        (&[10_000, 100_000], &[50, 5_000])
    } else {
        (&[10_000, 100_000, 1_000_000], &[50, 5_000])
    };
    let dir = tempfile::tempdir().unwrap();
    println!("| messages  | convs | open ms  | RSS MiB  | RSS+ops  | ack µs   | conv read µs | page µs | B/msg | checkpoint µs |");
    println!("|----------:|------:|---------:|---------:|---------:|---------:|---------:|---------:|-------:|---------:|");
    for &convs in conv_counts {
        for &n in sizes {
            let path = dir.path().join(format!("h{n}-{convs}.redb"));
            let t = Instant::now();
            fill(&path, n, convs);
            eprintln!("filled {n} messages over {convs} conversations in {:.1} s", t.elapsed().as_secs_f64());
            let (p, n, c) = (path.to_str().unwrap(), n.to_string(), convs.to_string());
            child(&["measure", p, &n, &c]);
            child(&["killed", p, &n, &c, "idle"]);
            child(&["reopen", p, "killed while idle"]);
            child(&["killed", p, &n, &c, "burst"]);
            child(&["reopen", p, "killed within a burst"]);
            std::fs::remove_file(&path).unwrap();
        }
    }
}
