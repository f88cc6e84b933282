//! Per-user budgets of the REST routes, and the `RateLimit-*` headers that tell a
//! client what is left.
//!
//! Every authenticated route belongs to one group with its own budget per user
//! (requests per minute, `ROOMCAST_API_*_PER_MIN`, 0 = off): reads, writes, calls,
//! keys and admin. Two routes have the seed's budgets instead: `POST /messages` takes
//! from the message allowance a socket's messages share (`RATE_LIMIT_MAX_MESSAGES` per
//! `RATE_LIMIT_WINDOW_MS`, cluster-wide), and `PUT /messages/typing/{isTyping}` from
//! the typing allowance. A partner's one-time pre-keys have one more budget per
//! requester and partner (`ROOMCAST_PREKEY_FETCHES_PER_PARTNER_PER_HOUR`), so nobody
//! can drain another user's supply.
//!
//! The group budgets are per node (governor's GCRA, one word per user): behind a load
//! balancer that spreads a user over N nodes, a user gets up to N times the budget.
//! The message, typing and connection limits are the cluster-wide ones.
//!
//! Responses of a limited route carry `RateLimit-Limit`, `RateLimit-Remaining`,
//! `RateLimit-Reset` (seconds until the allowance grows again) and
//! `RateLimit-Policy` (`<limit>;w=<window seconds>`); a refusal is `429 rate_limited`
//! with `Retry-After` and `details.retryAfterMs`. The extractor that authenticates
//! ([`super::Caller`]) takes from the budget and leaves the quota in a [`QuotaSlot`]
//! that the [`rate_headers`] layer turns into headers, so a handler that knows a
//! tighter budget (the message send, the pre-key fetch) can report that one instead.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use roomcast_engine::metrics as m;
use roomcast_engine::ratelimit::{Budget, Quota};
use roomcast_engine::{ClientError, ErrorCode};

use crate::config::ApiBudgetConfig;
use crate::error::ApiError;

/// The group a route's budget comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    Reads,
    Writes,
    Calls,
    Keys,
    Admin,
}

impl Group {
    /// The `limit` label of `roomcast_rate_limited_total`.
    fn label(self) -> &'static str {
        match self {
            Group::Reads => "api_reads",
            Group::Writes => "api_writes",
            Group::Calls => "api_calls",
            Group::Keys => "api_keys",
            Group::Admin => "api_admin",
        }
    }
}

/// The group of `method template`, or `None` for the routes with the seed's own
/// budgets (the message send and typing).
pub(crate) fn group_of(method: &Method, template: &str) -> Option<Group> {
    if template.starts_with("/private/") || template.starts_with("/api/admin/") {
        return Some(Group::Admin);
    }
    if template.starts_with("/calls") || template.starts_with("/video/") {
        return Some(Group::Calls);
    }
    if template.starts_with("/keys/") {
        return Some(Group::Keys);
    }
    if (method == Method::POST && template == "/messages")
        || template.starts_with("/messages/typing/")
    {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        Some(Group::Reads)
    } else {
        Some(Group::Writes)
    }
}

/// The server's REST budgets.
#[derive(Debug)]
pub(crate) struct ApiBudgets {
    reads: Budget,
    writes: Budget,
    calls: Budget,
    keys: Budget,
    admin: Budget,
    prekeys: Budget,
}

const MINUTE: Duration = Duration::from_secs(60);

impl ApiBudgets {
    pub(crate) fn new(cfg: &ApiBudgetConfig) -> Self {
        Self {
            reads: Budget::new(cfg.reads_per_min, MINUTE),
            writes: Budget::new(cfg.writes_per_min, MINUTE),
            calls: Budget::new(cfg.calls_per_min, MINUTE),
            keys: Budget::new(cfg.keys_per_min, MINUTE),
            admin: Budget::new(cfg.admin_per_min, MINUTE),
            prekeys: Budget::new(
                cfg.prekey_fetches_per_partner_per_hour,
                Duration::from_secs(3600),
            ),
        }
    }

    fn budget(&self, group: Group) -> &Budget {
        match group {
            Group::Reads => &self.reads,
            Group::Writes => &self.writes,
            Group::Calls => &self.calls,
            Group::Keys => &self.keys,
            Group::Admin => &self.admin,
        }
    }

    /// Takes one request of `user` from `group`'s budget: the quota after it (`None`
    /// when the budget is off), or the refusal.
    pub(crate) fn take(&self, group: Group, user: &str) -> Result<Option<Quota>, Refused> {
        self.budget(group)
            .check(user)
            .map_err(|quota| refused(group.label(), user, None, quota, "request budget exceeded"))
    }

    /// Takes one of `partner`'s one-time pre-keys from `requester`'s budget for that
    /// partner.
    pub(crate) fn take_pre_key(
        &self,
        requester: &str,
        partner: &str,
    ) -> Result<Option<Quota>, Refused> {
        // A unit separator cannot occur in a user id (printable ASCII only).
        let key = format!("{requester}\u{1f}{partner}");
        self.prekeys.check(&key).map_err(|quota| {
            refused(
                "prekey_partner",
                requester,
                Some(partner),
                quota,
                "pre-key fetches for this partner exceeded",
            )
        })
    }

