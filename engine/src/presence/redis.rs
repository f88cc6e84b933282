//! Cluster-wide presence in Redis (see the module doc of `presence` for the contract).
//!
//! Keys: `rc:presence` is a ZSET of `user|node` entries scored by their expiry (Redis
//! `TIME` plus the TTL, so node clocks do not matter); `rc:lastseen` is a HASH of
//! user -> the last time their last session anywhere closed (ms).
//!
//! Each node keeps the users it holds sessions of and, every `every`, runs one script
//! (batched: one round trip for all its users): refresh its entries, drop the ones it
//! no longer has, forget expired entries of any node, and return the whole online set.
//! That set is this node's local view, so reads never wait on Redis. A node that dies
//! stops refreshing and its users go offline once their entries expire: within
//! `ttl + every` (8 s with the defaults of 6 s and 2 s). A node's own users are in
//! its view at once (a first session does not wait for the round).
//!
//! Who emits a change: the view is diffed after every round, and a transition is
//! emitted by one node only, the user's rendezvous owner among the live nodes (the same
//! rule as room slots), so a partner hears `user_status` once, not once per node.
//! "Live" here is presence's own node set, `rc:presence:nodes` (node -> expiry), which
//! each round refreshes in the same script and with the same expiry as the node's user
//! entries. So the round that sees a dead node's users expire also sees the node gone,
//! and a survivor announces them. (The membership leases of `cluster` are a different
//! clock: judged by them, a dead node whose lease outlived its users' entries by a
//! moment was still the owner, nobody announced, and the offline was lost.)
//! A node's first round only primes its view: users already online are not news.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Presence, PresenceChange, UserStatus};
use crate::clock::now_unix_ms;
use crate::cluster::{Cluster, owner_among, slot_of};

const CHANGES_QUEUE: usize = 65_536;
const LAST_SEEN_KEEP: usize = 100_000;

/// How often presence is refreshed, and how long an entry lives without a refresh.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTiming {
    pub every: Duration,
    pub ttl: Duration,
}

impl Default for PresenceTiming {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(2),
            ttl: Duration::from_secs(6),
        }
    }
}

#[derive(Default)]
struct View {
    /// Users with a session on this node (refreshed in Redis every round).
    mine: HashSet<String>,
    /// Users online anywhere, as of the last round (plus this node's own since).
    online: HashSet<String>,
    /// Last seen (ms) of users known to be offline.
    last_seen: HashMap<String, u64>,
    /// The nodes with fresh presence, as of the last round (see the module doc).
    nodes: Vec<u16>,
    /// Whether a round has succeeded (before it, `online` is not a view to diff).
    primed: bool,
}

/// See the module doc.
pub struct RedisPresence {
    cluster: Arc<Cluster>,
    conn: redis::aio::ConnectionManager,
    timing: PresenceTiming,
    view: Mutex<View>,
    /// Users whose last session here closed since the last round.
    gone: Mutex<Vec<String>>,
    tx: flume::Sender<PresenceChange>,
    rx: flume::Receiver<PresenceChange>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence").finish_non_exhaustive()
    }
}

const ROUND: &str = r#"
local node, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  redis.call('ZADD', 'rc:presence', now + ttl, ARGV[i] .. '|' .. node)
end
local gone = tonumber(ARGV[4 + n])
for i = 5 + n, 4 + n + gone do
  redis.call('ZREM', 'rc:presence', ARGV[i] .. '|' .. node)
  redis.call('HSET', 'rc:lastseen', ARGV[i], now)
end
redis.call('ZADD', 'rc:presence:nodes', now + ttl, node)
redis.call('ZREMRANGEBYSCORE', 'rc:presence', '-inf', now)
redis.call('ZREMRANGEBYSCORE', 'rc:presence:nodes', '-inf', now)
return {redis.call('ZRANGE', 'rc:presence:nodes', 0, -1), redis.call('ZRANGE', 'rc:presence', 0, -1)}
"#;

impl RedisPresence {
    /// Starts the refresh task on the current runtime (it ends when the presence is
    /// dropped).
    pub fn start(
        cluster: Arc<Cluster>,
        conn: redis::aio::ConnectionManager,
        timing: PresenceTiming,
    ) -> Arc<Self> {
        let (tx, rx) = flume::bounded(CHANGES_QUEUE);
        let p = Arc::new(Self {
            cluster,
            conn,
            timing,
            view: Mutex::new(View::default()),
            gone: Mutex::new(Vec::new()),
            tx,
            rx,
        });
        tokio::spawn(rounds(Arc::downgrade(&p)));
        p
    }

    fn emit(&self, user_id: &str, online: bool, at_ms: u64) {
        super::emit(&self.tx, user_id, online, at_ms);
    }

