//! Cluster-wide per-user limits, kept in Redis so a user with sockets on three nodes
//! has one budget: the message rate, the typing rate and the number of open
//! connections. Every check is one script call on the node's command connection and
//! answers `None` when Redis does not answer in time; the caller then falls back to
//! its node-local limit (counted in `roomcast_rate_limit_fallbacks_total`), so a Redis
//! outage degrades a limit to per node instead of refusing users.
//!
//! **Rates** are sliding logs (`rc:rate:{user}`, `rc:typing:{user}`: ZSETs of send
//! times from Redis `TIME`): at most `max` events in any `window`.
//!
//! **Connections** are counted per node instance in a hash `rc:conns:{user}`
//! (field `node:instance`, value the user's sessions there). An open adds one only if
//! the total stays within the limit; a close takes one away. Fields of instances that no
//! longer hold their node id (dead or restarted nodes) are dropped by the next open, so
//! a crashed node's connections stop counting once its id claim has expired (one lease
//! TTL). A close that Redis did not take is remembered and the node writes its own
//! count for that user again (an absolute value, so a retry cannot count twice).

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use super::Cluster;
use crate::ratelimit::Quota;

/// A sliding log: at most `max` events per `window` ms. Returns 0 (taken) or how many
/// ms until one frees up.
const RATE: &str = r#"
local key, max, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= max then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', key, now, now .. ':' .. ARGV[3])
redis.call('PEXPIRE', key, window)
return 0
"#;

/// A sliding log's allowance without taking from it: `{remaining, ms until it grows}`
/// (0 ms when nothing is counted).
const RATE_PEEK: &str = r#"
local key, max, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local n = redis.call('ZCARD', key)
local reset = 0
if n > 0 then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  reset = math.max(1, tonumber(oldest[2]) + window - now)
end
return {math.max(0, max - n), reset}
"#;

/// Opens one connection for a user if the cluster-wide total stays within `max`:
/// returns the new total, or -1 at the limit. Drops fields of dead instances.
const CONN_OPEN: &str = r#"
local key, mine, max = KEYS[1], ARGV[1], tonumber(ARGV[2])
local all = redis.call('HGETALL', key)
local total = 0
for i = 1, #all, 2 do
  local field, count = all[i], tonumber(all[i + 1])
  local node, inst = string.match(field, '^(%d+):(.+)$')
  if field ~= mine and (node == nil or redis.call('GET', 'rc:nodeid:' .. node) ~= inst) then
    redis.call('HDEL', key, field)
  else
    total = total + count
  end
end
if total >= max then return -1 end
redis.call('HINCRBY', key, mine, 1)
return total + 1
"#;

/// Closes one connection of a user on this instance.
const CONN_CLOSE: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"#;

/// Sets this instance's count for a user (0 removes the field).
const CONN_SET: &str = r#"
local n = tonumber(ARGV[2])
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], n) end
return n
"#;

// Built once: `Script::new` hashes the source (SHA-1) and the rate check runs per message.
static RATE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RATE));
static RATE_PEEK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RATE_PEEK));
static CONN_OPEN_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CONN_OPEN));
static CONN_CLOSE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(CONN_CLOSE));
static CONN_SET_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CONN_SET));

/// The outcome of a cluster-wide connection check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnCheck {
    /// Counted; the user's total across the cluster now.
    Admitted(u64),
    /// The user already holds the maximum.
    AtLimit,
    /// Redis did not answer: not counted, use the node's own limit.
    Unknown,
}

impl Cluster {
    pub(crate) fn mine(&self) -> String {
        format!("{}:{}", self.node, self.instance)
    }

