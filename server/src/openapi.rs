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
                        "A JWT: HS256 with the server's secret, or RS256/ES256 from the identity provider (Cognito User Pools, keys from `ROOMCAST_JWKS_URL`). Claims: `sub` (user id), `username` or `cognito:username`, `exp`; admin with `roles: [\"admin\"]` or `cognito:groups`.",
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
    components(schemas(messages::TypingFlag)),
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
        serde_json::to_value(&doc)
            .map(with_rate_limits)
            .map(with_unique_operation_ids)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "OpenAPI document does not serialise");
                "{}".to_owned()
            })
    })
}

/// The `RateLimit-*` headers of every authenticated operation (`api/budget.rs`), in
/// one place instead of on each handler: a `429` response on each (with `Retry-After`),
/// and the headers on its 2xx and 429 responses.
fn with_rate_limits(mut doc: serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    let header = |description: &str| json!({"description": description, "schema": {"type": "integer", "minimum": 0}});
    doc["components"]["headers"] = json!({
        "RateLimit-Limit": header("Requests (or messages) allowed per window of this route's budget"),
        "RateLimit-Remaining": header("What is left of it now"),
        "RateLimit-Reset": header("Seconds until the allowance grows again"),
        "RateLimit-Policy": {"description": "`<limit>;w=<window seconds>`", "schema": {"type": "string"}},
        "Retry-After": header("Seconds to wait before retrying"),
    });
    let refs = |names: &[&str]| {
        names
            .iter()
            .map(|n| {
                (
                    (*n).to_owned(),
                    json!({"$ref": format!("#/components/headers/{n}")}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
    };
    let quota = [
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "RateLimit-Policy",
    ];
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let secured = op
                .get("security")
                .and_then(|s| s.as_array())
                .is_some_and(|s| !s.is_empty());
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            if !secured || responses.contains_key("101") {
                continue;
            }
            responses.entry("429").or_insert_with(|| {
                json!({
                    "description": "Over this route's budget (`rate_limited`); `Retry-After` says when to retry",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                })
            });
            for (status, response) in responses.iter_mut() {
                let mut names: Vec<&str> = Vec::new();
                if status.starts_with('2') || status == "429" {
                    names.extend(quota);
                }
                if status == "429" {
                    names.push("Retry-After");
                }
                if names.is_empty() {
                    continue;
                }
                if let Some(r) = response.as_object_mut() {
                    let headers = r.entry("headers").or_insert_with(|| json!({}));
                    if let Some(h) = headers.as_object_mut() {
                        h.extend(refs(&names));
                    }
                }
            }
        }
    }
    doc
}

/// Operation ids must be unique (generated clients name methods after them): a handler
/// serving two methods gets one id per method (`user_conversations` for the first,
/// `user_conversations_put` for the next).
fn with_unique_operation_ids(mut doc: serde_json::Value) -> serde_json::Value {
    let mut seen = std::collections::HashSet::new();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Some(id) = op
                .get("operationId")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
            else {
                continue;
            };
            if !seen.insert(id.clone()) {
                let unique = format!("{id}_{method}");
                seen.insert(unique.clone());
                op["operationId"] = serde_json::Value::String(unique);
            }
        }
    }
    doc
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
            ("/conversations/{conversationId}/messages/history", "get"),
            ("/conversations/{conversationId}/messages/unread", "get"),
            ("/messages", "post"),
            ("/messages/{messageId}/read", "put"),
            ("/messages/{messageId}", "delete"),
            ("/messages/{messageId}/reaction/{reaction}", "put"),
            ("/messages/typing/{isTyping}", "put"),
            ("/private/messages", "post"),
            ("/private/users/{userId}/conversations", "put"),
            ("/private/users/{userId}/conversations", "get"),
            ("/private/conversations/{conversationId}", "delete"),
            ("/private/conversations/{conversationId}/snooze", "put"),
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
        // Every authenticated operation documents its budget's refusal and headers.
        let mut secured = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("path item") {
                if op["security"].as_array().is_none_or(|s| s.is_empty()) || path == "/ws" {
                    continue;
                }
                secured += 1;
                let r429 = &op["responses"]["429"];
                assert!(r429.is_object(), "{method} {path} has no 429");
                assert!(r429["headers"]["Retry-After"].is_object());
                let ok = op["responses"]
                    .as_object()
                    .and_then(|r| r.iter().find(|(s, _)| s.starts_with('2')))
                    .map(|(_, r)| r)
                    .expect("a 2xx response");
                assert!(
                    ok["headers"]["RateLimit-Remaining"].is_object(),
                    "{method} {path}: no RateLimit headers"
                );
            }
        }
        assert!(secured > 30, "{secured} authenticated operations");
        // Path parameters are exactly the template's segments (named as seed 000 names
        // them); everything else is a query parameter.
        let mut query_params = 0;
        for (path, item) in paths {
            let segments: Vec<&str> = path
                .split('{')
                .skip(1)
                .filter_map(|s| s.split('}').next())
                .collect();
            for (method, op) in item.as_object().expect("path item") {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let mut in_path: Vec<String> = Vec::new();
                for p in &params {
                    let name = p["name"].as_str().expect("name").to_owned();
                    match p["in"].as_str() {
                        Some("path") => in_path.push(name),
                        Some("query") => query_params += 1,
                        other => panic!("{method} {path}: {name} in {other:?}"),
                    }
                }
                in_path.sort();
                let mut want: Vec<String> = segments.iter().map(|s| (*s).to_owned()).collect();
                want.sort();
                assert_eq!(in_path, want, "{method} {path}: path parameters");
                for s in &segments {
                    assert!(
                        !s.contains('_'),
                        "{path}: {s} is not named as the seed names it"
                    );
                }
            }
        }
        assert!(query_params >= 20, "{query_params} query parameters");
        let mut ids = std::collections::HashSet::new();
        for item in paths.values() {
            for op in item.as_object().expect("path item").values() {
                if let Some(id) = op["operationId"].as_str() {
                    assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                }
            }
        }
        assert!(doc["components"]["headers"]["RateLimit-Reset"].is_object());
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
