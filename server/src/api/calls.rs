//! Call signalling routes: `POST /calls`, `PUT /calls/accept`, `PUT /calls/end`,
//! `GET /calls/active`, and `GET /video/{interactionId}/token` (a LiveKit access token).
//! The call service (who may call whom, ring timeouts, events to both parties, the
//! summary message) is `roomcast_engine::calls::CallService`; these handlers parse,
//! validate the request's shape, and mint the provider token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roomcast_engine::calls::{self, CallType, CallView};
use roomcast_engine::clock::{now_unix_ms, rfc3339_ms};
use roomcast_engine::{ClientError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::conversations::validate_user_id;
use super::{Caller, JsonBody, PathParam};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StartCall {
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub partner_id: String,
    /// `audio` (default) or `video`.
    #[serde(default)]
    pub call_type: Option<CallType>,
    /// Offer screen sharing (video calls only).
    #[serde(default)]
    pub screen_share: bool,
    /// The caller consents to recording (recording needs both parties).
    #[serde(default)]
    pub recording: bool,
}

/// `POST /calls`: rings `partnerId`. Only between users who share an active
/// conversation (403 otherwise; 404 `user_not_found` for a partner with no
/// conversation at all); 409 `busy` when either is already in a call.
#[utoipa::path(post, path = "/calls", tag = "calls", request_body = StartCall, responses(
    (status = 201, description = "Ringing; both parties get `call_incoming`", body = CallView),
    (status = 400, description = "Invalid input", body = crate::error::ErrorBody),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 403, description = "No active conversation shared with the partner", body = crate::error::ErrorBody),
    (status = 404, description = "Unknown partner", body = crate::error::ErrorBody),
    (status = 409, description = "Caller or callee busy", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn start(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<StartCall>,
) -> Result<Response, ApiError> {
    validate_user_id("partnerId", &body.partner_id)?;
    let req = calls::StartCall {
        partner_id: body.partner_id,
        call_type: body.call_type.unwrap_or_default(),
        screen_share: body.screen_share,
        recording: body.recording,
    };
    let call = app.engine.calls().start(caller.id(), req).await?;
    Ok((StatusCode::CREATED, Json(CallView::from(&call))).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AcceptCall {
    #[schema(pattern = "^call_[0-9]+$", max_length = 64)]
    pub call_id: String,
    /// The callee consents to recording.
    #[serde(default)]
    pub recording: bool,
}

/// `PUT /calls/accept`: the callee answers a ringing call.
#[utoipa::path(put, path = "/calls/accept", tag = "calls", request_body = AcceptCall, responses(
    (status = 200, description = "Active; both parties get `call_accepted`", body = CallView),
    (status = 400, description = "Invalid input", body = crate::error::ErrorBody),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 403, description = "Only the callee may accept", body = crate::error::ErrorBody),
    (status = 404, description = "No such call of the caller's", body = crate::error::ErrorBody),
    (status = 409, description = "Not ringing (already accepted, ended or missed)", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn accept(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<AcceptCall>,
) -> Result<Json<CallView>, ApiError> {
    let call = app
        .engine
        .calls()
        .accept(&body.call_id, caller.id(), body.recording)
        .await?;
    Ok(Json(CallView::from(&call)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EndCall {
    #[schema(pattern = "^call_[0-9]+$", max_length = 64)]
    pub call_id: String,
    /// Why (kept for an active call; a ringing call ends as `declined` by the callee or
    /// `cancelled` by the caller).
    #[serde(default)]
    #[schema(max_length = 100, pattern = "^[^\\x00-\\x1f\\x7f]*$")]
    pub reason: Option<String>,
}

/// `PUT /calls/end`: either party ends the call.
#[utoipa::path(put, path = "/calls/end", tag = "calls", request_body = EndCall, responses(
    (status = 200, description = "Ended; both parties get `call_ended`, the conversation a system message", body = CallView),
    (status = 400, description = "Invalid input", body = crate::error::ErrorBody),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 404, description = "No such call of the caller's", body = crate::error::ErrorBody),
    (status = 409, description = "Already ended or missed", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn end(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<EndCall>,
) -> Result<Json<CallView>, ApiError> {
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "hangup".to_owned());
    if reason.chars().count() > 100 || reason.chars().any(char::is_control) {
        return Err(ApiError::BadRequest {
            field: "reason".into(),
            message: "reason is at most 100 characters, no control characters".into(),
        });
    }
    let call = app
        .engine
        .calls()
        .end(&body.call_id, caller.id(), reason)
        .await?;
    Ok(Json(CallView::from(&call)))
}

/// `GET /calls/active`: the caller's ringing or active call.
#[utoipa::path(get, path = "/calls/active", tag = "calls", responses(
    (status = 200, description = "The caller's current call", body = CallView),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 404, description = "No call in progress", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn active(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<CallView>, ApiError> {
    let call = app.engine.calls().active(caller.id()).await?;
    Ok(Json(CallView::from(&call)))
}

/// A LiveKit access token's claims.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct VideoClaims {
    pub iss: String,
    pub sub: String,
    pub name: String,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    pub video: VideoGrant,
    /// JSON: the call's media options, for the client UI.
    pub metadata: String,
}

/// LiveKit's video grant (camelCase as LiveKit reads it).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VideoGrant {
    pub room: String,
    pub room_join: bool,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub can_publish_sources: Vec<String>,
    pub room_record: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VideoToken {
    /// The provider access token (a JWT).
    pub token: String,
    /// Where the client connects with it.
    pub url: String,
    /// The provider room: the call id.
    pub room: String,
    pub identity: String,
    pub expires_at: String,
    pub call: CallView,
}

/// `GET /video/{interactionId}/token`: a short-lived provider token for a party of a
/// ringing or active call. Audio calls may publish the microphone; video calls the
/// camera too, and the screen when screen sharing was offered; `roomRecord` only when
/// both parties consented to recording.
#[utoipa::path(get, path = "/video/{interactionId}/token", tag = "calls",
    params(("interactionId" = String, Path, description = "The call id")),
    responses(
    (status = 200, description = "A provider token", body = VideoToken),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 404, description = "No such call of the caller's", body = crate::error::ErrorBody),
    (status = 409, description = "The call is over", body = crate::error::ErrorBody),
    (status = 503, description = "No video provider configured", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn video_token(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(interaction_id): PathParam<String>,
) -> Result<Json<VideoToken>, ApiError> {
    let Some(video) = app.config.video.clone() else {
        return Err(ApiError::Client(ClientError::new(
            ErrorCode::VideoUnavailable,
            "no video provider is configured on this server",
        )));
    };
    let calls = app.engine.calls();
    let call = calls.party_call(&interaction_id, caller.id()).await?;
    calls.check_live(&call)?;
    let mut sources = vec!["microphone".to_owned()];
    if call.call_type == CallType::Video {
        sources.push("camera".to_owned());
        if call.media.screen_share {
            sources.push("screen_share".to_owned());
            sources.push("screen_share_audio".to_owned());
        }
    }
    let now = now_unix_ms() / 1000;
    let exp = now + video.token_ttl.as_secs();
    let user = caller.0.user();
    let claims = VideoClaims {
        iss: video.api_key.clone(),
        sub: user.user_id.clone(),
        name: user.username.clone(),
        nbf: now,
        exp,
        jti: format!("{}-{}-{now}", call.id, user.user_id),
        video: VideoGrant {
            room: call.id.clone(),
            room_join: true,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            can_publish_sources: sources,
            room_record: call.media.recording(),
        },
        metadata: json!({
            "callType": call.call_type.as_str(),
            "screenShare": call.media.screen_share,
            "recording": call.media.recording(),
        })
        .to_string(),
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(video.api_secret.as_bytes()),
    )
    .map_err(|e| ApiError::Internal(format!("video token: {e}")))?;
    metrics::counter!(roomcast_engine::metrics::VIDEO_TOKENS).increment(1);
    Ok(Json(VideoToken {
        token,
        url: video.url,
        room: call.id.clone(),
        identity: user.user_id.clone(),
        expires_at: rfc3339_ms(exp * 1000),
        call: CallView::from(&call),
    }))
}
