//! Call signalling routes: `POST /calls`, `PUT /calls/accept`, `PUT /calls/end`,
//! `GET /calls/active`, and `GET /video/{interactionId}/token` (a LiveKit access token).
//! The state machine lives in `roomcast_engine::calls`; this module checks who may do
//! what, runs the ring timeouts (resumed after a restart), tells both parties on every
//! session (`call_incoming`, `call_accepted`, `call_ended`), and leaves a system message
//! in the conversation when a call finishes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roomcast_engine::SendRequest;
use roomcast_engine::calls::{
    CALL_PREFIX, Call, CallState, CallType, MediaOptions, StartError, Transition, TransitionError,
};
use roomcast_engine::chat::ConversationStatus;
use roomcast_engine::clock::{now_unix_ms, rfc3339_ms};
use roomcast_engine::message::MessageType;
use roomcast_engine::protocol::encode_event;
use roomcast_engine::{ClientError, ErrorCode, UserInfo};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::conversations::validate_user_id;
use super::{Caller, JsonBody, PathParam};
use crate::error::ApiError;
use crate::state::AppState;

/// A call as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallView {
    pub id: String,
    pub conversation_id: String,
    pub caller_id: String,
    pub callee_id: String,
    pub call_type: CallType,
    pub state: CallState,
    pub media: MediaOptions,
    /// Recording is on only when both parties consented.
    pub recording: bool,
    pub created_at: String,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    /// `declined`, `cancelled`, `missed`, `hangup` or the reason given.
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
    /// Seconds from answer to end.
    pub duration_secs: u64,
}

impl From<&Call> for CallView {
    fn from(c: &Call) -> Self {
        Self {
            id: c.id.clone(),
            conversation_id: c.conversation_id.clone(),
            caller_id: c.caller_id.clone(),
            callee_id: c.callee_id.clone(),
            call_type: c.call_type,
            state: c.state,
            media: c.media,
            recording: c.media.recording(),
            created_at: rfc3339_ms(c.created_at_ms),
            answered_at: c.answered_at_ms.map(rfc3339_ms),
            ended_at: c.ended_at_ms.map(rfc3339_ms),
            end_reason: c.end_reason.clone(),
            ended_by: c.ended_by.clone(),
            duration_secs: c.duration_secs(),
        }
    }
}

fn call_not_found() -> ApiError {
    ApiError::Client(ClientError::new(ErrorCode::CallNotFound, "no such call"))
}

fn conflict(call: &Call, what: &str) -> ApiError {
    let state = serde_json::to_value(call.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    ApiError::Client(ClientError::new(
        ErrorCode::CallStateConflict,
        format!("cannot {what} a call that is {state}"),
    ))
}

/// Tells both parties, on every session they have open.
fn tell_both(app: &AppState, call: &Call, kind: &'static str) {
    let frame = encode_event(kind, &json!({"call": CallView::from(call)}));
    for user in [&call.caller_id, &call.callee_id] {
        app.engine.notify_user(user, kind, &frame);
    }
}

/// After a call finishes: both parties get `call_ended`, the conversation a system
/// message ("Missed video call", "Audio call, 4 min").
async fn finished(app: &AppState, call: &Call) {
    tell_both(app, call, "call_ended");
    let outcome = match (call.state, call.end_reason.as_deref()) {
        (CallState::Missed, _) => "missed",
        (_, Some("declined")) => "declined",
        (_, Some("cancelled")) => "cancelled",
        _ => "completed",
    };
    metrics::counter!(roomcast_engine::metrics::CALLS_FINISHED, "outcome" => outcome).increment(1);
    let conv = match app.engine.store().conversation(&call.conversation_id).await {
        Ok(Some(c)) => c,
        _ => return,
    };
    let req = SendRequest {
        conversation: conv,
        sender: Arc::new(UserInfo {
            user_id: super::admin::SYSTEM_SENDER.to_owned(),
            username: super::admin::SYSTEM_SENDER.to_owned(),
            is_admin: true,
        }),
        content: call.summary(),
        message_type: MessageType::System,
        attachments: Vec::new(),
        client_msg_id: Some(format!("{}-summary", call.id)),
        admin: true,
        encrypted: false,
    };
    if let Err(e) = app.engine.send(req).await {
        tracing::info!(call_id = %call.id, error = %e, "call summary not posted");
    }
}

/// Rings for `ROOMCAST_CALL_RING_TIMEOUT_MS` from the call's start, then marks it
/// missed unless it was answered or ended meanwhile.
pub(crate) fn schedule_ring_timeout(app: &AppState, call: &Call) {
    let deadline = call.created_at_ms + app.config.call_ring_timeout.as_millis() as u64;
    let wait = Duration::from_millis(deadline.saturating_sub(now_unix_ms()));
    let (app, id, token) = (app.clone(), call.id.clone(), app.shutdown.token.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match app
            .calls
            .transition(
                &id,
                Transition::Miss {
                    at_ms: now_unix_ms(),
                },
            )
            .await
        {
            Ok(Ok(call)) => finished(&app, &call).await,
            Ok(Err(_)) => {} // answered or ended in time
            Err(e) => tracing::warn!(call_id = %id, error = %e, "ring timeout not applied"),
        }
    });
}

