//! `roomcast-goose`: the goose load suite (REST and WebSocket users in one report).
//!
//! Run with (a server must be running; see docs/PERFORMANCE.md):
//!
//! ```text
//! ROOMCAST_JWT_SECRET=S roomcast-goose --host http://127.0.0.1:8000 --users 200 \
//!     --increase-rate 50 --run-time 30s --no-reset-metrics \
//!     --threshold "p99<50ms" --threshold "error-rate<1%" \
//!     --report-file goose.html --report-file goose.json --report-file goose.md
//! ```
//!
//! Users (goose scenarios):
//! - `ChatMember` (weight 8): opens a WebSocket (`WS connect`, recorded with
//!   `record_custom_request_duration`), joins one of `ROOMCAST_GOOSE_ROOMS` (default 10)
//!   rooms, then repeatedly publishes a 256-byte message and records `WS ack` (send to
//!   durable acknowledgement) and `WS delivery` (send to the message coming back through
//!   the room's fan-out). Messages of other members are read and skipped.
//! - `HistoryReader` (weight 2): `GET /api/rooms/{room}/messages` (a page of history)
//!   and `GET /healthz`.
//! - `ConversationPair` (weight 2): the chat REST API. On start, creates (or finds) a
//!   direct conversation between `goose-ann-N` and `goose-bob-N` (`POST /conversations`);
//!   then sends as ann (`POST /messages`, 201 once durable), reads bob's unread
//!   (`GET .../messages/unread`) and marks the newest read (`PUT /messages/{id}/read`).
//!
//! Every goose option applies (`--help`); a breached `--threshold` makes a non-zero exit.
//! Pass `--no-reset-metrics`: goose otherwise resets its metrics once every user has
//! started, which drops the `WS connect` timings (connecting is how a user starts).
//! `ROOMCAST_JWT_SECRET` is the server's `JWT_SECRET`. Targets must be loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use goose::prelude::*;

use roomcast_loadtest::client::{self, Conn};

/// One user's WebSocket, shared by its transactions (goose session data must be Clone).
#[derive(Clone)]
struct Session {
    conn: Arc<tokio::sync::Mutex<Conn>>,
    room: String,
    seq: Arc<std::sync::atomic::AtomicU64>,
}

fn secret() -> String {
    std::env::var("ROOMCAST_JWT_SECRET").unwrap_or_default()
}

fn rooms() -> usize {
    std::env::var("ROOMCAST_GOOSE_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1)
}

fn custom(msg: String) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(msg))
}

fn server_addr(user: &GooseUser) -> Result<SocketAddr, Box<TransactionError>> {
    let host = user.base_url.host_str().unwrap_or("127.0.0.1");
    let port = user.base_url.port_or_known_default().unwrap_or(80);
    let addr: SocketAddr = format!("{host}:{port}").parse().map_err(|_| {
        custom(format!(
            "--host must be http://IP:PORT, got {}",
            user.base_url
        ))
    })?;
    if !addr.ip().is_loopback() {
        return Err(custom(
            "targets are restricted to loopback addresses".into(),
        ));
    }
    Ok(addr)
}

async fn connect(user: &mut GooseUser) -> TransactionResult {
    let addr = server_addr(user)?;
    let room = format!("goose-{}", user.weighted_users_index % rooms());
    let token = client::token(&secret(), &format!("goose-{}", user.weighted_users_index));
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        Conn::open(addr, None, &token, &room),
    )
    .await;
    let elapsed = started.elapsed();
    match result {
        Ok(Ok(conn)) => {
            user.record_custom_request_duration("WS", "connect", elapsed, true, Some(101), None)
                .await?;
            user.set_session_data(Session {
                conn: Arc::new(tokio::sync::Mutex::new(conn)),
                room,
                seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            });
            Ok(())
        }
        Ok(Err(e)) => {
            let e = e.to_string();
            user.record_custom_request_duration("WS", "connect", elapsed, false, None, Some(&e))
                .await?;
            Err(custom(e))
        }
        Err(_) => {
            user.record_custom_request_duration(
                "WS",
                "connect",
                elapsed,
                false,
                None,
                Some("timeout"),
            )
            .await?;
            Err(custom("connect timed out".into()))
        }
    }
}

async fn publish(user: &mut GooseUser) -> TransactionResult {
    let Some(session) = user.get_session_data::<Session>().cloned() else {
        return Err(custom("no WebSocket (connect failed)".into()));
    };
    let n = session
        .seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cid = format!("g{}-{n}", user.weighted_users_index);
    let started = Instant::now();
    let outcome = {
        let mut conn = session.conn.lock().await;
        conn.publish_and_wait(&session.room, &cid, 256, Duration::from_secs(10))
            .await
    };
    match outcome {
        Ok((ack, delivered)) => {
            user.record_custom_request_duration("WS", "ack", ack, true, None, None)
                .await?;
            user.record_custom_request_duration("WS", "delivery", delivered, true, None, None)
                .await?;
            Ok(())
        }
        Err(e) => {
            user.record_custom_request_duration(
                "WS",
                "ack",
                started.elapsed(),
                false,
                None,
                Some(&e),
            )
            .await?;
            Err(custom(e))
        }
    }
}

