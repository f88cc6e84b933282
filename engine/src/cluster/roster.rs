//! Who is in a room across the cluster: the room's roster in Redis, so `presence` frames
//! (a user's first session in the room anywhere, their last one anywhere), the
//! `memberCount` they and `room_joined` carry, and `get_online_users` for a room answer
//! for the whole cluster, not for the node that happens to hold the socket. One node
//! keeps none of this: its shards know their own members, and tell the roster when a
//! user's first local session joins a room and when their last local one leaves.
//!
//! Keys (standalone Redis, computed in the scripts):
//! - `rc:roster:{room}`: HASH user -> how many node instances hold the user in the room.
//!   Its `HLEN` is the member count, its fields the online users.
//! - `rc:roster:{room}|{node}:{instance}`: HASH user -> username, one instance's share.
//! - `rc:rosterrooms:{node}:{instance}`: SET of the rooms where the instance has users.
//! - `rc:rosterinsts`: SET of the instances with roster entries.
//!
//! A join adds the instance's field and counts the user up; the count reaching 1 is the
//! cluster-wide first session, and only the node whose script saw it publishes the
//! `presence` online frame (as a room event through the bus, so every node's members
//! hear it once). A leave is the mirror image. Both are O(1) in Redis.
//!
//! **Dead instances.** Every round (the presence round's period) each node runs one
//! sweep: an instance that no longer holds its node id (`rc:nodeid:{node}`, the claim
//! the cluster renews; it lapses one lease after a crash) has its shares removed, and
//! the users that leaves offline are returned to that one node, which tells the rooms.
//! The same script returns the member counts of this node's rooms, which refresh the
//! counts `room_joined` shows (exact for this node's own changes, at most a round old
//! for other nodes').
//!
//! **Redis lost its data** (restarted empty): the sweep reports that this instance is
//! not in `rc:rosterinsts` though it has users, and the node writes its whole share
//! again, announcing nothing (the users did not come or go). It waits until the node
//! holds its node id again (the cluster's next round claims it), since until then
//! another node's sweep would take the share for a dead node's.
//!
//! **Ordering.** One task owns the Redis side and takes operations from one queue in
//! the order the shards sent them, a batch per script call, so a quick join and leave
//! of the same user cannot swap. A failed call is retried with the batch kept at the
//! front of the queue; room events are best-effort, like every room event.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::bus::{Bus, Envelope, RoomEvent};
use crate::cluster::Cluster;
use crate::metrics as m;
use crate::protocol;

/// Operations waiting for the roster task; beyond it an operation is dropped (counted)
/// and the next sweep's rewrite of a lost share does not cover it, so it is large.
const QUEUE: usize = 262_144;
/// Operations per script call.
const BATCH: usize = 512;

