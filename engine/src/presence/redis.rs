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
redis.call('ZREMRANGEBYSCORE', 'rc:presence', '-inf', now)
return redis.call('ZRANGE', 'rc:presence', 0, -1)
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

    /// Whether this node announces `user_id`'s transitions.
    fn announces(&self, user_id: &str, live: &[u16]) -> bool {
        owner_among(slot_of(user_id), live).is_none_or(|n| n == self.cluster.node)
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
        let entries: Vec<String> = match tokio::time::timeout(
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
        let now = now_unix_ms();
        let online: HashSet<String> = entries
            .iter()
            .filter_map(|e| e.rsplit_once('|').map(|(u, _)| u.to_owned()))
            .collect();
        let live = self.cluster.nodes();
        let (went_online, went_offline) = {
            let mut v = self.view.lock();
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
            (up, down)
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
        let newly_online = {
            let mut v = self.view.lock();
            v.mine.insert(user_id.to_owned());
            v.last_seen.remove(user_id);
            v.online.insert(user_id.to_owned())
        };
        self.gone.lock().retain(|u| u != user_id);
        if newly_online && self.announces(user_id, &self.cluster.nodes()) {
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
