//! The Redis bus: envelopes between nodes over Redis pub/sub (see [`super::Bus`] for the
//! contract). Owns two tasks per node and the channel bookkeeping:
//!
//! - the **publisher** drains a bounded queue of encoded envelopes and pipelines
//!   `PUBLISH`es over one `ConnectionManager` connection (one connection, so Redis keeps
//!   one publisher's order, which keeps a room's `seq` order). A failed batch is retried
//!   with back-off (the manager reconnects); receivers drop resent copies by envelope id.
//! - the **subscriber** owns the one `aio::PubSub` connection and the set of wanted
//!   channels. It never waits on a shard (inbound goes through [`Inbound::deliver`],
//!   whose full queue is counted and recovered by the gap rule). `aio::PubSub` never
//!   reconnects, so the loop does: after any reconnect it subscribes every wanted channel
//!   again, **one channel per SUBSCRIBE** (redis-rs matches one reply per pending
//!   command, so a multi-channel SUBSCRIBE resolves later commands early), many in
//!   flight. A PING every few seconds catches a connection that is open but dead.
//!
//! Pub/sub is at most once: whatever is published while a subscriber is disconnected is
//! gone for it. That is why room messages carry `seq` and receivers fill gaps from the
//! store; [`RedisBus::synced`] tells a caller when the subscriptions it asked for are
//! in place (the subscribe-then-read cut of a join with `since`).

mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use super::{Bus, Envelope, Inbound};
use crate::cluster::{Cluster, NodeMsg};
use crate::metrics as m;
use wire::EnvelopeId;

/// How a node reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
    pub url: String,
    /// For `rediss://`: the CA to trust (else the system's roots) and a client
    /// certificate for mutual TLS.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Envelopes waiting for the publisher; beyond it a publish is dropped and counted.
    pub publish_queue: usize,
    /// Timeout of a connect and of each PING.
    pub timeout: Duration,
    /// How often the subscriber PINGs its connection.
    pub ping_every: Duration,
    /// How often the published high-water mark of every room with local members is
    /// compared with what this node delivered.
    pub position_every: Duration,
}

