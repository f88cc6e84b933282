//! In-process presence: which users are online (have at least one open connection on
//! this node) and how many connections each has. Room-level presence (who is in a room,
//! `presence` events, member counts) lives with the room in its shard; this is the
//! node-wide view used for the per-user connection limit and status queries.
//!
//! A `parking_lot::Mutex<HashMap>`: touched on connect and disconnect only, never on the
//! message path, and never held across an `.await`.

use std::collections::HashMap;

use parking_lot::Mutex;

/// The user already holds the maximum number of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection limit reached")]
pub struct AtLimit;

/// Online users and their connection counts.
#[derive(Debug, Default)]
pub struct Presence {
    users: Mutex<HashMap<String, u32>>,
}

impl Presence {
    /// Registers a connection for `user_id` unless the user already has `max`.
    /// `Ok(true)` when this made the user online.
    pub fn connect(&self, user_id: &str, max: usize) -> Result<bool, AtLimit> {
        let mut users = self.users.lock();
        match users.get_mut(user_id) {
            Some(n) if *n as usize >= max => Err(AtLimit),
            Some(n) => {
                *n += 1;
                Ok(false)
            }
            None => {
                users.insert(user_id.to_owned(), 1);
                Ok(true)
            }
        }
    }

    /// Unregisters a connection; `true` when the user went offline.
    pub fn disconnect(&self, user_id: &str) -> bool {
        let mut users = self.users.lock();
        match users.get_mut(user_id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                users.remove(user_id);
                true
            }
            None => false,
        }
    }

    pub fn is_online(&self, user_id: &str) -> bool {
        self.users.lock().contains_key(user_id)
    }

    /// Connections `user_id` has open.
    pub fn connections_of(&self, user_id: &str) -> u32 {
        self.users.lock().get(user_id).copied().unwrap_or(0)
    }

    pub fn online_users(&self) -> usize {
        self.users.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_connections_and_enforces_the_limit() {
        let p = Presence::default();
        assert_eq!(p.connect("a", 2), Ok(true));
        assert_eq!(p.connect("a", 2), Ok(false));
        assert_eq!(p.connect("a", 2), Err(AtLimit));
        assert!(p.is_online("a"));
        assert!(!p.disconnect("a"));
        assert!(p.disconnect("a"));
        assert!(!p.is_online("a"));
        assert!(!p.disconnect("a"));
    }
}