    /// Whether this node announces `user_id`'s transitions, `live` being presence's
    /// node set (empty before the first round: then the membership's).
    fn announces(&self, user_id: &str, live: &[u16]) -> bool {
        let owner = if live.is_empty() {
            owner_among(slot_of(user_id), &self.cluster.nodes())
        } else {
            owner_among(slot_of(user_id), live)
        };
        owner.is_none_or(|n| n == self.cluster.node)
    }

    async fn round(&self, gone: Vec<String>) -> Result<(), Vec<String>> {
        let mine: Vec<String> = self.view.lock().mine.iter().cloned().collect();
        let script = redis::Script::new(ROUND);
        let mut inv = script.prepare_invoke();
        inv.arg(self.cluster.node)
            .arg(self.timing.ttl.as_millis() as u64)
            .arg(mine.len());
        for u in &mine {
            inv.arg(u);
        }
        inv.arg(gone.len());
        for u in &gone {
            inv.arg(u);
        }
        let mut conn = self.conn.clone();
        let (mut live, entries): (Vec<u16>, Vec<String>) = match tokio::time::timeout(
            self.timing.every.max(Duration::from_secs(1)),
            inv.invoke_async(&mut conn),
        )
        .await
        {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "presence round failed");
                return Err(gone);
            }
            Err(_) => {
                tracing::warn!("presence round timed out");
                return Err(gone);
            }
        };
        // By node id, not by Redis' score order (expiry): one canonical view.
        live.sort_unstable();
        let now = now_unix_ms();
        let online: HashSet<String> = entries
            .iter()
            .filter_map(|e| e.rsplit_once('|').map(|(u, _)| u.to_owned()))
            .collect();
        let (went_online, went_offline) = {
            let mut v = self.view.lock();
            v.nodes.clone_from(&live);
            let mut next = online;
            next.extend(v.mine.iter().cloned());
            let up: Vec<String> = next.difference(&v.online).cloned().collect();
            let down: Vec<String> = v.online.difference(&next).cloned().collect();
            for u in &down {
                if v.last_seen.len() >= LAST_SEEN_KEEP {
                    v.last_seen.clear();
                }
                v.last_seen.insert(u.clone(), now);
            }
            for u in &up {
                v.last_seen.remove(u);
            }
            v.online = next;
            if !v.primed {
                // The first view: nothing changed, this node just started looking.
                v.primed = true;
                (Vec::new(), Vec::new())
            } else {
                (up, down)
            }
        };
        for u in went_online.iter().filter(|u| self.announces(u, &live)) {
            self.emit(u, true, now);
        }
        for u in went_offline.iter().filter(|u| self.announces(u, &live)) {
            self.emit(u, false, now);
        }
        Ok(())
    }
}