/// At start-up: resume the ring timeouts of calls that were ringing when the server
/// stopped (those already past their deadline become missed at once).
pub(crate) async fn resume(app: &AppState) {
    match app.calls.ringing_calls().await {
        Ok(calls) => {
            if !calls.is_empty() {
                tracing::info!(count = calls.len(), "resuming ring timeouts");
            }
            for call in &calls {
                schedule_ring_timeout(app, call);
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read ringing calls"),
    }
}

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
    let me = caller.id().to_owned();
    if body.partner_id == me {
        return Err(ApiError::BadRequest {
            field: "partnerId".into(),
            message: "you cannot call yourself".into(),
        });
    }
    let call_type = body.call_type.unwrap_or_default();
    if body.screen_share && call_type != CallType::Video {
        return Err(ApiError::BadRequest {
            field: "screenShare".into(),
            message: "screen sharing is offered on video calls".into(),
        });
    }
    let store = app.engine.store();
    let now = now_unix_ms();
    // A shared active conversation; a direct one if there is one.
    let mut shared: Vec<_> = store
        .user_conversations(&me)
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| {
            c.is_participant(&body.partner_id) && c.state_at(now) == ConversationStatus::Active
        })
        .collect();
    shared.sort_by_key(|c| {
        (
            c.participant_ids.len(),
            std::cmp::Reverse(c.last_activity_ms),
        )
    });
    let Some(conv) = shared.into_iter().next() else {
        // Told apart only now, so the common case reads one user's conversations.
        let known = !store.user_conversations(&body.partner_id).await?.is_empty();
        return Err(ApiError::Client(if known {
            ClientError::new(
                ErrorCode::Forbidden,
                "calls are only possible within an active conversation",
            )
        } else {
            ClientError::new(ErrorCode::UserNotFound, "no such user")
        }));
    };
    let call = Call {
        id: format!("{CALL_PREFIX}{}", app.engine.next_id()),
        conversation_id: conv.id,
        caller_id: me,
        callee_id: body.partner_id,
        call_type,
        state: CallState::Ringing,
        media: MediaOptions {
            screen_share: body.screen_share,
            caller_consents_to_recording: body.recording,
            callee_consents_to_recording: false,
        },
        created_at_ms: now,
        answered_at_ms: None,
        ended_at_ms: None,
        end_reason: None,
        ended_by: None,
    };
    match app.calls.start(call).await? {
        Ok(call) => {
            metrics::counter!(roomcast_engine::metrics::CALLS_STARTED, "type" => call.call_type.as_str())
                .increment(1);
            tell_both(&app, &call, "call_incoming");
            schedule_ring_timeout(&app, &call);
            Ok((StatusCode::CREATED, Json(CallView::from(&call))).into_response())
        }
        Err(StartError::Busy { user_id }) => {
            let who = if user_id == caller.id() {
                "you are"
            } else {
                "your partner is"
            };
            Err(ApiError::Client(ClientError::new(
                ErrorCode::Busy,
                format!("{who} already in a call"),
            )))
        }
    }
}

/// The call `id` if the caller is one of its parties (404 otherwise).
async fn party_call(app: &AppState, id: &str, user_id: &str) -> Result<Call, ApiError> {
    if !id.starts_with(CALL_PREFIX) {
        return Err(call_not_found());
    }
    app.calls
        .call(id)
        .await?
        .filter(|c| c.is_party(user_id))
        .ok_or_else(call_not_found)
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
    let call = party_call(&app, &body.call_id, caller.id()).await?;
    if call.callee_id != caller.id() {
        return Err(ApiError::Client(ClientError::new(
            ErrorCode::Forbidden,
            "only the callee may accept a call",
        )));
    }
    let t = Transition::Accept {
        at_ms: now_unix_ms(),
        recording_consent: body.recording,
    };
    match app.calls.transition(&call.id, t).await? {
        Ok(call) => {
            tell_both(&app, &call, "call_accepted");
            Ok(Json(CallView::from(&call)))
        }
        Err(TransitionError::NotFound) => Err(call_not_found()),
        Err(TransitionError::Conflict(c)) => Err(conflict(&c, "accept")),
    }
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
    let call = party_call(&app, &body.call_id, caller.id()).await?;
    let t = Transition::End {
        at_ms: now_unix_ms(),
        by: caller.id().to_owned(),
        reason,
    };
    match app.calls.transition(&call.id, t).await? {
        Ok(call) => {
            finished(&app, &call).await;
            Ok(Json(CallView::from(&call)))
        }
        Err(TransitionError::NotFound) => Err(call_not_found()),
        Err(TransitionError::Conflict(c)) => Err(conflict(&c, "end")),
    }
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
    app.calls
        .live_call_of(caller.id())
        .await?
        .map(|c| Json(CallView::from(&c)))
        .ok_or_else(|| {
            ApiError::Client(ClientError::new(
                ErrorCode::CallNotFound,
                "no call in progress",
            ))
        })
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
#[utoipa::path(get, path = "/video/{interaction_id}/token", tag = "calls",
    params(("interaction_id" = String, Path, description = "The call id")),
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
    let call = party_call(&app, &interaction_id, caller.id()).await?;
    if !call.state.is_live() {
        return Err(conflict(&call, "join"));
    }
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
