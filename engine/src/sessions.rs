//! This node's sessions: user -> the outboxes of their open connections, the per-user
//! connection limit, a count, and close-all at shutdown. It answers "where do I push a
//! frame for this user on this node"; whether a user is online anywhere is
//! [`crate::presence`]'s question, not this one.
//!
//! Sixteen `parking_lot::Mutex<HashMap>` stripes by user: conversation fan-out looks up
//! each participant's sessions from the shard tasks, and striping keeps that from
//! meeting a connect or disconnect on the same lock. A lock is held for one map
//! operation only, never across an `.await`, and never while pushing into an outbox
//! (the sessions are cloned out first).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::disconnect::Disconnect;
use crate::ids::{ConnId, room_hash};
use crate::metrics as m;
use crate::outbox::{Outbox, Push};

/// The user already holds the maximum number of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection limit reached")]
pub struct AtLimit;

/// One user's open sessions on this node.
pub type UserSessions = SmallVec<[(ConnId, Arc<Outbox>); 2]>;

const STRIPES: usize = 16;

/// See the module doc.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    stripes: [Mutex<HashMap<String, UserSessions>>; STRIPES],
    /// Open sessions, kept beside the map so the count is one atomic read.
    open: AtomicUsize,
}

impl SessionRegistry {
    fn stripe(&self, user_id: &str) -> &Mutex<HashMap<String, UserSessions>> {
        &self.stripes[(room_hash(user_id) % STRIPES as u64) as usize]
    }

    /// Registers a session for `user_id` unless the user already has `max` here.
    /// `Ok(true)` when this is the user's first session on this node.
    pub fn open(
        &self,
        user_id: &str,
        max: usize,
        conn: ConnId,
        outbox: Arc<Outbox>,
    ) -> Result<bool, AtLimit> {
        let mut users = self.stripe(user_id).lock();
        let first = match users.get_mut(user_id) {
            Some(s) if s.len() >= max => return Err(AtLimit),
            Some(s) => {
                s.push((conn, outbox));
                false
            }
            None => {
                users.insert(user_id.to_owned(), smallvec::smallvec![(conn, outbox)]);
                true
            }
        };
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(first)
    }

    /// Unregisters a session; `true` when it was the user's last one on this node.
    pub fn close(&self, user_id: &str, conn: ConnId) -> bool {
        let mut users = self.stripe(user_id).lock();
        let Some(s) = users.get_mut(user_id) else {
            return false;
        };
        let before = s.len();
        s.retain(|(c, _)| *c != conn);
        if s.len() < before {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        if s.is_empty() {
            users.remove(user_id);
            before > 0
        } else {
            false
        }
    }

    /// A snapshot of `user_id`'s open sessions here.
    pub fn sessions_of(&self, user_id: &str) -> UserSessions {
        self.stripe(user_id)
            .lock()
            .get(user_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `user_id` has a session on this node.
    pub fn has(&self, user_id: &str) -> bool {
        self.stripe(user_id).lock().contains_key(user_id)
    }

    /// Pushes `frame` into every session of `user_id` here; returns how many got it.
    pub fn push_to_user(&self, user_id: &str, frame: &Bytes, entered: Instant) -> usize {
        let sessions = self.sessions_of(user_id);
        for (_, outbox) in &sessions {
            if outbox.push(frame.clone(), entered) == Push::Overflow {
                metrics::counter!(m::SLOW_CONSUMERS).increment(1);
            }
        }
        sessions.len()
    }

    /// Open sessions on this node.
    pub fn len(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every open session to close; returns how many were asked.
    pub fn close_all(&self, reason: Disconnect) -> usize {
        let outboxes: Vec<Arc<Outbox>> = self
            .stripes
            .iter()
            .flat_map(|s| {
                s.lock()
                    .values()
                    .flat_map(|v| v.iter().map(|(_, o)| o.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        outboxes.iter().filter(|o| o.close(reason)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sessions_and_enforces_the_limit() {
        let r = SessionRegistry::default();
        let o = || Arc::new(Outbox::new(1024));
        assert_eq!(r.open("a", 2, 1, o()), Ok(true));
        assert_eq!(r.open("a", 2, 2, o()), Ok(false));
        assert_eq!(r.open("a", 2, 3, o()), Err(AtLimit));
        assert_eq!(r.len(), 2);
        assert!(r.has("a"));
        assert!(!r.close("a", 1));
        assert_eq!(r.sessions_of("a")[0].0, 2);
        assert!(r.close("a", 2));
        assert!(!r.has("a"));
        assert!(!r.close("a", 2));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn pushes_to_every_session_of_a_user_and_closes_all() {
        let r = SessionRegistry::default();
        let (a1, a2, b) = (
            Arc::new(Outbox::new(1024)),
            Arc::new(Outbox::new(1024)),
            Arc::new(Outbox::new(1024)),
        );
        r.open("a", 8, 1, a1.clone()).ok();
        r.open("a", 8, 2, a2.clone()).ok();
        r.open("b", 8, 3, b.clone()).ok();
        let n = r.push_to_user("a", &Bytes::from_static(b"x"), Instant::now());
        assert_eq!(n, 2);
        assert_eq!(a1.queued_bytes(), 1);
        assert_eq!(a2.queued_bytes(), 1);
        assert_eq!(b.queued_bytes(), 0);
        assert_eq!(r.close_all(Disconnect::SHUTDOWN), 3);
    }
}