async fn history(user: &mut GooseUser) -> TransactionResult {
    let room = format!("goose-{}", user.weighted_users_index % rooms());
    let token = client::token(
        &secret(),
        &format!("goose-reader-{}", user.weighted_users_index),
    );
    let builder = user
        .get_request_builder(
            &GooseMethod::Get,
            &format!("/api/rooms/{room}/messages?limit=50"),
        )?
        .header("Authorization", format!("Bearer {token}"));
    let request = GooseRequest::builder()
        .set_request_builder(builder)
        .name("history page")
        .build();
    user.request(request).await?;
    Ok(())
}

/// A `ConversationPair` user's conversation and the newest message it sent.
#[derive(Clone)]
struct Pair {
    conversation: String,
    last: Arc<std::sync::Mutex<Option<String>>>,
}

fn pair_tokens(user: &GooseUser) -> (String, String) {
    let n = user.weighted_users_index;
    (
        client::token(&secret(), &format!("goose-ann-{n}")),
        client::token(&secret(), &format!("goose-bob-{n}")),
    )
}

/// Sends `method path` with a bearer token and an optional JSON body; returns the body
/// on success (a goose error, recorded in the report, otherwise).
async fn rest(
    user: &mut GooseUser,
    method: GooseMethod,
    path: &str,
    name: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Box<TransactionError>> {
    let mut builder = user
        .get_request_builder(&method, path)?
        .header("Authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        builder = builder.json(&b);
    }
    let request = GooseRequest::builder()
        .set_request_builder(builder)
        .name(name)
        .build();
    let mut goose = user.request(request).await?;
    let response = match goose.response {
        Ok(r) => r,
        Err(e) => return Err(custom(format!("{name}: {e}"))),
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let msg = format!("{name}: {status} {text}");
        return user
            .set_failure(&msg, &mut goose.request, None, Some(&msg))
            .map(|_| serde_json::Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| custom(format!("{name}: {e}")))
}

async fn pair_start(user: &mut GooseUser) -> TransactionResult {
    let (ann, _) = pair_tokens(user);
    let bob = format!("goose-bob-{}", user.weighted_users_index);
    let created = rest(
        user,
        GooseMethod::Post,
        "/conversations",
        "REST create conversation",
        &ann,
        Some(serde_json::json!({"participantIds": [bob]})),
    )
    .await?;
    let conversation = created["id"]
        .as_str()
        .ok_or_else(|| custom("no conversation id".into()))?
        .to_owned();
    user.set_session_data(Pair {
        conversation,
        last: Arc::new(std::sync::Mutex::new(None)),
    });
    Ok(())
}

fn pair(user: &GooseUser) -> Result<Pair, Box<TransactionError>> {
    user.get_session_data::<Pair>()
        .cloned()
        .ok_or_else(|| custom("conversation not created".into()))
}

async fn rest_send(user: &mut GooseUser) -> TransactionResult {
    let p = pair(user)?;
    let (ann, _) = pair_tokens(user);
    let body = serde_json::json!({"conversationId": p.conversation, "message": "x".repeat(128)});
    let sent = rest(
        user,
        GooseMethod::Post,
        "/messages",
        "REST send",
        &ann,
        Some(body),
    )
    .await?;
    if let Some(id) = sent["message"]["messageId"].as_str()
        && let Ok(mut last) = p.last.lock()
    {
        *last = Some(id.to_owned());
    }
    Ok(())
}

async fn rest_unread(user: &mut GooseUser) -> TransactionResult {
    let p = pair(user)?;
    let (_, bob) = pair_tokens(user);
    let path = format!("/conversations/{}/messages/unread", p.conversation);
    rest(user, GooseMethod::Get, &path, "REST unread", &bob, None).await?;
    Ok(())
}

async fn rest_mark_read(user: &mut GooseUser) -> TransactionResult {
    let p = pair(user)?;
    let last = p.last.lock().ok().and_then(|l| l.clone());
    let Some(id) = last else { return Ok(()) };
    let (_, bob) = pair_tokens(user);
    let path = format!("/messages/{id}/read");
    rest(user, GooseMethod::Put, &path, "REST mark read", &bob, None).await?;
    Ok(())
}

async fn health(user: &mut GooseUser) -> TransactionResult {
    user.get("/healthz").await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    if secret().is_empty() {
        eprintln!("set ROOMCAST_JWT_SECRET to the server's JWT_SECRET");
        std::process::exit(2);
    }
    GooseAttack::initialize()?
        .register_scenario(
            scenario!("ChatMember")
                .set_weight(8)?
                .set_wait_time(Duration::from_millis(200), Duration::from_millis(800))?
                .register_transaction(transaction!(connect).set_on_start().set_name("WS connect"))
                .register_transaction(transaction!(publish).set_name("WS publish")),
        )
        .register_scenario(
            scenario!("HistoryReader")
                .set_weight(2)?
                .set_wait_time(Duration::from_millis(200), Duration::from_millis(800))?
                .register_transaction(transaction!(history).set_weight(4)?)
                .register_transaction(transaction!(health)),
        )
        .register_scenario(
            scenario!("ConversationPair")
                .set_weight(2)?
                .set_wait_time(Duration::from_millis(200), Duration::from_millis(800))?
                .register_transaction(transaction!(pair_start).set_on_start())
                .register_transaction(transaction!(rest_send).set_weight(3)?)
                .register_transaction(transaction!(rest_unread))
                .register_transaction(transaction!(rest_mark_read)),
        )
        .execute()
        .await?;
    Ok(())
}