    async fn rate(&self, key: String, max: u32, window: Duration) -> Option<Result<(), u64>> {
        let mut inv = RATE_SCRIPT.prepare_invoke();
        inv.key(key)
            .arg(max)
            .arg(window.as_millis() as u64)
            .arg(crate::bus::redis::rand_u64());
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<u64>(&mut conn)).await {
            Ok(Ok(0)) => Some(Ok(())),
            Ok(Ok(wait)) => Some(Err(wait)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster rate limit unavailable");
                None
            }
            Err(_) => None,
        }
    }

    /// Takes one message from `user_id`'s cluster-wide allowance (`max` per `window`,
    /// as a sliding window); `Err(ms)` says how long to wait.
    pub async fn check_message_rate(
        &self,
        user_id: &str,
        max: u32,
        window: Duration,
    ) -> Option<Result<(), u64>> {
        self.rate(format!("rc:rate:{user_id}"), max, window).await
    }

    /// `user_id`'s cluster-wide message allowance, without taking from it; `None` when
    /// Redis does not answer in time.
    pub async fn message_quota(&self, user_id: &str, max: u32, window: Duration) -> Option<Quota> {
        let mut inv = RATE_PEEK_SCRIPT.prepare_invoke();
        inv.key(format!("rc:rate:{user_id}"))
            .arg(max)
            .arg(window.as_millis() as u64);
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<(u32, u64)>(&mut conn))
            .await
        {
            Ok(Ok((remaining, reset_ms))) => Some(Quota {
                limit: max,
                remaining,
                window_ms: window.as_millis() as u64,
                reset_ms,
            }),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster rate quota unavailable");
                None
            }
            Err(_) => None,
        }
    }

    /// Takes one typing signal from `user_id`'s cluster-wide allowance (`per_sec` in
    /// any second); `false` when over it.
    pub async fn check_typing(&self, user_id: &str, per_sec: u32) -> Option<bool> {
        self.rate(
            format!("rc:typing:{user_id}"),
            per_sec,
            Duration::from_secs(1),
        )
        .await
        .map(|r| r.is_ok())
    }

    /// Counts one more connection for `user_id` if the cluster-wide total stays within
    /// `max`.
    pub async fn open_connection(&self, user_id: &str, max: usize) -> ConnCheck {
        let mut inv = CONN_OPEN_SCRIPT.prepare_invoke();
        inv.key(format!("rc:conns:{user_id}"))
            .arg(self.mine())
            .arg(max);
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(n)) if n < 0 => ConnCheck::AtLimit,
            Ok(Ok(n)) => ConnCheck::Admitted(n as u64),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster connection count unavailable");
                ConnCheck::Unknown
            }
            Err(_) => ConnCheck::Unknown,
        }
    }

    /// Counts one connection of `user_id` on this node as closed. When Redis does not
    /// take it, the user is remembered for [`Cluster::resync_connections`].
    pub async fn close_connection(&self, user_id: &str) {
        let mut inv = CONN_CLOSE_SCRIPT.prepare_invoke();
        inv.key(format!("rc:conns:{user_id}")).arg(self.mine());
        let mut conn = self.conn.clone();
        let ok = matches!(
            tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<i64>(&mut conn)).await,
            Ok(Ok(_))
        );
        if !ok {
            self.conn_resync.lock().insert(user_id.to_owned());
        }
    }

    /// Whether some users' connection counts wait to be written again.
    pub fn connections_to_resync(&self) -> bool {
        !self.conn_resync.lock().is_empty()
    }

    /// Writes this node's own connection count (`local(user)`) for every user whose
    /// close Redis did not take; those that fail again stay for the next call.
    pub async fn resync_connections(&self, local: impl Fn(&str) -> usize) {
        let users: HashSet<String> = std::mem::take(&mut *self.conn_resync.lock());
        let mut failed = Vec::new();
        for user in users {
            let mut inv = CONN_SET_SCRIPT.prepare_invoke();
            inv.key(format!("rc:conns:{user}"))
                .arg(self.mine())
                .arg(local(&user));
            let mut conn = self.conn.clone();
            match tokio::time::timeout(self.cfg.timeout, inv.invoke_async::<i64>(&mut conn)).await {
                Ok(Ok(_)) => {}
                _ => failed.push(user),
            }
        }
        if !failed.is_empty() {
            self.conn_resync.lock().extend(failed);
        }
    }
}
