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
use governor::{DefaultKeyedRateLimiter, Quota as GcraQuota, RateLimiter};

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
fn quota(max: u32, window: Duration) -> GcraQuota {
    let period = window
        .checked_div(max.max(1))
        .unwrap_or(window)
        .max(Duration::from_nanos(1));
    GcraQuota::with_period(period)
        .unwrap_or(GcraQuota::per_second(nz(max)))
        .allow_burst(nz(max))
}

/// A budget's state as a client may see it (seed 004's `getRemainingQuota`, the REST
/// `RateLimit-*` headers, the socket's `quota` frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Events allowed per window.
    pub limit: u32,
    /// Events still allowed now.
    pub remaining: u32,
    /// The window, in ms.
    pub window_ms: u64,
    /// Ms until the allowance grows again (the oldest counted event leaves the window,
    /// or the bucket gains a token); 0 when nothing is counted.
    pub reset_ms: u64,
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

    /// The key's allowance at `now`, without taking from it.
    fn peek_at(&self, key: &str, now: Instant) -> Quota {
        let map = self.stripe(key).lock();
        let live: Vec<Instant> = map
            .get(key)
            .map(|log| {
                log.iter()
                    .copied()
                    .filter(|t| now.saturating_duration_since(*t) < self.window)
                    .collect()
            })
            .unwrap_or_default();
        drop(map);
        let reset_ms = live.first().map_or(0, |oldest| {
            let left = self
                .window
                .saturating_sub(now.saturating_duration_since(*oldest));
            (left.as_millis() as u64).max(1)
        });
        Quota {
            limit: self.max as u32,
            remaining: self.max.saturating_sub(live.len()) as u32,
            window_ms: self.window.as_millis() as u64,
            reset_ms,
        }
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

/// The limiter behind a [`Budget`]: governor's keyed GCRA, telling the remaining
/// burst on every admission.
type InformedLimiter = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    governor::middleware::StateInformationMiddleware,
>;

/// A per-key budget of `limit` events per `window`, a burst of `limit` refilled
/// steadily (governor's GCRA: one word of state per key, so budgets of hundreds per
/// minute cost no more than small ones). The REST routes' per-user budgets and the
/// pre-key fetches per requester and partner. A `limit` of 0 turns it off.
pub struct Budget {
    limiter: Option<InformedLimiter>,
    limit: u32,
    window: Duration,
    clock: DefaultClock,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Budget {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limiter: (limit > 0).then(|| {
                RateLimiter::keyed(quota(limit, window))
                    .with_middleware::<governor::middleware::StateInformationMiddleware>()
            }),
            limit,
            window,
            clock: DefaultClock::default(),
        }
    }

    /// Whether the budget limits anything.
    pub fn enabled(&self) -> bool {
        self.limiter.is_some()
    }

    /// Takes one event from `key`'s budget: `Ok(Some(quota))` after it (its `reset_ms`
    /// is at most one refill interval), `Ok(None)` when the budget is off, `Err(quota)`
    /// with nothing left and `reset_ms` the wait until one event is allowed.
    pub fn check(&self, key: &str) -> Result<Option<Quota>, Quota> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        let window_ms = self.window.as_millis() as u64;
        let interval_ms = (window_ms / u64::from(self.limit.max(1))).max(1);
        match limiter.check_key(&key.to_owned()) {
            Ok(state) => Ok(Some(Quota {
                limit: self.limit,
                remaining: state.remaining_burst_capacity(),
                window_ms,
                reset_ms: interval_ms,
            })),
            Err(not_until) => Err(Quota {
                limit: self.limit,
                remaining: 0,
                window_ms,
                reset_ms: not_until
                    .wait_time_from(self.clock.now())
                    .as_millis()
                    .max(1) as u64,
            }),
        }
    }

    /// Forgets keys whose budget is full again.
    pub fn prune(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
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
            typing: RateLimiter::keyed(GcraQuota::per_second(nz(cfg.typing_per_sec))),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one message from `user_id`'s allowance (at most `max` in any window);
    /// `Err(ms)` says how long until the oldest one leaves the window.
    pub fn check_message(&self, user_id: &str) -> Result<(), u64> {
        self.messages.check_at(user_id, Instant::now()).map(|_| ())
    }

    /// `user_id`'s message allowance now, without taking from it (this node's log).
    pub fn message_quota(&self, user_id: &str) -> Quota {
        self.messages.peek_at(user_id, Instant::now())
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
        // Peeking takes nothing and tells the allowance and when it grows.
        let full = log.peek_at("v", t0 + Duration::from_secs(11));
        assert_eq!(
            (full.remaining, full.reset_ms),
            (0, 2000),
            "3 s + 10 s - 11 s"
        );
        let q = log.peek_at("v", t0 + Duration::from_secs(14));
        assert_eq!((q.limit, q.remaining, q.window_ms), (2, 1, 10_000));
        assert_eq!(
            q.reset_ms, 6000,
            "the send at 10 s leaves the window at 20 s"
        );
        assert_eq!(log.peek_at("v", t0 + Duration::from_secs(14)), q);
        let fresh = log.peek_at("nobody", t0);
        assert_eq!((fresh.remaining, fresh.reset_ms), (2, 0));
        log.prune_at(t0 + Duration::from_secs(30));
        assert_eq!(log.len(), 0, "idle keys are forgotten");
    }

    #[test]
    fn a_budget_tells_what_is_left_and_how_long_to_wait() {
        let b = Budget::new(3, Duration::from_secs(60));
        let left: Vec<u32> = (0..3)
            .map(|_| b.check("u").expect("within").expect("on").remaining)
            .collect();
        assert_eq!(left, [2, 1, 0]);
        let refused = b.check("u").expect_err("the fourth of three");
        assert_eq!((refused.limit, refused.remaining), (3, 0));
        assert!(
            refused.reset_ms > 19_000 && refused.reset_ms <= 20_000,
            "one refill interval (60 s / 3): {refused:?}"
        );
        assert!(b.check("v").is_ok(), "keys are separate");
        assert_eq!(b.tracked_keys(), 2);
        let off = Budget::new(0, Duration::from_secs(60));
        assert!(!off.enabled());
        assert_eq!(off.check("u"), Ok(None));
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
