//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the request and response types (served at
//! `/api/chats/openapi.json`), and Swagger UI at `/api/chats/docs/`, served from
//! assets compiled into the binary (no CDN: it works with no internet access).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{PathParam, admin, calls, conversations, keys, messages};
use crate::api::{presence, rooms};
use crate::error::ApiError;
use crate::state::AppState;
use crate::{ops, ws};

/// Where the document is served; Swagger UI loads it from here.
pub(crate) const SPEC_PATH: &str = "/api/chats/openapi.json";

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT: `sub` (user id), `username`, `exp`; admin with `roles: [\"admin\"]` or `cognito:groups`.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "roomcast chat API",
        description = "Conversations, messages, receipts, reactions, typing and the admin routes of the dating platform's chat, plus rooms, the WebSocket endpoint and operations. Errors are `{\"error\":{\"code\",\"message\",\"details\"}}` with a stable `code`.",
    ),
    paths(
        conversations::create,
        conversations::list,
        conversations::get_one,
        conversations::archive,
        conversations::unarchive,
        conversations::history,
        conversations::unread,
        messages::send,
        messages::mark_read,
        messages::delete,
        messages::put_reaction,
        messages::delete_reaction,
        messages::delete_named_reaction,
        messages::typing,
        calls::start,
        calls::accept,
        calls::end,
        calls::active,
        calls::video_token,
        keys::put_identity_key,
        keys::put_signed_pre_key,
        keys::put_pre_keys,
        keys::identity_key,
        keys::signed_pre_key,
        keys::pre_key,
        admin::send,
        admin::user_conversations,
        admin::close,
        admin::snooze,
        admin::quiet_chats,
        rooms::room_history,
        admin::audit_log,
        admin::cluster,
        presence::online_users,
        presence::user_status,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ws::chat,
    ),
    // Schemas used only by path parameters are not collected automatically.
    components(schemas(messages::ReactionName, messages::TypingFlag)),
    modifiers(&BearerAuth),
    tags(
        (name = "conversations", description = "Private conversations (members only)"),
        (name = "messages", description = "Messages, receipts, reactions, typing"),
        (name = "calls", description = "Audio and video call signalling, provider tokens"),
        (name = "keys", description = "Signal-protocol key directory"),
        (name = "admin", description = "Administrative routes (admin role required)"),
        (name = "rooms", description = "Public rooms"),
        (name = "presence", description = "Who is online (users who share a room or conversation with the caller)"),
        (name = "websocket", description = "The real-time endpoint"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

/// The document as JSON, built once.
pub(crate) fn spec_json() -> &'static str {
    static SPEC: OnceLock<String> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc.to_pretty_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "OpenAPI document does not serialise");
            "{}".to_owned()
        })
    })
}

/// `GET /api/chats/openapi.json`.
pub(crate) async fn spec() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], spec_json()).into_response()
}

/// `GET /api/chats/docs`: to the UI's folder, so its relative asset paths resolve.
pub(crate) async fn docs_root() -> Redirect {
    Redirect::permanent("/api/chats/docs/")
}

fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Arc::new(utoipa_swagger_ui::Config::new([SPEC_PATH])))
        .clone()
}

async fn swagger_file(path: &str) -> Response {
    match utoipa_swagger_ui::serve(path, swagger_config()) {
        Ok(Some(file)) => {
            let mut resp = (StatusCode::OK, file.bytes.into_owned()).into_response();
            if let Ok(ct) = HeaderValue::from_str(&file.content_type) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            if file.gzpipped {
                resp.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            resp
        }
        Ok(None) => ApiError::NotFound.into_response(),
        Err(e) => ApiError::Internal(format!("swagger ui: {e}")).into_response(),
    }
}

/// `GET /api/chats/docs/`: Swagger UI's index page.
pub(crate) async fn docs_index(State(_): State<AppState>) -> Response {
    swagger_file("").await
}

/// `GET /api/chats/docs/{file}`: Swagger UI's assets.
pub(crate) async fn docs_file(PathParam(file): PathParam<String>) -> Response {
    swagger_file(&file).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_covers_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(spec_json()).expect("the document is JSON");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1"))
        );
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/conversations", "post"),
            ("/conversations", "get"),
            ("/conversations/{conversation_id}/messages/history", "get"),
            ("/conversations/{conversation_id}/messages/unread", "get"),
            ("/messages", "post"),
            ("/messages/{message_id}/read", "put"),
            ("/messages/{message_id}", "delete"),
            ("/messages/{message_id}/reaction/{reaction}", "put"),
            ("/messages/typing/{is_typing}", "put"),
            ("/private/messages", "post"),
            ("/private/users/{user_id}/conversations", "put"),
            ("/private/users/{user_id}/conversations", "get"),
            ("/private/conversations/{conversation_id}", "delete"),
            ("/private/conversations/{conversation_id}/snooze", "put"),
            ("/private/conversations/quietChats", "get"),
            ("/ws", "get"),
            ("/healthz", "get"),
        ] {
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path} missing from the document"
            );
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        // Every reference resolves.
        let text = spec_json();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "unresolved schema reference {name}"
            );
        }
    }

    #[test]
    fn swagger_ui_is_served_from_the_binary() {
        let index = utoipa_swagger_ui::serve("", swagger_config())
            .ok()
            .flatten()
            .expect("index");
        assert!(String::from_utf8_lossy(&index.bytes).contains("swagger"));
        let init = utoipa_swagger_ui::serve("swagger-initializer.js", swagger_config())
            .ok()
            .flatten()
            .expect("initializer");
        assert!(String::from_utf8_lossy(&init.bytes).contains(SPEC_PATH));
    }
}
