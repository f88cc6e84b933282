//! The administrative routes under `/private` (the token must carry the admin role,
//! else 403): send as a user or as the system, a user's conversations, close, snooze,
//! and quiet chats.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use roomcast_engine::UserInfo;
use roomcast_engine::chat::{Closure, Conversation, ConversationUpdate, Snooze};
use roomcast_engine::clock::{now_unix_ms, rfc3339_ms};
use roomcast_engine::message::{Attachment, MessageType};
use roomcast_engine::protocol::encode_event;
use roomcast_engine::{ClientError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::conversations::{ConversationPage, list_window, validate_user_id};
use super::messages::{SendMessage, send_as};
use super::{
    Admin, ConversationView, JsonBody, OptionalJsonBody, PathParam, QueryCaller, QueryParams,
    conversation_not_found, conversation_view, page_of, query_int,
};
use crate::error::ApiError;
use crate::state::AppState;

/// The user id of messages sent as the platform (no `senderId`).
pub(crate) use roomcast_engine::chat::SYSTEM_SENDER;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AdminSend {
    #[schema(pattern = "^conv_[0-9]+$", max_length = 64)]
    pub conversation_id: String,
    #[serde(default)]
    pub message: String,
    /// Send as this user (any id); without it the message is a `system` message.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub sender_id: Option<String>,
    #[serde(default)]
    pub message_type: Option<MessageType>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub client_msg_id: Option<String>,
}

async fn any_conversation(app: &AppState, id: &str) -> Result<Conversation, ApiError> {
    if !roomcast_engine::chat::is_conversation(id) {
        return Err(conversation_not_found());
    }
    app.engine
        .store()
        .conversation(id)
        .await?
        .ok_or_else(conversation_not_found)
}

/// `POST /private/messages`: 201 with the stored message. Passes a snooze (not a
/// closure) and the per-user rate limit; moderation applies.
#[utoipa::path(post, path = "/private/messages", operation_id = "admin_send", tag = "admin", request_body = AdminSend, responses((status = 201, description = "Stored and delivered", body = super::messages::SentMessage), (status = 200, description = "A resend of a stored clientMsgId", body = super::messages::SentMessage), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 403, description = "The token lacks the admin role", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 409, description = "The conversation is closed or snoozed", body = crate::error::ErrorBody), (status = 413, description = "Message longer than MAX_MESSAGE_LENGTH or body too large", body = crate::error::ErrorBody), (status = 422, description = "Rejected by moderation", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn send(
    State(app): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<AdminSend>,
) -> Result<Response, ApiError> {
    let conv = any_conversation(&app, &body.conversation_id).await?;
    let (sender, default_type) = match &body.sender_id {
        Some(id) => {
            validate_user_id("senderId", id)?;
            (id.clone(), MessageType::Text)
        }
        None => (SYSTEM_SENDER.to_owned(), MessageType::System),
    };
    let message_type = body.message_type.unwrap_or(default_type);
    let user = UserInfo {
        user_id: sender.clone(),
        username: sender,
        is_admin: body.sender_id.is_none(),
    };
    let msg = SendMessage {
        conversation_id: body.conversation_id,
        message: body.message,
        message_type: Some(message_type),
        attachments: body.attachments,
        client_msg_id: body.client_msg_id,
        encrypted: false,
    };
    send_as(&app, conv, user, msg, message_type, true).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UserListParams {
    /// Page size, 1-100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// Conversations to skip, 0-1000000 (default 0).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 1000000)]
    offset: Option<String>,
}

/// `PUT` (as the seed has it) or `GET /private/users/{userId}/conversations`: every
/// conversation of a user, most recently active first. 404 `user_not_found` for a user
/// with no conversation at all (the chat service knows users only through them).
#[utoipa::path(method(get, put), path = "/private/users/{userId}/conversations", tag = "admin", params(("userId" = String, Path, description = "User id"), UserListParams), responses((status = 200, description = "The user's conversations (also answered to PUT, as the seed has it)", body = ConversationPage), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 403, description = "The token lacks the admin role", body = crate::error::ErrorBody), (status = 404, description = "No conversation known for this user", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn user_conversations(
    State(app): State<AppState>,
    _: Admin,
    PathParam(user_id): PathParam<String>,
    QueryParams(params): QueryParams<UserListParams>,
) -> Result<Json<ConversationPage>, ApiError> {
    let (limit, offset) = list_window(params.limit.as_deref(), params.offset.as_deref())?;
    let all = app.engine.store().user_conversations(&user_id).await?;
    if all.is_empty() {
        return Err(ApiError::Client(ClientError::new(
            ErrorCode::UserNotFound,
            "no conversations are known for this user",
        )));
    }
    let (page, total) = page_of(all, offset as usize, limit as usize);
    let mut conversations = Vec::with_capacity(page.len());
    for (conv, state) in page {
        conversations.push(conversation_view(&app, conv, Some((&user_id, &state))).await?);
    }
    Ok(Json(ConversationPage {
        conversations,
        total,
        limit,
        offset,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CloseBody {
    #[serde(default)]
    #[schema(max_length = 500, pattern = "^[^\\x00-\\x1f\\x7f]*$")]
    pub reason: Option<String>,
}

fn check_reason(reason: &Option<String>) -> Result<(), ApiError> {
    match reason {
        Some(r) if r.chars().count() > 500 || r.chars().any(char::is_control) => {
            Err(ApiError::BadRequest {
                field: "reason".into(),
                message: "reason is at most 500 characters, no control characters".into(),
            })
        }
        _ => Ok(()),
    }
}

/// `DELETE /private/conversations/{id}` with an optional `{"reason"}`: closes the
/// conversation for good. Participants get `conversation_closed`; later sends fail with
/// 409 `conversation_closed`. Closing twice keeps the first closure.
#[utoipa::path(delete, path = "/private/conversations/{conversationId}", tag = "admin", params(("conversationId" = String, Path, description = "Conversation id (conv_...)")), request_body(content = Option<CloseBody>, description = "Optional reason"), responses((status = 200, description = "Closed; participants get `conversation_closed`", body = ConversationView), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 403, description = "The token lacks the admin role", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn close(
    State(app): State<AppState>,
    Admin(caller): Admin,
    PathParam(id): PathParam<String>,
    OptionalJsonBody(body): OptionalJsonBody<CloseBody>,
) -> Result<Json<ConversationView>, ApiError> {
    check_reason(&body.reason)?;
    any_conversation(&app, &id).await?;
    let closure = Closure {
        at_ms: now_unix_ms(),
        by: caller.id().to_owned(),
        reason: body.reason.filter(|r| !r.trim().is_empty()),
    };
    let conv = app
        .engine
        .store()
        .update_conversation(&id, ConversationUpdate::Close(closure))
        .await?
        .ok_or_else(conversation_not_found)?;
    if let Some(c) = &conv.closed {
        let frame = encode_event(
            "conversation_closed",
            &json!({"conversationId": conv.id, "reason": c.reason, "at": rfc3339_ms(c.at_ms)}),
        );
        app.engine
            .emit(&conv, "conversation_closed", frame, None)
            .await?;
    }
    Ok(Json(conversation_view(&app, conv, None).await?))
}

/// Default and longest snooze, hours.
pub(crate) const SNOOZE_DEFAULT_HOURS: f64 = 24.0;
pub(crate) const SNOOZE_MAX_HOURS: f64 = 24.0 * 90.0;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SnoozeBody {
    /// Hours (fractions allowed), default 24, at most 2160 (90 days).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 2160)]
    pub duration: Option<f64>,
    #[serde(default)]
    #[schema(max_length = 500, pattern = "^[^\\x00-\\x1f\\x7f]*$")]
    pub reason: Option<String>,
}

/// `PUT /private/conversations/{id}/snooze` with `{"duration","reason"}`: pauses the
/// conversation until now + duration. While snoozed, participants' sends (and
/// reactions and typing) fail with 409 `conversation_snoozed` (with `retryAfterMs`),
/// no push notifications go out, reading and receipts work, admin sends go through.
/// At expiry it is active again by itself; participants get `conversation_snoozed`
/// now and `conversation_unsnoozed` at expiry (while this server runs).
#[utoipa::path(put, path = "/private/conversations/{conversationId}/snooze", tag = "admin", params(("conversationId" = String, Path, description = "Conversation id (conv_...)")), request_body(content = Option<SnoozeBody>, description = "Duration in hours and reason"), responses((status = 200, description = "Snoozed until now + duration", body = ConversationView), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 403, description = "The token lacks the admin role", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 409, description = "The conversation is closed", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn snooze(
    State(app): State<AppState>,
    Admin(caller): Admin,
    PathParam(id): PathParam<String>,
    OptionalJsonBody(body): OptionalJsonBody<SnoozeBody>,
) -> Result<Json<ConversationView>, ApiError> {
    check_reason(&body.reason)?;
    let hours = body.duration.unwrap_or(SNOOZE_DEFAULT_HOURS);
    if !(hours > 0.0 && hours <= SNOOZE_MAX_HOURS) {
        return Err(ApiError::BadRequest {
            field: "duration".into(),
            message: format!("duration is in hours, more than 0 and at most {SNOOZE_MAX_HOURS}"),
        });
    }
    let current = any_conversation(&app, &id).await?;
    if current.closed.is_some() {
        return Err(ApiError::Client(
            ClientError::new(
                ErrorCode::ConversationClosed,
                "a closed conversation cannot be snoozed",
            )
            .in_room(&id),
        ));
    }
    let now = now_unix_ms();
    let length_ms = (hours * 3_600_000.0).round() as u64;
    let until_ms = now + length_ms.max(1);
    let snooze = Snooze {
        at_ms: now,
        until_ms,
        by: caller.id().to_owned(),
        reason: body.reason.filter(|r| !r.trim().is_empty()),
    };
    let conv = app
        .engine
        .store()
        .update_conversation(&id, ConversationUpdate::Snooze(snooze.clone()))
        .await?
        .ok_or_else(conversation_not_found)?;
    let frame = encode_event(
        "conversation_snoozed",
        &json!({"conversationId": conv.id, "until": rfc3339_ms(until_ms), "reason": snooze.reason}),
    );
    app.engine
        .emit(&conv, "conversation_snoozed", frame, None)
        .await?;
    schedule_unsnooze(&app, conv.id.clone(), until_ms);
    Ok(Json(conversation_view(&app, conv, None).await?))
}

/// At `until_ms`, tells participants the conversation is active again, unless the
/// snooze was replaced or the conversation closed meanwhile. The state itself needs no
/// timer: it is computed from `until_ms` on every read.
fn schedule_unsnooze(app: &AppState, id: String, until_ms: u64) {
    let (engine, token) = (app.engine.clone(), app.shutdown.token.clone());
    let wait = Duration::from_millis(until_ms.saturating_sub(now_unix_ms()));
    tokio::spawn(async move {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Ok(Some(conv)) = engine.store().conversation(&id).await else {
            return;
        };
        if conv.closed.is_none()
            && conv
                .snoozed
                .as_ref()
                .is_some_and(|s| s.until_ms == until_ms)
        {
            let frame = encode_event("conversation_unsnoozed", &json!({"conversationId": id}));
            let _ = engine
                .emit(&conv, "conversation_unsnoozed", frame, None)
                .await;
        }
    });
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(rename_all = "camelCase", parameter_in = Query)]
pub(crate) struct QuietParams {
    /// Days without a message (fractions allowed), 0-3650 (default 7).
    #[param(value_type = Option<f64>, minimum = 0, maximum = 3650)]
    days_inactive: Option<String>,
    /// Most results, 1-500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QuietChats {
    pub days_inactive: f64,
    /// Conversations with no message since this time are listed.
    pub inactive_since: String,
    /// Least recently active first.
    pub conversations: Vec<ConversationView>,
}

/// `GET /private/conversations/quietChats?daysInactive=&limit=`: open conversations
/// with no activity for `daysInactive` days (default 7), least recently active first,
/// read from the last-activity index.
#[utoipa::path(get, path = "/private/conversations/quietChats", tag = "admin", params(QuietParams), responses((status = 200, description = "Open conversations without activity, least recently active first", body = QuietChats), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 403, description = "The token lacks the admin role", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn quiet_chats(
    State(app): State<AppState>,
    _: Admin,
    QueryParams(params): QueryParams<QuietParams>,
) -> Result<Json<QuietChats>, ApiError> {
    let days = match params.days_inactive.as_deref().filter(|d| !d.is_empty()) {
        None => 7.0,
        Some(raw) => match raw.parse::<f64>() {
            Ok(d) if (0.0..=3650.0).contains(&d) => d,
            _ => {
                return Err(ApiError::BadRequest {
                    field: "daysInactive".into(),
                    message: "daysInactive is a number of days from 0 to 3650 (fractions allowed)"
                        .into(),
                });
            }
        },
    };
    let limit = query_int("limit", params.limit.as_deref(), 50, 1..=500)?;
    let since = now_unix_ms().saturating_sub((days * 86_400_000.0).round() as u64);
    let found = app
        .engine
        .store()
        .quiet_conversations(since, limit as usize)
        .await?;
    let mut conversations = Vec::with_capacity(found.len());
    for conv in found {
        conversations.push(conversation_view(&app, conv, None).await?);
    }
    Ok(Json(QuietChats {
        days_inactive: days,
        inactive_since: rfc3339_ms(since),
        conversations,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only entries with a higher id.
    #[param(value_type = Option<String>)]
    after: Option<String>,
    /// Most entries, 1-1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The token, for clients that cannot set a header (else `Authorization: Bearer`).
    /// Read by [`crate::api::QueryCaller`] from the URI; declared here for the document.
    #[allow(dead_code)]
    token: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<roomcast_engine::store::AuditEntry>,
}

/// `GET /api/admin/audit?after=&limit=`: the moderation audit log, oldest first
/// (admins only).
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", params(AuditParams), responses((status = 200, description = "Audit entries, oldest first", body = AuditPage), (status = 400, description = "Invalid parameter", body = crate::error::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody), (status = 403, description = "Not an admin", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn audit_log(
    State(app): State<AppState>,
    QueryParams(params): QueryParams<AuditParams>,
    QueryCaller(caller): QueryCaller,
) -> Result<Response, ApiError> {
    let principal = caller.0;
    if !principal.user().is_admin {
        return Err(ApiError::Forbidden);
    }
    let limit = super::query_int("limit", params.limit.as_deref(), 100, 1..=1000)? as usize;
    let after = match params.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(a.parse::<u64>().map_err(|_| ApiError::BadRequest {
            field: "after".into(),
            message: "after must be an audit entry id (decimal)".into(),
        })?),
    };
    let entries = app.engine.stores().history.audit_page(after, limit).await?;
    Ok(Json(AuditPage { entries }).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ClusterParams {
    /// Also say which node orders this room.
    room: Option<String>,
    /// The token, for clients that cannot set a header (else `Authorization: Bearer`).
    /// Read by [`crate::api::QueryCaller`] from the URI; declared here for the document.
    #[allow(dead_code)]
    token: Option<String>,
}

/// Cluster membership as this node sees it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterView {
    /// False on a single node (no `REDIS_URL`).
    clustered: bool,
    /// This node's id.
    node: u16,
    /// Live nodes, this one included.
    nodes: Vec<u16>,
    /// Room slots (of 1024) whose lease this node holds.
    slots_held: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<RoomOwner>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoomOwner {
    room_id: String,
    slot: u16,
    /// The node that orders the room (by the live set this node sees).
    owner: Option<u16>,
    /// Whether this node sequences it right now.
    sequenced_here: bool,
}

/// `GET /api/admin/cluster?room=`: the live nodes, this node's share of the room slots
/// and, with `room`, which node orders that room (admins only).
#[utoipa::path(get, path = "/api/admin/cluster", tag = "admin", params(ClusterParams), responses((status = 200, description = "Cluster membership", body = ClusterView), (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody), (status = 403, description = "Not an admin", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn cluster(
    State(app): State<AppState>,
    QueryParams(params): QueryParams<ClusterParams>,
    QueryCaller(caller): QueryCaller,
) -> Result<Response, ApiError> {
    let principal = caller.0;
    if !principal.user().is_admin {
        return Err(ApiError::Forbidden);
    }
    let view = match app.engine.cluster() {
        None => ClusterView {
            clustered: false,
            node: app.engine.config().node_id,
            nodes: vec![app.engine.config().node_id],
            slots_held: roomcast_engine::cluster::SLOTS as usize,
            room: None,
        },
        Some(c) => {
            let nodes = c.nodes();
            let room = params.room.filter(|r| !r.is_empty()).map(|room_id| {
                let slot = roomcast_engine::cluster::slot_of(&room_id);
                RoomOwner {
                    owner: roomcast_engine::cluster::owner_among(slot, &nodes),
                    sequenced_here: c.lease_of(&room_id).is_some(),
                    slot,
                    room_id,
                }
            });
            ClusterView {
                clustered: true,
                node: c.node,
                slots_held: c.slots_held(),
                nodes,
                room,
            }
        }
    };
    Ok(Json(view).into_response())
}
