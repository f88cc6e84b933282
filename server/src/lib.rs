//! roomcast's server: the axum router, the WebSocket endpoints, authentication,
//! configuration, metrics and graceful shutdown, over the `roomcast-engine` library.
//! [`run`] serves on a listener until a shutdown signal, so tests and the binary start
//! it the same way.

mod accept;
mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod jwks;
mod middleware;
mod openapi;
mod ops;
mod push;
pub mod shutdown;
mod state;
mod stores;
pub mod telemetry;
mod ws;

pub use state::AppState;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use roomcast_engine::bus::RedisBusConfig;
use roomcast_engine::cluster::ClusterConfig;
use roomcast_engine::{Disconnect, Engine};
use tokio::net::TcpListener;

use crate::auth::Verifier;
use crate::config::Config;
use crate::error::ApiError;
use crate::shutdown::Shutdown;

/// The JWT secret to use: `JWT_SECRET`, or in dev mode one kept in the data directory.
pub fn resolve_secret(config: &Config) -> Result<(String, bool), String> {
    match &config.jwt_secret {
        Some(s) => Ok((s.clone(), false)),
        None => auth::load_or_create_dev_secret(&config.data_dir).map_err(|e| {
            format!(
                "cannot create the dev JWT secret in {}: {e}",
                config.data_dir.display()
            )
        }),
    }
}

fn router(state: AppState) -> Router {
    use api::{admin, calls, conversations as conv, keys, messages as msg, presence, rooms};
    let mut router = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/ws", get(ws::chat))
        .route("/api/rooms/{roomId}/messages", get(rooms::room_history))
        .route("/api/admin/audit", get(admin::audit_log))
        .route("/api/admin/cluster", get(admin::cluster))
        // Presence (seed 004's getOnlineUsers / getUserStatus).
        .route("/api/presence/online", get(presence::online_users))
        .route("/api/presence/users/{userId}", get(presence::user_status))
        // The chat API of seed 000.
        .route("/conversations", post(conv::create).get(conv::list))
        .route("/conversations/{conversationId}", get(conv::get_one))
        .route(
            "/conversations/{conversationId}/archive",
            put(conv::archive),
        )
        .route(
            "/conversations/{conversationId}/unarchive",
            put(conv::unarchive),
        )
        .route(
            "/conversations/{conversationId}/messages/history",
            get(conv::history),
        )
        .route(
            "/conversations/{conversationId}/messages/unread",
            get(conv::unread),
        )
        .route("/messages", post(msg::send))
        .route("/messages/typing/{isTyping}", put(msg::typing))
        .route("/messages/{messageId}", delete(msg::delete))
        .route("/messages/{messageId}/read", put(msg::mark_read))
        .route(
            "/messages/{messageId}/reaction",
            delete(msg::delete_reaction),
        )
        .route(
            "/messages/{messageId}/reaction/{reaction}",
            put(msg::put_reaction).delete(msg::delete_named_reaction),
        )
        .route(openapi::SPEC_PATH, get(openapi::spec))
        .route("/api/chats/docs", get(openapi::docs_root))
        .route("/api/chats/docs/", get(openapi::docs_index))
        .route("/api/chats/docs/{*file}", get(openapi::docs_file))
        .route("/calls", post(calls::start))
        .route("/calls/accept", put(calls::accept))
        .route("/calls/end", put(calls::end))
        .route("/calls/active", get(calls::active))
        .route("/video/{interactionId}/token", get(calls::video_token))
        .route("/keys/identityKey", put(keys::put_identity_key))
        .route("/keys/signedPreKey", put(keys::put_signed_pre_key))
        .route("/keys/preKeys", put(keys::put_pre_keys))
        .route(
            "/keys/users/{partnerUserId}/identityKey",
            get(keys::identity_key),
        )
        .route(
            "/keys/users/{partnerUserId}/signedPreKey",
            get(keys::signed_pre_key),
        )
        .route("/keys/users/{partnerUserId}/preKey", get(keys::pre_key))
        .route("/private/messages", post(admin::send))
        .route(
            "/private/users/{userId}/conversations",
            put(admin::user_conversations).get(admin::user_conversations),
        )
        .route("/private/conversations/quietChats", get(admin::quiet_chats))
        .route(
            "/private/conversations/{conversationId}",
            delete(admin::close),
        )
        .route(
            "/private/conversations/{conversationId}/snooze",
            put(admin::snooze),
        );
    if state.config.echo_endpoint {
        router = router.route("/ws/echo", get(ws::echo));
    }
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn(api::budget::rate_headers))
        .layer(axum::middleware::from_fn(middleware::declared_body_limit))
        .layer(axum::middleware::from_fn(middleware::http_metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::cors,
        ))
        .with_state(state)
}