impl RedisBusConfig {
    /// The one way this node makes a Redis client (see [`crate::tls::redis_client`]).
    pub fn client(&self) -> Result<redis::Client, redis::RedisError> {
        crate::tls::redis_client(&self.url, self.tls.as_ref())
    }

    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            tls: None,
            publish_queue: 65_536,
            timeout: Duration::from_secs(2),
            ping_every: Duration::from_secs(3),
            position_every: Duration::from_secs(5),
        }
    }
}

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
#[error("redis bus: {0}")]
pub struct RedisBusError(#[from] redis::RedisError);

enum SubCmd {
    Subscribe(String),
    Unsubscribe(String),
    /// Answered once every earlier subscribe is confirmed by Redis on a live connection.
    Synced(oneshot::Sender<()>),
}

/// What the bus needs of a cluster member: the leases its messages are published under
/// and where messages addressed to this node go.
#[derive(Clone)]
pub struct ClusterLink {
    pub cluster: Arc<Cluster>,
    pub node_msgs: flume::Sender<NodeMsg>,
}

/// One item for the publisher.
enum Out {
    /// PUBLISH to each channel.
    Plain {
        channels: Vec<String>,
        payload: Bytes,
    },
    /// A room message: in a cluster through the publish script (lease check, the
    /// room's high-water mark, then PUBLISH); else as `Plain`.
    Message {
        room: String,
        seq: u64,
        id: u64,
        channels: Vec<String>,
        payload: Bytes,
    },
    /// Answered once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
}

/// Rooms with messages that could not be published (queue full, Redis away too long):
/// their high-water mark is set once Redis answers again, so the other nodes' position
/// checks find the gap and fill it from the store.
type Unpublished = Arc<parking_lot::Mutex<HashMap<String, (u64, u64)>>>;

/// See the module doc.
pub struct RedisBus {
    node: u64,
    counter: AtomicU64,
    publish: flume::Sender<Out>,
    subs: flume::Sender<SubCmd>,
    connected: watch::Receiver<u64>,
    unpublished: Unpublished,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects (a Redis that does not answer fails here, naming the error) and starts
    /// the publisher and subscriber tasks on the current runtime. With a `cluster`, the
    /// node also hears its node channel and publishes messages under its leases.
    pub async fn start(
        cfg: RedisBusConfig,
        inbound: Inbound,
        cluster: Option<ClusterLink>,
    ) -> Result<Arc<Self>, RedisBusError> {
        let client = cfg.client()?;
        let manager_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(usize::MAX)
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(
            cfg.timeout,
            client.get_connection_manager_with_config(manager_cfg),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "connect timed out",
                crate::tls::redacted(&cfg.url),
            ))
        })??;
        let (publish, publish_rx) = flume::bounded(cfg.publish_queue);
        let (subs, subs_rx) = flume::unbounded();
        let (connected_tx, connected) = watch::channel(0);
        let unpublished = Unpublished::default();
        tokio::spawn(publisher(
            conn.clone(),
            publish_rx,
            cluster.as_ref().map(|c| c.cluster.clone()),
            unpublished.clone(),
        ));
        let node_channel = cluster
            .as_ref()
            .map(|c| (wire::node_channel(c.cluster.node), c.node_msgs.clone()));
        tokio::spawn(subscriber(Subscriber {
            client,
            positions: conn,
            cfg,
            cmds: subs_rx,
            inbound,
            connected: connected_tx,
            node_channel,
        }));
        Ok(Arc::new(Self {
            node: rand_u64(),
            counter: AtomicU64::new(0),
            publish,
            subs,
            connected,
            unpublished,
        }))
    }

    /// Sends `msg` to the node `node` over its node channel (best-effort, like every
    /// pub/sub message: the sender times out and retries).
    pub fn send_node(&self, node: u16, msg: &NodeMsg) {
        let Ok(payload) = serde_json::to_vec(msg) else {
            metrics::counter!(m::BUS_PUBLISH_DROPPED, "reason" => "encode").increment(1);
            return;
        };
        let out = Out::Plain {
            channels: vec![wire::node_channel(node)],
            payload: Bytes::from(payload),
        };
        if self.publish.try_send(out).is_err() {
            metrics::counter!(m::BUS_PUBLISH_DROPPED, "reason" => "queue_full").increment(1);
        }
    }

    /// Resolves once every subscription asked for before the call is confirmed by Redis
    /// on a live connection (after a reconnect: once they are all back).
    pub async fn synced(&self) {
        loop {
            let (tx, rx) = oneshot::channel();
            if self.subs.send(SubCmd::Synced(tx)).is_err() {
                return; // the subscriber is gone (runtime shutting down)
            }
            // A connection lost before the answer drops it: ask again on the next one.
            if rx.await.is_ok() {
                return;
            }
        }
    }

    /// How many times the subscriber has (re)connected and subscribed everything; a
    /// caller that holds a position per room checks it again when this moves.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.connected.clone()
    }
}

pub(crate) fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: the clock's nanoseconds still tell instances apart.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(b)
}

impl Bus for RedisBus {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn publish(&self, envelope: Envelope) {
        if let Envelope::Position { room_id, seq } = envelope {
            // An owner announcing where a room stands (read from the store): a mark.
            remember_unpublished(&self.unpublished, room_id, seq, 0);
            return;
        }
        let id = (self.node, self.counter.fetch_add(1, Ordering::Relaxed));
        let Some((channels, payload)) = wire::encode(id, &envelope) else {
            metrics::counter!(m::BUS_PUBLISH_DROPPED, "reason" => "encode").increment(1);
            return;
        };
        let out = match &envelope {
            Envelope::Message(msg) => Out::Message {
                room: msg.msg.room_id.clone(),
                seq: msg.msg.seq,
                id: msg.msg.message_id,
                channels,
                payload,
            },
            _ => Out::Plain { channels, payload },
        };
        if let Err(e) = self.publish.try_send(out) {
            metrics::counter!(m::BUS_PUBLISH_DROPPED, "reason" => "queue_full").increment(1);
            tracing::warn!("redis bus: publish queue full, envelope dropped");
            if let Out::Message { room, seq, id, .. } = e.into_inner() {
                remember_unpublished(&self.unpublished, room, seq, id);
            }
            return;
        }
        metrics::counter!(m::BUS_PUBLISHED, "backend" => "redis").increment(1);
    }

