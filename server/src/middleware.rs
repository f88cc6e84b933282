//! Cross-cutting HTTP layers: CORS on every route (origins from
//! `ROOMCAST_CORS_ORIGINS`, any by default, as the seed's `CORS: true` routes expect)
//! request metrics by matched route template (never by raw path, so ids do not
//! become labels), and the declared-body-size check (413 before any body is read).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use roomcast_engine::metrics as m;

use crate::state::AppState;

const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key";
const EXPOSE_HEADERS: &str = "retry-after, www-authenticate, ratelimit-limit, ratelimit-remaining, ratelimit-reset, ratelimit-policy";

/// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
fn allowed_origin(app: &AppState, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    match &app.config.cors_origins {
        None => Some(HeaderValue::from_static("*")),
        Some(list) => {
            let origin = origin?;
            let text = origin.to_str().ok()?;
            list.iter()
                .any(|o| o.eq_ignore_ascii_case(text))
                .then(|| origin.clone())
        }
    }
}

/// Answers CORS preflights and adds the CORS headers to every response.
pub(crate) async fn cors(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allow = allowed_origin(&app, origin.as_ref());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(allow) = allow
        && origin.is_some()
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        } else {
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }
    resp
}

/// Counts and times requests by route template and status class.
pub(crate) async fn http_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    if let Some(f) = resp.extensions().get::<crate::error::StoreFailure>() {
        tracing::warn!(error = %f.0, route, "store operation failed");
    }
    let class = match resp.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(m::HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => class)
        .increment(1);
    metrics::histogram!(m::HTTP_REQUEST_SECONDS, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Refuses a request whose declared `Content-Length` is over the body limit with 413
/// before anything reads it (or authenticates it): nobody waits for 10 GB to arrive.
pub(crate) async fn declared_body_limit(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > crate::api::MAX_BODY_BYTES as u64) {
        return crate::error::ApiError::BodyTooLarge {
            limit: crate::api::MAX_BODY_BYTES,
        }
        .into_response();
    }
    next.run(req).await
}
