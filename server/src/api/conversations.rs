//! Conversation routes: create (`POST /conversations`), list (`GET /conversations`),
//! read one (`GET /conversations/{id}`), archive and unarchive, history
//! (`GET /conversations/{id}/messages/history`) and unread
//! (`GET /conversations/{id}/messages/unread`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roomcast_engine::PageQuery;
use roomcast_engine::chat::{
    Conversation, ConversationKind, ConversationStatus, MAX_PARTICIPANTS, MemberState,
    MemberUpdate, conversation_id,
};
use roomcast_engine::clock::now_unix_ms;
use roomcast_engine::ids::MessageId;
use roomcast_engine::protocol::encode_event;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::rooms::{HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, bound};
use super::{
    Caller, ConversationView, JsonBody, MessageView, PathParam, QueryParams, UNREAD_COUNT_CAP,
    conversation_view, member_of, page_of, query_int,
};
use crate::error::ApiError;
use crate::state::AppState;

/// Default and largest page of `GET /conversations`.
pub(crate) const LIST_DEFAULT_LIMIT: u64 = 20;
pub(crate) const LIST_MAX_LIMIT: u64 = 100;

/// Checks a user id named in a request: 1-128 printable ASCII characters.
pub(crate) fn validate_user_id(field: &str, id: &str) -> Result<(), ApiError> {
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest {
            field: field.into(),
            message: "user ids are 1-128 printable ASCII characters".into(),
        })
    }
}

/// A user id: 1-128 printable ASCII characters.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
pub(crate) struct UserId(pub String);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateConversation {
    /// The other participants (the caller is always one), 1-49 user ids.
    #[schema(min_items = 1, max_items = 49, inline)]
    participant_ids: Vec<UserId>,
    /// `direct` (default for one other participant) or `group`.
    #[serde(default, rename = "type")]
    kind: Option<ConversationKind>,
    #[serde(default)]
    title: Option<String>,
}

