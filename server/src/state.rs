//! The state every handler shares ([`AppState`]) and the one way a request is
//! authenticated (a token from `?token=` or `Authorization: Bearer`).

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use metrics_exporter_prometheus::PrometheusHandle;
use roomcast_engine::Engine;
use roomcast_engine::store::{CallStore, KeyStore};

use crate::auth::{AuthError, Principal, Verifier};
use crate::config::Config;
use crate::error::ApiError;
use crate::shutdown::Shutdown;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// Call signalling state (calls survive restarts; ring timeouts resume).
    pub calls: Arc<dyn CallStore>,
    /// The Signal key directory.
    pub keys: Arc<dyn KeyStore>,
    pub config: Arc<Config>,
    pub(crate) verifier: Arc<Verifier>,
    /// The REST routes' per-user budgets.
    pub(crate) budgets: Arc<crate::api::budget::ApiBudgets>,
    pub shutdown: Shutdown,
    pub(crate) metrics: Option<PrometheusHandle>,
}

impl AppState {
    /// Checks the token from `?token=` or `Authorization: Bearer`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Principal, ApiError> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 7235).
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(str::trim);
        let result = match query_token.filter(|t| !t.is_empty()).or(bearer) {
            None => Err(AuthError::Missing),
            Some(token) => self.verifier.verify(token).await,
        };
        result.map_err(|e| {
            metrics::counter!(roomcast_engine::metrics::AUTH_FAILURES, "reason" => e.label())
                .increment(1);
            ApiError::Auth(e)
        })
    }
}
