//! The deliver path's CPU costs: parsing a client frame, encoding a message once, and
//! fanning the same bytes out into N outboxes (and draining them as writers do).

use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast_engine::Outbox;
use roomcast_engine::message::ChatMessage;
use roomcast_engine::outbox::Batch;
use roomcast_engine::protocol::{encode_message, parse_client_frame};

fn msg() -> ChatMessage {
    ChatMessage {
        message_id: roomcast_engine::ids::first_id_at(1_800_000_000_000) + 7,
        seq: 7,
        room_id: "general".into(),
        user_id: "user-123".into(),
        username: "john_doe".into(),
        content: "x".repeat(256),
        client_msg_id: Some("c-42".into()),
        ..ChatMessage::reference(0, String::new(), String::new(), String::new(), None)
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

/// Routing a room to its shard, the per-user rate-limit check, and JWT verification:
/// the per-message and per-connection checks in front of the shard.
fn checks(c: &mut Criterion) {
    let rooms: Vec<String> = (0..1024).map(|i| format!("conversation:{i:08}")).collect();
    c.bench_function("route_room_to_shard", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) & 1023;
            roomcast_engine::ids::room_hash(&rooms[i]) % 2
        })
    });
    let limits =
        roomcast_engine::ratelimit::RateLimits::new(&roomcast_engine::ratelimit::RateLimitConfig {
            max_messages: u32::MAX,
            ..Default::default()
        });
    let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    c.bench_function("rate_limit_check_10k_users", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % users.len();
            limits.check_message(&users[i]).is_ok()
        })
    });
    // The REST routes' per-user budget (governor GCRA telling what is left, for the
    // RateLimit-* headers): one check per authenticated request.
    let budget =
        roomcast_engine::ratelimit::Budget::new(u32::MAX, std::time::Duration::from_secs(60));
    c.bench_function("rate_limit_rest_budget_10k_users", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % users.len();
            budget.check(&users[i]).is_ok()
        })
    });
    let moderator = roomcast_engine::moderation::Moderator::new(
        roomcast_engine::moderation::ModerationConfig {
            enabled: true,
            max_message_length: 1000,
            blocked_words: (1..=40).map(|i| format!("blockedword{i:02}")).collect(),
            mode: roomcast_engine::moderation::ModerationMode::Mask,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let clean = "the quick brown fox jumps over the lazy dog ".repeat(6);
    c.bench_function("moderation_check_256b_40_words", |b| {
        b.iter(|| moderator.check(&clean).is_ok())
    });
    let secret = b"bench-secret-0123456789";
    let verifier = roomcast_server::auth::Verifier::new(secret, None, None);
    let token = roomcast_server::auth::mint(secret, "user-1", "User One", false, 3600, None, None)
        .unwrap_or_default();
    c.bench_function("jwt_verify_hs256", |b| {
        b.iter(|| {
            futures_util::FutureExt::now_or_never(verifier.verify(&token))
                .is_some_and(|r| r.is_ok())
        })
    });
}

criterion_group!(benches, bench, checks);
criterion_main!(benches);
