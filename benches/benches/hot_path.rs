//! The deliver path's CPU costs: parsing a client frame, encoding a message once, and
//! fanning the same bytes out into N outboxes (and draining them as writers do).

use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast_engine::Outbox;
use roomcast_engine::outbox::Batch;
use roomcast_engine::protocol::{ChatMessage, encode_message, parse_client_frame};

fn msg() -> ChatMessage {
    ChatMessage {
        message_id: roomcast_engine::ids::first_id_at(1_800_000_000_000) + 7,
        room_id: "general".into(),
        user_id: "user-123".into(),
        username: "john_doe".into(),
        content: "x".repeat(256),
        client_msg_id: Some("c-42".into()),
        deleted: false,
    }
}

fn bench(c: &mut Criterion) {
    let frame = format!(
        r#"{{"type":"message","roomId":"general","content":"{}","clientMsgId":"c-42"}}"#,
        "x".repeat(256)
    );
    c.bench_function("parse_message_frame_256b", |b| {
        b.iter(|| parse_client_frame(&frame).is_ok())
    });
    let m = msg();
    c.bench_function("encode_message_256b", |b| {
        b.iter(|| encode_message(&m, false).len())
    });

    let mut g = c.benchmark_group("fanout_push_and_drain");
    for n in [10usize, 1_000, 10_000] {
        let outboxes: Vec<Arc<Outbox>> = (0..n).map(|_| Arc::new(Outbox::new(1 << 20))).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let frame = encode_message(&m, false);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut batch = Batch::default();
            b.iter(|| {
                let now = Instant::now();
                for o in &outboxes {
                    o.push(frame.clone(), now);
                }
                rt.block_on(async {
                    for o in &outboxes {
                        o.next_batch(&mut batch).await;
                        let bytes: usize = batch.frames.drain(..).map(|f| f.payload.len()).sum();
                        o.release(bytes);
                    }
                });
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
