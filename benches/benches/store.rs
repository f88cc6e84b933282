//! Embedded store candidates on roomcast's workload: group commits of 64 messages of
//! ~256 bytes with an fsync per commit (what the history writer does under load), and
//! reading the newest page of 50 from a room of 10,000 messages. Both engines get the
//! same keys (room, id big-endian) and the same JSON values; the secondary clientMsgId
//! index is written in the same commit. Also the real `EmbeddedStore` through its async
//! trait (spawn_blocking included).

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roomcast_engine::message::ChatMessage;
use roomcast_engine::store::conformance::message;
use roomcast_engine::store::{HistoryStore, PageQuery, WriteBatch};

const BATCH: usize = 64;
const ROOM_SIZE: u64 = 10_000;
const PAGE: usize = 50;

fn batch(start: u64) -> Vec<ChatMessage> {
    (0..BATCH as u64)
        .map(|i| {
            let id = start + i;
            let mut m = message("room-1", id, "user-1", Some(&format!("c{id}")));
            m.content = "x".repeat(256);
            m
        })
        .collect()
}

fn key(room: &str, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(room.len() + 9);
    k.extend_from_slice(room.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

const R_MESSAGES: redb::TableDefinition<(&str, u64), &[u8]> =
    redb::TableDefinition::new("messages");
const R_CLIENT: redb::TableDefinition<(&str, &str, &str), u64> =
    redb::TableDefinition::new("client_ids");

fn redb_append(db: &redb::Database, msgs: &[ChatMessage]) {
    let mut txn = db.begin_write().expect("txn");
    txn.set_durability(redb::Durability::Immediate)
        .expect("durability");
    {
        let mut t = txn.open_table(R_MESSAGES).expect("table");
        let mut c = txn.open_table(R_CLIENT).expect("table");
        for m in msgs {
            let cid = m.client_msg_id.as_deref().unwrap_or("");
            c.insert((m.room_id.as_str(), m.user_id.as_str(), cid), m.message_id)
                .expect("insert");
            t.insert(
                (m.room_id.as_str(), m.message_id),
                serde_json::to_vec(m).expect("json").as_slice(),
            )
            .expect("insert");
        }
    }
    txn.commit().expect("commit");
}

fn redb_page(db: &redb::Database) -> usize {
    use redb::ReadableDatabase;
    let txn = db.begin_read().expect("read");
    let t = txn.open_table(R_MESSAGES).expect("table");
    let mut n = 0;
    for item in t
        .range(("room-1", 0)..=("room-1", u64::MAX))
        .expect("range")
        .rev()
        .take(PAGE)
    {
        let (_, v) = item.expect("item");
        let m: ChatMessage = serde_json::from_slice(v.value()).expect("json");
        n += m.content.len();
    }
    n
}

struct Fjall {
    db: fjall::Database,
    messages: fjall::Keyspace,
    client: fjall::Keyspace,
}

fn fjall_append(f: &Fjall, msgs: &[ChatMessage]) {
    let mut b = f.db.batch();
    for m in msgs {
        let cid = m.client_msg_id.as_deref().unwrap_or("");
        b.insert(
            &f.client,
            format!("{}\0{}\0{}", m.room_id, m.user_id, cid),
            m.message_id.to_be_bytes().to_vec(),
        );
        b.insert(
            &f.messages,
            key(&m.room_id, m.message_id),
            serde_json::to_vec(m).expect("json"),
        );
    }
    b.commit().expect("commit");
    f.db.persist(fjall::PersistMode::SyncAll).expect("persist");
}

fn fjall_page(f: &Fjall) -> usize {
    let mut n = 0;
    for kv in f
        .messages
        .range(key("room-1", 0)..=key("room-1", u64::MAX))
        .rev()
        .take(PAGE)
    {
        let v = kv.value().expect("value");
        let m: ChatMessage = serde_json::from_slice(&v).expect("json");
        n += m.content.len();
    }
    n
}

fn bench_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");

    let rdb = redb::Database::create(dir.path().join("bench.redb")).expect("redb");
    let fj = {
        let db = fjall::Database::builder(dir.path().join("fjall"))
            .open()
            .expect("fjall");
        let messages = db
            .keyspace("messages", fjall::KeyspaceCreateOptions::default)
            .expect("ks");
        let client = db
            .keyspace("client_ids", fjall::KeyspaceCreateOptions::default)
            .expect("ks");
        Fjall {
            db,
            messages,
            client,
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = Arc::new(
        roomcast_engine::EmbeddedStore::open(&dir.path().join("embedded")).expect("store"),
    );

    // Pre-fill a room of ROOM_SIZE messages in each, for page reads.
    for start in (0..ROOM_SIZE).step_by(BATCH) {
        let msgs = batch(start);
        redb_append(&rdb, &msgs);
        fjall_append(&fj, &msgs);
        rt.block_on(store.append(WriteBatch {
            messages: msgs,
            audit: vec![],
        }))
        .expect("append");
    }

    let mut g = c.benchmark_group("store_append_64_fsync");
    g.sample_size(20);
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut next = 1_000_000u64;
    g.bench_function("redb", |b| {
        b.iter(|| {
            next += BATCH as u64;
            redb_append(&rdb, &batch(next));
        })
    });
    g.bench_function("fjall", |b| {
        b.iter(|| {
            next += BATCH as u64;
            fjall_append(&fj, &batch(next));
        })
    });
    g.bench_function("embedded_store", |b| {
        b.iter(|| {
            next += BATCH as u64;
            rt.block_on(store.append(WriteBatch {
                messages: batch(next),
                audit: vec![],
            }))
            .expect("append")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("store_page_newest_50_of_10k");
    g.throughput(Throughput::Elements(PAGE as u64));
    g.bench_function("redb", |b| b.iter(|| redb_page(&rdb)));
    g.bench_function("fjall", |b| b.iter(|| fjall_page(&fj)));
    g.bench_function("embedded_store", |b| {
        b.iter(|| {
            rt.block_on(store.page(
                "room-1",
                PageQuery {
                    before: Some(ROOM_SIZE),
                    after: None,
                    limit: PAGE,
                },
            ))
            .expect("page")
        })
    });
    g.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