    fn synced(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(RedisBus::synced(self))
    }

    fn flushed(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            if self.publish.send_async(Out::Flush(tx)).await.is_ok() {
                let _ = rx.await;
            }
        })
    }

    fn subscribe_room(&self, room_id: &str) {
        let _ = self
            .subs
            .send(SubCmd::Subscribe(wire::room_channel(room_id)));
    }
    fn unsubscribe_room(&self, room_id: &str) {
        let _ = self
            .subs
            .send(SubCmd::Unsubscribe(wire::room_channel(room_id)));
    }
    fn subscribe_user(&self, user_id: &str) {
        let _ = self
            .subs
            .send(SubCmd::Subscribe(wire::user_channel(user_id)));
    }
    fn unsubscribe_user(&self, user_id: &str) {
        let _ = self
            .subs
            .send(SubCmd::Unsubscribe(wire::user_channel(user_id)));
    }
}

fn remember_unpublished(unpublished: &Unpublished, room: String, seq: u64, id: u64) {
    let mut u = unpublished.lock();
    let e = u.entry(room).or_insert((seq, id));
    if seq > e.0 {
        *e = (seq, id);
    }
}

/// The publish script: publishes a room message only while the lease token still holds
/// its slot in Redis (-1: fenced), and only if its `seq` is above the room's published
/// high-water mark (0: a resend), which it then moves. With no channels it only moves
/// the mark (after messages could not be published).
const PUBLISH_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cur = tonumber(redis.call('HGET', KEYS[2], 's') or '0')
if tonumber(ARGV[2]) <= cur then return 0 end
redis.call('HSET', KEYS[2], 's', ARGV[2], 'id', ARGV[3])
redis.call('PEXPIRE', KEYS[2], 2592000000)
for i = 5, #ARGV do redis.call('PUBLISH', ARGV[i], ARGV[4]) end
return 1
"#;

/// Adds one room message to `pipe` through the publish script; false when this node
/// no longer holds the room's slot (fenced: counted, not sent).
fn add_fenced(
    pipe: &mut redis::Pipeline,
    sha: &str,
    cluster: &Cluster,
    room: &str,
    (seq, id): (u64, u64),
    payload: &[u8],
    channels: &[String],
) -> bool {
    let Some(token) = cluster.token_of(room) else {
        return false;
    };
    pipe.cmd("EVALSHA")
        .arg(sha)
        .arg(2)
        .arg(wire::lease_key(crate::cluster::slot_of(room)))
        .arg(wire::hwm_key(room))
        .arg(token)
        .arg(seq)
        .arg(id)
        .arg(payload)
        .arg(channels);
    true
}

/// What one pipelined reply stands for.
enum Sent {
    /// A PUBLISH (its reply is a receiver count).
    Plain,
    /// A message or a mark through the publish script (-1: fenced).
    Scripted { room: String, seq: u64, id: u64 },
}

