//! Cluster tests without sockets: three engines in one process, one real `redis-server`
//! on a free port, and one shared store (the embedded store behind one `Arc`, standing
//! in for the CQL keyspace the nodes share in production; the end-to-end tests run
//! separate processes on Cassandra). Sessions are fed frames as the socket reader would
//! and their outboxes drained as the writer would.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::bus::RedisBusConfig;
use crate::outbox::Batch;
use crate::store::embedded::EmbeddedStore;
use crate::testkit::RedisServer;
use crate::{Engine, EngineConfig, PageQuery, Session, Stores, UserInfo};

const WAIT: Duration = Duration::from_secs(20);

fn fast() -> ClusterConfig {
    ClusterConfig {
        ttl: Duration::from_millis(1500),
        tick: Duration::from_millis(250),
        margin: Duration::from_millis(500),
        ..ClusterConfig::default()
    }
}

async fn node(redis: &RedisServer, stores: &Stores) -> Engine {
    node_reading(redis, stores, EngineConfig::default().recovery_max_messages).await
}

/// A node whose store reads (gap fills, recovery) take at most `page` messages each.
async fn node_reading(redis: &RedisServer, stores: &Stores, page: usize) -> Engine {
    start_node(bus_config(&redis.url(), None), stores, page)
        .await
        .expect("start a cluster node")
}

/// The bus settings of these tests: quick probes and position checks.
fn bus_config(url: &str, tls: Option<crate::tls::TlsFiles>) -> RedisBusConfig {
    let mut bus = RedisBusConfig::new(url);
    bus.tls = tls;
    bus.ping_every = Duration::from_millis(500);
    bus.timeout = Duration::from_millis(500);
    bus.position_every = Duration::from_millis(500);
    bus
}

async fn start_node(bus: RedisBusConfig, stores: &Stores, page: usize) -> Result<Engine, String> {
    let cfg = EngineConfig {
        shards: 2,
        rate: crate::ratelimit::RateLimitConfig {
            max_messages: 100_000,
            ..Default::default()
        },
        recovery_max_messages: page,
        ..EngineConfig::default()
    };
    let (engine, _tasks) = Engine::start_cluster(cfg, stores.clone(), bus, fast()).await?;
    Ok(engine)
}

