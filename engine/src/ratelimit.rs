//! Rate limits: messages per user (shared by all of a user's connections), connection
//! attempts per client IP, and typing signals per user.
//!
//! Messages follow the seed's wording exactly: at most `RATE_LIMIT_MAX_MESSAGES` in
//! *any* `RATE_LIMIT_WINDOW_MS`. That is a sliding log (each user's last `max`
//! admission times), not governor's GCRA: a token bucket with a burst of `max` admits
//! the burst and then one every `window / max`, nearly twice `max` in the first window.
//! Connects and typing stay on governor, where a steady rate is the intent.
//!
//! Keyed limiters never forget a key by themselves, so [`RateLimits::prune`] runs on a
//! timer (the server calls it every minute) to keep memory bounded by the number of
//! recently active users and IPs.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

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

/// At most `max` events per key in any `window`: each key's admission times within
/// the window, oldest first. Striped mutexes (a user's check takes one stripe briefly;
/// the hot path is one lock, a few comparisons and a push).
struct SlidingLog {
    max: usize,
    window: Duration,
    stripes: Vec<parking_lot::Mutex<HashMap<String, VecDeque<Instant>>>>,
}

const STRIPES: usize = 64;

impl SlidingLog {
    fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1) as usize,
            window,
            stripes: (0..STRIPES).map(|_| Default::default()).collect(),
        }
    }

    fn stripe(&self, key: &str) -> &parking_lot::Mutex<HashMap<String, VecDeque<Instant>>> {
        let h = crate::ids::room_hash(key) as usize;
        &self.stripes[h % STRIPES]
    }

    /// Admits one event at `now`: `Ok(left in the window)` or `Err(ms until one is)`.
    fn check_at(&self, key: &str, now: Instant) -> Result<usize, u64> {
        let mut map = self.stripe(key).lock();
        let log = match map.get_mut(key) {
            Some(log) => log,
            None => map
                .entry(key.to_owned())
                .or_insert_with(|| VecDeque::with_capacity(self.max.min(64))),
        };
        while log
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            log.pop_front();
        }
        if log.len() >= self.max {
            let oldest = log.front().copied().unwrap_or(now);
            let wait = self
                .window
                .saturating_sub(now.saturating_duration_since(oldest));
            return Err((wait.as_millis() as u64).max(1));
        }
        log.push_back(now);
        Ok(self.max - log.len())
    }

    /// Forgets keys with nothing left in the window.
    fn prune_at(&self, now: Instant) {
        for stripe in &self.stripes {
            stripe.lock().retain(|_, log| {
                log.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < self.window)
            });
        }
    }

    fn len(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().len()).sum()
    }
}

/// The server-wide keyed limiters.
pub struct RateLimits {
    messages: SlidingLog,
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
            messages: SlidingLog::new(cfg.max_messages, cfg.window),
            connects: RateLimiter::keyed(quota(
                cfg.connects_per_ip_per_sec,
                Duration::from_secs(1),
            )),
            typing: RateLimiter::keyed(Quota::per_second(nz(cfg.typing_per_sec))),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one message from `user_id`'s allowance (at most `max` in any window);
    /// `Err(ms)` says how long until the oldest one leaves the window.
    pub fn check_message(&self, user_id: &str) -> Result<(), u64> {
        self.messages.check_at(user_id, Instant::now()).map(|_| ())
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
        self.messages.prune_at(Instant::now());
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
    fn message_limit_allows_a_burst_then_refuses_until_the_oldest_leaves_the_window() {
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
        assert!(wait > 59_000 && wait <= 60_000, "the window: {wait}");
        assert!(limits.check_message("bob").is_ok(), "users are separate");
    }

    /// The seed's rule: never more than `max` in any window, however the sends are
    /// spread (a token bucket with a burst of 30 admits about 60 in the first minute).
    #[test]
    fn at_most_max_messages_in_any_window() {
        let log = SlidingLog::new(30, Duration::from_secs(60));
        let t0 = Instant::now();
        let mut admitted = Vec::new();
        // A send every 500 ms for five minutes.
        for i in 0..600u64 {
            let t = t0 + Duration::from_millis(500 * i);
            if log.check_at("u", t).is_ok() {
                admitted.push(t);
            }
        }
        for (k, start) in admitted.iter().enumerate() {
            let in_window = admitted[k..]
                .iter()
                .take_while(|t| t.duration_since(*start) < Duration::from_secs(60))
                .count();
            assert!(in_window <= 30, "{in_window} in the window from send {k}");
        }
        let first_minute = admitted
            .iter()
            .filter(|t| t.duration_since(t0) < Duration::from_secs(60))
            .count();
        assert_eq!(first_minute, 30);
        // And the allowance comes back as the window slides: 5 minutes give 5 x 30.
        assert_eq!(admitted.len(), 150);
        // The remaining count and the wait are exact.
        let log = SlidingLog::new(2, Duration::from_secs(10));
        assert_eq!(log.check_at("v", t0), Ok(1));
        assert_eq!(log.check_at("v", t0 + Duration::from_secs(3)), Ok(0));
        assert_eq!(log.check_at("v", t0 + Duration::from_secs(4)), Err(6000));
        assert_eq!(log.check_at("v", t0 + Duration::from_secs(10)), Ok(0));
        log.prune_at(t0 + Duration::from_secs(30));
        assert_eq!(log.len(), 0, "idle keys are forgotten");
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
