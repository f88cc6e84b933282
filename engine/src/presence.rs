//! In-process presence: which users are online (have at least one open connection on
//! this node) and how many connections each has. Room-level presence (who is in a room,
//! `presence` events, member counts) lives with the room in its shard; this is the
//! node-wide view used for the per-user connection limit and status queries.
//!
//! It also holds each online user's sessions (connection id and outbox), which is how
//! conversation events reach every session of a participant. Sixteen
//! `parking_lot::Mutex<HashMap>` stripes by user; a lock is held for a map operation
//! only, never across an `.await`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::engine::stable_hash;
use crate::outbox::Outbox;
use crate::shard::ConnId;

/// The user already holds the maximum number of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection limit reached")]
pub struct AtLimit;

/// One user's open sessions on this node.
pub type Sessions = SmallVec<[(ConnId, Arc<Outbox>); 2]>;

const STRIPES: usize = 16;

/// Online users and their open sessions, striped by user so that conversation fan-out
/// (which looks up each participant's sessions) rarely meets a connect on the same lock.
#[derive(Debug, Default)]
pub struct Presence {
    stripes: [Mutex<HashMap<String, Sessions>>; STRIPES],
}

impl Presence {
    fn stripe(&self, user_id: &str) -> &Mutex<HashMap<String, Sessions>> {
        &self.stripes[(stable_hash(user_id) % STRIPES as u64) as usize]
    }

    /// Registers a session for `user_id` unless the user already has `max`.
    /// `Ok(true)` when this made the user online.
    pub fn connect(
        &self,
        user_id: &str,
        max: usize,
        conn: ConnId,
        outbox: Arc<Outbox>,
    ) -> Result<bool, AtLimit> {
        let mut users = self.stripe(user_id).lock();
        match users.get_mut(user_id) {
            Some(s) if s.len() >= max => Err(AtLimit),
            Some(s) => {
                s.push((conn, outbox));
                Ok(false)
            }
            None => {
                users.insert(user_id.to_owned(), smallvec::smallvec![(conn, outbox)]);
                Ok(true)
            }
        }
    }

    /// Unregisters a session; `true` when the user went offline.
    pub fn disconnect(&self, user_id: &str, conn: ConnId) -> bool {
        let mut users = self.stripe(user_id).lock();
        let Some(s) = users.get_mut(user_id) else {
            return false;
        };
        s.retain(|(c, _)| *c != conn);
        if s.is_empty() {
            users.remove(user_id);
            true
        } else {
            false
        }
    }

    pub fn is_online(&self, user_id: &str) -> bool {
        self.stripe(user_id).lock().contains_key(user_id)
    }

    /// Sessions `user_id` has open.
    pub fn connections_of(&self, user_id: &str) -> u32 {
        self.stripe(user_id)
            .lock()
            .get(user_id)
            .map_or(0, |s| s.len() as u32)
    }

    /// A snapshot of `user_id`'s open sessions (for user-addressed delivery).
    pub fn sessions_of(&self, user_id: &str) -> Sessions {
        self.stripe(user_id)
            .lock()
            .get(user_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn online_users(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_connections_and_enforces_the_limit() {
        let p = Presence::default();
        let o = || Arc::new(Outbox::new(1024));
        assert_eq!(p.connect("a", 2, 1, o()), Ok(true));
        assert_eq!(p.connect("a", 2, 2, o()), Ok(false));
        assert_eq!(p.connect("a", 2, 3, o()), Err(AtLimit));
        assert!(p.is_online("a"));
        assert_eq!(p.sessions_of("a").len(), 2);
        assert!(!p.disconnect("a", 1));
        assert_eq!(p.sessions_of("a")[0].0, 2);
        assert!(p.disconnect("a", 2));
        assert!(!p.is_online("a"));
        assert!(!p.disconnect("a", 2));
    }
}