/// `POST /conversations`: 201 with a new conversation, or 200 with the existing direct
/// conversation of the same two users.
#[utoipa::path(post, path = "/conversations", tag = "conversations", request_body = CreateConversation, responses((status = 201, description = "Created", body = ConversationView), (status = 200, description = "The existing direct conversation of the same two users", body = ConversationView), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 413, description = "Message longer than MAX_MESSAGE_LENGTH or body too large", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn create(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateConversation>,
) -> Result<Response, ApiError> {
    let me = caller.id().to_owned();
    let mut participants = vec![me.clone()];
    for (i, UserId(p)) in body.participant_ids.iter().enumerate() {
        validate_user_id(&format!("participantIds[{i}]"), p)?;
        participants.push(p.clone());
    }
    participants.sort();
    participants.dedup();
    let others = participants.len() - 1;
    if others == 0 {
        return Err(ApiError::BadRequest {
            field: "participantIds".into(),
            message: "name at least one other participant".into(),
        });
    }
    if participants.len() > MAX_PARTICIPANTS {
        return Err(ApiError::BadRequest {
            field: "participantIds".into(),
            message: format!("a conversation has at most {MAX_PARTICIPANTS} participants"),
        });
    }
    let kind = match body.kind {
        None if others == 1 => ConversationKind::Direct,
        None | Some(ConversationKind::Group) => ConversationKind::Group,
        Some(ConversationKind::Direct) if others == 1 => ConversationKind::Direct,
        Some(ConversationKind::Direct) => {
            return Err(ApiError::BadRequest {
                field: "type".into(),
                message: "a direct conversation has exactly one other participant".into(),
            });
        }
    };
    if let Some(t) = &body.title
        && (t.chars().count() > 200 || t.chars().any(char::is_control))
    {
        return Err(ApiError::BadRequest {
            field: "title".into(),
            message: "title is at most 200 characters, no control characters".into(),
        });
    }
    let now = now_unix_ms();
    let conv = Conversation {
        id: conversation_id(app.engine.next_id()),
        kind,
        participant_ids: participants,
        title: body.title.filter(|t| !t.trim().is_empty()),
        created_by: me.clone(),
        created_at_ms: now,
        last_activity_ms: now,
        last_message_id: None,
        closed: None,
        snoozed: None,
    };
    let (conv, created) = app.engine.store().create_conversation(conv).await?;
    // A new conversation's members start with the default state; an existing one's
    // caller may have archived it or read in it.
    let state = if created {
        MemberState::default()
    } else {
        app.engine
            .store()
            .membership(&conv.id, &me)
            .await?
            .map(|(_, s)| s)
            .unwrap_or_default()
    };
    if created {
        let frame = encode_event(
            "conversation_created",
            &json!({"conversationId": conv.id, "participantIds": conv.participant_ids, "createdBy": me}),
        );
        app.engine
            .emit(&conv, "conversation_created", frame, None)
            .await?;
    }
    let view = conversation_view(&app, conv, Some((&me, &state))).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Page size, 1-100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// Conversations to skip, 0-1000000 (default 0).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 1000000)]
    offset: Option<String>,
    /// Only conversations in this state (for the caller).
    #[param(value_type = Option<ConversationStatus>)]
    status: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConversationPage {
    pub conversations: Vec<ConversationView>,
    /// Conversations matching the filter, all pages.
    pub total: usize,
    pub limit: u64,
    pub offset: u64,
}

/// Reads `limit` and `offset` of a conversation list.
pub(crate) fn list_window(
    limit: Option<&str>,
    offset: Option<&str>,
) -> Result<(u64, u64), ApiError> {
    Ok((
        query_int("limit", limit, LIST_DEFAULT_LIMIT, 1..=LIST_MAX_LIMIT)?,
        query_int("offset", offset, 0, 0..=1_000_000)?,
    ))
}

/// `GET /conversations?limit=&offset=&status=`: the caller's conversations, most
/// recently active first, each with its last message and unread count.
#[utoipa::path(get, path = "/conversations", tag = "conversations", params(ListParams), responses((status = 200, description = "The caller's conversations, most recently active first", body = ConversationPage), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(app): State<AppState>,
    caller: Caller,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<ConversationPage>, ApiError> {
    let (limit, offset) = list_window(params.limit.as_deref(), params.offset.as_deref())?;
    let status = match params.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            ConversationStatus::parse(s).ok_or_else(|| ApiError::BadRequest {
                field: "status".into(),
                message: "status must be one of active, archived, closed, snoozed".into(),
            })?,
        ),
    };
    let now = now_unix_ms();
    let me = caller.id();
    let all = app.engine.store().user_conversations(me).await?;
    let matching: Vec<(Conversation, MemberState)> = all
        .into_iter()
        .filter(|(c, m)| status.is_none_or(|s| c.status_for(m, now) == s))
        .collect();
    let (page, total) = page_of(matching, offset as usize, limit as usize);
    let mut conversations = Vec::with_capacity(page.len());
    for (conv, state) in page {
        conversations.push(conversation_view(&app, conv, Some((me, &state))).await?);
    }
    Ok(Json(ConversationPage {
        conversations,
        total,
        limit,
        offset,
    }))
}

/// `GET /conversations/{id}`.
#[utoipa::path(get, path = "/conversations/{conversationId}", tag = "conversations", params(("conversationId" = String, Path, description = "Conversation id (conv_...)")), responses((status = 200, description = "The conversation", body = ConversationView), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn get_one(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<ConversationView>, ApiError> {
    let (conv, state) = member_of(&app, &id, caller.id()).await?;
    Ok(Json(
        conversation_view(&app, conv, Some((caller.id(), &state))).await?,
    ))
}

async fn set_archived(
    app: AppState,
    caller: Caller,
    id: String,
    archived: bool,
) -> Result<Json<ConversationView>, ApiError> {
    let (conv, _) = member_of(&app, &id, caller.id()).await?;
    let (state, changed) = app
        .engine
        .store()
        .update_member(&id, caller.id(), MemberUpdate::Archive(archived))
        .await?
        .ok_or_else(super::conversation_not_found)?;
    if changed {
        // The caller's other devices follow; nobody else sees an archive.
        let kind = if archived {
            "conversation_archived"
        } else {
            "conversation_unarchived"
        };
        let frame = encode_event(kind, &json!({"conversationId": id}));
        app.engine.notify_user(caller.id(), kind, &frame);
    }
    Ok(Json(
        conversation_view(&app, conv, Some((caller.id(), &state))).await?,
    ))
}

