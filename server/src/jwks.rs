//! The identity provider's signing keys (Cognito User Pools publish them as a JWKS at
//! `https://cognito-idp.<region>.amazonaws.com/<pool>/.well-known/jwks.json`): fetched
//! at start, refreshed every `ROOMCAST_JWKS_REFRESH_SECS`, and refetched when a token
//! names a key id the cache lacks, at most once per `ROOMCAST_JWKS_MISS_REFETCH_MS`, so
//! keys rotate without a restart and a flood of made-up key ids costs one fetch per
//! interval, not one per request.
//!
//! Each key is pinned to one algorithm by its type: RSA keys verify RS256 only, P-256
//! keys ES256 only (a key whose `alg` says otherwise, an encryption key, or another
//! type is skipped). A token's `alg` must be its key's, so no token can pick how its
//! key is used (no HS256 with a public key as the secret).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use roomcast_engine::metrics as m;
use tokio_util::sync::CancellationToken;

/// Where the keys come from and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    /// `ROOMCAST_JWKS_URL` (https, or http for a local provider).
    pub url: String,
    /// `ROOMCAST_JWKS_REFRESH_SECS`: the whole set is fetched again this often.
    pub refresh: Duration,
    /// `ROOMCAST_JWKS_MISS_REFETCH_MS`: at most one fetch per this for unknown key ids.
    pub miss_refetch: Duration,
    /// One fetch's deadline.
    pub timeout: Duration,
}

/// A key and the one algorithm it verifies.
#[derive(Clone)]
pub(crate) struct PinnedKey {
    /// Shared: a verify takes a reference count, not a copy of the key.
    pub(crate) key: Arc<DecodingKey>,
    pub(crate) alg: Algorithm,
}

/// The cached key set.
pub struct Jwks {
    cfg: JwksConfig,
    client: reqwest::Client,
    /// Read on every RS256/ES256 token, replaced whole by a fetch: a read lock held
    /// for one map lookup and clone.
    keys: parking_lot::RwLock<HashMap<String, PinnedKey>>,
    /// When the last fetch started. An async mutex: a fetch holds it across the
    /// request, so concurrent misses wait for that one fetch instead of starting more.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.cfg.url)
            .field("keys", &self.keys.read().len())
            .finish()
    }
}

/// The algorithm `jwk` may verify, or `None` when it cannot sign tokens we accept.
fn pinned_alg(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let (alg, named) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    match &jwk.common.key_algorithm {
        Some(declared) if *declared != named => None,
        _ => Some(alg),
    }
}

/// The usable keys of a set, by key id.
fn usable(set: &JwkSet) -> HashMap<String, PinnedKey> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let alg = pinned_alg(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((
                kid,
                PinnedKey {
                    key: Arc::new(key),
                    alg,
                },
            ))
        })
        .collect()
}

impl Jwks {
    pub fn new(cfg: JwksConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("roomcast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("JWKS client: {e}"))?;
        Ok(Self {
            cfg,
            client,
            keys: Default::default(),
            last_fetch: Default::default(),
        })
    }

    /// The cached key `kid`.
    pub(crate) fn key(&self, kid: &str) -> Option<PinnedKey> {
        self.keys.read().get(kid).cloned()
    }

    /// The key `kid`, fetching the set again first if it is unknown and the last fetch
    /// is older than the miss interval.
    pub(crate) async fn key_or_refetch(&self, kid: &str) -> Option<PinnedKey> {
        if let Some(k) = self.key(kid) {
            return Some(k);
        }
        let mut last = self.last_fetch.lock().await;
        // Another request's fetch may have brought it while this one waited.
        if let Some(k) = self.key(kid) {
            return Some(k);
        }
        if last.is_some_and(|t| t.elapsed() < self.cfg.miss_refetch) {
            metrics::counter!(m::JWKS_FETCHES, "outcome" => "throttled").increment(1);
            return None;
        }
        let _ = self.fetch(&mut last).await;
        self.key(kid)
    }

    /// Fetches the set now (start-up and the periodic refresh).
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut last = self.last_fetch.lock().await;
        self.fetch(&mut last).await
    }

    /// Fetches and replaces the set; a failed or empty fetch keeps the old keys.
    async fn fetch(&self, last: &mut Option<Instant>) -> Result<usize, String> {
        *last = Some(Instant::now());
        let result = async {
            let resp = self
                .client
                .get(&self.cfg.url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("status {}", resp.status()));
            }
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let keys = usable(&set);
            if keys.is_empty() {
                return Err(format!(
                    "none of its {} keys is an RS256 or ES256 signing key with a kid",
                    set.keys.len()
                ));
            }
            Ok(keys)
        }
        .await;
        match result {
            Ok(keys) => {
                let n = keys.len();
                *self.keys.write() = keys;
                metrics::counter!(m::JWKS_FETCHES, "outcome" => "ok").increment(1);
                metrics::gauge!(m::JWKS_KEYS).set(n as f64);
                tracing::info!(url = %self.cfg.url, keys = n, "JWKS fetched");
                Ok(n)
            }
            Err(e) => {
                metrics::counter!(m::JWKS_FETCHES, "outcome" => "error").increment(1);
                tracing::warn!(url = %self.cfg.url, error = %e, "JWKS fetch failed; keeping the keys we have");
                Err(e)
            }
        }
    }

    /// Refreshes the set every `refresh` until `token` is cancelled.
    pub fn spawn_refresh(self: Arc<Self>, token: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.cfg.refresh);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and start-up has just fetched: skip it.
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let _ = self.refresh().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: serde_json::Value) -> JwkSet {
        serde_json::from_value(serde_json::json!({ "keys": keys })).expect("jwks")
    }

    // A P-256 public point and a 2048-bit-sized RSA modulus (values need not be a real
    // key pair to be parsed and pinned).
    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn modulus() -> String {
        use std::fmt::Write as _;
        // 258 bytes of base64url (a whole number of 4-character groups).
        (0..344).fold(String::new(), |mut s, i| {
            let _ = write!(s, "{}", ["A", "b", "Q", "z"][i % 4]);
            s
        })
    }

    #[test]
    fn keys_are_pinned_to_one_algorithm_by_type() {
        let n = modulus();
        let keys = usable(&set(serde_json::json!([
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-no-alg", "n": n, "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": X, "y": Y},
            // Skipped: a declared algorithm that is not the type's, an encryption
            // key, a symmetric key, and a key without a kid.
            {"kty": "RSA", "kid": "rsa-as-hs", "alg": "HS256", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-enc", "use": "enc", "n": n, "e": "AQAB"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-256", "x": X, "y": Y},
        ])));
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["ec", "rsa", "rsa-no-alg"]);
        assert_eq!(keys["rsa"].alg, Algorithm::RS256);
        assert_eq!(keys["ec"].alg, Algorithm::ES256);
    }
}