/// Applies a batch: ARGV = mine, n, then n x (op, room, user, name). Returns, per
/// operation, {changed (1 when the cluster-wide status flipped), member count}.
const APPLY: &str = r#"
local mine, n = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local op, room, user, name = ARGV[3 + i * 4], ARGV[4 + i * 4], ARGV[5 + i * 4], ARGV[6 + i * 4]
  local all = 'rc:roster:' .. room
  local share = all .. '|' .. mine
  local changed = 0
  if op == 'j' or op == 'q' then
    if redis.call('HSETNX', share, user, name) == 1 then
      redis.call('SADD', 'rc:rosterrooms:' .. mine, room)
      redis.call('SADD', 'rc:rosterinsts', mine)
      if redis.call('HINCRBY', all, user, 1) == 1 and op == 'j' then changed = 1 end
    end
  else
    if redis.call('HDEL', share, user) == 1 then
      if redis.call('HLEN', share) == 0 then redis.call('SREM', 'rc:rosterrooms:' .. mine, room) end
      if redis.call('HINCRBY', all, user, -1) <= 0 then
        redis.call('HDEL', all, user)
        changed = 1
      end
    end
  end
  out[#out + 1] = changed
  out[#out + 1] = redis.call('HLEN', all)
end
return out
"#;

/// The round: drop dead instances' shares, report whether this instance's share is
/// missing, and count this node's rooms. ARGV = mine, has_users (0/1), then rooms.
/// Returns {lost, {counts...}, {room, user, name, count, ...}}.
const SWEEP: &str = r#"
local mine, has_users = ARGV[1], ARGV[2] == '1'
local gone = {}
for _, inst in ipairs(redis.call('SMEMBERS', 'rc:rosterinsts')) do
  local node, id = string.match(inst, '^(%d+):(.+)$')
  if inst ~= mine and (node == nil or redis.call('GET', 'rc:nodeid:' .. node) ~= id) then
    for _, room in ipairs(redis.call('SMEMBERS', 'rc:rosterrooms:' .. inst)) do
      local all = 'rc:roster:' .. room
      local share = all .. '|' .. inst
      local users = redis.call('HGETALL', share)
      for i = 1, #users, 2 do
        if redis.call('HINCRBY', all, users[i], -1) <= 0 then
          redis.call('HDEL', all, users[i])
          gone[#gone + 1] = room
          gone[#gone + 1] = users[i]
          gone[#gone + 1] = users[i + 1]
          gone[#gone + 1] = redis.call('HLEN', all)
        end
      end
      redis.call('DEL', share)
    end
    redis.call('DEL', 'rc:rosterrooms:' .. inst)
    redis.call('SREM', 'rc:rosterinsts', inst)
  end
end
local lost = 0
local my_node, my_id = string.match(mine, '^(%d+):(.+)$')
if has_users and redis.call('SISMEMBER', 'rc:rosterinsts', mine) == 0
  and redis.call('GET', 'rc:nodeid:' .. my_node) == my_id then lost = 1 end
local counts = {}
for i = 3, #ARGV do counts[#counts + 1] = redis.call('HLEN', 'rc:roster:' .. ARGV[i]) end
return {lost, counts, gone}
"#;

static APPLY_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(APPLY));
static SWEEP_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(SWEEP));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A user's first session on this node joined the room.
    Join,
    /// Their last one here left.
    Leave,
    /// Rewriting a lost share: like a join, but nobody is told.
    Quiet,
}

#[derive(Debug)]
struct Op {
    kind: Kind,
    room: String,
    user: String,
    name: String,
}

/// See the module doc.
pub struct RedisRoster {
    tx: flume::Sender<Op>,
    conn: redis::aio::ConnectionManager,
    /// Member counts of rooms with members here, as of the last reply about them. Read
    /// by shards on a join (a map lookup under a short lock, never across an await).
    counts: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for RedisRoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRoster").finish_non_exhaustive()
    }
}

impl RedisRoster {
    /// Starts the roster task on the current runtime; it sweeps every `every` and ends
    /// when the roster is dropped.
    /// `max_members`: presence frames are announced in rooms of at most this many users
    /// (see [`crate::EngineConfig::room_presence_max_members`]).
    pub fn start(
        cluster: Arc<Cluster>,
        bus: Arc<dyn Bus>,
        every: Duration,
        max_members: usize,
    ) -> Arc<Self> {
        let (tx, rx) = flume::bounded(QUEUE);
        let roster = Arc::new(Self {
            tx,
            conn: cluster.connection(),
            counts: Mutex::new(HashMap::new()),
        });
        let task = Task {
            roster: Arc::downgrade(&roster),
            mine: cluster.mine(),
            conn: cluster.connection(),
            bus,
            rx,
            every,
            max_members,
            share: HashMap::new(),
            pending: VecDeque::new(),
        };
        tokio::spawn(task.run());
        roster
    }

    /// A user's first session on this node joined `room`.
    pub fn joined(&self, room: &str, user: &str, name: &str) {
        self.send(Kind::Join, room, user, name);
    }

    /// A user's last session on this node left `room`.
    pub fn left(&self, room: &str, user: &str, name: &str) {
        self.send(Kind::Leave, room, user, name);
    }

    fn send(&self, kind: Kind, room: &str, user: &str, name: &str) {
        let op = Op {
            kind,
            room: room.to_owned(),
            user: user.to_owned(),
            name: name.to_owned(),
        };
        if self.tx.try_send(op).is_err() {
            metrics::counter!(m::ROSTER_DROPPED).increment(1);
        }
    }

    /// The room's cluster-wide member count as last heard (see the module doc), if
    /// this node has heard one.
    pub fn count(&self, room: &str) -> Option<usize> {
        self.counts.lock().get(room).copied()
    }

    /// The users in `room` anywhere in the cluster, sorted; `None` when Redis does not
    /// answer within `timeout`.
    pub async fn users(&self, room: &str, timeout: Duration) -> Option<Vec<String>> {
        let mut conn = self.conn.clone();
        let key = format!("rc:roster:{room}");
        let cmd = redis::cmd("HKEYS").arg(&key).to_owned();
        let mut users: Vec<String> =
            match tokio::time::timeout(timeout, cmd.query_async(&mut conn)).await {
                Ok(Ok(u)) => u,
                _ => return None,
            };
        users.sort_unstable();
        Some(users)
    }
}

/// The roster's Redis side (see the module doc).
struct Task {
    roster: std::sync::Weak<RedisRoster>,
    /// This instance's field, `node:instance`.
    mine: String,
    conn: redis::aio::ConnectionManager,
    bus: Arc<dyn Bus>,
    rx: flume::Receiver<Op>,
    every: Duration,
    max_members: usize,
    /// This instance's share: room -> user -> username (what a rewrite writes again).
    share: HashMap<String, HashMap<String, String>>,
    /// Taken from the queue, not yet applied (a failed call leaves its batch here).
    pending: VecDeque<Op>,
}

impl Task {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.pending.is_empty() {
                tokio::select! {
                    op = self.rx.recv_async() => match op {
                        Ok(op) => self.pending.push_back(op),
                        Err(_) => return,
                    },
                    _ = tick.tick() => {
                        if self.roster.strong_count() == 0 {
                            return;
                        }
                        self.sweep().await;
                        continue;
                    }
                }
            }
            while self.pending.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(op) => self.pending.push_back(op),
                    Err(_) => break,
                }
            }
            if !self.apply().await {
                // Redis did not take it: keep the batch first in line and breathe.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Applies up to a batch of pending operations; `false` if Redis did not answer.
    async fn apply(&mut self) -> bool {
        let n = self.pending.len().min(BATCH);
        let mut inv = APPLY_SCRIPT.prepare_invoke();
        inv.arg(&self.mine).arg(n);
        for op in self.pending.iter().take(n) {
            let k = match op.kind {
                Kind::Join => "j",
                Kind::Leave => "l",
                Kind::Quiet => "q",
            };
            inv.arg(k).arg(&op.room).arg(&op.user).arg(&op.name);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> =
            match tokio::time::timeout(Duration::from_secs(2), inv.invoke_async(&mut conn)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "roster update failed; retrying");
                    return false;
                }
                Err(_) => {
                    tracing::warn!("roster update timed out; retrying");
                    return false;
                }
            };
        let Some(roster) = self.roster.upgrade() else {
            self.pending.clear();
            return true;
        };
        let done: Vec<Op> = self.pending.drain(..n).collect();
        for (i, op) in done.into_iter().enumerate() {
            let changed = reply.get(2 * i).copied().unwrap_or(0) == 1;
            let count = reply.get(2 * i + 1).copied().unwrap_or(0).max(0) as usize;
            match op.kind {
                Kind::Join | Kind::Quiet => {
                    self.share
                        .entry(op.room.clone())
                        .or_default()
                        .insert(op.user.clone(), op.name.clone());
                    roster.counts.lock().insert(op.room.clone(), count);
                }
                Kind::Leave => {
                    let empty = self.share.get_mut(&op.room).is_some_and(|users| {
                        users.remove(&op.user);
                        users.is_empty()
                    });
                    if empty {
                        self.share.remove(&op.room);
                        roster.counts.lock().remove(&op.room);
                    } else {
                        roster.counts.lock().insert(op.room.clone(), count);
                    }
                }
            }
            if changed {
                self.announce(&op.room, &op.user, &op.name, op.kind == Kind::Join, count);
            }
        }
        true
    }

    /// Tells every node's members of `room` (the user's own sessions excepted).
    fn announce(&self, room: &str, user: &str, name: &str, online: bool, count: usize) {
        if !crate::presence::room_change_heard(count, online, self.max_members) {
            return;
        }
        let change = if online { "online" } else { "offline" };
        metrics::counter!(m::ROSTER_CHANGES, "change" => change).increment(1);
        self.bus.publish(Envelope::RoomEvent(Box::new(RoomEvent {
            room_id: room.to_owned(),
            frame: protocol::encode_presence(user, name, room, online, count),
            // Room members only, as on one node (a conversation's participants hear
            // `user_status` from presence instead).
            audience: None,
            except_user: Some(user.to_owned()),
            entered: Instant::now(),
        })));
    }

    async fn sweep(&mut self) {
        let mut inv = SWEEP_SCRIPT.prepare_invoke();
        inv.arg(&self.mine).arg(u8::from(!self.share.is_empty()));
        let rooms: Vec<String> = self.share.keys().cloned().collect();
        for r in &rooms {
            inv.arg(r);
        }
        let mut conn = self.conn.clone();
        type Reply = (i64, Vec<i64>, Vec<String>);
        let (lost, counts, gone): Reply =
            match tokio::time::timeout(Duration::from_secs(2), inv.invoke_async(&mut conn)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "roster sweep failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!("roster sweep timed out");
                    return;
                }
            };
        if let Some(roster) = self.roster.upgrade() {
            let mut c = roster.counts.lock();
            for (room, n) in rooms.iter().zip(&counts) {
                if let Some(v) = c.get_mut(room) {
                    *v = (*n).max(0) as usize;
                }
            }
        }
        for g in gone.chunks_exact(4) {
            let count = g[3].parse().unwrap_or(0);
            tracing::info!(room = %g[0], user = %g[1], "a dead node's user left the room");
            self.announce(&g[0], &g[1], &g[2], false, count);
        }
        if lost == 1 {
            tracing::warn!(
                rooms = self.share.len(),
                "the roster lost this node's share (Redis restarted empty?): writing it again"
            );
            metrics::counter!(m::ROSTER_REWRITES).increment(1);
            for (room, users) in &self.share {
                for (user, name) in users {
                    self.pending.push_back(Op {
                        kind: Kind::Quiet,
                        room: room.clone(),
                        user: user.clone(),
                        name: name.clone(),
                    });
                }
            }
        }
    }
}
