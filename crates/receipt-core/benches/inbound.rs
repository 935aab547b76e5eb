//! Inbound receipt frames applied per second on one core: decode + apply + event.
//!
//! Each iteration takes a sender's engine holding 1,000 sent 1:1 messages and feeds it 2,000
//! receipt frames from the wire (a delivery ack and a read ack per message), polling every event.
//! Run: `cargo bench -p receipt-core --bench inbound`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use receipt_core::codec::{encode, HEADER_LEN};
use receipt_core::engine::{ClientEngine, EngineConfig};
use receipt_core::protocol::*;
use receipt_core::store::{ClientStore, MemStore, RedbStore};
use receipt_core::*;

const MESSAGES: u64 = 1_000;

fn sender<S: ClientStore>(store: S) -> ClientEngine<S> {
    let mut e = ClientEngine::open(EngineConfig::new("alice", "a1", ChatOptions::default()), store).unwrap();
    e.handle_connected(0, "t");
    e.handle_frame(0, ServerFrame::SyncDone { head: 0, conversations: vec![], resync: false });
    let events: Vec<SeqEvent> = (1..=MESSAGES)
        .map(|id| SeqEvent {
            seq: id,
            event: ServerEvent::Message {
                msg: std::sync::Arc::new(WireMessage {
                    id,
                    client_id: format!("other-{id}"),
                    from: "alice".into(),
                    to: "bob".into(),
                    chat_type: ChatType::Chat,
                    content: "hello".into(),
                    timestamp: id,
                    require_delivery_ack: true,
                    need_group_ack: false,
                }),
            }
            .into(),
        })
        .collect();
    e.handle_frame(0, ServerFrame::Backlog { events });
    while e.poll_event().is_some() {}
    while e.poll_transmit(0).is_some() {}
    e
}

/// Frame bodies as they come off the socket.
fn receipts() -> Vec<Vec<u8>> {
    let mut seq = MESSAGES;
    let mut out = Vec::new();
    for id in 1..=MESSAGES {
        for read in [false, true] {
            seq += 1;
            let event = if read {
                ServerEvent::Read { msg_id: id, from: "alice".into(), to: "bob".into(), by: "bob".into(), timestamp: seq }
            } else {
                ServerEvent::Delivered { msg_id: id, from: "alice".into(), to: "bob".into(), by: "bob".into(), timestamp: seq }
            };
            out.push(encode(&ServerFrame::Event { event: SeqEvent { seq, event: event.into() } })[HEADER_LEN..].to_vec());
        }
    }
    out
}

fn apply<S: ClientStore>(e: &mut ClientEngine<S>, frames: &[Vec<u8>]) -> usize {
    let mut events = 0;
    for body in frames {
        e.handle_frame_bytes(1, body).unwrap();
        while e.poll_event().is_some() {
            events += 1;
        }
    }
    assert_eq!(events, frames.len(), "one event per receipt");
    events
}

fn bench(c: &mut Criterion) {
    let frames = receipts();
    let mut g = c.benchmark_group("inbound_receipts");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("memory_store", |b| {
        b.iter_batched(|| sender(MemStore::default()), |mut e| apply(&mut e, &frames), BatchSize::LargeInput)
    });
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    g.sample_size(10);
    g.bench_function("redb_store", |b| {
        b.iter_batched(
            || {
                n += 1;
                sender(RedbStore::open(dir.path().join(format!("s{n}.redb"))).unwrap())
            },
            |mut e| apply(&mut e, &frames),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
