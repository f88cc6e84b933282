//! The OpenAPI document and Swagger UI: the document is OpenAPI 3.1 and covers every
//! route; Swagger UI, served from the binary, lists the operations in a real headless
//! Chromium (no internet needed); schemathesis, fuzzing every operation from our own
//! document with an admin token, finds no 5xx and no response that contradicts it.
//! `scripts/test.sh` installs Chromium (Debian's `chromium`) and schemathesis (PyPI,
//! into `target/tools-venv`). ROOMCAST_SKIP_BROWSER=1 / ROOMCAST_SKIP_SCHEMATHESIS=1 skip
//! them explicitly; otherwise a missing tool fails the test.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::support::{Server, token};

fn find_tool(env: &str, venv: &str, name: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools-venv/bin")
        .join(venv);
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}

#[tokio::test]
async fn openapi_spec_validator_accepts_the_served_document_and_refuses_a_broken_one() {
    use crate::support::tools::{run, tool};
    let s = Server::start(&[]).await;
    let (status, body) = s.get("/api/chats/openapi.json", None).await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let served = dir.path().join("openapi.json");
    std::fs::write(&served, &body).expect("write");
    let validator = tool("openapi-spec-validator");
    let out = run(std::process::Command::new(&validator).arg(&served));
    assert!(out.contains("OK"), "{out}");
    // The check can fail: a path parameter its template does not name is an error.
    let mut doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    let op = &mut doc["paths"]["/conversations"]["get"];
    let params = op["parameters"].as_array_mut().expect("parameters");
    params.push(serde_json::json!({"name": "ghost", "in": "path", "required": true, "schema": {"type": "string"}}));
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, doc.to_string()).expect("write");
    let out = std::process::Command::new(&validator)
        .arg(&broken)
        .output()
        .expect("run the validator");
    assert!(
        !out.status.success(),
        "a broken document passed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_every_route() {
    let s = Server::start(&[]).await;
    let doc = s.get_json("/api/chats/openapi.json", None).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    // Every route the router serves (bar the docs themselves and the off-by-default echo).
    let expected = [
        "/conversations",
        "/conversations/{conversationId}",
        "/conversations/{conversationId}/archive",
        "/conversations/{conversationId}/unarchive",
        "/conversations/{conversationId}/messages/history",
        "/conversations/{conversationId}/messages/unread",
        "/messages",
        "/messages/typing/{isTyping}",
        "/messages/{messageId}",
        "/messages/{messageId}/read",
        "/messages/{messageId}/reaction",
        "/messages/{messageId}/reaction/{reaction}",
        "/private/messages",
        "/private/users/{userId}/conversations",
        "/private/conversations/quietChats",
        "/private/conversations/{conversationId}",
        "/private/conversations/{conversationId}/snooze",
        "/api/rooms/{roomId}/messages",
        "/api/admin/audit",
        "/api/admin/cluster",
        "/api/presence/online",
        "/api/presence/users/{userId}",
        "/calls",
        "/calls/accept",
        "/calls/end",
        "/calls/active",
        "/video/{interactionId}/token",
        "/keys/identityKey",
        "/keys/signedPreKey",
        "/keys/preKeys",
        "/keys/users/{partnerUserId}/identityKey",
        "/keys/users/{partnerUserId}/signedPreKey",
        "/keys/users/{partnerUserId}/preKey",
        "/healthz",
        "/readyz",
        "/metrics",
        "/ws",
    ];
    for p in expected {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    assert_eq!(
        paths.len(),
        expected.len(),
        "undocumented or unexpected paths: {:?}",
        paths.keys()
    );
    let (status, _) = s.get("/api/chats/docs", None).await;
    assert_eq!(status, 308, "the docs redirect to their folder");
}

#[tokio::test]
async fn swagger_ui_lists_the_operations_in_headless_chromium() {
    if std::env::var("ROOMCAST_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("swagger ui: skipped because ROOMCAST_SKIP_BROWSER=1");
        return;
    }
    let chromium = find_tool("CHROMIUM", "chromium", "chromium")
        .expect("chromium not installed: `apt-get install -y chromium` (scripts/test.sh does)");
    let s = Server::start(&[]).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("http://{}/api/chats/docs", s.addr);
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--virtual-time-budget=20000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(&url)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output(),
    )
    .await
    .expect("chromium finishes")
    .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    // Swagger UI rendered an operation block for each of these, from our document.
    for path in [
        "/conversations/{conversationId}/messages/history",
        "/messages/{messageId}/reaction/{reaction}",
        "/private/conversations/quietChats",
        "/ws",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "Swagger UI did not list {path}; DOM was {} bytes",
            dom.len()
        );
    }
    assert!(
        dom.contains("roomcast chat API"),
        "the document's title is shown"
    );
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    if std::env::var("ROOMCAST_SKIP_SCHEMATHESIS").as_deref() == Ok("1") {
        eprintln!("schemathesis: skipped because ROOMCAST_SKIP_SCHEMATHESIS=1");
        return;
    }
    let st = find_tool("SCHEMATHESIS", "schemathesis", "schemathesis")
        .expect("schemathesis not installed: scripts/test.sh installs it into target/tools-venv");
    // A fully configured server: unconfigured video answers 503 by design, which the
    // server-error check would flag.
    let s = Server::start(&[
        ("ROOMCAST_VIDEO_URL", "wss://video.example"),
        ("ROOMCAST_VIDEO_API_KEY", "APIkey"),
        ("ROOMCAST_VIDEO_API_SECRET", "video-secret-0123456789"),
    ])
    .await;
    // A conversation and a message so that some generated ids hit real data.
    s.call(
        "POST",
        "/conversations",
        Some("admin-st"),
        Some(serde_json::json!({"participantIds": ["bob"]})),
    )
    .await;
    let auth = format!("Authorization: Bearer {}", token("admin-st", true));
    let url = format!("http://{}/api/chats/openapi.json", s.addr);
    // schemathesis keeps a cache in its working directory: give it a scratch one.
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        Command::new(st)
            .current_dir(scratch.path())
            .args(["run", &url, "-H", &auth])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "40",
                "--seed",
                "20261121",
                "--no-color",
            ])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("schemathesis finishes")
    .expect("schemathesis runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(
        report.contains("Tested: 40"),
        "every operation tested:\n{report}"
    );
}

