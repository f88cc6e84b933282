//! A room's history over REST (`GET /api/rooms/{roomId}/messages?before=&after=&limit=`),
//! with the page bounds every history route shares (ids, epoch milliseconds or ISO 8601
//! times).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use roomcast_engine::clock::{parse_rfc3339_ms, rfc3339_ms};
use roomcast_engine::ids::{MessageId, first_id_at};
use roomcast_engine::message::ChatMessage;
use roomcast_engine::protocol::validate_room_id;
use serde::{Deserialize, Serialize};

use crate::api::{PathParam, QueryCaller, QueryParams};
use crate::error::ApiError;
use crate::state::AppState;

/// Default and maximum page sizes for history.
pub(crate) const HISTORY_DEFAULT_LIMIT: usize = 50;
pub(crate) const HISTORY_MAX_LIMIT: usize = 200;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryParams {
    /// Only messages older than this (exclusive): a message id, Unix epoch milliseconds
    /// (up to 13 digits) or an ISO 8601 time (UTC when it has no zone).
    before: Option<String>,
    /// Only messages newer than this (exclusive): a message id, Unix epoch milliseconds
    /// (up to 13 digits) or an ISO 8601 time (UTC when it has no zone).
    after: Option<String>,
    /// Page size, 1-200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// The token, for clients that cannot set a header (else `Authorization: Bearer`).
    /// Read by [`crate::api::QueryCaller`] from the URI; declared here for the document.
    #[allow(dead_code)]
    token: Option<String>,
}

/// Numbers below this are Unix epoch milliseconds (up to 13 digits: until the year
/// 2286); from it on, message ids. Every id roomcast issues after 2024-01-01T00:40Z is
/// larger (ids are milliseconds since 2024 shifted left by 22 bits), so no real id is
/// read as a time.
pub(crate) const EPOCH_MS_BELOW: u64 = 10_000_000_000_000;

/// An ISO 8601 time: RFC 3339 (`2024-05-01T12:00:00.250Z`, `...+02:00`), or without a
/// zone (`2024-05-01T12:00:00`, UTC), or a date (`2024-05-01`, midnight UTC).
fn parse_time(raw: &str) -> Option<u64> {
    parse_rfc3339_ms(raw)
        .or_else(|| {
            (raw.len() == 10)
                .then(|| format!("{raw}T00:00:00Z"))
                .and_then(|t| parse_rfc3339_ms(&t))
        })
        .or_else(|| parse_rfc3339_ms(&format!("{raw}Z")))
}

/// A bound is a message id, Unix epoch milliseconds or an ISO 8601 time (see
/// [`EPOCH_MS_BELOW`]). As an exclusive id bound, a time `t` means "before t" -> first
/// id at t, "after t" -> last id at t.
pub(crate) fn bound(
    field: &'static str,
    raw: Option<&str>,
    after: bool,
) -> Result<Option<MessageId>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let ms = match raw.parse::<u64>() {
        Ok(id) if id >= EPOCH_MS_BELOW => return Ok(Some(id)),
        Ok(ms) => ms,
        Err(_) => parse_time(raw).ok_or_else(|| ApiError::BadRequest {
            field: field.into(),
            message: format!(
                "{field} must be a message id, Unix epoch milliseconds or an ISO 8601 time"
            ),
        })?,
    };
    Ok(Some(if after {
        first_id_at(ms.saturating_add(1)).saturating_sub(1)
    } else {
        first_id_at(ms)
    }))
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

/// `GET /api/rooms/{roomId}/messages`: a page of a room's history (a conversation's
/// only for its participants).
#[utoipa::path(get, path = "/api/rooms/{roomId}/messages", tag = "rooms", params(("roomId" = String, Path, description = "Room id: 1-128 of A-Z a-z 0-9 _ - . : @", pattern = "^[A-Za-z0-9_.:@-]{1,128}$"), HistoryParams), responses((status = 200, description = "A page, oldest first", body = RoomHistoryPage), (status = 400, description = "Invalid parameter", body = crate::error::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody), (status = 404, description = "A conversation the caller is not part of", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn room_history(
    State(app): State<AppState>,
    PathParam(room_id): PathParam<String>,
    QueryParams(params): QueryParams<HistoryParams>,
    QueryCaller(caller): QueryCaller,
) -> Result<Response, ApiError> {
    let principal = caller.0;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_ids_epoch_milliseconds_or_iso_8601_times() {
        let at = |ms: u64| Some(first_id_at(ms));
        let ms = 1_733_300_000_000u64; // 2024-12-04T08:13:20Z
        let b = |raw: &str| bound("before", Some(raw), false).expect(raw);
        assert_eq!(b(&ms.to_string()), at(ms));
        assert_eq!(b("2024-12-04T08:13:20Z"), at(ms));
        assert_eq!(b("2024-12-04T08:13:20.000+00:00"), at(ms));
        assert_eq!(b("2024-12-04T10:13:20+02:00"), at(ms));
        assert_eq!(b("2024-12-04T08:13:20"), at(ms), "no zone: UTC");
        assert_eq!(b("2024-12-04"), at(ms - (8 * 3600 + 13 * 60 + 20) * 1000));
        let id = first_id_at(ms) + 77;
        assert_eq!(b(&id.to_string()), Some(id), "ids stay ids");
        assert!(id >= EPOCH_MS_BELOW && ms < EPOCH_MS_BELOW);
        // "after t" ends at the last id of t's millisecond.
        assert_eq!(
            bound("after", Some(&ms.to_string()), true).expect("after"),
            Some(first_id_at(ms + 1) - 1)
        );
        assert!(bound("after", Some("yesterday"), true).is_err());
        assert!(bound("after", Some("2024-13-01"), true).is_err());
    }
}
