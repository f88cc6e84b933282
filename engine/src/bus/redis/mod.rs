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
use crate::metrics as m;
use wire::EnvelopeId;

/// How a node reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
    pub url: String,
    /// Envelopes waiting for the publisher; beyond it a publish is dropped and counted.
    pub publish_queue: usize,
    /// Timeout of a connect and of each PING.
    pub timeout: Duration,
    /// How often the subscriber PINGs its connection.
    pub ping_every: Duration,
}

impl RedisBusConfig {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            publish_queue: 65_536,
            timeout: Duration::from_secs(2),
            ping_every: Duration::from_secs(3),
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

/// See the module doc.
pub struct RedisBus {
    node: u64,
    counter: AtomicU64,
    publish: flume::Sender<(Vec<String>, Bytes)>,
    subs: flume::Sender<SubCmd>,
    connected: watch::Receiver<u64>,
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
    /// the publisher and subscriber tasks on the current runtime.
    pub async fn start(cfg: RedisBusConfig, inbound: Inbound) -> Result<Arc<Self>, RedisBusError> {
        let client = redis::Client::open(cfg.url.as_str())?;
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
            redis::RedisError::from((redis::ErrorKind::Io, "connect timed out", cfg.url.clone()))
        })??;
        let (publish, publish_rx) = flume::bounded(cfg.publish_queue);
        let (subs, subs_rx) = flume::unbounded();
        let (connected_tx, connected) = watch::channel(0);
        tokio::spawn(publisher(conn, publish_rx));
        tokio::spawn(subscriber(client, cfg, subs_rx, inbound, connected_tx));
        Ok(Arc::new(Self {
            node: rand_u64(),
            counter: AtomicU64::new(0),
            publish,
            subs,
            connected,
        }))
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

fn rand_u64() -> u64 {
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
        let id = (self.node, self.counter.fetch_add(1, Ordering::Relaxed));
        let Some(encoded) = wire::encode(id, &envelope) else {
            metrics::counter!(m::BUS_PUBLISH_DROPPED, "reason" => "encode").increment(1);
            return;
        };
        if self.publish.try_send(encoded).is_err() {
            metrics::counter!(m::BUS_PUBLISH_DROPPED, "reason" => "queue_full").increment(1);
            tracing::warn!("redis bus: publish queue full, envelope dropped");
            return;
        }
        metrics::counter!(m::BUS_PUBLISHED, "backend" => "redis").increment(1);
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

/// Drains the publish queue in batches of up to 256 envelopes, one pipeline each. A
/// batch that fails is sent again after a back-off (100 ms doubling to 2 s), for up to
/// 10 s; then it is dropped and counted (pub/sub is at most once anyway; messages are
/// recovered by `seq`).
async fn publisher(
    mut conn: redis::aio::ConnectionManager,
    rx: flume::Receiver<(Vec<String>, Bytes)>,
) {
    let mut batch = Vec::with_capacity(256);
    while let Ok(first) = rx.recv_async().await {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        let mut commands = 0u64;
        for (channels, payload) in &batch {
            for c in channels {
                pipe.cmd("PUBLISH").arg(c).arg(&payload[..]).ignore();
                commands += 1;
            }
        }
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    metrics::counter!(m::BUS_REDIS_COMMANDS, "kind" => "publish")
                        .increment(commands);
                    break;
                }
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    tracing::warn!(error = %e, "redis bus: publish failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    metrics::counter!(m::BUS_PUBLISH_DROPPED, "reason" => "redis")
                        .increment(batch.len() as u64);
                    tracing::error!(error = %e, envelopes = batch.len(), "redis bus: publish batch dropped");
                    break;
                }
            }
        }
        batch.clear();
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
async fn subscriber(
    client: redis::Client,
    cfg: RedisBusConfig,
    cmds: flume::Receiver<SubCmd>,
    inbound: Inbound,
    connected: watch::Sender<u64>,
) {
    let mut wanted = Wanted::default();
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
        // Subscribes issued while connected complete in their own tasks (the read loop
        // never waits on Redis); a Synced waits behind every earlier one.
        let (done_tx, mut done_rx) =
            tokio::sync::mpsc::unbounded_channel::<redis::RedisResult<()>>();
        let mut pending = tokio::task::JoinSet::new();
        let mut ping = tokio::time::interval(cfg.ping_every);
        ping.tick().await;
        let reason = loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break "connection closed" };
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
        tracing::warn!(
            reason,
            "redis bus: subscriber connection lost; reconnecting"
        );
        // Whoever waits for a sync waits for the next connection.
        pending.abort_all();
        tokio::time::sleep(jitter(delay)).await;
    }
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