#[tokio::test]
async fn every_documented_route_refuses_a_missing_token_with_401() {
    let s = Server::start(&[]).await;
    let doc = s.get_json("/api/chats/openapi.json", None).await;
    let public = ["/healthz", "/readyz", "/metrics"];
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        if public.contains(&path.as_str()) {
            continue;
        }
        // Fill path parameters with plausible values.
        let concrete = path
            .replace("{conversationId}", "conv_1")
            .replace("{messageId}", "1")
            .replace("{reaction}", "like")
            .replace("{isTyping}", "true")
            .replace("{userId}", "ann")
            .replace("{roomId}", "general")
            .replace("{interactionId}", "call_1")
            .replace("{partnerUserId}", "bob");
        for method in ops.as_object().expect("operations").keys() {
            let m = method.to_ascii_uppercase();
            let r = s
                .call(&m, &concrete, None, Some(serde_json::json!({})))
                .await;
            assert_eq!(r.status, 401, "{m} {concrete} without a token: {r:?}");
            assert_eq!(r.code(), "unauthorized", "{m} {concrete}");
            assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
            checked += 1;
        }
    }
    assert_eq!(checked, 37, "operations needing a token");
    // Requests are counted by route template, never by raw path.
    let n = s
        .metric(
            "roomcast_http_requests_total",
            "route=\"/messages/{messageId}/read\"",
        )
        .await;
    assert!(n >= 1.0, "per-route HTTP metrics");
    assert!(
        s.metric("roomcast_api_errors_total", "code=\"unauthorized\"")
            .await
            >= 37.0
    );
}
