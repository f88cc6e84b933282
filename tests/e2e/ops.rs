//! Operations: health, readiness, metrics, the echo endpoint.

use fastwebsockets::{Frame, OpCode, Payload};

use crate::support::{Server, token};

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let server = Server::start(&[]).await;
    assert_eq!(server.get_json("/healthz", None).await["status"], "ok");
    assert_eq!(server.get_json("/readyz", None).await["status"], "ready");
    let mut c = server.connect("alice", "r").await;
    c.next_of("room_joined").await;
    c.publish("r", "hi", "c1").await;
    c.next_of("ack").await;
    let (status, body) = server.get("/metrics", None).await;
    assert_eq!(status, 200);
    for name in [
        "roomcast_connections",
        "roomcast_connects_total",
        "roomcast_messages_published_total",
        "roomcast_messages_delivered_total",
        "roomcast_messages_stored_total",
        "roomcast_delivery_latency_seconds_bucket",
        "roomcast_store_write_seconds_bucket",
        "roomcast_store_batch_size_bucket",
        "roomcast_shard_queue_depth",
        "roomcast_outbox_queued_bytes_bucket",
    ] {
        assert!(body.contains(name), "missing {name}");
    }
    assert!(
        !body.contains("quantile="),
        "histograms must not render as summaries"
    );
    assert_eq!(server.metric("roomcast_connections", "").await, 1.0);
    let (status, body) = server.get("/nope", None).await;
    assert_eq!(status, 404);
    assert!(body.contains("not_found"));
}

#[tokio::test]
async fn the_echo_endpoint_is_off_by_default_and_authenticated_when_on() {
    let off = Server::start(&[]).await;
    assert_eq!(
        off.ws(&format!("/ws/echo?token={}", token("a", false)))
            .await
            .err()
            .map(|e| e.0),
        Some(404)
    );

    let on = Server::start(&[("ROOMCAST_ECHO_ENDPOINT", "true")]).await;
    assert_eq!(on.ws("/ws/echo").await.err().map(|e| e.0), Some(401));
    let mut c = on
        .ws(&format!("/ws/echo?token={}", token("a", false)))
        .await
        .expect("upgrade");
    c.send_text("{\"echo\":1}").await;
    assert_eq!(
        c.next().await,
        crate::support::Event::Json(serde_json::json!({"echo": 1}))
    );
    c.send_frame(Frame::new(
        false,
        OpCode::Binary,
        None,
        Payload::Owned(vec![1, 2]),
    ))
    .await;
    c.send_frame(Frame::new(
        true,
        OpCode::Continuation,
        None,
        Payload::Owned(vec![3]),
    ))
    .await;
    // Fragments are reassembled, and a binary message comes back as binary.
    assert_eq!(c.next_raw().await, (true, vec![1, 2, 3]));
    c.send_text("after").await;
    assert_eq!(c.next_raw().await, (false, b"after".to_vec()));
}

#[tokio::test]
async fn dev_mode_generates_a_secret_that_roomcast_token_uses_and_production_refuses_to_start_without_one()
 {
    // An empty JWT_SECRET counts as unset: dev mode.
    let server = Server::start(&[("JWT_SECRET", "")]).await;
    let secret_file = server.data_dir().join("jwt-secret");
    assert!(
        secret_file.exists(),
        "the dev secret is kept in the data directory"
    );
    assert!(
        server.log().contains("roomcast token --user alice"),
        "the log says how to get a token"
    );

    let mint = |admin: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"));
        cmd.args(["token", "--user", "alice", "--name", "Alice"])
            .env("ROOMCAST_DATA_DIR", server.data_dir())
            .env_remove("JWT_SECRET");
        if admin {
            cmd.arg("--admin");
        }
        let out = cmd.output().expect("run roomcast token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let user_token = mint(false);
    let mut c = server
        .ws(&format!("/ws?token={user_token}&roomId=dev"))
        .await
        .expect("the minted token is accepted");
    let joined = c.next_of("room_joined").await;
    assert_eq!(joined["roomId"], "dev");
    // The test secret is not the dev secret.
    assert_eq!(
        server
            .ws(&format!("/ws?token={}", token("alice", false)))
            .await
            .err()
            .map(|e| e.0),
        Some(401)
    );
    // --admin sets the admin role.
    assert_eq!(
        server.get("/api/admin/audit", Some(&user_token)).await.0,
        403
    );
    assert_eq!(
        server.get("/api/admin/audit", Some(&mint(true))).await.0,
        200
    );

    // Production without a secret: a start-up error naming the variable.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .env("NODE_ENV", "production")
        .env_remove("JWT_SECRET")
        .env("ROOMCAST_DATA_DIR", dir.path())
        .env("PORT", "0")
        .output()
        .expect("run roomcast");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn silent_peers_are_closed_with_1001_while_answering_peers_stay() {
    let server = Server::start(&[("ROOMCAST_PING_INTERVAL_MS", "200")]).await;
    let mut alive = server.connect("alive", "r").await;
    alive.next_of("room_joined").await;
    // The answering peer keeps reading (fastwebsockets answers pings as it reads).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(crate::support::Event::Close(code)) = alive
                    .next_within(std::time::Duration::from_millis(50))
                    .await
                {
                    panic!("the answering peer was closed with {code}");
                }
            }
            alive
        })
    };
    let mut silent = server.connect("silent", "r").await;
    silent.stop_answering_pings();
    assert_eq!(silent.closed().await, 1001);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut alive = reader.await.expect("reader task");
    alive.sync().await;
    // Counted when the session ends, just after its close frame went out.
    server
        .wait_metric("roomcast_disconnects_total", "idle_timeout", 1.0)
        .await;
}