/// Drains the publish queue in batches of up to 256 items, one pipeline each (one
/// connection: Redis keeps the order, which keeps each room's `seq` order). A batch that
/// fails is sent again after a back-off (100 ms doubling to 2 s), for up to 10 s; then
/// it is dropped and counted. A room message that could not be published (dropped, or
/// fenced because the slot's lease was not held at that moment: Redis restarted and
/// forgot it, say) is durable all the same: its room is remembered as *unpublished*
/// and, once this node holds the slot again, its high-water mark is set through the
/// script (a *mark*), so the other nodes' position checks find the gap and fill it
/// from the store. A mark the script fences (another node owns the room now) is
/// dropped: the new owner reads the room's position from the store and marks it.
async fn publisher(
    mut conn: redis::aio::ConnectionManager,
    rx: flume::Receiver<Out>,
    cluster: Option<Arc<Cluster>>,
    unpublished: Unpublished,
) {
    let script = redis::Script::new(PUBLISH_SCRIPT);
    let sha = script.get_hash().to_owned();
    let mut loaded = false;
    let mut batch = Vec::with_capacity(256);
    let depth = metrics::gauge!(m::BUS_PUBLISH_QUEUE_DEPTH);
    loop {
        // Wake up now and then with nothing queued, to send pending marks.
        match tokio::time::timeout(Duration::from_millis(250), rx.recv_async()).await {
            Ok(Ok(first)) => batch.push(first),
            Ok(Err(_)) => return,
            Err(_) if cluster.is_some() && !unpublished.lock().is_empty() => {}
            Err(_) => continue,
        }
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        depth.set(rx.len() as f64);
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            if cluster.is_some() && !loaded {
                let load: redis::RedisResult<String> = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(PUBLISH_SCRIPT)
                    .query_async(&mut conn)
                    .await;
                loaded = load.is_ok();
            }
            // Built per attempt: a lease may have moved since the last one.
            let mut pipe = redis::pipe();
            let mut sent: Vec<Sent> = Vec::new();
            let mut fenced_here: Vec<(String, u64, u64)> = Vec::new();
            for out in &batch {
                match (out, &cluster) {
                    (
                        Out::Message {
                            room,
                            seq,
                            id,
                            channels,
                            payload,
                        },
                        Some(c),
                    ) => {
                        if add_fenced(&mut pipe, &sha, c, room, (*seq, *id), payload, channels) {
                            sent.push(Sent::Scripted {
                                room: room.clone(),
                                seq: *seq,
                                id: *id,
                            });
                        } else {
                            fenced_here.push((room.clone(), *seq, *id));
                        }
                    }
                    (Out::Plain { channels, payload }, _)
                    | (
                        Out::Message {
                            channels, payload, ..
                        },
                        None,
                    ) => {
                        for c in channels {
                            pipe.cmd("PUBLISH").arg(c).arg(&payload[..]);
                            sent.push(Sent::Plain);
                        }
                    }
                    (Out::Flush(_), _) => {}
                }
            }
            // Marks of rooms this node holds now; the others wait.
            let mut marks: Vec<(String, (u64, u64))> = Vec::new();
            if let Some(c) = &cluster {
                let mut u = unpublished.lock();
                let ready: Vec<String> = u
                    .keys()
                    .filter(|r| c.token_of(r).is_some())
                    .cloned()
                    .collect();
                for room in ready {
                    if let Some(pos) = u.remove(&room) {
                        marks.push((room, pos));
                    }
                }
            }
            if let Some(c) = &cluster {
                for (room, (seq, id)) in &marks {
                    if add_fenced(&mut pipe, &sha, c, room, (*seq, *id), b"", &[]) {
                        sent.push(Sent::Scripted {
                            room: room.clone(),
                            seq: *seq,
                            id: *id,
                        });
                    }
                }
            }
            let result: redis::RedisResult<Vec<i64>> = if sent.is_empty() {
                Ok(Vec::new())
            } else {
                pipe.query_async(&mut conn).await
            };
            match result {
                Ok(replies) => {
                    metrics::counter!(m::BUS_REDIS_COMMANDS, "kind" => "publish")
                        .increment(sent.len() as u64);
                    let mut fenced = fenced_here.len() as u64;
                    for (room, seq, id) in fenced_here {
                        remember_unpublished(&unpublished, room, seq, id);
                    }
                    let is_mark = |room: &str, seq: u64| {
                        marks.iter().any(|(r, (s, _))| r == room && *s == seq)
                    };
                    for (what, reply) in sent.into_iter().zip(replies) {
                        if let Sent::Scripted { room, seq, id } = what
                            && reply == -1
                        {
                            fenced += 1;
                            if !is_mark(&room, seq) {
                                remember_unpublished(&unpublished, room, seq, id);
                            }
                        }
                    }
                    if fenced > 0 {
                        metrics::counter!(m::BUS_FENCED).increment(fenced);
                        tracing::warn!(
                            fenced,
                            "redis bus: messages not published under a lease this node does not hold"
                        );
                    }
                    break;
                }
                Err(e) => {
                    loaded = false;
                    for (room, (seq, id)) in marks {
                        remember_unpublished(&unpublished, room, seq, id);
                    }
                    if started.elapsed() < Duration::from_secs(10) {
                        tracing::warn!(error = %e, "redis bus: publish failed, retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                        continue;
                    }
                    metrics::counter!(m::BUS_PUBLISH_DROPPED, "reason" => "redis")
                        .increment(batch.len() as u64);
                    tracing::error!(error = %e, envelopes = batch.len(), "redis bus: publish batch dropped");
                    for out in &batch {
                        if let Out::Message { room, seq, id, .. } = out {
                            remember_unpublished(&unpublished, room.clone(), *seq, *id);
                        }
                    }
                    break;
                }
            }
        }
        for out in batch.drain(..) {
            if let Out::Flush(tx) = out {
                let _ = tx.send(());
            }
        }
    }
}

