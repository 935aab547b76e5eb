//! Cost of marking a conversation read (ackConversationRead) at 10, 10,000 and 1,000,000 unread
//! messages. A bench binary with a bounded workload rather than criterion: each measurement
//! needs a fresh conversation of N unread messages, and building a million of them per
//! criterion iteration would take hours. Each size is built `RUNS` times; the ack is timed alone.
//! Run: `cargo bench -p receipt-core --bench conversation_read`.

use std::time::{Duration, Instant};

use receipt_core::engine::{ClientEngine, EngineConfig};
use receipt_core::protocol::*;
use receipt_core::store::MemStore;
use receipt_core::*;

const RUNS: usize = 5;

fn engine_with_unread(n: u64) -> ClientEngine<MemStore> {
    let mut e = ClientEngine::open(EngineConfig::new("alice", "a1", ChatOptions::default()), MemStore::default()).unwrap();
    e.handle_connected(0, "t");
    e.handle_frame(0, ServerFrame::SyncDone { head: 0, conversations: vec![], resync: false });
    let mut seq = 0;
    let mut id = 0;
    while id < n {
        let events: Vec<SeqEvent> = (0..10_000.min(n - id))
            .map(|_| {
                id += 1;
                seq += 1;
                SeqEvent {
                    seq,
                    event: ServerEvent::Message {
                        msg: std::sync::Arc::new(WireMessage {
                            id,
                            client_id: format!("b1-{id}"),
                            from: "bob".into(),
                            to: "alice".into(),
                            chat_type: ChatType::Chat,
                            content: String::new(),
                            timestamp: id,
                            require_delivery_ack: false,
                            need_group_ack: false,
                        }),
                    }
                    .into(),
                }
            })
            .collect();
        e.handle_frame(0, ServerFrame::Backlog { events });
        while e.poll_event().is_some() {}
    }
    while e.poll_transmit(0).is_some() {}
    e
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it:
    // then only a quick smoke run of the small sizes.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[u64] = if quick { &[10, 10_000] } else { &[10, 10_000, 1_000_000] };
    let key = ConversationKey::new(ChatType::Chat, "bob");
    println!("conversation read (ackConversationRead), {RUNS} runs per size, memory store");
    for &n in sizes {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let mut e = engine_with_unread(n);
            assert_eq!(e.unread_count(&key), n as u32);
            // glibc settles the chunks the build freed at the next large request: make that
            // happen here, or the ack's first allocation pays for the build (0.1-18 ms, measured).
            drop(std::hint::black_box(Vec::<u8>::with_capacity(64 * 1024)));
            let t = Instant::now();
            let req = e.ack_conversation_read(1, "bob").unwrap();
            let dt = t.elapsed();
            assert!(req.is_some());
            assert_eq!(e.unread_count(&key), 0);
            assert!(!e.message_by_id(n).unwrap().unread);
            times.push(dt);
        }
        times.sort();
        let median: Duration = times[RUNS / 2];
        println!(
            "  {n:>9} unread: median {:>8.2} us  (min {:.2} us, max {:.2} us)",
            median.as_secs_f64() * 1e6,
            times[0].as_secs_f64() * 1e6,
            times[RUNS - 1].as_secs_f64() * 1e6
        );
    }
}
