//! The HTTP boundary's one error type, [`ApiError`], and the single mapping from domain
//! errors to HTTP statuses. Bodies are `{"error":{"code","message","details"}}` with a
//! stable `code`; internals are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roomcast_engine::{ClientError, ErrorCode};
use serde_json::json;

use crate::auth::AuthError;

/// Every error response's body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`invalid_field`, `conversation_not_found`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Context: `field` for validation errors, `retryAfterMs`, `roomId`, `reason`.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{message}")]
    BadRequest { field: String, message: String },
    #[error("too many connection attempts")]
    ConnectRateLimited { retry_after_ms: u64 },
    #[error("this endpoint needs a WebSocket upgrade request")]
    UpgradeRequired,
    #[error("this needs an administrator token")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// The body is (or declares itself) larger than the limit: refused before reading.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The body did not arrive in time (a client that sends part and goes silent).
    #[error("the request body did not arrive within {ms} ms")]
    BodyTimeout { ms: u64 },
    #[error("internal error: {0}")]
    Internal(String),
    /// A storage failure: `503 store_unavailable` to the client; the cause rides in a
    /// response extension ([`StoreFailure`]) and the HTTP middleware logs it.
    #[error("storage is unavailable: {0}")]
    Store(#[from] roomcast_engine::store::StoreError),
}

impl From<roomcast_engine::calls::CallError> for ApiError {
    fn from(e: roomcast_engine::calls::CallError) -> Self {
        match e {
            roomcast_engine::calls::CallError::Client(c) => ApiError::Client(c),
            roomcast_engine::calls::CallError::Store(s) => ApiError::Store(s),
        }
    }
}

/// The cause of a `store_unavailable` response, for the middleware to log (never sent).
#[derive(Debug, Clone)]
pub struct StoreFailure(pub String);

/// The HTTP status for an engine error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidJson
        | ErrorCode::InvalidField
        | ErrorCode::InvalidRoom
        | ErrorCode::EmptyMessage => StatusCode::BAD_REQUEST,
        ErrorCode::UnknownType => StatusCode::BAD_REQUEST,
        ErrorCode::NotMember
        | ErrorCode::ConversationNotFound
        | ErrorCode::MessageNotFound
        | ErrorCode::UserNotFound => StatusCode::NOT_FOUND,
        ErrorCode::ConversationClosed
        | ErrorCode::ConversationSnoozed
        | ErrorCode::Busy
        | ErrorCode::CallStateConflict
        | ErrorCode::TooManyPreKeys => StatusCode::CONFLICT,
        ErrorCode::CallNotFound | ErrorCode::KeyNotFound | ErrorCode::NoPreKeysLeft => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::VideoUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::TooManyRooms | ErrorCode::TooManyConnections | ErrorCode::RateLimited => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ErrorCode::MessageTooLong => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MessageBlocked => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Overloaded
        | ErrorCode::StoreUnavailable
        | ErrorCode::ShuttingDown
        | ErrorCode::CutOff
        | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    fn parts(
        &self,
    ) -> (
        StatusCode,
        &'static str,
        String,
        serde_json::Value,
        Option<u64>,
    ) {
        match self {
            ApiError::Auth(e) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                e.to_string(),
                json!({"reason": e.label()}),
                None,
            ),
            ApiError::Client(e) => {
                let mut details = serde_json::Map::new();
                if let Some(room) = &e.room_id {
                    details.insert("roomId".into(), json!(room));
                }
                if let Some(cid) = &e.client_msg_id {
                    details.insert("clientMsgId".into(), json!(cid));
                }
                if let Some(field) = &e.field {
                    details.insert("field".into(), json!(field));
                }
                if let Some(ms) = e.retry_after_ms {
                    details.insert("retryAfterMs".into(), json!(ms));
                }
                let details = serde_json::Value::Object(details);
                (
                    status_of(e.code),
                    e.code.as_str(),
                    e.message.clone(),
                    details,
                    e.retry_after_ms,
                )
            }
            ApiError::BadRequest { field, message } => (
                StatusCode::BAD_REQUEST,
                "invalid_field",
                message.clone(),
                json!({"field": field}),
                None,
            ),
            ApiError::ConnectRateLimited { retry_after_ms } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many connection attempts from this address".into(),
                json!({"retryAfterMs": retry_after_ms}),
                Some(*retry_after_ms),
            ),
            ApiError::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                self.to_string(),
                json!({"limit": limit}),
                None,
            ),
            ApiError::BodyTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                self.to_string(),
                json!({}),
                None,
            ),
            ApiError::UpgradeRequired => (
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                self.to_string(),
                json!({}),
                None,
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                self.to_string(),
                json!({}),
                None,
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource".into(),
                json!({}),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                self.to_string(),
                json!({}),
                None,
            ),
            ApiError::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "storage is unavailable; retry".into(),
                json!({}),
                Some(1000),
            ),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".into(),
                    json!({}),
                    None,
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, details, retry_after_ms) = self.parts();
        let failure = match &self {
            ApiError::Store(e) => Some(StoreFailure(e.to_string())),
            _ => None,
        };
        metrics::counter!(roomcast_engine::metrics::API_ERRORS, "code" => code).increment(1);
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                details,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(ms) = retry_after_ms
            && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let Some(f) = failure {
            resp.extensions_mut().insert(f);
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(
            self,
            ApiError::BodyTooLarge { .. } | ApiError::BodyTimeout { .. }
        ) {
            // The body was not read to its end: the connection cannot carry another
            // request.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