/// `PUT /conversations/{id}/archive`: hides it from the caller's active list (only
/// for the caller).
#[utoipa::path(put, path = "/conversations/{conversationId}/archive", tag = "conversations", params(("conversationId" = String, Path, description = "Conversation id (conv_...)")), responses((status = 200, description = "Archived for the caller", body = ConversationView), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn archive(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<ConversationView>, ApiError> {
    set_archived(app, caller, id, true).await
}

/// `PUT /conversations/{id}/unarchive`.
#[utoipa::path(put, path = "/conversations/{conversationId}/unarchive", tag = "conversations", params(("conversationId" = String, Path, description = "Conversation id (conv_...)")), responses((status = 200, description = "Active again for the caller", body = ConversationView), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn unarchive(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<ConversationView>, ApiError> {
    set_archived(app, caller, id, false).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryParams {
    /// Page size, 1-200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Only messages older than this (exclusive): a message id, Unix epoch milliseconds
    /// (up to 13 digits) or an ISO 8601 time (UTC when it has no zone).
    before: Option<String>,
    /// Only messages newer than this (exclusive): a message id, Unix epoch milliseconds
    /// (up to 13 digits) or an ISO 8601 time (UTC when it has no zone).
    after: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryPage {
    pub conversation_id: String,
    /// Oldest first.
    pub messages: Vec<MessageView>,
    /// Another page exists in the direction of the walk (older with `before` or with
    /// no bound, newer with only `after`).
    pub has_more: bool,
}

/// `GET /conversations/{id}/messages/history?limit=&before=&after=`. `before` and
/// `after` take a message id, Unix epoch milliseconds or an ISO 8601 time; both are
/// exclusive.
#[utoipa::path(get, path = "/conversations/{conversationId}/messages/history", tag = "messages", params(("conversationId" = String, Path, description = "Conversation id (conv_...)"), HistoryParams), responses((status = 200, description = "A page of history, oldest first", body = HistoryPage), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn history(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    QueryParams(params): QueryParams<HistoryParams>,
) -> Result<Json<HistoryPage>, ApiError> {
    let limit = query_int(
        "limit",
        params.limit.as_deref(),
        HISTORY_DEFAULT_LIMIT as u64,
        1..=HISTORY_MAX_LIMIT as u64,
    )? as usize;
    let before = bound("before", params.before.as_deref(), false)?;
    let after = bound("after", params.after.as_deref(), true)?;
    member_of(&app, &id, caller.id()).await?;
    let page = app
        .engine
        .history_page(
            &id,
            PageQuery {
                before,
                after,
                limit,
            },
        )
        .await?;
    let (messages, has_more) = (page.messages, page.has_more);
    Ok(Json(HistoryPage {
        conversation_id: id,
        messages: messages.into_iter().map(MessageView::from).collect(),
        has_more,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UnreadPage {
    pub conversation_id: String,
    #[serde(serialize_with = "roomcast_engine::message::opt_id_str")]
    #[schema(value_type = Option<String>)]
    pub last_read_message_id: Option<MessageId>,
    /// Unread messages from others (counted up to 1000).
    pub count: usize,
    /// The oldest unread messages (from others), oldest first, at most 200.
    pub messages: Vec<MessageView>,
    pub has_more: bool,
}

/// `GET /conversations/{id}/messages/unread`: what arrived from others after the
/// caller's read marker.
#[utoipa::path(get, path = "/conversations/{conversationId}/messages/unread", tag = "messages", params(("conversationId" = String, Path, description = "Conversation id (conv_...)")), responses((status = 200, description = "Messages from others after the caller's read marker", body = UnreadPage), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn unread(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<UnreadPage>, ApiError> {
    let me = caller.id();
    let (_, state) = member_of(&app, &id, me).await?;
    let store = app.engine.store();
    let count = store
        .count_unread(&id, state.last_read_id, me, UNREAD_COUNT_CAP)
        .await?;
    let (messages, has_more) = app
        .engine
        .unread_messages(&id, state.last_read_id, me, HISTORY_MAX_LIMIT)
        .await?;
    let messages = messages.into_iter().map(MessageView::from).collect();
    Ok(Json(UnreadPage {
        conversation_id: id,
        last_read_message_id: state.last_read_id,
        count,
        messages,
        has_more,
    }))
}
