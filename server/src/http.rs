//! Plain HTTP routes: health (`/healthz`), readiness (`/readyz`, false while draining),
//! Prometheus metrics (`/metrics`), and a room's history
//! (`GET /api/rooms/{roomId}/messages?before=&after=&limit=`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roomcast_engine::clock::{parse_rfc3339_ms, rfc3339_ms};
use roomcast_engine::ids::{MessageId, first_id_at};
use roomcast_engine::protocol::{ChatMessage, validate_room_id};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::AppState;
use crate::api::{PathParam, QueryParams};
use crate::error::ApiError;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up", body = serde_json::Value)))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Accepting connections", body = serde_json::Value), (status = 503, description = "Draining for shutdown", body = serde_json::Value)))]
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    if app.shutdown.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
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

/// Default and maximum page sizes for history.
pub(crate) const HISTORY_DEFAULT_LIMIT: usize = 50;
pub(crate) const HISTORY_MAX_LIMIT: usize = 200;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct HistoryParams {
    /// Only messages older than this message id or RFC 3339 time (exclusive).
    before: Option<String>,
    /// Only messages newer than this message id or RFC 3339 time (exclusive).
    after: Option<String>,
    /// Page size, 1-200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// The token, for clients that cannot set a header (else `Authorization: Bearer`).
    token: Option<String>,
}

/// A bound is a message id or an RFC 3339 timestamp. As an exclusive id bound, a
/// timestamp `t` means "before t" -> first id at t, "after t" -> last id at t.
pub(crate) fn bound(
    field: &'static str,
    raw: Option<&str>,
    after: bool,
) -> Result<Option<MessageId>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if let Ok(id) = raw.parse::<u64>() {
        return Ok(Some(id));
    }
    match parse_rfc3339_ms(raw) {
        Some(ms) if after => Ok(Some(first_id_at(ms + 1).saturating_sub(1))),
        Some(ms) => Ok(Some(first_id_at(ms))),
        None => Err(ApiError::BadRequest {
            field: field.into(),
            message: format!("{field} must be a message id or an RFC 3339 timestamp"),
        }),
    }
}

/// A message as a room's history shows it: the WebSocket `message` frame's fields.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoomMessage {
    #[serde(flatten)]
    msg: ChatMessage,
    /// Server time (RFC 3339, milliseconds, UTC).
    timestamp: String,
}

impl From<ChatMessage> for RoomMessage {
    fn from(msg: ChatMessage) -> Self {
        Self {
            timestamp: rfc3339_ms(msg.timestamp_ms()),
            msg,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoomHistoryPage {
    room_id: String,
    /// Oldest first.
    messages: Vec<RoomMessage>,
    has_more: bool,
}

/// `GET /api/rooms/{room_id}/messages`: a page of a room's history (a conversation's
/// only for its participants).
#[utoipa::path(get, path = "/api/rooms/{room_id}/messages", tag = "rooms", params(("room_id" = String, Path, description = "Room id: 1-128 of A-Z a-z 0-9 _ - . : @", pattern = "^[A-Za-z0-9_.:@-]{1,128}$"), HistoryParams), responses((status = 200, description = "A page, oldest first", body = RoomHistoryPage), (status = 400, description = "Invalid parameter", body = crate::error::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody), (status = 404, description = "A conversation the caller is not part of", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn room_history(
    State(app): State<AppState>,
    PathParam(room_id): PathParam<String>,
    QueryParams(params): QueryParams<HistoryParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = app.authenticate(&headers, params.token.as_deref())?;
    validate_room_id(&room_id)?;
    if roomcast_engine::chat::is_conversation(&room_id) {
        crate::api::member_of(&app, &room_id, &principal.user().user_id).await?;
    }
    let limit = match params.limit.as_deref() {
        None => HISTORY_DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=HISTORY_MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest {
                    field: "limit".into(),
                    message: format!("limit must be 1-{HISTORY_MAX_LIMIT}"),
                });
            }
        },
    };
    let before = bound("before", params.before.as_deref(), false)?;
    let after = bound("after", params.after.as_deref(), true)?;
    let (page, has_more) =
        crate::api::conversations::read_page(&app, &room_id, before, after, limit).await?;
    Ok(Json(RoomHistoryPage {
        room_id,
        messages: page.into_iter().map(RoomMessage::from).collect(),
        has_more,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct AuditParams {
    /// Only entries with a higher id.
    #[param(value_type = Option<String>)]
    after: Option<String>,
    /// Most entries, 1-1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    token: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<roomcast_engine::history::AuditEntry>,
}

/// `GET /api/admin/audit?after=&limit=`: the moderation audit log, oldest first
/// (admins only).
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", params(AuditParams), responses((status = 200, description = "Audit entries, oldest first", body = AuditPage), (status = 400, description = "Invalid parameter", body = crate::error::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody), (status = 403, description = "Not an admin", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn audit_log(
    State(app): State<AppState>,
    QueryParams(params): QueryParams<AuditParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = app.authenticate(&headers, params.token.as_deref())?;
    if !principal.user().is_admin {
        return Err(ApiError::Forbidden);
    }
    let limit = crate::api::query_int("limit", params.limit.as_deref(), 100, 1..=1000)? as usize;
    let after = match params.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(a.parse::<u64>().map_err(|_| ApiError::BadRequest {
            field: "after".into(),
            message: "after must be an audit entry id (decimal)".into(),
        })?),
    };
    let entries = app
        .engine
        .store()
        .audit_page(after, limit)
        .await
        .map_err(crate::api::store_err)?;
    Ok(Json(AuditPage { entries }).into_response())
}
