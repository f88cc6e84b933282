//! Presence over REST: seed 004's `getOnlineUsers(roomId?)` and `getUserStatus(userId)`.
//! Answered only about users who share a conversation with the caller (or, for a public
//! room, whom the caller meets in it); anyone else reads as an unknown user.

use axum::Json;
use axum::extract::State;
use roomcast_engine::chat::is_conversation;
use roomcast_engine::clock::rfc3339_ms;
use roomcast_engine::protocol::{validate_room_id, validate_user_id};
use roomcast_engine::{ClientError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::{Caller, PathParam, QueryParams, member_of};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OnlineParams {
    /// A conversation of the caller's, or a public room the caller is present in.
    /// Without it: the caller's conversation partners.
    #[param(pattern = "^[A-Za-z0-9_.:@-]{1,128}$")]
    room_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OnlineUsers {
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<String>,
    /// User ids, sorted.
    users: Vec<String>,
}

/// `GET /api/presence/online?roomId=`: who is online.
#[utoipa::path(get, path = "/api/presence/online", tag = "presence", params(OnlineParams), responses((status = 200, description = "Online users, sorted", body = OnlineUsers), (status = 400, description = "Invalid roomId", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 404, description = "A conversation the caller is not part of (`conversation_not_found`), or a public room the caller is not in (`not_member`)", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn online_users(
    State(app): State<AppState>,
    caller: Caller,
    QueryParams(params): QueryParams<OnlineParams>,
) -> Result<Json<OnlineUsers>, ApiError> {
    let engine = &app.engine;
    let users = match &params.room_id {
        Some(room) => {
            validate_room_id(room)?;
            if is_conversation(room) {
                let (conv, _) = member_of(&app, room, caller.id()).await?;
                engine.online_among(&conv.participant_ids)
            } else {
                let users = engine.room_users(room).await;
                if !users.iter().any(|u| u == caller.id()) {
                    return Err(ClientError::new(
                        ErrorCode::NotMember,
                        "join the room to see who is in it",
                    )
                    .in_room(room)
                    .into());
                }
                users
            }
        }
        None => engine.online_among(&engine.partners_of(caller.id()).await?),
    };
    Ok(Json(OnlineUsers {
        room_id: params.room_id,
        users,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserStatusView {
    user_id: String,
    online: bool,
    /// When the user was last online (RFC 3339), if known and offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<String>,
}

/// `GET /api/presence/users/{userId}`: online, and when last seen.
#[utoipa::path(get, path = "/api/presence/users/{userId}", tag = "presence", params(("userId" = String, Path, description = "User id: 1-128 printable ASCII")), responses((status = 200, description = "The status (an unrelated or unknown user reads as offline, never seen)", body = UserStatusView), (status = 400, description = "Invalid user id", body = crate::error::ErrorBody), (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody), (status = 503, description = "Storage unavailable; retry", body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn user_status(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(user_id): PathParam<String>,
) -> Result<Json<UserStatusView>, ApiError> {
    validate_user_id(&user_id)?;
    let status = app.engine.user_status(caller.id(), &user_id, &[]).await?;
    Ok(Json(UserStatusView {
        user_id,
        online: status.online,
        last_seen: status.last_seen_ms.map(rfc3339_ms),
    }))
}
