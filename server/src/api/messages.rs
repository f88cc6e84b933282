//! Message routes: send (`POST /messages`), read marker (`PUT /messages/{id}/read`),
//! soft delete (`DELETE /messages/{id}`), reactions
//! (`PUT|DELETE /messages/{id}/reaction/{reaction}`) and typing
//! (`PUT /messages/typing/{isTyping}`). Each mutation emits its WebSocket event to the
//! conversation's participants.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roomcast_engine::SendRequest;
use roomcast_engine::chat::{Conversation, MemberUpdate, is_conversation, validate_reaction};
use roomcast_engine::ids::MessageId;
use roomcast_engine::message::ChatMessage;
use roomcast_engine::message::{Attachment, MessageType};
use roomcast_engine::protocol::{encode_event, encode_typing};
use roomcast_engine::{ClientError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Caller, JsonBody, MessageView, PathParam, message_id, message_not_found};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SendMessage {
    #[schema(pattern = "^conv_[0-9]+$", max_length = 64)]
    pub conversation_id: String,
    /// The text (a caption for image and file messages, which may leave it empty).
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub message_type: Option<MessageType>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Idempotency key: a resend with the same id is stored and delivered once.
    #[serde(default)]
    pub client_msg_id: Option<String>,
    /// `message` is end-to-end encrypted (Signal protocol): opaque to the server, so not
    /// moderated; at most 16 KiB. Push notifications carry no preview for it.
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SentMessage {
    pub message: MessageView,
    /// True when `clientMsgId` had been sent before: `message` is the original (its
    /// content is not repeated).
    pub duplicate: bool,
}

/// Sends and answers `201` with the stored message (or `200` for a duplicate).
pub(crate) async fn send_as(
    app: &AppState,
    conversation: Conversation,
    sender: roomcast_engine::UserInfo,
    body: SendMessage,
    message_type: MessageType,
    admin: bool,
) -> Result<Response, ApiError> {
    let acked = app
        .engine
        .send(SendRequest {
            conversation,
            sender: Arc::new(sender),
            content: body.message,
            message_type,
            attachments: body.attachments,
            client_msg_id: body.client_msg_id,
            admin,
            encrypted: body.encrypted,
        })
        .await?;
    let status = if acked.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = SentMessage {
        message: MessageView::from(acked.message),
        duplicate: acked.duplicate,
    };
    Ok((status, Json(body)).into_response())
}

/// `POST /messages`.
#[utoipa::path(post, path = "/messages", tag = "messages", request_body = SendMessage, responses((status = 201, description = "Stored (durable) and delivered", body = SentMessage), (status = 200, description = "A resend of a stored clientMsgId", body = SentMessage), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 409, description = "The conversation is closed or snoozed", body = crate::error::ErrorBody), (status = 413, description = "Message longer than MAX_MESSAGE_LENGTH or body too large", body = crate::error::ErrorBody), (status = 422, description = "Rejected by moderation", body = crate::error::ErrorBody), (status = 429, description = "Rate limited; `Retry-After` says when to retry", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn send(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SendMessage>,
) -> Result<Response, ApiError> {
    let message_type = body.message_type.unwrap_or_default();
    if message_type == MessageType::System {
        return Err(ApiError::BadRequest {
            field: "messageType".into(),
            message: "system messages are sent through POST /private/messages".into(),
        });
    }
    let (conv, _) = super::member_of(&app, &body.conversation_id, caller.id()).await?;
    let user_id = caller.id().to_owned();
    let sent = send_as(&app, conv, caller.0.into_user(), body, message_type, false).await;
    // The headers tell the message allowance (the one a socket's messages share).
    if let Some(slot) = &caller.1 {
        slot.set(app.engine.message_quota(&user_id).await);
    }
    sent
}

