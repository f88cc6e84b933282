//! A room's history over REST (`GET /api/rooms/{roomId}/messages?before=&after=&limit=`),
//! with the page bounds every history route shares (ids or RFC 3339 times).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use roomcast_engine::clock::{parse_rfc3339_ms, rfc3339_ms};
use roomcast_engine::ids::{MessageId, first_id_at};
use roomcast_engine::message::ChatMessage;
use roomcast_engine::protocol::validate_room_id;
use serde::{Deserialize, Serialize};

use crate::api::{PathParam, QueryParams};
use crate::error::ApiError;
use crate::state::AppState;

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
    let page = app
        .engine
        .history_page(
            &room_id,
            roomcast_engine::PageQuery {
                before,
                after,
                limit,
            },
        )
        .await?;
    Ok(Json(RoomHistoryPage {
        room_id,
        messages: page.messages.into_iter().map(RoomMessage::from).collect(),
        has_more: page.has_more,
    })
    .into_response())
}
