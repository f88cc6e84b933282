//! Rate limits (governor, GCRA): messages per user (shared by all of a user's
//! connections), connection attempts per client IP, and typing signals per user.
//!
//! Keyed limiters never forget a key by themselves, so [`RateLimits::prune`] runs on a
//! timer (the server calls it every minute) to keep memory bounded by the number of
//! recently active users and IPs.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The configured limits.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// `RATE_LIMIT_WINDOW_MS`.
    pub window: Duration,
    /// `RATE_LIMIT_MAX_MESSAGES` per window (also the burst).
    pub max_messages: u32,
    /// `ROOMCAST_CONNECT_RATE_PER_IP`: connection attempts per second per IP (also the burst).
    pub connects_per_ip_per_sec: u32,
    /// `ROOMCAST_TYPING_RATE_PER_SEC`: typing signals per second per user.
    pub typing_per_sec: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(60_000),
            max_messages: 30,
            connects_per_ip_per_sec: 20,
            typing_per_sec: 4,
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

/// `max` events per `window`, with a burst of `max`: a fresh client may send `max`
/// at once, then one every `window / max`.
fn quota(max: u32, window: Duration) -> Quota {
    let period = window
        .checked_div(max.max(1))
        .unwrap_or(window)
        .max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or(Quota::per_second(nz(max)))
        .allow_burst(nz(max))
}

/// The server-wide keyed limiters.
pub struct RateLimits {
    messages: DefaultKeyedRateLimiter<String>,
    connects: DefaultKeyedRateLimiter<IpAddr>,
    /// Typing signals per user, over the socket and REST alike.
    typing: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl RateLimits {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        Self {
            messages: RateLimiter::keyed(quota(cfg.max_messages, cfg.window)),
            connects: RateLimiter::keyed(quota(
                cfg.connects_per_ip_per_sec,
                Duration::from_secs(1),
            )),
            typing: RateLimiter::keyed(Quota::per_second(nz(cfg.typing_per_sec))),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one message from `user_id`'s allowance; `Err(ms)` says how long to wait.
    pub fn check_message(&self, user_id: &str) -> Result<(), u64> {
        // Keyed by an owned String: governor's keyed store needs `K: Clone + Hash`. The
        // allocation is per message, dwarfed by the message's own.
        self.messages
            .check_key(&user_id.to_owned())
            .map_err(|not_until| {
                not_until
                    .wait_time_from(self.clock.now())
                    .as_millis()
                    .max(1) as u64
            })
    }

    /// Takes one connection attempt from `ip`'s allowance.
    pub fn check_connect(&self, ip: IpAddr) -> Result<(), u64> {
        self.connects.check_key(&ip).map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .as_millis()
                .max(1) as u64
        })
    }

    /// Takes one typing signal from `user_id`'s allowance (all of the user's
    /// connections and REST share it); false when over it.
    pub fn allow_typing(&self, user_id: &str) -> bool {
        self.typing.check_key(&user_id.to_owned()).is_ok()
    }

    /// Forgets keys whose allowance is full again (so they behave as new) and returns
    /// the memory.
    pub fn prune(&self) {
        self.messages.retain_recent();
        self.messages.shrink_to_fit();
        self.connects.retain_recent();
        self.connects.shrink_to_fit();
        self.typing.retain_recent();
        self.typing.shrink_to_fit();
    }

    /// Keys currently tracked (messages, connects).
    pub fn tracked_keys(&self) -> (usize, usize) {
        (self.messages.len(), self.connects.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_limit_allows_a_burst_then_refuses_with_a_delay() {
        let limits = RateLimits::new(&RateLimitConfig {
            max_messages: 3,
            ..Default::default()
        });
        for _ in 0..3 {
            assert!(limits.check_message("alice").is_ok());
        }
        let wait = limits
            .check_message("alice")
            .expect_err("fourth in a burst of three");
        assert!(wait > 0 && wait <= 20_000, "about window/max: {wait}");
        assert!(limits.check_message("bob").is_ok(), "users are separate");
    }

    #[test]
    fn connect_limit_is_per_ip_and_pruning_forgets_idle_keys() {
        let limits = RateLimits::new(&RateLimitConfig {
            connects_per_ip_per_sec: 2,
            ..Default::default()
        });
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        assert!(limits.check_connect(a).is_ok());
        assert!(limits.check_connect(a).is_ok());
        assert!(limits.check_connect(a).is_err());
        assert!(limits.check_connect(b).is_ok());
        assert_eq!(limits.tracked_keys().1, 2);
        limits.prune();
        assert!(limits.tracked_keys().1 <= 2);
    }
}
