//! The chat REST API of seed 000 (conversations, messages, receipts, reactions,
//! typing, and the admin `/private` routes): request extractors with typed errors,
//! the JSON views, and the handlers in [`conversations`], [`messages`], [`admin`],
//! [`calls`], [`keys`], [`rooms`] (public rooms' history) and [`presence`].
//! Every handler authenticates with `Authorization: Bearer`, answers 404 to anyone
//! who is not a participant (existence is not leaked), and sends messages through
//! [`roomcast_engine::Engine::send`], the same checks and shard as a socket's message.

pub(crate) mod admin;
pub(crate) mod budget;
pub(crate) mod calls;
pub(crate) mod conversations;
pub(crate) mod keys;
pub(crate) mod messages;
pub(crate) mod presence;
pub(crate) mod rooms;

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use roomcast_engine::chat::{Conversation, ConversationStatus, MemberState};
use roomcast_engine::clock::{now_unix_ms, rfc3339_ms};
use roomcast_engine::ids::MessageId;
use roomcast_engine::message::Attachment;
use roomcast_engine::message::ChatMessage;
use roomcast_engine::{ClientError, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// Largest accepted request body.
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024;

/// The authenticated caller (`Authorization: Bearer <jwt>`), who has taken one request
/// from the route's budget ([`budget`]); the slot carries the quota to the headers.
#[derive(Debug)]
pub(crate) struct Caller(pub Principal, Option<budget::QuotaSlot>);

impl Caller {
    /// Reports `quota` in the response's `RateLimit-*` headers instead of the route
    /// group's (a handler that knows a tighter budget).
    pub(crate) fn report_quota(&self, quota: roomcast_engine::ratelimit::Quota) {
        if let Some(slot) = &self.1 {
            slot.set(quota);
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.0.user().user_id
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.0.user().is_admin
    }

    /// `403 forbidden` unless the token carries the admin role.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        Caller::extract(parts, app, None).await
    }
}

/// A caller whose token may also come as `?token=` (the read routes a browser or a
/// dashboard opens as a plain URL); the same budget as [`Caller`].
#[derive(Debug)]
pub(crate) struct QueryCaller(pub Caller);

#[derive(serde::Deserialize)]
struct TokenParam {
    token: Option<String>,
}

impl FromRequestParts<AppState> for QueryCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = axum::extract::Query::<TokenParam>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.token);
        Caller::extract(parts, app, token.as_deref())
            .await
            .map(QueryCaller)
    }
}

impl Caller {
    /// Authenticates, then takes one request from the route group's budget.
    async fn extract(
        parts: &mut Parts,
        app: &AppState,
        query_token: Option<&str>,
    ) -> Result<Self, ApiError> {
        let principal = app.authenticate(&parts.headers, query_token).await?;
        let slot = parts.extensions.get::<budget::QuotaSlot>().cloned();
        let group = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .and_then(|p| budget::group_of(&parts.method, p.as_str()));
        if let Some(group) = group {
            match app.budgets.take(group, &principal.user().user_id) {
                Ok(Some(quota)) => {
                    if let Some(s) = &slot {
                        s.set(quota);
                    }
                }
                Ok(None) => {}
                Err(refused) => {
                    if let Some(s) = &slot {
                        s.set(refused.quota);
                    }
                    return Err(*refused.error);
                }
            }
        }
        Ok(Caller(principal, slot))
    }
}

/// An authenticated administrator: 401 without a valid token, 403 without the admin
/// role, before the body is even read.
#[derive(Debug)]
pub(crate) struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, app).await?;
        caller.require_admin()?;
        Ok(Admin(caller))
    }
}

/// Path parameters; a segment that does not decode is a 404 in the one error shape.
#[derive(Debug)]
pub(crate) struct PathParam<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, app)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|_| ApiError::NotFound)
    }
}

/// Query parameters; a query string that does not parse is a 400 in the one error
/// shape (handlers take strings and validate each parameter themselves).
#[derive(Debug)]
pub(crate) struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|e| ApiError::BadRequest {
                field: "query".into(),
                message: e.body_text(),
            })
    }
}

/// A JSON body parsed with errors that name the field (`details.field`).
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

