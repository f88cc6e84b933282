//! The CQL store beside the embedded one, on roomcast's workload: appends at the batch
//! sizes the history writer produces (1 at low load, ~12 in private chats at 20,000
//! msgs/s, 64), the newest page of 50, a recovery read of 1,000, and what a page costs
//! when its 50 messages lie in 1 day bucket versus 50 (a sparse conversation), which is
//! what sets the bucket width.
//!
//! Run with a CQL node: `ROOMCAST_BENCH_CQL=127.0.0.1:9042 cargo bench -p roomcast-benches
//! --bench cql` (`bash scripts/cassandra/start.sh` prints one). Without it the bench says
//! so and measures only the embedded store.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast_engine::ids::first_id_at;
use roomcast_engine::message::ChatMessage;
use roomcast_engine::store::conformance::message;
use roomcast_engine::store::cql::{CqlConfig, CqlStore, migrate};
use roomcast_engine::store::{HistoryStore, PageQuery, WriteBatch};

const T0: u64 = 1_800_000_000_000;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn msgs(room: &str, ids: impl Iterator<Item = u64>) -> Vec<ChatMessage> {
    ids.map(|id| {
        let mut m = message(room, id, "user-1", Some(&format!("c{id}")));
        m.content = "x".repeat(256);
        m
    })
    .collect()
}

fn stores(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> Vec<(&'static str, Arc<dyn HistoryStore>)> {
    let mut out: Vec<(&'static str, Arc<dyn HistoryStore>)> = vec![(
        "embedded",
        Arc::new(roomcast_engine::EmbeddedStore::open(dir).expect("embedded")),
    )];
    match std::env::var("ROOMCAST_BENCH_CQL") {
        Ok(node) if !node.is_empty() => {
            let cfg = CqlConfig::local(&node, &format!("bench_{}", std::process::id()));
            rt.block_on(migrate(&cfg)).expect("migrate");
            out.push((
                "cql",
                Arc::new(rt.block_on(CqlStore::connect(&cfg)).expect("connect")),
            ));
        }
        _ => {
            eprintln!("cql bench: ROOMCAST_BENCH_CQL is not set; measuring the embedded store only")
        }
    }
    out
}

fn bench_cql(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stores = stores(&rt, dir.path());
    // A dense room (10,000 messages within one day) and a sparse one (one message a day
    // for 100 days).
    for (_, s) in &stores {
        for chunk in 0..(10_000 / 100) {
            let start = first_id_at(T0) + chunk * 100;
            rt.block_on(s.append(WriteBatch {
                messages: msgs("dense", start..start + 100),
                audit: vec![],
            }))
            .expect("fill");
        }
        rt.block_on(s.append(WriteBatch {
            messages: msgs("sparse", (0..100).map(|d| first_id_at(T0 + d * DAY_MS))),
            audit: vec![],
        }))
        .expect("fill");
    }

    let mut g = c.benchmark_group("history_append");
    g.sample_size(20);
    let mut next = first_id_at(T0 + 200 * DAY_MS);
    for size in [1usize, 12, 64] {
        g.throughput(Throughput::Elements(size as u64));
        for (name, s) in &stores {
            g.bench_with_input(BenchmarkId::new(*name, size), &size, |b, &size| {
                b.iter(|| {
                    next += size as u64;
                    rt.block_on(s.append(WriteBatch {
                        messages: msgs("append", next..next + size as u64),
                        audit: vec![],
                    }))
                    .expect("append")
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("history_read");
    g.sample_size(30);
    let newest = |limit: usize| PageQuery {
        before: Some(first_id_at(T0 + 150 * DAY_MS)),
        after: None,
        limit,
    };
    for (name, s) in &stores {
        g.bench_function(BenchmarkId::new("page_50_one_bucket", name), |b| {
            b.iter(|| rt.block_on(s.page("dense", newest(50))).expect("page"))
        });
        g.bench_function(BenchmarkId::new("page_50_fifty_buckets", name), |b| {
            b.iter(|| rt.block_on(s.page("sparse", newest(50))).expect("page"))
        });
        g.bench_function(BenchmarkId::new("recovery_1000", name), |b| {
            b.iter(|| {
                rt.block_on(s.page(
                    "dense",
                    PageQuery {
                        after: Some(first_id_at(T0) + 8_999),
                        before: Some(i64::MAX as u64),
                        limit: 1001,
                    },
                ))
                .expect("recovery")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_cql);
criterion_main!(benches);
