//! Cluster membership and room ownership over Redis: which node sequences which room.
//!
//! Every room hashes to one of [`SLOTS`] slots. A slot's owner is the rendezvous-hash
//! winner among the live nodes, and it holds the slot's **lease** in Redis
//! (`rc:lease:{slot}`, a token `node:instance:epoch` set with `PX`). One Lua script per
//! round (every `tick`) does a node's whole bookkeeping atomically: refresh its entry in
//! the live set `rc:nodes` (scores are Redis `TIME` plus the TTL, so node clocks do not
//! matter) and its node-id claim `rc:nodeid:{n}`, renew the leases it holds, release the
//! ones it handed over, acquire the free ones it should own, and return the live set.
//!
//! **Fencing.** A node sequences a room only while it holds the slot's lease *and* its
//! last successful round is younger than `ttl - margin` (its own monotonic clock): a
//! node cut off from Redis stops admitting before its leases can expire and anyone
//! else can acquire them. Every publish of a message also checks the lease inside Redis
//! (the bus's publish script), so a node that lost a lease cannot publish under it.
//! A fenced node refuses new sockets (the server asks [`Cluster::in_contact`]), and
//! once it has been cut off for [`ClusterConfig::cut_off_close`] the upkeep task closes
//! its sessions with 1012: their clients reconnect to nodes that hear the cluster.
//!
//! **Handover.** When a node joins, the slots it wins move: the old owner stops
//! admitting them at once (publishes get `unavailable` and are retried), waits until
//! its writer has made durable and its bus has published everything admitted before
//! (the drain hook), and only then releases the leases; the new owner acquires them on
//! its next round and reads each room's position from the store before sequencing it.
//! A dead node's leases expire after `ttl` and its slots go to the survivors the same
//! way, without the drain.
//!
//! **Redis restarting empty.** Then every lease is gone at once rather than expired, and
//! the fencing above alone would let a node acquire a slot while its previous holder,
//! not yet aware, still sequences within its validity. So a node whose round finds its
//! node-id claim gone acquires nothing for one lease (`acquire_after`): by then every
//! earlier holder's validity (at most `ttl - margin` past its last good round, which
//! came before the restart) has run out.
//!
//! Why one node id per instance: message ids embed the node id, so two live nodes with
//! one id could mint the same id. The claim is renewed with every round; a node that
//! finds its id taken by another instance stops sequencing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::ids::room_hash;
use crate::metrics as m;

pub(crate) mod forward;
mod limits;
pub mod roster;
pub(crate) mod upkeep;

pub use forward::NodeMsg;
pub use limits::ConnCheck;
pub use roster::RedisRoster;

/// Room slots: enough that ownership moves in small steps, few enough that one round
/// renews a node's share in one script.
pub const SLOTS: u16 = 1024;

/// The slot of a room.
pub fn slot_of(room_id: &str) -> u16 {
    // A different mix than the shard index, so slots and shards are independent.
    (splitmix(room_hash(room_id)) % u64::from(SLOTS)) as u16
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The rendezvous winner for `slot` among `live` (none when nobody is live).
pub fn owner_among(slot: u16, live: &[u16]) -> Option<u16> {
    live.iter()
        .copied()
        .max_by_key(|&n| splitmix(u64::from(slot) << 16 | u64::from(n)))
}

/// How a node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The node id to claim; `None` claims the first free one.
    pub node_id: Option<u16>,
    /// Lease and membership lifetime.
    pub ttl: Duration,
    /// How often a round runs.
    pub tick: Duration,
    /// How long before its last round's `ttl` runs out a node stops sequencing.
    pub margin: Duration,
    pub timeout: Duration,
    /// How long a node may stay cut off from Redis before it closes its sessions with
    /// 1012 (so their clients reconnect to nodes that hear the whole cluster); `None`
    /// keeps them.
    pub cut_off_close: Option<Duration>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            ttl: Duration::from_secs(6),
            tick: Duration::from_secs(1),
            margin: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            cut_off_close: None,
        }
    }
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "node id {0} is claimed by another live node (set a different ROOMCAST_NODE_ID, or leave it unset)"
    )]
    NodeIdTaken(u16),
    #[error("every node id (0..=255) is claimed by a live node")]
    NoFreeNodeId,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Where a room's publishes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This node sequences it (or is about to: the shard answers `unavailable` until
    /// the lease is in hand).
    Local,
    /// Forward to this node.
    Node(u16),
}