/// The message `raw_id` and its conversation: for a participant, or for an
/// administrator (`viewer` = `None`) in any conversation. 404 otherwise.
async fn locate(
    app: &AppState,
    raw_id: &str,
    viewer: Option<&str>,
) -> Result<(Conversation, ChatMessage), ApiError> {
    let id = message_id(raw_id)?;
    let store = app.engine.store();
    let room = store
        .locate_message(id)
        .await?
        .filter(|r| is_conversation(r))
        .ok_or_else(message_not_found)?;
    let conv = match viewer {
        Some(user_id) => store.membership(&room, user_id).await?.map(|(c, _)| c),
        None => store.conversation(&room).await?,
    }
    .ok_or_else(message_not_found)?;
    let msg = app
        .engine
        .stores()
        .history
        .get(&room, id)
        .await?
        .ok_or_else(message_not_found)?;
    Ok((conv, msg))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReadMarker {
    pub conversation_id: String,
    #[serde(serialize_with = "roomcast_engine::message::opt_id_str")]
    #[schema(value_type = Option<String>)]
    pub last_read_message_id: Option<MessageId>,
    /// False when the marker was already at or past this message.
    pub moved: bool,
}

/// `PUT /messages/{id}/read`: moves the caller's read marker forward to this message;
/// the other participants get a `read` event.
#[utoipa::path(put, path = "/messages/{messageId}/read", tag = "messages", params(("messageId" = String, Path, description = "Message id (decimal string)")), responses((status = 200, description = "Read marker (moves forward only); others get a `read` event", body = ReadMarker), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such message, or not in a conversation of the caller's", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn mark_read(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(raw_id): PathParam<String>,
) -> Result<Json<ReadMarker>, ApiError> {
    let me = caller.id();
    let (conv, msg) = locate(&app, &raw_id, Some(me)).await?;
    let (state, moved) = app
        .engine
        .store()
        .update_member(&conv.id, me, MemberUpdate::ReadUpTo(msg.message_id))
        .await?
        .ok_or_else(message_not_found)?;
    if moved {
        let frame = encode_event(
            "read",
            &json!({
                "conversationId": conv.id,
                "userId": me,
                "messageId": msg.message_id.to_string(),
            }),
        );
        app.engine.emit(&conv, "read", frame, Some(me)).await?;
    }
    Ok(Json(ReadMarker {
        conversation_id: conv.id,
        last_read_message_id: state.last_read_id,
        moved,
    }))
}

/// `DELETE /messages/{id}`: the sender (or an administrator)
/// tombstones a message: its content is removed, its place in history kept; everyone
/// gets a `message_deleted` event.
#[utoipa::path(delete, path = "/messages/{messageId}", tag = "messages", params(("messageId" = String, Path, description = "Message id (decimal string)")), responses((status = 200, description = "Tombstoned; participants get `message_deleted`", body = MessageView), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 403, description = "Not the sender nor an admin", body = crate::error::ErrorBody), (status = 404, description = "No such message, or not in a conversation of the caller's", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(raw_id): PathParam<String>,
) -> Result<Json<MessageView>, ApiError> {
    let me = caller.id();
    let viewer = if caller.is_admin() { None } else { Some(me) };
    let (conv, msg) = locate(&app, &raw_id, viewer).await?;
    if msg.user_id != me && !caller.is_admin() {
        return Err(ApiError::Client(ClientError::new(
            ErrorCode::Forbidden,
            "only the sender or an administrator may delete a message",
        )));
    }
    if !msg.deleted {
        app.engine
            .stores()
            .history
            .tombstone(&conv.id, msg.message_id)
            .await?;
        let frame = encode_event(
            "message_deleted",
            &json!({
                "conversationId": conv.id,
                "messageId": msg.message_id.to_string(),
                "deletedBy": me,
            }),
        );
        app.engine
            .emit(&conv, "message_deleted", frame, None)
            .await?;
    }
    let msg = app
        .engine
        .stores()
        .history
        .get(&conv.id, msg.message_id)
        .await?
        .ok_or_else(message_not_found)?;
    Ok(Json(MessageView::from(msg)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReactionResult {
    pub message: MessageView,
    /// The caller's reaction now (`null` after a removal).
    pub my_reaction: Option<String>,
}

async fn react(
    app: AppState,
    caller: Caller,
    raw_id: String,
    reaction: Option<String>,
) -> Result<Json<ReactionResult>, ApiError> {
    if let Some(r) = &reaction {
        validate_reaction(r).map_err(ApiError::Client)?;
    }
    let me = caller.id();
    let (conv, msg) = locate(&app, &raw_id, Some(me)).await?;
    if msg.deleted {
        return Err(message_not_found());
    }
    conv.check_send(roomcast_engine::clock::now_unix_ms(), false)?;
    let store = app.engine.store();
    let before = store.reaction_of(&conv.id, msg.message_id, me).await?;
    let updated = store
        .set_reaction(&conv.id, msg.message_id, me, reaction.as_deref())
        .await?
        .ok_or_else(message_not_found)?;
    if before != reaction {
        let frame = encode_event(
            "reaction",
            &json!({
                "conversationId": conv.id,
                "messageId": msg.message_id.to_string(),
                "userId": me,
                "reaction": reaction,
                "reactions": updated.reactions,
            }),
        );
        app.engine.emit(&conv, "reaction", frame, None).await?;
    }
    Ok(Json(ReactionResult {
        message: MessageView::from(updated),
        my_reaction: reaction,
    }))
}

/// `PUT /messages/{id}/reaction/{reaction}`: sets (or replaces) the caller's one
/// reaction. Reactions: like, love, laugh, wow, sad, angry.
#[utoipa::path(put, path = "/messages/{messageId}/reaction/{reaction}", tag = "messages", params(("messageId" = String, Path, description = "Message id (decimal string)"), ("reaction" = String, Path, description = "like, love, laugh, wow, sad, angry, or one emoji (percent-encoded UTF-8, e.g. %F0%9F%91%8D for 👍)")), responses((status = 200, description = "The caller's one reaction, set or replaced", body = ReactionResult), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such message, or not in a conversation of the caller's", body = crate::error::ErrorBody), (status = 409, description = "The conversation is closed or snoozed", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn put_reaction(
    State(app): State<AppState>,
    caller: Caller,
    PathParam((raw_id, reaction)): PathParam<(String, String)>,
) -> Result<Json<ReactionResult>, ApiError> {
    react(app, caller, raw_id, Some(reaction)).await
}

/// `DELETE /messages/{id}/reaction`: removes the caller's reaction.
#[utoipa::path(delete, path = "/messages/{messageId}/reaction", tag = "messages", params(("messageId" = String, Path, description = "Message id (decimal string)")), responses((status = 200, description = "The caller's reaction removed", body = ReactionResult), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such message, or not in a conversation of the caller's", body = crate::error::ErrorBody), (status = 409, description = "The conversation is closed or snoozed", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn delete_reaction(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(raw_id): PathParam<String>,
) -> Result<Json<ReactionResult>, ApiError> {
    react(app, caller, raw_id, None).await
}

/// `DELETE /messages/{id}/reaction/{reaction}`: removes the caller's reaction (the
/// name must be a valid reaction; whichever the caller has is removed).
#[utoipa::path(delete, path = "/messages/{messageId}/reaction/{reaction}", tag = "messages", params(("messageId" = String, Path, description = "Message id (decimal string)"), ("reaction" = String, Path, description = "like, love, laugh, wow, sad, angry, or one emoji (percent-encoded UTF-8, e.g. %F0%9F%91%8D for 👍)")), responses((status = 200, description = "The caller's reaction removed", body = ReactionResult), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such message, or not in a conversation of the caller's", body = crate::error::ErrorBody), (status = 409, description = "The conversation is closed or snoozed", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn delete_named_reaction(
    State(app): State<AppState>,
    caller: Caller,
    PathParam((raw_id, reaction)): PathParam<(String, String)>,
) -> Result<Json<ReactionResult>, ApiError> {
    validate_reaction(&reaction).map_err(ApiError::Client)?;
    react(app, caller, raw_id, None).await
}

