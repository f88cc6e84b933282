//! Operations routes: health (`/healthz`), readiness (`/readyz`, false while draining
//! and, in a cluster, while cut off from Redis)
//! and Prometheus metrics (`/metrics`).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up", body = serde_json::Value)))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Accepting connections", body = serde_json::Value), (status = 503, description = "Draining for shutdown, or (in a cluster) cut off from Redis", body = serde_json::Value)))]
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    if app.shutdown.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else if app.engine.cluster().is_some_and(|c| !c.in_contact()) {
        // Cut off from Redis: this node fenced itself and hears no other node, so a
        // load balancer should send clients elsewhere until it is back.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "cut_off"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ready", "connections": app.engine.connection_count()}))
            .into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String), (status = 404, description = "Metrics are off", body = crate::error::ErrorBody)))]
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    match &app.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::NotFound.into_response(),
    }
}
