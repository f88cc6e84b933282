//! Plain HTTP routes: health (`/healthz`), readiness (`/readyz`, false while draining),
//! Prometheus metrics (`/metrics`), and a room's history
//! (`GET /api/rooms/{roomId}/messages?before=&after=&limit=`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roomcast_engine::clock::{parse_rfc3339_ms, rfc3339_ms};
use roomcast_engine::ids::{MessageId, first_id_at};
use roomcast_engine::protocol::{ChatMessage, validate_room_id};
use roomcast_engine::{ClientError, ErrorCode, PageQuery};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

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

#[derive(Debug, Deserialize)]
pub(crate) struct HistoryParams {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageView<'a> {
    #[serde(flatten)]
    msg: &'a ChatMessage,
    timestamp: String,
}

impl<'a> From<&'a ChatMessage> for MessageView<'a> {
    fn from(msg: &'a ChatMessage) -> Self {
        Self {
            msg,
            timestamp: rfc3339_ms(msg.timestamp_ms()),
        }
    }
}

pub(crate) async fn room_history(
    State(app): State<AppState>,
    Path(room_id): Path<String>,
    Query(params): Query<HistoryParams>,
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
    let query = PageQuery {
        before: bound("before", params.before.as_deref(), false)?,
        after: bound("after", params.after.as_deref(), true)?,
        limit: limit + 1,
    };
    let mut page = app.engine.history(&room_id, query).await.map_err(|e| {
        tracing::warn!(error = %e, "history read failed");
        ApiError::Client(ClientError::new(
            ErrorCode::StoreUnavailable,
            "history is unavailable; retry",
        ))
    })?;
    let has_more = page.len() > limit;
    if has_more {
        // One extra row was read to learn whether another page exists; drop it from the
        // far end of the walk direction.
        if query.before.is_none() && query.after.is_some() {
            page.pop();
        } else {
            page.remove(0);
        }
    }
    let messages: Vec<MessageView<'_>> = page.iter().map(MessageView::from).collect();
    Ok(Json(json!({"roomId": room_id, "messages": messages, "hasMore": has_more})).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuditParams {
    after: Option<u64>,
    limit: Option<usize>,
    token: Option<String>,
}

/// `GET /api/admin/audit?after=&limit=`: the moderation audit log, oldest first
/// (admins only).
pub(crate) async fn audit_log(
    State(app): State<AppState>,
    Query(params): Query<AuditParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = app.authenticate(&headers, params.token.as_deref())?;
    if !principal.user().is_admin {
        return Err(ApiError::Forbidden);
    }
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let entries = app
        .engine
        .store()
        .audit_page(params.after, limit)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "audit read failed");
            ApiError::Client(ClientError::new(
                ErrorCode::StoreUnavailable,
                "the audit log is unavailable; retry",
            ))
        })?;
    Ok(Json(json!({"entries": entries})).into_response())
}
