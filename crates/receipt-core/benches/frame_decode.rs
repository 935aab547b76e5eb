//! Decoding one frame body per kind a busy client or server sees most, alone (no engine).
//! Run: `cargo bench -p receipt-core --bench frame_decode`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use receipt_core::codec::{decode_body, encode, HEADER_LEN};
use receipt_core::protocol::*;
use receipt_core::*;

fn body<T: serde::Serialize>(frame: &T) -> Vec<u8> {
    encode(frame)[HEADER_LEN..].to_vec()
}

fn bench(c: &mut Criterion) {
    let msg = WireMessage {
        id: 123_456,
        client_id: "bench-s17-c00001234".into(),
        from: "bench-s17".into(),
        to: "bench-r17".into(),
        chat_type: ChatType::Chat,
        content: "x".repeat(32),
        timestamp: 1_764_000_000_000,
        require_delivery_ack: true,
        need_group_ack: false,
    };
    let server = [
        (
            "message_event",
            body(&ServerFrame::Event { event: SeqEvent { seq: 4567, event: ServerEvent::Message { msg: msg.into() }.into() } }),
        ),
        (
            "delivered_event",
            body(&ServerFrame::Event {
                event: SeqEvent {
                    seq: 4568,
                    event: ServerEvent::Delivered {
                        msg_id: 123_456,
                        from: "bench-s17".into(),
                        to: "bench-r17".into(),
                        by: "bench-r17".into(),
                        timestamp: 1_764_000_000_000,
                    }
                    .into(),
                },
            }),
        ),
        ("result_done", body(&ServerFrame::ok(77, Response::Done))),
    ];
    let mut g = c.benchmark_group("frame_decode");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in &server {
        g.bench_function(*name, |b| b.iter(|| decode_body::<ServerFrame>(std::hint::black_box(bytes)).unwrap()));
    }
    let ack = body(&ClientFrame::ReadAck { req: 9, msg_id: 123_456, private: false });
    g.bench_function("read_ack_request", |b| b.iter(|| decode_body::<ClientFrame>(std::hint::black_box(&ack)).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