    /// Forgets users whose budgets are full again.
    pub(crate) fn prune(&self) {
        for b in [
            &self.reads,
            &self.writes,
            &self.calls,
            &self.keys,
            &self.admin,
            &self.prekeys,
        ] {
            b.prune();
        }
    }
}

/// A refused request: the error to answer and the quota for the headers.
#[derive(Debug)]
pub(crate) struct Refused {
    /// Boxed: an `ApiError` is large, and a refusal is the rare path.
    pub(crate) error: Box<ApiError>,
    pub(crate) quota: Quota,
}

/// Counts and logs (throttled) a refusal of `user`'s request (about `target`, for a
/// per-partner budget).
fn refused(
    limit: &'static str,
    user: &str,
    target: Option<&str>,
    quota: Quota,
    what: &str,
) -> Refused {
    metrics::counter!(m::RATE_LIMITED, "limit" => limit).increment(1);
    if let Some(suppressed) = roomcast_engine::log_throttle::RATE_LIMITS.admit() {
        tracing::warn!(
            user_id = %user,
            target,
            limit,
            count = quota.limit,
            window_ms = quota.window_ms,
            retry_after_ms = quota.reset_ms,
            suppressed,
            "rate limit exceeded"
        );
    }
    Refused {
        error: Box::new(ApiError::Client(
            ClientError::new(
                ErrorCode::RateLimited,
                format!(
                    "{what}: {} per {} s; retry later",
                    quota.limit,
                    quota.window_ms / 1000
                ),
            )
            .retry_after(quota.reset_ms),
        )),
        quota,
    }
}

/// Where a request's handler leaves the quota its response reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuotaSlot(Arc<parking_lot::Mutex<Option<Quota>>>);

impl QuotaSlot {
    /// Reports `quota` on the response (the last report wins).
    pub(crate) fn set(&self, quota: Quota) {
        // Held for one store; a request's extractors and handler run one at a time.
        *self.0.lock() = Some(quota);
    }

    fn get(&self) -> Option<Quota> {
        *self.0.lock()
    }
}

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Gives every request a [`QuotaSlot`] and writes what was left in it as the
/// `RateLimit-*` headers of the response.
pub(crate) async fn rate_headers(mut req: Request, next: Next) -> Response {
    let slot = QuotaSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut resp = next.run(req).await;
    if let Some(q) = slot.get() {
        let h = resp.headers_mut();
        let reset_s = q.reset_ms.div_ceil(1000);
        h.insert(LIMIT.clone(), HeaderValue::from(q.limit));
        h.insert(REMAINING.clone(), HeaderValue::from(q.remaining));
        h.insert(RESET.clone(), HeaderValue::from(reset_s));
        if let Ok(v) = HeaderValue::from_str(&format!("{};w={}", q.limit, q.window_ms / 1000)) {
            h.insert(POLICY.clone(), v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_group_and_the_seeds_budgets_stay_with_the_seed() {
        let g = |m: Method, p: &str| group_of(&m, p);
        assert_eq!(g(Method::POST, "/messages"), None);
        assert_eq!(g(Method::PUT, "/messages/typing/{isTyping}"), None);
        assert_eq!(g(Method::GET, "/conversations"), Some(Group::Reads));
        assert_eq!(g(Method::POST, "/conversations"), Some(Group::Writes));
        assert_eq!(
            g(Method::PUT, "/messages/{messageId}/read"),
            Some(Group::Writes)
        );
        assert_eq!(
            g(Method::DELETE, "/messages/{messageId}"),
            Some(Group::Writes)
        );
        assert_eq!(g(Method::POST, "/calls"), Some(Group::Calls));
        assert_eq!(
            g(Method::GET, "/video/{interactionId}/token"),
            Some(Group::Calls)
        );
        assert_eq!(
            g(Method::GET, "/keys/users/{partnerUserId}/preKey"),
            Some(Group::Keys)
        );
        assert_eq!(g(Method::POST, "/private/messages"), Some(Group::Admin));
        assert_eq!(g(Method::GET, "/api/admin/audit"), Some(Group::Admin));
        assert_eq!(g(Method::GET, "/api/presence/online"), Some(Group::Reads));
    }

    #[test]
    fn pre_key_fetches_are_budgeted_per_requester_and_partner() {
        let b = ApiBudgets::new(&ApiBudgetConfig {
            prekey_fetches_per_partner_per_hour: 2,
            ..Default::default()
        });
        assert!(b.take_pre_key("mallory", "alice").is_ok());
        assert!(b.take_pre_key("mallory", "alice").is_ok());
        let refused = b.take_pre_key("mallory", "alice").expect_err("a third");
        assert_eq!(refused.quota.remaining, 0);
        assert!(refused.quota.reset_ms > 1_700_000, "{:?}", refused.quota);
        assert!(b.take_pre_key("mallory", "bob").is_ok(), "another partner");
        assert!(
            b.take_pre_key("carol", "alice").is_ok(),
            "another requester"
        );
    }
}