/// `isTyping` in the path.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub(crate) enum TypingFlag {
    True,
    False,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TypingBody {
    #[schema(pattern = "^conv_[0-9]+$", max_length = 64)]
    pub conversation_id: String,
}

/// `PUT /messages/typing/{isTyping}` with `{"conversationId"}`: a `typing_indicator`
/// event to the other participants. Limited per user like a socket's typing frames
/// (excess signals are dropped, still answered 200).
#[utoipa::path(put, path = "/messages/typing/{isTyping}", tag = "messages", request_body = TypingBody, params(("isTyping" = TypingFlag, Path, description = "true or false")), responses((status = 200, description = "Sent to the other participants (`sent: false` when over the typing rate)", body = serde_json::Value), (status = 400, description = "Invalid input; `details.field` names the field", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "No such conversation, or the caller is not a participant", body = crate::error::ErrorBody), (status = 409, description = "The conversation is closed or snoozed", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable or server shutting down; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn typing(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(is_typing): PathParam<String>,
    JsonBody(body): JsonBody<TypingBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let is_typing = match is_typing.as_str() {
        "true" | "1" => true,
        "false" | "0" => false,
        _ => {
            return Err(ApiError::BadRequest {
                field: "isTyping".into(),
                message: "isTyping must be true or false".into(),
            });
        }
    };
    if body.conversation_id.is_empty() {
        return Err(ApiError::BadRequest {
            field: "conversationId".into(),
            message: "conversationId must not be empty".into(),
        });
    }
    let (conv, _) = super::member_of(&app, &body.conversation_id, caller.id()).await?;
    conv.check_send(roomcast_engine::clock::now_unix_ms(), false)?;
    let sent = app.engine.allow_typing(caller.id()).await;
    if sent {
        let user = caller.0.user();
        let frame = encode_typing(&user.user_id, &user.username, &conv.id, is_typing);
        app.engine
            .emit(&conv, "typing", frame, Some(&user.user_id))
            .await?;
    } else {
        metrics::counter!(roomcast_engine::metrics::TYPING_DROPPED).increment(1);
    }
    Ok(Json(
        json!({"conversationId": conv.id, "isTyping": is_typing, "sent": sent}),
    ))
}
