//! One node's presence: a user is online while this node holds a session of theirs.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{Presence, PresenceChange, UserStatus};
use crate::clock::now_unix_ms;

/// Changes queued for the presence task before new ones are dropped.
const CHANGES_QUEUE: usize = 65_536;
/// Last-seen times kept for users who went offline; the oldest are forgotten beyond it.
const LAST_SEEN_KEEP: usize = 100_000;

/// See the module doc.
#[derive(Debug)]
pub struct MemoryPresence {
    /// `user -> Some(last seen ms)` when offline, `None` while online. One lock: it is
    /// taken once per first-connect and last-disconnect of a user, and per status read;
    /// never across an `.await`.
    users: Mutex<HashMap<String, Option<u64>>>,
    tx: flume::Sender<PresenceChange>,
    rx: flume::Receiver<PresenceChange>,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        let (tx, rx) = flume::bounded(CHANGES_QUEUE);
        Self {
            users: Mutex::new(HashMap::new()),
            tx,
            rx,
        }
    }
}

impl MemoryPresence {
    fn emit(&self, user_id: &str, online: bool, at_ms: u64) {
        super::emit(&self.tx, user_id, online, at_ms);
    }
}

impl Presence for MemoryPresence {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn node_user_connected(&self, user_id: &str) {
        let was_online = {
            let mut users = self.users.lock();
            matches!(users.insert(user_id.to_owned(), None), Some(None))
        };
        if !was_online {
            self.emit(user_id, true, now_unix_ms());
        }
    }

    fn node_user_disconnected(&self, user_id: &str) {
        let now = now_unix_ms();
        {
            let mut users = self.users.lock();
            if users.len() >= LAST_SEEN_KEEP && !users.contains_key(user_id) {
                // Forget offline users' last-seen times rather than grow without bound.
                users.retain(|_, seen| seen.is_none());
            }
            users.insert(user_id.to_owned(), Some(now));
        }
        self.emit(user_id, false, now);
    }

    fn status(&self, user_id: &str) -> UserStatus {
        match self.users.lock().get(user_id) {
            Some(None) => UserStatus {
                online: true,
                last_seen_ms: None,
            },
            Some(Some(ms)) => UserStatus {
                online: false,
                last_seen_ms: Some(*ms),
            },
            None => UserStatus::default(),
        }
    }

    fn changes(&self) -> flume::Receiver<PresenceChange> {
        self.rx.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_online_offline_and_last_seen_once_per_transition() {
        let p = MemoryPresence::default();
        let changes = p.changes();
        assert_eq!(p.status("a"), UserStatus::default());
        p.node_user_connected("a");
        assert!(p.is_online("a"));
        p.node_user_disconnected("a");
        let s = p.status("a");
        assert!(!s.online);
        assert!(s.last_seen_ms.is_some());
        let got: Vec<(String, bool)> = changes.try_iter().map(|c| (c.user_id, c.online)).collect();
        assert_eq!(got, vec![("a".into(), true), ("a".into(), false)]);
    }
}
