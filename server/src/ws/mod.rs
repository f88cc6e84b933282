//! The WebSocket endpoints: `/ws` (the chat protocol) and `/ws/echo` (conformance
//! testing, off by default). Everything that can refuse a connection happens here,
//! before the upgrade, as an HTTP error: per-IP connect rate, token, parameters,
//! per-user connection limit.

mod assemble;
mod conn;
mod frame;
mod reader;
mod writer;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::Response;
use roomcast_engine::metrics as m;
use roomcast_engine::protocol::validate_room_id;
use roomcast_engine::{ClientError, ErrorCode};
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;

/// The room a connection joins when the URL names none.
pub(crate) const DEFAULT_ROOM: &str = "lobby";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WsQuery {
    /// The JWT (or send `Authorization: Bearer`).
    token: Option<String>,
    /// The room to join at once (default `lobby`); a conversation id for participants.
    #[serde(rename = "roomId")]
    #[param(rename = "roomId")]
    room_id: Option<String>,
    /// Replay the room's messages after this message id first (recovery).
    since: Option<String>,
}

/// `GET /ws`: the WebSocket endpoint (JSON protocol of docs/PROTOCOL.md). Every refusal
/// is an HTTP error before the upgrade.
#[utoipa::path(get, path = "/ws", tag = "websocket", params(WsQuery), responses(
    (status = 101, description = "Switching Protocols: the WebSocket session starts"),
    (status = 400, description = "Bad parameter or handshake", body = crate::error::ErrorBody),
    (status = 401, description = "Missing, invalid or expired token", body = crate::error::ErrorBody),
    (status = 426, description = "Not a WebSocket upgrade request", body = crate::error::ErrorBody),
    (status = 429, description = "Too many connects from this address, or too many connections for this user", body = crate::error::ErrorBody),
    (status = 503, description = "Shutting down", body = crate::error::ErrorBody)))]
pub(crate) async fn chat(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    admit(app, peer, req, false).await
}

pub(crate) async fn echo(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    admit(app, peer, req, true).await
}

fn reject(reason: &'static str) {
    metrics::counter!(m::CONNECT_REJECTED, "reason" => reason).increment(1);
}

/// WebSocket admission: every check that can refuse a connection (draining, cut off
/// from the cluster, auth, per-IP connect rate, parameters, the per-user limit) runs
/// here, before the upgrade.
/// (`accept.rs` is the TCP accept loop, a different step.)
async fn admit(
    app: AppState,
    peer: SocketAddr,
    mut req: Request,
    echo: bool,
) -> Result<Response, ApiError> {
    if app.shutdown.is_draining() {
        reject("draining");
        return Err(ClientError::new(
            ErrorCode::ShuttingDown,
            "the server is shutting down; connect to another node",
        )
        .into());
    }
    if app.engine.cluster().is_some_and(|c| !c.in_contact()) {
        // Fenced: this node hears no other node, so a socket here would miss the
        // cluster's messages and presence. `/readyz` says the same to load balancers.
        reject("cut_off");
        return Err(ClientError::new(
            ErrorCode::CutOff,
            "this node is cut off from the cluster; connect to another node",
        )
        .into());
    }
    if let Err(retry_after_ms) = app.engine.limits().check_connect(peer.ip()) {
        reject("connect_rate");
        metrics::counter!(m::RATE_LIMITED, "limit" => "connects").increment(1);
        return Err(ApiError::ConnectRateLimited { retry_after_ms });
    }
    let query = Query::<WsQuery>::try_from_uri(req.uri()).map_err(|e| {
        reject("bad_request");
        ApiError::BadRequest {
            field: "query".into(),
            message: e.body_text(),
        }
    })?;
    let principal = app
        .authenticate(req.headers(), query.token.as_deref())
        .await?;
    let initial = if echo {
        None
    } else {
        let room = query
            .room_id
            .clone()
            .unwrap_or_else(|| DEFAULT_ROOM.to_owned());
        validate_room_id(&room).map_err(|e| {
            reject("bad_request");
            ApiError::from(e)
        })?;
        let since = match &query.since {
            None => None,
            Some(s) => Some(s.parse::<u64>().map_err(|_| {
                reject("bad_request");
                ApiError::BadRequest {
                    field: "since".into(),
                    message: "since must be a message id (decimal string)".into(),
                }
            })?),
        };
        Some((room, since))
    };
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        reject("not_upgrade");
        return Err(ApiError::UpgradeRequired);
    }
    let token_expires_at = principal.expires_at();
    let session = roomcast_engine::Session::open(&app.engine, principal.into_user())
        .await
        .map_err(|e| {
            reject("too_many_connections");
            ApiError::from(e)
        })?;
    // In a cluster: the user's channel is subscribed before the 101, so anything sent
    // to the user after the client sees the upgrade reaches this connection.
    session.subscribed().await;
    let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut req).map_err(|e| {
        reject("bad_handshake");
        ApiError::BadRequest {
            field: "Sec-WebSocket-Key".into(),
            message: format!("invalid WebSocket handshake: {e}"),
        }
    })?;
    if let Some(suppressed) = roomcast_engine::log_throttle::CONNECTIONS.admit() {
        let user_agent = req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map_or(String::new(), |ua| ua.chars().take(200).collect());
        tracing::info!(
            user_id = %session.user().user_id,
            room = initial.as_ref().map_or("", |(r, _)| r.as_str()),
            user_agent,
            %peer,
            suppressed,
            "connection established"
        );
    }
    let opts = conn::ConnOptions {
        max_message_bytes: app.config.max_frame_bytes,
        write_timeout: app.config.write_timeout,
        ping_interval: app.config.ping_interval,
        token_expires_at,
        echo,
    };
    app.shutdown
        .tracker
        .spawn(conn::serve(upgrade, session, opts, initial));
    Ok(response.map(Body::new))
}