/// Recently seen envelope ids: an envelope sent to a room and to user channels reaches
/// this node once per subscribed channel; only the first copy is delivered.
struct Seen {
    set: HashSet<EnvelopeId>,
    order: VecDeque<EnvelopeId>,
}

impl Seen {
    const CAP: usize = 65_536;

    fn first(&mut self, id: EnvelopeId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAP
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The subscriber loop: connect, subscribe every wanted channel, read until the
/// connection ends or a PING fails, back off, again.
struct Subscriber {
    client: redis::Client,
    /// For position checks (reads, off the read loop).
    positions: redis::aio::ConnectionManager,
    cfg: RedisBusConfig,
    cmds: flume::Receiver<SubCmd>,
    inbound: Inbound,
    connected: watch::Sender<u64>,
    /// A cluster member's own channel and where its messages go.
    node_channel: Option<(String, flume::Sender<NodeMsg>)>,
}

async fn subscriber(sub: Subscriber) {
    let Subscriber {
        client,
        positions,
        cfg,
        cmds,
        inbound,
        connected,
        node_channel,
    } = sub;
    let mut wanted = Wanted::default();
    if let Some((c, _)) = &node_channel {
        wanted.add(c);
    }
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut seen = Seen {
        set: HashSet::new(),
        order: VecDeque::new(),
    };
    let mut delay = Duration::from_millis(100);
    let mut generation = 0u64;
    loop {
        metrics::gauge!(m::BUS_REDIS_CONNECTED).set(0.0);
        let pubsub = match tokio::time::timeout(cfg.timeout, client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connect timed out".to_owned(),
                };
                tracing::warn!(error = %why, "redis bus: subscriber cannot connect");
                // Keep taking commands meanwhile, so subscribers are not lost.
                let sleep = tokio::time::sleep(jitter(delay));
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        cmd = cmds.recv_async() => match cmd {
                            Ok(c) => apply_offline(&mut wanted, &mut waiting, c),
                            Err(_) => return,
                        },
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (sink, mut stream) = pubsub.split();
        // Every wanted channel, one per command, up to 512 in flight.
        let all: Vec<String> = wanted.0.keys().cloned().collect();
        let n = all.len();
        let results: Vec<redis::RedisResult<()>> = futures_util::stream::iter(all)
            .map(|c| {
                let mut s = sink.clone();
                async move { s.subscribe(&c).await }
            })
            .buffer_unordered(512)
            .collect()
            .await;
        metrics::counter!(m::BUS_REDIS_COMMANDS, "kind" => "subscribe").increment(n as u64);
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            tracing::warn!(error = %e, "redis bus: resubscribe failed; reconnecting");
            metrics::counter!(m::BUS_REDIS_RECONNECTS, "reason" => "resubscribe failed")
                .increment(1);
            tokio::time::sleep(jitter(delay)).await;
            continue;
        }
        delay = Duration::from_millis(100);
        generation += 1;
        connected.send_replace(generation);
        metrics::gauge!(m::BUS_REDIS_CONNECTED).set(1.0);
        tracing::info!(channels = n, generation, "redis bus: subscribed");
        for w in waiting.drain(..) {
            let _ = w.send(());
        }
        // After a reconnect anything may have been missed: check every room now and
        // again shortly (a gap is acted on when two checks agree).
        let checks = spawn_position_checks(&wanted, &positions, &inbound, cfg.position_every);
        // Subscribes issued while connected complete in their own tasks (the read loop
        // never waits on Redis); a Synced waits behind every earlier one.
        let (done_tx, mut done_rx) =
            tokio::sync::mpsc::unbounded_channel::<redis::RedisResult<()>>();
        let mut pending = tokio::task::JoinSet::new();
        let mut ping = tokio::time::interval(cfg.ping_every);
        ping.tick().await;
        let mut position_tick = tokio::time::interval(cfg.position_every);
        position_tick.tick().await;
        let mut checks = checks;
        let reason = loop {
            tokio::select! {
                _ = position_tick.tick() => {
                    if checks.is_finished() {
                        checks = spawn_position_checks(&wanted, &positions, &inbound, Duration::ZERO);
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { break "connection closed" };
                    if let Some((own, node_msgs)) = &node_channel
                        && msg.get_channel_name() == own
                    {
                        match serde_json::from_slice::<NodeMsg>(msg.get_payload_bytes()) {
                            Ok(m) => {
                                if node_msgs.try_send(m).is_err() {
                                    metrics::counter!(m::BUS_INBOUND_DROPPED).increment(1);
                                }
                            }
                            Err(_) => metrics::counter!(m::BUS_UNDECODABLE).increment(1),
                        }
                        continue;
                    }
                    match wire::decode(msg.get_payload_bytes()) {
                        Some((id, env)) => {
                            if seen.first(id) {
                                metrics::counter!(m::BUS_RECEIVED).increment(1);
                                inbound.deliver(env);
                            }
                        }
                        None => metrics::counter!(m::BUS_UNDECODABLE).increment(1),
                    }
                }
                cmd = cmds.recv_async() => {
                    let Ok(cmd) = cmd else { return };
                    match cmd {
                        SubCmd::Subscribe(c) => {
                            if wanted.add(&c) {
                                let mut s = sink.clone();
                                let done = done_tx.clone();
                                pending.spawn(async move {
                                    let _ = done.send(s.subscribe(&c).await);
                                });
                                metrics::counter!(m::BUS_REDIS_COMMANDS, "kind" => "subscribe").increment(1);
                            }
                        }
                        SubCmd::Unsubscribe(c) => {
                            if wanted.remove(&c) {
                                let mut s = sink.clone();
                                let done = done_tx.clone();
                                pending.spawn(async move {
                                    let _ = done.send(s.unsubscribe(&c).await);
                                });
                                metrics::counter!(m::BUS_REDIS_COMMANDS, "kind" => "unsubscribe").increment(1);
                            }
                        }
                        SubCmd::Synced(tx) => {
                            // Behind every earlier command: wait for those in flight.
                            let earlier = std::mem::take(&mut pending);
                            pending.spawn(async move {
                                earlier.join_all().await;
                                let _ = tx.send(());
                            });
                        }
                    }
                }
                Some(r) = done_rx.recv() => {
                    if let Err(e) = r {
                        break if e.is_io_error() { "subscribe failed (io)" } else { "subscribe failed" };
                    }
                }
                _ = ping.tick() => {
                    let mut s = sink.clone();
                    match tokio::time::timeout(cfg.timeout, s.ping::<()>()).await {
                        Ok(Ok(())) => {}
                        _ => break "ping unanswered",
                    }
                }
            }
        };
        checks.abort();
        metrics::counter!(m::BUS_REDIS_RECONNECTS, "reason" => reason).increment(1);
        tracing::warn!(
            reason,
            "redis bus: subscriber connection lost; reconnecting"
        );
        // Whoever waits for a sync waits for the next connection.
        pending.abort_all();
        tokio::time::sleep(jitter(delay)).await;
    }
}

/// Reads the published high-water mark of every wanted room (pipelined, 1000 per
/// round trip) and hands each to the room's shard as [`Envelope::Position`]; with
/// `again`, once more after that delay. Off the read loop.
fn spawn_position_checks(
    wanted: &Wanted,
    conn: &redis::aio::ConnectionManager,
    inbound: &Inbound,
    again: Duration,
) -> tokio::task::JoinHandle<()> {
    let rooms: Vec<String> = wanted
        .0
        .keys()
        .filter_map(|c| wire::room_of_channel(c).map(str::to_owned))
        .collect();
    let (mut conn, inbound) = (conn.clone(), inbound.clone());
    tokio::spawn(async move {
        for round in 0..2 {
            if round == 1 {
                if again.is_zero() {
                    break;
                }
                tokio::time::sleep(again.min(Duration::from_secs(1))).await;
            }
            for chunk in rooms.chunks(1000) {
                let mut pipe = redis::pipe();
                for room in chunk {
                    pipe.cmd("HGET").arg(wire::hwm_key(room)).arg("s");
                }
                let marks: Vec<Option<u64>> = match pipe.query_async(&mut conn).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(error = %e, "redis bus: position check failed");
                        return;
                    }
                };
                metrics::counter!(m::BUS_POSITION_CHECKS).increment(chunk.len() as u64);
                for (room, mark) in chunk.iter().zip(marks) {
                    if let Some(seq) = mark {
                        inbound.deliver(Envelope::Position {
                            room_id: room.clone(),
                            seq,
                        });
                    }
                }
            }
        }
    })
}