struct Held {
    token: String,
    /// This node's generation for the acquisition (rooms learnt under an older one
    /// read their position again).
    lease: u64,
    /// Handed over: no new admissions; released once the drain is done.
    draining: bool,
    drained: bool,
}

#[derive(Default)]
struct State {
    live: Vec<u16>,
    /// Whether the last round returned the same live set as the one before: a node
    /// acquires only on a stable view (after Redis restarts empty, the first node back
    /// sees itself alone for a round and would otherwise take every slot).
    stable: bool,
    held: HashMap<u16, Held>,
    /// Sequencing is allowed until then (the last good round + ttl - margin).
    valid_until: Option<Instant>,
    /// No slot is acquired before then: set when Redis forgot this node (its node-id
    /// claim was gone), because then every lease is gone too, not expired, and a node
    /// that held one may still be sequencing under it until its own validity runs out
    /// (at most a lease after its last good round).
    acquire_after: Option<Instant>,
}

type DrainHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// See the module doc. One per node, shared.
pub struct Cluster {
    pub node: u16,
    instance: String,
    cfg: ClusterConfig,
    conn: redis::aio::ConnectionManager,
    state: RwLock<State>,
    generation: AtomicU64,
    drain: OnceLock<DrainHook>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Users whose connection close Redis did not take (see `limits`). A mutex: touched
    /// only on a failed close and by the resync pass, never on a hot path.
    conn_resync: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

const ROUND: &str = r#"
local me, instance, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nk = 'rc:nodeid:' .. me
local cur = redis.call('GET', nk)
if cur and cur ~= instance then return {0, {}, {}, {}, 0} end
local fresh = 0
if not cur then fresh = 1 end
redis.call('SET', nk, instance, 'PX', ttl)
redis.call('ZADD', 'rc:nodes', now + ttl, me)
redis.call('ZREMRANGEBYSCORE', 'rc:nodes', '-inf', now)
local live = redis.call('ZRANGE', 'rc:nodes', 0, -1)
local i = 4
local renewed = {}
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key = 'rc:lease:{' .. ARGV[i] .. '}'
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ttl)
    renewed[#renewed + 1] = ARGV[i]
  end
  i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key = 'rc:lease:{' .. ARGV[i] .. '}'
  if redis.call('GET', key) == ARGV[i + 1] then redis.call('DEL', key) end
  i = i + 2
end
local acquired = {}
n = tonumber(ARGV[i]); i = i + 1
-- Redis forgot this node: its leases, and everyone's, vanished rather than expired;
-- acquire nothing now (the node holds off for a lease, see the module doc).
if fresh == 1 then n = 0 end
for _ = 1, n do
  local key = 'rc:lease:{' .. ARGV[i] .. '}'
  if redis.call('EXISTS', key) == 0 then
    local e = redis.call('INCR', 'rc:epoch:{' .. ARGV[i] .. '}')
    local token = me .. ':' .. instance .. ':' .. e
    redis.call('SET', key, token, 'PX', ttl)
    acquired[#acquired + 1] = ARGV[i]
    acquired[#acquired + 1] = token
  end
  i = i + 1
end
return {1, live, renewed, acquired, fresh}
"#;

const LEAVE: &str = r#"
local me, instance = ARGV[1], ARGV[2]
for i = 3, #ARGV, 2 do
  local key = 'rc:lease:{' .. ARGV[i] .. '}'
  if redis.call('GET', key) == ARGV[i + 1] then redis.call('DEL', key) end
end
redis.call('ZREM', 'rc:nodes', me)
if redis.call('GET', 'rc:nodeid:' .. me) == instance then redis.call('DEL', 'rc:nodeid:' .. me) end
return 1
"#;

impl Cluster {
    /// Connects, claims a node id and runs the first round (so the node knows the live
    /// set and holds its first leases when it starts serving).
    pub async fn join(
        client: redis::Client,
        cfg: ClusterConfig,
    ) -> Result<Arc<Self>, ClusterError> {
        let manager_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(usize::MAX)
            .set_max_delay(Duration::from_secs(1));
        // One connection first, dropped after: a manager retries forever, so a wrong
        // CA, a refused client certificate or a bad password would show only as a
        // timeout. This one fails with the reason.
        let probe = tokio::time::timeout(cfg.timeout, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| ClusterError::Timeout(cfg.timeout))??;
        drop(probe);
        let mut conn = tokio::time::timeout(
            cfg.timeout,
            client.get_connection_manager_with_config(manager_cfg),
        )
        .await
        .map_err(|_| ClusterError::Timeout(cfg.timeout))??;
        let instance = format!("{:016x}", crate::bus::redis::rand_u64());
        let ttl_ms = cfg.ttl.as_millis() as u64;
        let node = match cfg.node_id {
            Some(n) => {
                if !claim(&mut conn, n, &instance, ttl_ms).await? {
                    return Err(ClusterError::NodeIdTaken(n));
                }
                n
            }
            None => {
                let start = (crate::bus::redis::rand_u64() % 256) as u16;
                let mut found = None;
                for k in 0..256u16 {
                    let n = (start + k) % 256;
                    if claim(&mut conn, n, &instance, ttl_ms).await? {
                        found = Some(n);
                        break;
                    }
                }
                found.ok_or(ClusterError::NoFreeNodeId)?
            }
        };
        let cluster = Arc::new(Self {
            node,
            instance,
            cfg,
            conn,
            state: RwLock::new(State::default()),
            generation: AtomicU64::new(0),
            drain: OnceLock::new(),
            stop: tokio::sync::watch::Sender::new(false),
            conn_resync: Default::default(),
        });
        // The first round learns who is live, the next ones acquire once it is stable.
        cluster.round().await;
        cluster.round().await;
        cluster.round().await;
        tokio::spawn(rounds(Arc::downgrade(&cluster), cluster.stop.subscribe()));
        tracing::info!(node, "joined the cluster");
        Ok(cluster)
    }

    /// Sets what a handover waits for before a lease is released (the engine's writer
    /// barrier and the bus's flush). Set once, at engine start.
    pub fn set_drain(&self, hook: DrainHook) {
        let _ = self.drain.set(hook);
    }

    /// The lease generation under which this node may sequence `room_id` now, if it may.
    pub fn lease_of(&self, room_id: &str) -> Option<u64> {
        let slot = slot_of(room_id);
        let st = self.state.read();
        if st.valid_until.is_none_or(|v| Instant::now() >= v) {
            return None;
        }
        st.held.get(&slot).filter(|h| !h.draining).map(|h| h.lease)
    }

    /// The lease token to publish `room_id`'s messages under (the bus's publish script
    /// compares it with Redis), while this node holds the slot (draining included).
    pub fn token_of(&self, room_id: &str) -> Option<String> {
        let slot = slot_of(room_id);
        self.state.read().held.get(&slot).map(|h| h.token.clone())
    }

    /// Where `room_id`'s publishes go.
    pub fn route(&self, room_id: &str) -> Route {
        if self.lease_of(room_id).is_some() {
            return Route::Local;
        }
        let st = self.state.read();
        match owner_among(slot_of(room_id), &st.live) {
            Some(n) if n != self.node => Route::Node(n),
            _ => Route::Local,
        }
    }

    /// A handle on this node's command connection to Redis (shared, multiplexed).
    pub fn connection(&self) -> redis::aio::ConnectionManager {
        self.conn.clone()
    }

    /// Presence entries live as long as leases and are refreshed three times per life.
    pub fn presence_timing(&self) -> crate::presence::PresenceTiming {
        crate::presence::PresenceTiming {
            every: self.cfg.ttl / 3,
            ttl: self.cfg.ttl,
        }
    }

    /// Whether this node is in contact with Redis: its last good round is recent
    /// enough that it may sequence (`false` once it fenced itself, and after it left).
    pub fn in_contact(&self) -> bool {
        self.state
            .read()
            .valid_until
            .is_some_and(|v| Instant::now() < v)
    }

    /// How long this node has been cut off: since its last good round's validity ran
    /// out (it fenced itself then). `None` while in contact, and after it left.
    pub fn cut_off_for(&self) -> Option<Duration> {
        let v = self.state.read().valid_until?;
        Instant::now().checked_duration_since(v)
    }

    /// Whether this node has been cut off long enough to close its sessions (see
    /// [`ClusterConfig::cut_off_close`]).
    pub fn cut_off_too_long(&self) -> bool {
        match (self.cfg.cut_off_close, self.cut_off_for()) {
            (Some(limit), Some(d)) => d >= limit,
            _ => false,
        }
    }

    /// The live nodes as of the last round (this one included).
    pub fn nodes(&self) -> Vec<u16> {
        self.state.read().live.clone()
    }

    /// Slots this node holds a lease on.
    pub fn slots_held(&self) -> usize {
        self.state.read().held.len()
    }

    /// Leaves the cluster: stops sequencing, drains, releases every lease and the node
    /// id, so the survivors take the slots on their next round instead of waiting for
    /// the leases to expire.
    pub async fn leave(&self) {
        let _ = self.stop.send(true);
        {
            let mut st = self.state.write();
            for h in st.held.values_mut() {
                h.draining = true;
            }
        }
        if let Some(hook) = self.drain.get() {
            hook().await;
        }
        let held: Vec<(u16, String)> = self
            .state
            .read()
            .held
            .iter()
            .map(|(s, h)| (*s, h.token.clone()))
            .collect();
        let script = redis::Script::new(LEAVE);
        let mut inv = script.prepare_invoke();
        inv.arg(self.node).arg(&self.instance);
        for (s, t) in &held {
            inv.arg(s).arg(t);
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => tracing::info!(slots = held.len(), "left the cluster"),
            Ok(Err(e)) => tracing::warn!(error = %e, "leaving the cluster failed; leases expire"),
            Err(_) => tracing::warn!("leaving the cluster timed out; leases expire"),
        }
        let mut st = self.state.write();
        st.held.clear();
        st.valid_until = None;
    }

    /// One round (see the module doc).
    async fn round(self: &Arc<Self>) {
        let (renew, release, acquire) = {
            let mut st = self.state.write();
            let mut live = st.live.clone();
            if !live.contains(&self.node) {
                live.push(self.node);
            }
            let stopping = *self.stop.borrow();
            let mut start_drain = false;
            for (slot, h) in st.held.iter_mut() {
                let wanted = !stopping && owner_among(*slot, &live) == Some(self.node);
                if !wanted && !h.draining {
                    h.draining = true;
                    start_drain = true;
                }
            }
            if start_drain {
                self.spawn_drain();
            }
            let mut renew = Vec::new();
            let mut release = Vec::new();
            for (slot, h) in &st.held {
                if h.draining && h.drained {
                    release.push((*slot, h.token.clone()));
                } else {
                    renew.push((*slot, h.token.clone()));
                }
            }
            let holding_off = st.acquire_after.is_some_and(|t| Instant::now() < t);
            let acquire: Vec<u16> = if stopping || !st.stable || holding_off {
                Vec::new()
            } else {
                (0..SLOTS)
                    .filter(|s| !st.held.contains_key(s))
                    .filter(|s| owner_among(*s, &live) == Some(self.node))
                    .collect()
            };
            (renew, release, acquire)
        };
        let script = redis::Script::new(ROUND);
        let mut inv = script.prepare_invoke();
        inv.arg(self.node)
            .arg(&self.instance)
            .arg(self.cfg.ttl.as_millis() as u64);
        inv.arg(renew.len());
        for (s, t) in &renew {
            inv.arg(s).arg(t);
        }
        inv.arg(release.len());
        for (s, t) in &release {
            inv.arg(s).arg(t);
        }
        inv.arg(acquire.len());
        for s in &acquire {
            inv.arg(s);
        }
        let sent = Instant::now();
        let mut conn = self.conn.clone();
        type Reply = (i64, Vec<String>, Vec<u16>, Vec<String>, i64);
        let reply =
            tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<Reply>(&mut conn)).await;
        let (ok, live, renewed, acquired, fresh) = match reply {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                metrics::counter!(m::CLUSTER_LEASE_ROUNDS, "outcome" => "failed").increment(1);
                tracing::warn!(error = %e, "cluster round failed");
                return;
            }
            Err(_) => {
                metrics::counter!(m::CLUSTER_LEASE_ROUNDS, "outcome" => "failed").increment(1);
                tracing::warn!("cluster round timed out");
                return;
            }
        };
        let mut st = self.state.write();
        if ok != 1 {
            metrics::counter!(m::CLUSTER_LEASE_ROUNDS, "outcome" => "node_id_taken").increment(1);
            tracing::error!(
                node = self.node,
                "node id claimed by another instance: this node stops sequencing"
            );
            st.held.clear();
            // Fenced from now on, like a node cut off (its sessions are closed later).
            st.valid_until = Some(Instant::now().min(st.valid_until.unwrap_or(sent)));
            return;
        }
        metrics::counter!(m::CLUSTER_LEASE_ROUNDS, "outcome" => "ok").increment(1);
        if fresh == 1 {
            // Redis lost this node's claim (restarted empty, or this node was away
            // longer than a lease): whoever held leases may still sequence until its
            // validity runs out, which is less than a lease from now.
            st.acquire_after = Some(sent + self.cfg.ttl);
            tracing::warn!(
                node = self.node,
                hold_ms = self.cfg.ttl.as_millis() as u64,
                "redis had forgotten this node: acquiring no slot for one lease"
            );
        }
        let mut live: Vec<u16> = live.iter().filter_map(|n| n.parse().ok()).collect();
        live.sort_unstable();
        st.stable = st.live == live;
        st.live = live;
        for (slot, _) in &release {
            st.held.remove(slot);
            metrics::counter!(m::CLUSTER_SLOT_MOVES, "change" => "released").increment(1);
        }
        let renewed: std::collections::HashSet<u16> = renewed.into_iter().collect();
        let mut lost = 0;
        for (slot, _) in &renew {
            if !renewed.contains(slot) {
                st.held.remove(slot);
                lost += 1;
            }
        }
        if lost > 0 {
            metrics::counter!(m::CLUSTER_SLOT_MOVES, "change" => "lost").increment(lost);
            tracing::warn!(
                slots = lost,
                "slot leases lost (expired, or Redis lost them)"
            );
        }
        for pair in acquired.chunks_exact(2) {
            if let Ok(slot) = pair[0].parse::<u16>() {
                let lease = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                st.held.insert(
                    slot,
                    Held {
                        token: pair[1].clone(),
                        lease,
                        draining: false,
                        drained: false,
                    },
                );
                metrics::counter!(m::CLUSTER_SLOT_MOVES, "change" => "acquired").increment(1);
            }
        }
        st.valid_until = Some(sent + self.cfg.ttl.saturating_sub(self.cfg.margin));
        metrics::gauge!(m::CLUSTER_NODES).set(st.live.len() as f64);
        metrics::gauge!(m::CLUSTER_SLOTS_OWNED).set(st.held.len() as f64);
    }

    /// Waits for the drain hook off the round loop (renewals go on meanwhile), then
    /// marks every slot that was draining when it started as ready for release.
    fn spawn_drain(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        let hook = self.drain.get().cloned();
        tokio::spawn(async move {
            let Some(this) = this.upgrade() else { return };
            let draining: Vec<u16> = this
                .state
                .read()
                .held
                .iter()
                .filter(|(_, h)| h.draining)
                .map(|(s, _)| *s)
                .collect();
            if let Some(hook) = hook {
                hook().await;
            }
            let mut st = this.state.write();
            for s in draining {
                if let Some(h) = st.held.get_mut(&s) {
                    h.drained = true;
                }
            }
        });
    }
}

/// Claims node id `n` for `instance` if no live instance holds it.
async fn claim(
    conn: &mut redis::aio::ConnectionManager,
    n: u16,
    instance: &str,
    ttl_ms: u64,
) -> Result<bool, redis::RedisError> {
    let set: Option<String> = redis::cmd("SET")
        .arg(format!("rc:nodeid:{n}"))
        .arg(instance)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms)
        .query_async(conn)
        .await?;
    Ok(set.is_some())
}

