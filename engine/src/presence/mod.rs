//! Presence: whether a user is online anywhere in the cluster, when they were last seen,
//! and who hears about changes. This is not where a node's sessions live (that is
//! [`crate::sessions`]); it is the cluster-wide fact built from every node's sessions.
//!
//! What "online" means: the user holds at least one open session on at least one node
//! whose presence entry is fresh. A node tells its [`Presence`] when a user's first
//! session on it opens and when the last one closes; a cluster implementation keeps one
//! entry per (user, node) with a TTL (6 s) that the node refreshes on a heartbeat
//! (every 2 s, batched for all its users), so a node that dies takes its users offline
//! within the TTL plus one heartbeat without anyone telling it ([`RedisPresence`]). The in-memory implementation serves one
//! node: its entries are this node's sessions, so they need neither TTL nor heartbeat.
//!
//! Who emits online/offline: the implementation, once per transition of the
//! cluster-wide fact (first session anywhere, last session anywhere or TTL expiry), as a
//! [`PresenceChange`] on [`Presence::changes`]. The engine's presence task turns each
//! change into a `user_status` frame for the user's conversation partners.

mod memory;
mod redis;

pub use memory::MemoryPresence;
pub use redis::{PresenceTiming, RedisPresence};

/// Sends one transition to the engine's presence task, counted; a full queue drops it
/// (counted) rather than wait. Shared by every implementation.
pub(crate) fn emit(tx: &flume::Sender<PresenceChange>, user_id: &str, online: bool, at_ms: u64) {
    use crate::metrics as m;
    let change = if online { "online" } else { "offline" };
    metrics::counter!(m::PRESENCE_UPDATES, "change" => change).increment(1);
    let c = PresenceChange {
        user_id: user_id.to_owned(),
        online,
        at_ms,
    };
    if tx.try_send(c).is_err() {
        metrics::counter!(m::PRESENCE_UPDATES, "change" => "dropped").increment(1);
    }
}

/// Whether a user entering (`online`) or leaving a room is told to its members: only in
/// rooms of at most `max` users at their biggest around the change, `users_after`
/// being the count once it is made (see `EngineConfig::room_presence_max_members`).
/// One rule for the shard (one node) and the roster (a cluster).
pub(crate) fn room_change_heard(users_after: usize, online: bool, max: usize) -> bool {
    let size = if online { users_after } else { users_after + 1 };
    size <= max
}

/// A user's status as presence knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserStatus {
    pub online: bool,
    /// When the user was last online (Unix ms), if ever seen since this presence store
    /// started. `None` while online.
    pub last_seen_ms: Option<u64>,
}

/// A transition of a user's cluster-wide status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub user_id: String,
    pub online: bool,
    pub at_ms: u64,
}

/// See the module doc. Reads are synchronous: a cluster implementation answers them
/// from a local view kept fresh by its subscription (stale by at most its heartbeat),
/// so that a shard task may ask without waiting.
pub trait Presence: Send + Sync + 'static {
    /// A short name for logs and metrics (`memory`, `redis`).
    fn backend(&self) -> &'static str;
    /// This node opened the first session of `user_id`.
    fn node_user_connected(&self, user_id: &str);
    /// This node closed the last session of `user_id`.
    fn node_user_disconnected(&self, user_id: &str);
    fn status(&self, user_id: &str) -> UserStatus;
    fn is_online(&self, user_id: &str) -> bool {
        self.status(user_id).online
    }
    /// Every transition, in the order they happened; one receiver (the engine's presence
    /// task). Bounded: when it is full, changes are dropped and counted, never waited for.
    fn changes(&self) -> flume::Receiver<PresenceChange>;
}