/// A command while there is no connection: bookkeeping only; a sync waits.
fn apply_offline(wanted: &mut Wanted, waiting: &mut Vec<oneshot::Sender<()>>, cmd: SubCmd) {
    match cmd {
        SubCmd::Subscribe(c) => {
            wanted.add(&c);
        }
        SubCmd::Unsubscribe(c) => {
            wanted.remove(&c);
        }
        SubCmd::Synced(tx) => waiting.push(tx),
    }
}

/// The channels this node wants, with how many asked for each (a room and a user never
/// share a name: their prefixes differ).
#[derive(Default)]
struct Wanted(HashMap<String, usize>);

impl Wanted {
    /// True when `c` was not wanted before (subscribe it now).
    fn add(&mut self, c: &str) -> bool {
        let count = self.0.entry(c.to_owned()).or_default();
        *count += 1;
        *count == 1
    }

    /// True when the last asker of `c` let go (unsubscribe it now).
    fn remove(&mut self, c: &str) -> bool {
        let Some(count) = self.0.get_mut(c) else {
            return false;
        };
        *count -= 1;
        if *count > 0 {
            return false;
        }
        self.0.remove(c);
        true
    }
}

/// `d` plus up to 50 % random, so nodes that lost Redis together do not reconnect in
/// lockstep.
fn jitter(d: Duration) -> Duration {
    d + d.mul_f64((rand_u64() % 1000) as f64 / 2000.0)
}

#[cfg(test)]
mod tests;