#[tokio::test]
async fn a_connection_is_closed_with_1008_when_its_token_expires() {
    let server = Server::start(&[("ROOMCAST_PING_INTERVAL_MS", "200")]).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 2;
    let claims = serde_json::json!({"sub": "brief", "username": "brief", "exp": exp});
    let short = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::support::SECRET.as_bytes()),
    )
    .expect("encode");
    let mut c = server
        .ws(&format!("/ws?token={short}&roomId=r"))
        .await
        .expect("valid for now");
    c.next_of("room_joined").await;
    assert_eq!(c.closed().await, 1008);
    // Counted when the session ends, just after its close frame went out.
    server
        .wait_metric("roomcast_disconnects_total", "token_expired", 1.0)
        .await;
}

/// The JSON log lines (`ROOMCAST_LOG_FORMAT=json`) whose message is `message`.
fn log_lines(server: &Server, message: &str) -> Vec<serde_json::Value> {
    server
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

/// Written lines plus the `suppressed` counts they carry: every event, accounted for.
fn accounted(lines: &[serde_json::Value]) -> u64 {
    lines.len() as u64
        + lines
            .iter()
            .map(|l| l["fields"]["suppressed"].as_u64().expect("suppressed"))
            .sum::<u64>()
}

/// Lets the throttles' one-second budget start afresh (it is time itself the test
/// waits for, so a sleep is the event).
async fn next_second() {
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn connections_and_rate_limits_are_logged_as_json_and_a_flood_is_throttled() {
    let server = Server::start(&[
        ("ROOMCAST_LOG_FORMAT", "json"),
        ("RATE_LIMIT_MAX_MESSAGES", "3"),
        ("RATE_LIMIT_WINDOW_MS", "60000"),
        ("ROOMCAST_CONNECT_RATE_PER_IP", "100000"),
    ])
    .await;
    // A flood of connections: at most 20 lines a second are written.
    let mut open = Vec::new();
    for i in 0..60 {
        let path = format!("/ws?token={}&roomId=logs", token(&format!("u{i}"), false));
        let mut c = server
            .ws_with(&path, &[("User-Agent", "roomcast-e2e/1.0 (flood)")])
            .await
            .expect("upgrade");
        c.next_of("room_joined").await;
        open.push(c);
    }
    let flood = log_lines(&server, "connection established");
    assert!(
        !flood.is_empty() && flood.len() < 60,
        "{} lines for 60 connections",
        flood.len()
    );
    let line = &flood[0]["fields"];
    assert_eq!(line["user_id"], "u0");
    assert_eq!(line["room"], "logs");
    assert_eq!(line["user_agent"], "roomcast-e2e/1.0 (flood)");
    assert_eq!(flood[0]["level"], "INFO");
    // A connection after the flood writes a line carrying what was left out.
    next_second().await;
    let mut late = server.connect("late", "logs").await;
    late.next_of("room_joined").await;
    let all = log_lines(&server, "connection established");
    assert_eq!(accounted(&all), 61, "every connection is a line or counted");

    // Rate limits: 3 messages per minute; 40 more are refused and logged, throttled.
    let c = &mut open[0];
    for i in 0..43 {
        c.publish("logs", "hi", &format!("r{i}")).await;
    }
    let mut refused = 0;
    while refused < 40 {
        let v = c.next_of_any(&["ack", "error"]).await;
        if v["type"] == "error" {
            assert_eq!(v["code"], "rate_limited", "{v}");
            refused += 1;
        }
    }
    let limited = log_lines(&server, "rate limit exceeded");
    assert!(
        !limited.is_empty() && limited.len() < 40,
        "{} lines for 40 refusals",
        limited.len()
    );
    let line = &limited[0]["fields"];
    assert_eq!(limited[0]["level"], "WARN");
    assert_eq!(line["user_id"], "u0");
    assert_eq!(line["count"], 3);
    assert_eq!(line["window_ms"], 60000);
    next_second().await;
    late.publish("logs", "one", "l1").await;
    late.next_of("ack").await;
    for i in 0..3 {
        late.publish("logs", "more", &format!("l{}", i + 2)).await;
    }
    let v = late.next_of("error").await;
    assert_eq!(v["code"], "rate_limited");
    let all = log_lines(&server, "rate limit exceeded");
    assert_eq!(accounted(&all), 41, "every refusal is a line or counted");
}

/// `roomcast health [PATH]` with `PORT` set: the exit status and what it printed.
fn health(port: u16, path: Option<&str>) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .arg("health")
        .args(path)
        .env("PORT", port.to_string())
        .output()
        .expect("run roomcast health");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_health_command_probes_a_running_server_for_the_container_healthcheck() {
    let server = Server::start(&[]).await;
    let port = server.addr.port();
    // Run off the runtime: the command blocks while the server answers.
    let (ok, err) = tokio::task::spawn_blocking(move || health(port, None))
        .await
        .expect("join");
    assert!(ok, "{err}");
    let (ok, err) = tokio::task::spawn_blocking(move || health(port, Some("/readyz")))
        .await
        .expect("join");
    assert!(ok, "{err}");
    let (ok, err) = tokio::task::spawn_blocking(move || health(port, Some("/nope")))
        .await
        .expect("join");
    assert!(!ok && err.contains("404"), "{err}");
    drop(server);
    let (ok, err) = tokio::task::spawn_blocking(move || health(port, None))
        .await
        .expect("join");
    assert!(!ok && err.contains("127.0.0.1"), "a stopped server: {err}");
}