async fn rounds(p: Weak<RedisPresence>) {
    let every = match p.upgrade() {
        Some(p) => p.timing.every,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gone: Vec<String> = Vec::new();
    loop {
        tick.tick().await;
        let Some(p) = p.upgrade() else { return };
        // Users whose last session here closed since the last round (and those a
        // failed round could not drop).
        gone.extend(p.take_gone());
        gone = match p.round(std::mem::take(&mut gone)).await {
            Ok(()) => Vec::new(),
            Err(back) => back,
        };
    }
}

impl RedisPresence {
    fn take_gone(&self) -> Vec<String> {
        std::mem::take(&mut *self.gone.lock())
    }
}

impl Presence for RedisPresence {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn node_user_connected(&self, user_id: &str) {
        let (newly_online, live) = {
            let mut v = self.view.lock();
            v.mine.insert(user_id.to_owned());
            v.last_seen.remove(user_id);
            (v.online.insert(user_id.to_owned()), v.nodes.clone())
        };
        self.gone.lock().retain(|u| u != user_id);
        if newly_online && self.announces(user_id, &live) {
            self.emit(user_id, true, now_unix_ms());
        }
    }

    fn node_user_disconnected(&self, user_id: &str) {
        // Offline for the cluster only when no other node has the user: the next round
        // tells (this node drops its entry there and diffs the set Redis returns).
        self.view.lock().mine.remove(user_id);
        self.gone.lock().push(user_id.to_owned());
    }

    fn status(&self, user_id: &str) -> UserStatus {
        let v = self.view.lock();
        if v.online.contains(user_id) {
            return UserStatus {
                online: true,
                last_seen_ms: None,
            };
        }
        UserStatus {
            online: false,
            last_seen_ms: v.last_seen.get(user_id).copied(),
        }
    }

    fn changes(&self) -> flume::Receiver<PresenceChange> {
        self.rx.clone()
    }
}

#[cfg(test)]
mod tests {
    //! Against a real `redis-server` on a free port: three memberships that stay alive
    //! (their leases keep the nodes "live" to the cluster) and presence on a clock of
    //! its own, so the two notions of a live node can disagree on purpose.

    use std::time::Instant;

    use super::*;
    use crate::cluster::ClusterConfig;
    use crate::testkit::RedisServer;

    const WAIT: Duration = Duration::from_secs(10);
    const TIMING: PresenceTiming = PresenceTiming {
        every: Duration::from_millis(100),
        ttl: Duration::from_millis(400),
    };

    async fn member(redis: &RedisServer, node: u16) -> Arc<Cluster> {
        let cfg = ClusterConfig {
            node_id: Some(node),
            ttl: Duration::from_secs(30),
            ..ClusterConfig::default()
        };
        let client = redis::Client::open(redis.url()).expect("client");
        Cluster::join(client, cfg).await.expect("join")
    }

    /// The transitions `p` emits within `d`.
    async fn emitted(p: &RedisPresence, d: Duration) -> Vec<(String, bool)> {
        let rx = p.changes();
        let mut got = Vec::new();
        let end = Instant::now() + d;
        while let Ok(Ok(c)) = tokio::time::timeout(
            end.saturating_duration_since(Instant::now()),
            rx.recv_async(),
        )
        .await
        {
            got.push((c.user_id, c.online));
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_user_of_a_node_whose_presence_died_goes_offline_once_though_its_lease_lives() {
        let redis = RedisServer::start();
        let m: Vec<Arc<Cluster>> = vec![
            member(&redis, 0).await,
            member(&redis, 1).await,
            member(&redis, 2).await,
        ];
        // A user whose announcer is node 0, the node that will stop refreshing.
        let user = (0..)
            .map(|i| format!("u{i}"))
            .find(|u| owner_among(slot_of(u), &[0, 1, 2]) == Some(0))
            .expect("some user maps to node 0");
        let p: Vec<Arc<RedisPresence>> = m
            .iter()
            .map(|c| RedisPresence::start(c.clone(), c.connection(), TIMING))
            .collect();
        // Every node has primed its view and knows all three members and presence nodes.
        let deadline = Instant::now() + WAIT;
        while !(p.iter().all(|q| q.view.lock().nodes == [0, 1, 2])
            && m.iter().all(|c| c.nodes() == [0, 1, 2]))
        {
            assert!(Instant::now() < deadline, "the nodes never agreed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p[0].node_user_connected(&user);
        assert_eq!(
            emitted(&p[0], Duration::from_millis(50)).await,
            [(user.clone(), true)]
        );
        let deadline = Instant::now() + WAIT;
        while !(p[1].is_online(&user) && p[2].is_online(&user)) {
            assert!(
                Instant::now() < deadline,
                "the others never saw {user} online"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Node 0's presence stops (its membership does not): the survivors must see the
        // user's entry expire and one of them must say so.
        let dead = p.into_iter().collect::<Vec<_>>();
        let [p0, p1, p2]: [Arc<RedisPresence>; 3] = dead.try_into().expect("three");
        drop(p0);
        assert_eq!(m[1].nodes(), [0, 1, 2], "node 0 is still a live member");
        let window = TIMING.ttl * 4 + Duration::from_millis(500);
        let (a, b) = tokio::join!(emitted(&p1, window), emitted(&p2, window));
        let mut all: Vec<(String, bool)> = a.into_iter().chain(b).collect();
        all.sort();
        assert_eq!(all, [(user.clone(), false)], "told exactly once");
        assert!(!p1.is_online(&user) && !p2.is_online(&user));
        assert!(p1.status(&user).last_seen_ms.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_joining_late_does_not_announce_users_already_online() {
        let redis = RedisServer::start();
        let a = member(&redis, 0).await;
        let pa = RedisPresence::start(a.clone(), a.connection(), TIMING);
        let users: Vec<String> = (0..20).map(|i| format!("early{i}")).collect();
        for u in &users {
            pa.node_user_connected(u);
        }
        assert_eq!(
            emitted(&pa, Duration::from_millis(300)).await.len(),
            users.len()
        );
        // Node 1 comes later and owns about half of them: none is news to anyone.
        let b = member(&redis, 1).await;
        let pb = RedisPresence::start(b.clone(), b.connection(), TIMING);
        let (ea, eb) = tokio::join!(
            emitted(&pa, Duration::from_secs(1)),
            emitted(&pb, Duration::from_secs(1))
        );
        assert!(
            users.iter().all(|u| pb.is_online(u)),
            "node 1 sees them online"
        );
        assert_eq!((ea, eb), (Vec::new(), Vec::new()));
        assert!(
            users
                .iter()
                .any(|u| owner_among(slot_of(u), &[0, 1]) == Some(1)),
            "the test covers users node 1 announces"
        );
    }
}
