//! Engine-level tests: a real engine on a temporary embedded store, sessions fed text
//! frames as the socket reader would, outboxes drained as the writer would. No sockets,
//! no server. They pin what the end-to-end tests can only see from outside: delivery
//! over the local bus in `seq` order, the dedupe layers, recovery's hold and release,
//! and the conversation audience.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcast_engine::chat::{Conversation, ConversationKind, conversation_id};
use roomcast_engine::outbox::Batch;
use roomcast_engine::store::embedded::EmbeddedStore;
use roomcast_engine::{Engine, EngineConfig, Outbox, Session, Stores, UserInfo};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn node(cfg: EngineConfig) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    let (engine, _tasks) = Engine::start(cfg, Stores::embedded(store)).expect("start");
    Node { engine, _dir: dir }
}

fn user(id: &str) -> UserInfo {
    UserInfo {
        user_id: id.to_owned(),
        username: format!("{id}-name"),
        is_admin: false,
    }
}

/// One connection: its session and what its writer would have sent.
struct Conn {
    session: Session,
    seen: VecDeque<Value>,
}

impl Conn {
    async fn open(node: &Node, id: &str) -> Conn {
        Conn {
            session: Session::open(&node.engine, user(id))
                .await
                .expect("open session"),
            seen: VecDeque::new(),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.session
            .handle_text(&frame.to_string(), Instant::now())
            .await;
    }

    fn outbox(&self) -> Arc<Outbox> {
        self.session.outbox().clone()
    }

    /// The next frame, waiting for the outbox like the writer task does.
    async fn next(&mut self) -> Value {
        if let Some(v) = self.seen.pop_front() {
            return v;
        }
        let outbox = self.outbox();
        let mut batch = Batch::default();
        tokio::time::timeout(WAIT, outbox.next_batch(&mut batch))
            .await
            .expect("a frame in time");
        for q in batch.frames.drain(..) {
            outbox.release(q.payload.len());
            self.seen
                .push_back(serde_json::from_slice(&q.payload).expect("JSON frame"));
        }
        self.seen.pop_front().expect("a batch holds a frame")
    }

    async fn next_of(&mut self, ty: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Everything queued now, without waiting (after [`settle`], that is everything).
    fn drain(&mut self) -> Vec<Value> {
        let outbox = self.outbox();
        let mut out: Vec<Value> = self.seen.drain(..).collect();
        while outbox.queued_bytes() > 0 {
            let mut batch = Batch::default();
            let Some(()) = futures_now(outbox.next_batch(&mut batch)) else {
                break;
            };
            for q in batch.frames.drain(..) {
                outbox.release(q.payload.len());
                out.push(serde_json::from_slice(&q.payload).expect("JSON frame"));
            }
        }
        out
    }

    /// Every frame up to and including the first of type `ty`, in order.
    async fn until(&mut self, ty: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.next().await;
            let done = v["type"] == ty;
            out.push(v);
            if done {
                return out;
            }
        }
    }

    async fn join(&mut self, room: &str, since: Option<&str>) -> Value {
        let mut frame = json!({"type": "join_room", "roomId": room});
        if let Some(s) = since {
            frame["since"] = json!(s);
        }
        self.send(frame).await;
        self.next_of("room_joined").await
    }

    async fn publish(&mut self, room: &str, content: &str, cid: &str) {
        self.send(
            json!({"type": "message", "roomId": room, "content": content, "clientMsgId": cid}),
        )
        .await;
    }
}

/// Polls a future once: the outbox's `next_batch` is ready whenever something is queued.
fn futures_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Waits until everything handed to the engine for `room` is durable and delivered: a
/// writer barrier, then a round trip through the room's shard (which delivers its bus
/// inbound before it takes the next command).
async fn settle(node: &Node, room: &str) {
    node.engine.flush().await;
    node.engine.room_users(room).await;
}

fn types(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|v| v["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn messages_reach_every_member_through_the_local_bus_in_seq_order() {
    let n = node(EngineConfig::default());
    let mut alice = Conn::open(&n, "alice").await;
    let mut bob = Conn::open(&n, "bob").await;
    alice.join("r", None).await;
    bob.join("r", None).await;
    for i in 0..20 {
        alice.publish("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    let mut seqs = Vec::new();
    while seqs.len() < 20 {
        seqs.push(bob.next_of("message").await["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    let mut acks = Vec::new();
    while acks.len() < 20 {
        acks.push(alice.next_of("ack").await["seq"].as_u64().expect("seq"));
    }
    assert_eq!(acks, (1..=20).collect::<Vec<_>>());
    settle(&n, "r").await;
    let rest = bob.drain();
    assert!(rest.is_empty(), "nothing more for bob: {rest:?}");
}

#[tokio::test]
async fn a_resend_is_acked_as_the_original_and_never_delivered_twice() {
    // A window of 2: the third message pushes the first out of the shard's memory, so
    // its resend is answered by the store lookup instead. Both layers must hold.
    let n = node(EngineConfig {
        dedupe_window: 2,
        ..EngineConfig::default()
    });
    let mut alice = Conn::open(&n, "alice").await;
    let mut bob = Conn::open(&n, "bob").await;
    alice.join("r", None).await;
    bob.join("r", None).await;
    alice.publish("r", "one", "c1").await;
    alice.publish("r", "one", "c1").await; // in the window: same id back
    alice.publish("r", "two", "c2").await;
    alice.publish("r", "three", "c3").await;
    let mut acks = Vec::new();
    while acks.len() < 4 {
        acks.push(alice.next_of("ack").await);
    }
    alice.publish("r", "one", "c1").await; // out of the window, in the store
    acks.push(alice.next_of("ack").await);
    let first = acks[0]["messageId"].clone();
    assert_eq!(
        acks[0]["duplicate"],
        serde_json::Value::Null,
        "{:?}",
        acks[0]
    );
    for dup in [&acks[1], &acks[4]] {
        assert_eq!(dup["messageId"], first, "{dup}");
        assert_eq!(dup["duplicate"], true, "{dup}");
    }
    let mut delivered = Vec::new();
    while delivered.len() < 3 {
        let v = bob.next_of("message").await;
        delivered.push(v["content"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(delivered, ["one", "two", "three"]);
    settle(&n, "r").await;
    let rest = bob.drain();
    assert!(rest.is_empty(), "a resend reached bob: {rest:?}");
}

#[tokio::test]
async fn recovery_replays_the_gap_then_releases_the_frames_it_held() {
    let n = node(EngineConfig::default());
    let mut alice = Conn::open(&n, "alice").await;
    alice.join("r", None).await;
    for i in 1..=5 {
        alice.publish("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    let mut sent = Vec::new();
    while sent.len() < 5 {
        sent.push(alice.next_of("message").await);
    }
    for _ in 0..5 {
        alice.next_of("ack").await;
    }
    let since = sent[1]["messageId"].as_str().expect("id").to_owned();

    // Bob joins with `since` = message 2; message 6 is published while his replay is
    // being read, so the shard holds it until the replay is written.
    let mut bob = Conn::open(&n, "bob").await;
    let joined = bob.join("r", Some(&since)).await;
    assert_eq!(joined["lastSeq"], 5, "{joined}");
    alice.publish("r", "m6", "c6").await;
    let until_recovered = bob.until("recovered").await;
    settle(&n, "r").await;
    let after = bob.drain();
    let replay: Vec<(&str, bool)> = until_recovered
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| (v["content"].as_str().unwrap_or(""), v["replay"] == true))
        .collect();
    assert_eq!(
        replay,
        [("m3", true), ("m4", true), ("m5", true)],
        "{until_recovered:?}"
    );
    let recovered = until_recovered.last().expect("recovered");
    assert_eq!(
        (recovered["count"].as_u64(), recovered["complete"].as_bool()),
        (Some(3), Some(true)),
        "{recovered}"
    );
    let live: Vec<(&str, bool)> = after
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| (v["content"].as_str().unwrap_or(""), v["replay"] == true))
        .collect();
    assert_eq!(
        live,
        [("m6", false)],
        "the held live frame comes after `recovered`, once"
    );
}

#[tokio::test]
async fn conversation_messages_reach_the_audience_once_joined_or_not() {
    let n = node(EngineConfig::default());
    let id = conversation_id(n.engine.next_id());
    let conv = Conversation {
        id: id.clone(),
        kind: ConversationKind::Direct,
        participant_ids: vec!["alice".into(), "bob".into()],
        title: None,
        created_by: "alice".into(),
        created_at_ms: 1,
        last_activity_ms: 1,
        last_message_id: None,
        closed: None,
        snoozed: None,
    };
    n.engine
        .store()
        .create_conversation(conv)
        .await
        .expect("create");
    let mut alice = Conn::open(&n, "alice").await;
    let mut bob = Conn::open(&n, "bob").await;
    let mut carol = Conn::open(&n, "carol").await;
    alice.join(&id, None).await;
    // Bob has not joined: he hears it as the conversation's audience.
    alice.publish(&id, "before bob joins", "a1").await;
    assert_eq!(bob.next_of("message").await["content"], "before bob joins");
    // Joined: through the room, once (not also as audience).
    bob.join(&id, None).await;
    alice.publish(&id, "after bob joins", "a2").await;
    assert_eq!(bob.next_of("message").await["content"], "after bob joins");
    alice.next_of("ack").await;
    alice.next_of("ack").await;
    settle(&n, &id).await;
    let rest = bob.drain();
    assert!(
        rest.iter().all(|v| v["type"] != "message"),
        "bob got a message twice: {:?}",
        types(&rest)
    );
    let carol_frames = carol.drain();
    assert!(
        carol_frames.iter().all(|v| v["type"] != "message"),
        "a non-participant got {carol_frames:?}"
    );
    // Carol cannot join or send either.
    carol.send(json!({"type": "join_room", "roomId": id})).await;
    assert_eq!(
        carol.next_of("error").await["code"],
        "conversation_not_found"
    );
}

/// The embedded store with a slower `page` (as a networked store's) that counts calls.
struct CountedPages {
    inner: Arc<dyn roomcast_engine::HistoryStore>,
    pages: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl roomcast_engine::HistoryStore for CountedPages {
    fn backend(&self) -> &'static str {
        "counted"
    }
    async fn append(
        &self,
        batch: roomcast_engine::store::WriteBatch,
    ) -> Result<Vec<roomcast_engine::store::AppendOutcome>, roomcast_engine::store::StoreError>
    {
        self.inner.append(batch).await
    }
    async fn page(
        &self,
        room: &str,
        q: roomcast_engine::PageQuery,
    ) -> Result<Vec<roomcast_engine::message::ChatMessage>, roomcast_engine::store::StoreError>
    {
        self.pages.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.inner.page(room, q).await
    }
    async fn get(
        &self,
        room: &str,
        id: u64,
    ) -> Result<Option<roomcast_engine::message::ChatMessage>, roomcast_engine::store::StoreError>
    {
        self.inner.get(room, id).await
    }
    async fn tombstone(
        &self,
        room: &str,
        id: u64,
    ) -> Result<bool, roomcast_engine::store::StoreError> {
        self.inner.tombstone(room, id).await
    }
    async fn find_client_msg(
        &self,
        room: &str,
        user: &str,
        cid: &str,
    ) -> Result<Option<u64>, roomcast_engine::store::StoreError> {
        self.inner.find_client_msg(room, user, cid).await
    }
    async fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<roomcast_engine::store::AuditEntry>, roomcast_engine::store::StoreError> {
        self.inner.audit_page(after, limit).await
    }
}

/// 300 members reconnect to one room at once, each with its own `since`, while the room
/// goes on: each gets exactly what it missed, then the live messages, once and in
/// order, and the store is read a few times for all of them, not once per member.
#[tokio::test]
async fn a_crowd_recovering_one_room_shares_a_few_reads_and_each_gets_exactly_its_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stores = Stores::embedded(EmbeddedStore::open(dir.path()).expect("open store"));
    let counted = Arc::new(CountedPages {
        inner: stores.history.clone(),
        pages: Default::default(),
    });
    stores.history = counted.clone();
    let cfg = EngineConfig {
        rate: roomcast_engine::ratelimit::RateLimitConfig {
            max_messages: 100_000,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    let (engine, _tasks) = Engine::start(cfg, stores).expect("start");
    let n = Node { engine, _dir: dir };
    let mut alice = Conn::open(&n, "alice").await;
    alice.join("crowd", None).await;
    for i in 1..=30 {
        alice
            .publish("crowd", &format!("m{i}"), &format!("c{i}"))
            .await;
    }
    let mut ids = Vec::new();
    while ids.len() < 30 {
        let v = alice.next_of("ack").await;
        ids.push(v["messageId"].as_str().expect("id").to_owned());
    }
    let before = counted.pages.load(std::sync::atomic::Ordering::SeqCst);
    const CROWD: usize = 300;
    let mut crowd = Vec::new();
    for i in 0..CROWD {
        let mut c = Conn::open(&n, &format!("u{i}")).await;
        // Member i had everything up to message i % 20 + 1.
        c.send(json!({"type": "join_room", "roomId": "crowd", "since": ids[i % 20]}))
            .await;
        crowd.push(c);
    }
    for i in 31..=35 {
        alice
            .publish("crowd", &format!("m{i}"), &format!("c{i}"))
            .await;
    }
    for (i, c) in crowd.iter_mut().enumerate() {
        let mut frames = c.until("recovered").await;
        let recovered = frames.last().expect("recovered").clone();
        assert_eq!(recovered["complete"], true, "member {i}: {recovered}");
        // The live messages after `recovered`, all five of them.
        while frames.iter().filter(|v| v["type"] == "message").count() < 35 - (i % 20 + 1) {
            frames.push(c.next().await);
        }
        settle(&n, "crowd").await;
        frames.extend(c.drain());
        let got: Vec<&str> = frames
            .iter()
            .filter(|v| v["type"] == "message")
            .map(|v| v["content"].as_str().unwrap_or(""))
            .collect();
        let want: Vec<String> = (i % 20 + 2..=35).map(|k| format!("m{k}")).collect();
        assert_eq!(got, want, "member {i}");
    }
    let reads = counted.pages.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        (1..=CROWD / 20).contains(&reads),
        "{reads} store reads for {CROWD} recoveries"
    );
    eprintln!("{reads} store reads for {CROWD} recoveries");
}

#[tokio::test]
async fn presence_frames_stop_above_the_room_size_limit_and_resume_below_it() {
    let n = node(EngineConfig {
        room_presence_max_members: 2,
        ..EngineConfig::default()
    });
    let mut a = Conn::open(&n, "a").await;
    let mut b = Conn::open(&n, "b").await;
    let mut c = Conn::open(&n, "c").await;
    a.join("big", None).await;
    b.join("big", None).await;
    // Two users: within the limit, so a hears b.
    let p = a.next_of("presence").await;
    assert_eq!(
        (p["userId"].as_str(), p["memberCount"].as_u64()),
        (Some("b"), Some(2)),
        "{p}"
    );
    // A third user makes the room bigger than the limit: nobody hears c come or go.
    let joined = c.join("big", None).await;
    assert_eq!(joined["memberCount"], 3, "the count still counts everyone");
    c.send(json!({"type": "leave_room", "roomId": "big"})).await;
    settle(&n, "big").await;
    let heard: Vec<Value> = a
        .drain()
        .into_iter()
        .chain(b.drain())
        .filter(|v| v["type"] == "presence")
        .collect();
    assert!(heard.is_empty(), "quiet above the limit: {heard:?}");
    // Back within it: b leaving a room of two is heard.
    b.send(json!({"type": "leave_room", "roomId": "big"})).await;
    let p = a.next_of("presence").await;
    assert_eq!(
        (
            p["userId"].as_str(),
            p["status"].as_str(),
            p["memberCount"].as_u64()
        ),
        (Some("b"), Some("offline"), Some(1)),
        "{p}"
    );
}