/// The round loop; ends when the cluster is dropped or left.
async fn rounds(cluster: std::sync::Weak<Cluster>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let tick = match cluster.upgrade() {
        Some(c) => c.cfg.tick,
        None => return,
    };
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(c) = cluster.upgrade() else { return };
        if *c.stop.borrow() {
            return;
        }
        c.round().await;
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hashing {
    use super::*;

    #[test]
    fn rendezvous_moves_about_a_third_of_the_slots_when_a_third_node_joins() {
        let two = [1u16, 2];
        let three = [1u16, 2, 3];
        let moved = (0..SLOTS)
            .filter(|&s| owner_among(s, &two) != owner_among(s, &three))
            .count();
        // Every moved slot goes to the new node, and roughly 1/3 move.
        for s in 0..SLOTS {
            if owner_among(s, &two) != owner_among(s, &three) {
                assert_eq!(owner_among(s, &three), Some(3));
            }
        }
        assert!((250..=430).contains(&moved), "moved {moved}");
        assert_eq!(owner_among(5, &[]), None);
        let per_node: Vec<usize> = three
            .iter()
            .map(|n| {
                (0..SLOTS)
                    .filter(|&s| owner_among(s, &three) == Some(*n))
                    .count()
            })
            .collect();
        assert!(
            per_node.iter().all(|&c| (250..=430).contains(&c)),
            "{per_node:?}"
        );
    }
}