/// Serves on `listener` until `shutdown_signal` resolves. `on_ready` is called once the
/// secret, the store and the engine are up and connections are being accepted. Then
/// drains: `/readyz` turns
/// false, the listener closes, every WebSocket gets close 1012 (after its queued frames),
/// connections get `shutdown_timeout` to finish, and history is flushed before return.
pub async fn run(
    listener: TcpListener,
    config: Config,
    metrics: Option<PrometheusHandle>,
    shutdown_signal: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr) + Send,
) -> Result<(), String> {
    // HS256 is off in production when the provider's keys are the way in.
    let hs_off = config.production && config.jwt_secret.is_none() && config.jwks.is_some();
    let (secret, generated) = if hs_off {
        (String::new(), false)
    } else {
        resolve_secret(&config)?
    };
    if config.jwt_secret.is_none() && !hs_off {
        tracing::warn!(
            path = %auth::dev_secret_path(&config.data_dir).display(),
            generated,
            "JWT_SECRET is not set: using a development secret kept in the data directory. Mint a token with `roomcast token --user alice`. Set JWT_SECRET (and NODE_ENV=production) in production."
        );
    }
    let stores = stores::open(&config).await?;
    let (engine, mut tasks) = match &config.redis {
        None => Engine::start(config.engine.clone(), stores)?,
        Some(r) => {
            let mut bus = RedisBusConfig::new(&r.url);
            bus.tls = r.tls.clone();
            bus.timeout = r.timeout;
            let cluster = ClusterConfig {
                node_id: r.node_id,
                ttl: r.lease_ttl,
                tick: r.lease_ttl / 6,
                margin: r.lease_ttl / 3,
                timeout: r.timeout,
                cut_off_close: r.cut_off_close,
            };
            Engine::start_cluster(config.engine.clone(), stores, bus, cluster).await?
        }
    };
    if let Some(c) = engine.cluster() {
        tracing::info!(node = c.node, nodes = ?c.nodes(), "cluster member");
    }
    if metrics.is_some() {
        roomcast_engine::metrics::register_zeros(
            engine.cluster().is_some(),
            engine.stores().history.backend(),
        );
        let node = engine
            .cluster()
            .map_or_else(|| "single".to_owned(), |c| c.node.to_string());
        metrics::gauge!(
            roomcast_engine::metrics::NODE_INFO,
            "node" => node,
            "version" => env!("CARGO_PKG_VERSION")
        )
        .set(1.0);
    }
    let shutdown = Shutdown::new();
    let (jwks, jwks_refresh) = match &config.jwks {
        None => (None, None),
        Some(cfg) => {
            let jwks = Arc::new(jwks::Jwks::new(cfg.clone())?);
            // Keys before the first request; an unreachable provider is retried by
            // the refresh and on the first unknown key id, not fatal.
            if let Err(e) = jwks.refresh().await {
                tracing::error!(error = %e, "no JWKS keys yet: RS256/ES256 tokens are refused until a fetch succeeds");
            }
            let task = jwks.clone().spawn_refresh(shutdown.token.clone());
            (Some(jwks), Some(task))
        }
    };
    let verifier = Arc::new(Verifier::with_provider(
        (!hs_off).then_some(secret.as_bytes()),
        jwks,
        config.jwt_issuer.as_deref(),
        config.jwt_audience.as_deref(),
        config.cognito.clone(),
    ));
    let push_worker = match (tasks.push.take(), config.push.clone()) {
        (Some(rx), Some(cfg)) => {
            tracing::info!(url = %cfg.url, "push notifications on");
            Some(push::spawn(rx, cfg, engine.clone(), shutdown.token.clone()))
        }
        _ => None,
    };
    let config = Arc::new(config);
    let budgets = Arc::new(api::budget::ApiBudgets::new(&config.api_budgets));
    let state = AppState {
        calls: engine.stores().calls.clone(),
        keys: engine.stores().keys.clone(),
        engine: engine.clone(),
        config: config.clone(),
        verifier,
        budgets: budgets.clone(),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
    };

    // Housekeeping: prune idle rate-limit keys; run the metrics recorder's upkeep.
    let housekeeping = {
        let engine = engine.clone();
        let budgets = budgets.clone();
        let token = shutdown.token.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                n += 1;
                if let Some(h) = &metrics {
                    h.run_upkeep();
                }
                if n.is_multiple_of(12) {
                    engine.limits().prune();
                    budgets.prune();
                }
            }
        })
    };

    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, shards = config.engine.shards, data_dir = %config.data_dir.display(), "roomcast listening");
    let http = tokio_util::task::TaskTracker::new();
    on_ready(addr);
    engine.calls().resume().await;
    let server = tokio::spawn(accept::serve(
        listener,
        router(state),
        shutdown.token.clone(),
        http.clone(),
    ));

    shutdown_signal.await;
    tracing::info!("shutting down: draining");
    shutdown.start_draining();
    if !config.shutdown_drain_delay.is_zero() {
        tokio::time::sleep(config.shutdown_drain_delay).await;
    }
    shutdown.token.cancel();
    engine.calls().stop();
    let asked = engine.close_all(Disconnect::SHUTDOWN);
    shutdown.tracker.close();
    if tokio::time::timeout(config.shutdown_timeout, shutdown.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = shutdown.tracker.len(),
            "connections still open at the shutdown deadline"
        );
    }
    engine.flush().await;
    if let Some(c) = engine.cluster() {
        // Hand the slots over now instead of letting the leases expire.
        c.leave().await;
    }
    let _ = server.await;
    http.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), http.wait()).await;
    let _ = housekeeping.await;
    if let Some(t) = jwks_refresh {
        let _ = t.await;
    }
    if let Some(w) = push_worker {
        let _ = w.await;
    }
    drop(tasks);
    tracing::info!(
        connections_closed = asked,
        "shutdown complete: history flushed"
    );
    Ok(())
}