/// Waits until every node sees `n` live nodes and the slots are spread over them.
async fn settled(nodes: &[&Engine], n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let views_agree = nodes.iter().all(|e| {
            e.cluster()
                .is_some_and(|c| c.nodes().len() == n && c.slots_held() > 0)
        });
        let total: usize = nodes
            .iter()
            .filter_map(|e| e.cluster().map(|c| c.slots_held()))
            .sum();
        if views_agree && total == SLOTS as usize {
            return;
        }
        assert!(Instant::now() < deadline, "cluster did not settle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn user(id: &str) -> UserInfo {
    UserInfo {
        user_id: id.to_owned(),
        username: format!("{id}-name"),
        is_admin: false,
    }
}

struct Conn {
    session: Session,
    frames: Vec<Value>,
}

impl Conn {
    async fn open(engine: &Engine, id: &str) -> Conn {
        Conn {
            session: Session::open(engine, user(id)).await.expect("open session"),
            frames: Vec::new(),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.session
            .handle_text(&frame.to_string(), Instant::now())
            .await;
    }

    /// Reads frames until `done` holds for the frames read so far.
    async fn read_until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let outbox = self.session.outbox().clone();
        let deadline = Instant::now() + WAIT;
        while !done(&self.frames) {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut batch = Batch::default();
            if tokio::time::timeout(left, outbox.next_batch(&mut batch))
                .await
                .is_err()
            {
                let short: Vec<String> = self
                    .frames
                    .iter()
                    .map(|v| format!("{}:{}", v["type"], v["seq"]))
                    .collect();
                panic!("timed out waiting for {what}; got {short:?}");
            }
            for q in batch.frames.drain(..) {
                outbox.release(q.payload.len());
                self.frames
                    .push(serde_json::from_slice(&q.payload).expect("JSON frame"));
            }
        }
    }

    async fn join(&mut self, room: &str) {
        self.send(json!({"type": "join_room", "roomId": room}))
            .await;
        self.read_until("room_joined", |f| {
            f.iter().any(|v| v["type"] == "room_joined")
        })
        .await;
    }

    fn of_type(&self, ty: &str) -> Vec<&Value> {
        self.frames.iter().filter(|v| v["type"] == ty).collect()
    }
}

/// `(seq, clientMsgId)` of every message frame, in arrival order.
fn seqs(c: &Conn) -> Vec<(u64, String)> {
    c.of_type("message")
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().expect("seq"),
                v["clientMsgId"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Every acked message reached every member exactly once, in `seq` order, and every
/// one of them is in the history of room `r`.
async fn check_exactly_once(members: &[&Conn], acked: &BTreeMap<u64, String>, stores: &Stores) {
    assert!(!acked.is_empty(), "nothing was acknowledged");
    for m in members {
        let got = seqs(m);
        let got_seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        let mut sorted = got_seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(got_seqs, sorted, "in seq order, no repeats");
        let by_seq: HashMap<u64, &str> = got.iter().map(|(s, c)| (*s, c.as_str())).collect();
        for (seq, cid) in acked {
            assert_eq!(
                by_seq.get(seq).copied(),
                Some(cid.as_str()),
                "acked seq {seq} missing or wrong"
            );
        }
    }
    let history = stores
        .history
        .page(
            "r",
            PageQuery {
                before: None,
                after: Some(0),
                limit: 100_000,
            },
        )
        .await
        .expect("history");
    let stored: HashMap<u64, &str> = history
        .iter()
        .map(|m| (m.seq, m.client_msg_id.as_deref().unwrap_or("")))
        .collect();
    for (seq, cid) in acked {
        assert_eq!(
            stored.get(seq).copied(),
            Some(cid.as_str()),
            "seq {seq} in history"
        );
    }
}

/// Acks of a publisher: `seq -> clientMsgId`.
fn acks(c: &Conn) -> BTreeMap<u64, String> {
    c.of_type("ack")
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().expect("ack seq"),
                v["clientMsgId"].as_str().expect("ack cid").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_on_every_node_reach_every_member_once_in_one_order() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = Stores::embedded(EmbeddedStore::open(dir.path()).expect("store"));
    let (a, b, c) = (
        node(&redis, &stores).await,
        node(&redis, &stores).await,
        node(&redis, &stores).await,
    );
    settled(&[&a, &b, &c], 3).await;
    let ids: std::collections::HashSet<u16> = [&a, &b, &c]
        .iter()
        .filter_map(|e| e.cluster().map(|c| c.node))
        .collect();
    assert_eq!(ids.len(), 3, "each node claimed its own node id");

    let mut conns: Vec<Conn> = Vec::new();
    for (i, e) in [&a, &b, &c].iter().enumerate() {
        conns.push(Conn::open(e, &format!("u{i}")).await);
    }
    for conn in &mut conns {
        conn.join("r").await;
    }
    const EACH: usize = 60;
    for i in 0..EACH {
        for (n, conn) in conns.iter_mut().enumerate() {
            let frame = json!({"type": "message", "roomId": "r", "content": format!("m{n}-{i}"), "clientMsgId": format!("c{n}-{i}")});
            conn.send(frame).await;
        }
    }
    let total = EACH * conns.len();
    let mut acked = BTreeMap::new();
    for conn in &mut conns {
        conn.read_until("acks", |f| {
            f.iter()
                .filter(|v| v["type"] == "ack" || v["type"] == "error")
                .count()
                >= EACH
        })
        .await;
        let errors = conn.of_type("error");
        assert!(errors.is_empty(), "no publish refused: {errors:?}");
        acked.extend(acks(conn));
    }
    assert_eq!(acked.len(), total, "one seq per message");
    assert_eq!(*acked.keys().next().expect("first"), 1);
    assert_eq!(
        *acked.keys().last().expect("last"),
        total as u64,
        "contiguous seqs"
    );
    for conn in &mut conns {
        conn.read_until("every message", |f| {
            f.iter().filter(|v| v["type"] == "message").count() >= total
        })
        .await;
    }
    let members: Vec<&Conn> = conns.iter().collect();
    check_exactly_once(&members, &acked, &stores).await;
    // Two of three nodes forwarded (the owner sequenced its own publishers' messages).
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_a_room_spans_nodes_and_a_wrong_ca_is_refused() {
    let redis = RedisServer::start_tls();
    let f = redis.tls_files();
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = Stores::embedded(EmbeddedStore::open(dir.path()).expect("store"));
    let page = EngineConfig::default().recovery_max_messages;
    let files = |ca: &std::path::Path, client: bool| crate::tls::TlsFiles {
        ca: ca.to_owned(),
        client: client.then(|| (f.client_cert.clone(), f.client_key.clone())),
    };
    // The port speaks only TLS: a clear client gets nowhere.
    let clear = format!("redis://127.0.0.1:{}/", redis.port);
    let e = start_node(bus_config(&clear, None), &stores, page)
        .await
        .expect_err("a clear client cannot join a TLS-only Redis");
    assert!(e.starts_with("cluster: redis:"), "{e}");
    // A server certificate from a CA this node does not trust is refused, named.
    let e = start_node(
        bus_config(&redis.url(), Some(files(&f.other_ca, true))),
        &stores,
        page,
    )
    .await
    .expect_err("wrong CA");
    assert!(e.contains("UnknownIssuer"), "{e}");
    // The right CA but no client certificate: the server refuses the handshake.
    let e = start_node(
        bus_config(&redis.url(), Some(files(&f.ca, false))),
        &stores,
        page,
    )
    .await
    .expect_err("the server requires a client certificate");
    assert!(e.contains("CertificateRequired"), "{e}");
    // The right CA and a client certificate: two nodes, one room across them.
    let tls = || Some(files(&f.ca, true));
    let a = start_node(bus_config(&redis.url(), tls()), &stores, page)
        .await
        .expect("node a over TLS");
    let b = start_node(bus_config(&redis.url(), tls()), &stores, page)
        .await
        .expect("node b over TLS");
    settled(&[&a, &b], 2).await;
    let mut ua = Conn::open(&a, "ua").await;
    let mut ub = Conn::open(&b, "ub").await;
    ua.join("r").await;
    ub.join("r").await;
    for (n, conn) in [&mut ua, &mut ub].into_iter().enumerate() {
        for i in 0..20 {
            let frame = json!({"type": "message", "roomId": "r", "content": format!("m{n}-{i}"), "clientMsgId": format!("t{n}-{i}")});
            conn.send(frame).await;
        }
    }
    let mut acked = BTreeMap::new();
    for conn in [&mut ua, &mut ub] {
        conn.read_until("acks and every message", |f| {
            f.iter().filter(|v| v["type"] == "ack").count() >= 20
                && f.iter().filter(|v| v["type"] == "message").count() >= 40
        })
        .await;
        assert!(conn.of_type("error").is_empty());
        acked.extend(acks(conn));
    }
    assert_eq!(acked.len(), 40);
    check_exactly_once(&[&ua, &ub], &acked, &stores).await;
}

/// A history store whose next `fail` page reads fail (the rest passes through), so a
/// test can make a node's gap fills fail the way a store outage would.
struct FailingPages {
    inner: Arc<dyn crate::HistoryStore>,
    fail: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl crate::HistoryStore for FailingPages {
    fn backend(&self) -> &'static str {
        "failing-pages"
    }
    async fn append(
        &self,
        batch: crate::store::WriteBatch,
    ) -> Result<Vec<crate::store::AppendOutcome>, crate::store::StoreError> {
        self.inner.append(batch).await
    }
    async fn page(
        &self,
        room: &str,
        q: PageQuery,
    ) -> Result<Vec<crate::message::ChatMessage>, crate::store::StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .fail
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.failed.fetch_add(1, SeqCst);
            return Err(crate::store::StoreError::Backend("injected outage".into()));
        }
        self.inner.page(room, q).await
    }
    async fn get(
        &self,
        room: &str,
        id: u64,
    ) -> Result<Option<crate::message::ChatMessage>, crate::store::StoreError> {
        self.inner.get(room, id).await
    }
    async fn tombstone(&self, room: &str, id: u64) -> Result<bool, crate::store::StoreError> {
        self.inner.tombstone(room, id).await
    }
    async fn find_client_msg(
        &self,
        room: &str,
        user: &str,
        cid: &str,
    ) -> Result<Option<u64>, crate::store::StoreError> {
        self.inner.find_client_msg(room, user, cid).await
    }
    async fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<crate::store::AuditEntry>, crate::store::StoreError> {
        self.inner.audit_page(after, limit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_delivery_resumes_and_the_gap_is_filled_from_the_store() {
    redis_restart_gap(0, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_fill_that_fails_is_read_again_and_nothing_is_skipped() {
    // Away longer than the publisher retries (10 s): what was acked meanwhile is never
    // published, so the member's node must read it from the store.
    redis_restart_gap(3, Duration::from_secs(11)).await;
}

/// Redis is away for `outage` and comes back empty while the owner stores messages;
/// the member's node fills the gap from the store, its first `failing_reads` reads of
/// it failing.
async fn redis_restart_gap(failing_reads: usize, outage: Duration) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("roomcast_engine=debug")
        .try_init();
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = Stores::embedded(EmbeddedStore::open(dir.path()).expect("store"));
    let wrap = || {
        Arc::new(FailingPages {
            inner: stores.history.clone(),
            fail: Default::default(),
            failed: Default::default(),
        })
    };
    let (ha, hb) = (wrap(), wrap());
    let with = |h: &Arc<FailingPages>| Stores {
        history: h.clone(),
        ..stores.clone()
    };
    // Reads of 3 messages: a gap longer than that is filled in several reads.
    let (a, b) = (
        node_reading(&redis, &with(&ha), 3).await,
        node_reading(&redis, &with(&hb), 3).await,
    );
    settled(&[&a, &b], 2).await;
    // The publisher sits on the room's owner, so its messages are sequenced and stored
    // while Redis is away; the member on the other node must still get every one.
    let owner_is_a = a.cluster().is_some_and(|c| c.lease_of("r").is_some());
    let (owner, other) = if owner_is_a { (&a, &b) } else { (&b, &a) };
    let member_reads = if owner_is_a { &hb } else { &ha };
    let mut publisher = Conn::open(owner, "pub").await;
    let mut member = Conn::open(other, "mem").await;
    publisher.join("r").await;
    member.join("r").await;
    let frames = |from: usize, n: usize| -> Vec<Value> {
        (from..from + n)
            .map(|i| json!({"type": "message", "roomId": "r", "content": format!("m{i}"), "clientMsgId": format!("c{i}")}))
            .collect()
    };
    for f in frames(0, 20) {
        publisher.send(f).await;
    }
    member
        .read_until("first 20", |f| {
            f.iter().filter(|v| v["type"] == "message").count() >= 20
        })
        .await;
    member_reads
        .fail
        .store(failing_reads, std::sync::atomic::Ordering::SeqCst);
    redis.kill();
    // While Redis is away the owner keeps its leases until they lapse (self-fencing
    // after ttl - margin): publishes either get acked (durable, their publish is lost)
    // or a retryable error.
    for f in frames(20, 10) {
        publisher.send(f).await;
    }
    tokio::time::sleep(outage).await;
    redis.spawn();
    // Wait for the owner to hold its slot again, then publish more.
    let deadline = Instant::now() + WAIT;
    while owner.cluster().is_none_or(|c| c.lease_of("r").is_none()) {
        assert!(Instant::now() < deadline, "owner did not re-acquire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for f in frames(30, 10) {
        publisher.send(f).await;
    }
    publisher
        .read_until("answers", |f| {
            f.iter()
                .filter(|v| v["type"] == "ack" || v["type"] == "error")
                .count()
                >= 40
        })
        .await;
    let acked = acks(&publisher);
    let n = acked.len();
    eprintln!(
        "publisher errors: {:?} acked {:?}",
        publisher.of_type("error"),
        acked.keys().collect::<Vec<_>>()
    );
    assert!(n >= 30, "most messages acked: {n}");
    member
        .read_until("every acked message", |f| {
            let got: std::collections::HashSet<u64> = f
                .iter()
                .filter(|v| v["type"] == "message")
                .filter_map(|v| v["seq"].as_u64())
                .collect();
            acked.keys().all(|s| got.contains(s))
        })
        .await;
    check_exactly_once(&[&member], &acked, &stores).await;
    assert_eq!(
        member_reads
            .failed
            .load(std::sync::atomic::Ordering::SeqCst),
        failing_reads,
        "the member's node read the gap and met every injected failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_roster_is_written_again_after_redis_restarts_empty_and_nobody_hears_a_change() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = Stores::embedded(EmbeddedStore::open(dir.path()).expect("store"));
    let (a, b) = (node(&redis, &stores).await, node(&redis, &stores).await);
    settled(&[&a, &b], 2).await;
    let mut ua = Conn::open(&a, "ua").await;
    let mut ub = Conn::open(&b, "ub").await;
    ua.join("r").await;
    // The roster takes a join after `room_joined` (off the shard): ua is in it before
    // ub comes, so ub's arrival counts both.
    let deadline = Instant::now() + WAIT;
    while b.room_users("r").await != ["ua"] {
        assert!(Instant::now() < deadline, "the roster never had ua");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ub.join("r").await;
    // ua hears ub arrive (the cluster-wide first session), with the cluster's count.
    ua.read_until("ub's presence", |f| {
        f.iter().any(|v| v["type"] == "presence")
    })
    .await;
    let p = ua.of_type("presence")[0].clone();
    assert_eq!(
        (
            p["userId"].as_str(),
            p["status"].as_str(),
            p["memberCount"].as_u64()
        ),
        (Some("ub"), Some("online"), Some(2)),
        "{p}"
    );
    assert_eq!(a.room_users("r").await, ["ua", "ub"]);
    redis.kill();
    redis.spawn();
    // Each node writes its share again once it holds its node id again.
    let deadline = Instant::now() + WAIT;
    for e in [&a, &b] {
        while e.room_users("r").await != ["ua", "ub"] {
            assert!(
                Instant::now() < deadline,
                "the roster was not written again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Nobody came or went: a later real change is the next presence frame each hears.
    ub.send(json!({"type": "leave_room", "roomId": "r"})).await;
    ua.read_until("ub's leaving", |f| {
        f.iter().filter(|v| v["type"] == "presence").count() >= 2
    })
    .await;
    let p = ua.of_type("presence")[1].clone();
    assert_eq!(
        (
            p["userId"].as_str(),
            p["status"].as_str(),
            p["memberCount"].as_u64()
        ),
        (Some("ub"), Some("offline"), Some(1)),
        "no announcement in between: {p}"
    );
    assert_eq!(b.room_users("r").await, ["ua"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_no_node_takes_a_slot_for_one_lease() {
    let mut redis = RedisServer::start();
    let mut members = Vec::new();
    for n in [1u16, 2] {
        let cfg = ClusterConfig {
            node_id: Some(n),
            ..fast()
        };
        let client = redis::Client::open(redis.url()).expect("client");
        members.push(Cluster::join(client, cfg).await.expect("join"));
    }
    let held = |m: &[Arc<Cluster>]| m.iter().map(|c| c.slots_held()).sum::<usize>();
    let deadline = Instant::now() + WAIT;
    while !(held(&members) == SLOTS as usize
        && members
            .iter()
            .all(|c| c.nodes().len() == 2 && c.slots_held() > 0))
    {
        assert!(Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every lease vanishes at once: a holder may still be sequencing under its own,
    // so nobody may acquire until that validity has surely run out.
    redis.kill();
    redis.spawn();
    let restarted = Instant::now();
    let deadline = Instant::now() + WAIT;
    while held(&members) > 0 {
        assert!(
            Instant::now() < deadline,
            "the lost leases were never dropped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while held(&members) == 0 {
        assert!(Instant::now() < deadline, "no slot was ever acquired again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = restarted.elapsed();
    assert!(
        after >= fast().ttl,
        "a slot was acquired {after:?} after Redis restarted empty (a lease is {:?})",
        fast().ttl
    );
    while held(&members) < SLOTS as usize {
        assert!(
            Instant::now() < deadline,
            "the slots were not all taken again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