/// Reads the body; an empty body is `None`. The whole body must arrive within
/// `ROOMCAST_HTTP_BODY_TIMEOUT_MS`: a client that sends part of one and goes silent would
/// otherwise hold the connection (and a task) forever.
async fn body_bytes(req: Request, app: &AppState) -> Result<Option<bytes::Bytes>, ApiError> {
    let limit = app.config.http_body_timeout;
    let headers: HeaderMap = req.headers().clone();
    let bytes = tokio::time::timeout(limit, axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES))
        .await
        .map_err(|_| ApiError::BodyTimeout {
            ms: limit.as_millis() as u64,
        })?
        .map_err(|_| ApiError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("application/json") || ct.contains("+json"));
    if !json {
        return Err(ApiError::BadRequest {
            field: "body".into(),
            message: "the body must be JSON (Content-Type: application/json)".into(),
        });
    }
    Ok(Some(bytes))
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
        // A missing field is reported at its parent; name the field itself.
        let field = match text.strip_prefix("missing field `") {
            Some(rest) => {
                let name = rest.trim_end_matches('`');
                if path == "." {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                }
            }
            None if path == "." => "body".to_owned(),
            None => path,
        };
        ApiError::BadRequest {
            field,
            message: if inner.is_syntax() || inner.is_eof() {
                format!("malformed JSON: {text}")
            } else {
                text
            },
        }
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        match body_bytes(req, app).await? {
            Some(bytes) => parse_json(&bytes).map(JsonBody),
            None => Err(ApiError::BadRequest {
                field: "body".into(),
                message: "a JSON body is required".into(),
            }),
        }
    }
}

/// A JSON body that may be absent or `null` (then `T::default()`).
#[derive(Debug)]
pub(crate) struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        match body_bytes(req, app).await? {
            // JSON `null` is an absent body too.
            Some(bytes) => {
                parse_json::<Option<T>>(&bytes).map(|v| OptionalJsonBody(v.unwrap_or_default()))
            }
            None => Ok(OptionalJsonBody(T::default())),
        }
    }
}

pub(crate) fn conversation_not_found() -> ApiError {
    ApiError::Client(ClientError::new(
        ErrorCode::ConversationNotFound,
        "no such conversation",
    ))
}

pub(crate) fn message_not_found() -> ApiError {
    ApiError::Client(ClientError::new(
        ErrorCode::MessageNotFound,
        "no such message",
    ))
}

/// Parses an optional query integer within `range`, naming the parameter on error.
pub(crate) fn query_int(
    field: &'static str,
    raw: Option<&str>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest {
            field: field.into(),
            message: format!(
                "{field} must be an integer from {} to {}",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// Parses a message id path segment (404 when it cannot be one).
pub(crate) fn message_id(raw: &str) -> Result<MessageId, ApiError> {
    raw.parse::<u64>().map_err(|_| message_not_found())
}

/// A message as the REST API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageView {
    #[serde(serialize_with = "roomcast_engine::message::id_str")]
    #[schema(value_type = String)]
    pub message_id: MessageId,
    /// The message's place in its conversation (1, 2, 3, ... without gaps).
    pub seq: u64,
    pub conversation_id: String,
    pub sender_id: String,
    pub sender_name: String,
    pub content: String,
    pub message_type: &'static str,
    pub attachments: Vec<Attachment>,
    pub reactions: BTreeMap<String, u32>,
    pub deleted: bool,
    /// End-to-end encrypted content (opaque to the server).
    pub encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// Server time (RFC 3339, milliseconds, UTC).
    pub timestamp: String,
}

impl From<ChatMessage> for MessageView {
    fn from(m: ChatMessage) -> Self {
        Self {
            timestamp: rfc3339_ms(m.timestamp_ms()),
            message_id: m.message_id,
            seq: m.seq,
            conversation_id: m.room_id,
            sender_id: m.user_id,
            sender_name: m.username,
            content: m.content,
            message_type: m.message_type.as_str(),
            attachments: m.attachments,
            reactions: m.reactions,
            deleted: m.deleted,
            encrypted: m.encrypted,
            client_msg_id: m.client_msg_id,
        }
    }
}

/// Who closed a conversation, when and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClosedView {
    pub at: String,
    pub by: String,
    pub reason: Option<String>,
}

/// A conversation as one user (or an admin) sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConversationView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub participant_ids: Vec<String>,
    /// The other participants who are online now (absent in admin views). Changes
    /// arrive on the socket as `user_status` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online_participant_ids: Option<Vec<String>>,
    pub title: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub last_activity_at: String,
    /// `active`, `archived` (for the caller), `closed` or `snoozed`.
    pub status: ConversationStatus,
    pub last_message: Option<MessageView>,
    /// Messages from others after the caller's read marker (absent in admin views).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_count: Option<usize>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "roomcast_engine::message::opt_id_str"
    )]
    #[schema(value_type = Option<String>)]
    pub last_read_message_id: Option<MessageId>,
    pub closed: Option<ClosedView>,
    pub snoozed_until: Option<String>,
    pub snooze_reason: Option<String>,
}

/// Counting unread messages stops here (the view then says `unreadCount: 1000`).
pub(crate) const UNREAD_COUNT_CAP: usize = 1000;

/// Builds the view of `conv`; `member` is the caller's state (None for admin views).
pub(crate) async fn conversation_view(
    app: &AppState,
    conv: Conversation,
    member: Option<(&str, &MemberState)>,
) -> Result<ConversationView, ApiError> {
    let now = now_unix_ms();
    let store = app.engine.store();
    let last_message = match conv.last_message_id {
        Some(id) => app.engine.stores().history.get(&conv.id, id).await?,
        None => None,
    };
    let (status, unread, last_read) = match member {
        Some((user, state)) => {
            let unread = store
                .count_unread(&conv.id, state.last_read_id, user, UNREAD_COUNT_CAP)
                .await?;
            (
                conv.status_for(state, now),
                Some(unread),
                state.last_read_id,
            )
        }
        None => (conv.state_at(now), None, None),
    };
    let snooze = conv.snoozed_at(now).cloned();
    let online = member.map(|(user, _)| {
        let others: Vec<String> = conv
            .participant_ids
            .iter()
            .filter(|p| p.as_str() != user)
            .cloned()
            .collect();
        app.engine.online_among(&others)
    });
    Ok(ConversationView {
        online_participant_ids: online,
        kind: match conv.kind {
            roomcast_engine::chat::ConversationKind::Direct => "direct",
            roomcast_engine::chat::ConversationKind::Group => "group",
        },
        participant_ids: conv.participant_ids,
        title: conv.title,
        created_by: conv.created_by,
        created_at: rfc3339_ms(conv.created_at_ms),
        last_activity_at: rfc3339_ms(conv.last_activity_ms),
        status,
        last_message: last_message.map(MessageView::from),
        unread_count: unread,
        last_read_message_id: last_read,
        closed: conv.closed.map(|c| ClosedView {
            at: rfc3339_ms(c.at_ms),
            by: c.by,
            reason: c.reason,
        }),
        snoozed_until: snooze.as_ref().map(|s| rfc3339_ms(s.until_ms)),
        snooze_reason: snooze.and_then(|s| s.reason),
        id: conv.id,
    })
}

/// The conversation `id` if `caller` participates in it, else 404.
pub(crate) async fn member_of(
    app: &AppState,
    id: &str,
    user_id: &str,
) -> Result<(Conversation, MemberState), ApiError> {
    if !roomcast_engine::chat::is_conversation(id) {
        return Err(conversation_not_found());
    }
    app.engine
        .store()
        .membership(id, user_id)
        .await?
        .ok_or_else(conversation_not_found)
}

/// Sorts by last activity (newest first) and cuts a page: `(page, total)`.
pub(crate) fn page_of<T>(
    mut items: Vec<(Conversation, T)>,
    offset: usize,
    limit: usize,
) -> (Vec<(Conversation, T)>, usize) {
    items.sort_by(|a, b| {
        b.0.last_activity_ms
            .cmp(&a.0.last_activity_ms)
            .then_with(|| a.0.id.cmp(&b.0.id))
    });
    let total = items.len();
    let page = items.into_iter().skip(offset).take(limit).collect();
    (page, total)
}
