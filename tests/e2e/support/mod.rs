//! Test support: start the real `roomcast` binary on a free loopback port with its own
//! data directory, and talk to it as clients do — a raw HTTP/1.1 client and a WebSocket
//! client whose handshake is written by hand (so refusals show their HTTP status) with
//! fastwebsockets for framing. Every wait is bounded by [`TIMEOUT`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

pub const SECRET: &str = "e2e-test-secret-0123456789";
/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The `messageId` of a message or ack frame, as a number.
pub fn id_of(v: &Value) -> u64 {
    v["messageId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("messageId")
}

/// A running server process. Killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server with a fresh data directory and extra environment.
    pub async fn start(env: &[(&str, &str)]) -> Server {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(dir, env).await
    }

    /// Starts the server again on the same data directory and environment.
    pub async fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        let next = Self::spawn(self.dir.clone(), self.env.clone()).await;
        *self = next;
    }

    async fn spawn(dir: Arc<tempfile::TempDir>, env: Vec<(String, String)>) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("server.log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        cmd.env("JWT_SECRET", SECRET)
            .env("PORT", "0")
            .env("ROOMCAST_BIND", "127.0.0.1")
            .env("ROOMCAST_DATA_DIR", dir.path().join("data"))
            .env("RUST_LOG", "info")
            .env("ROOMCAST_CONNECT_RATE_PER_IP", "10000")
            .env("RATE_LIMIT_MAX_MESSAGES", "100000")
            // Tests drive the REST API hard; tests/e2e/limits.rs sets the budgets it checks.
            .envs(
                [
                    "ROOMCAST_API_READS_PER_MIN",
                    "ROOMCAST_API_WRITES_PER_MIN",
                    "ROOMCAST_API_CALLS_PER_MIN",
                    "ROOMCAST_API_KEYS_PER_MIN",
                    "ROOMCAST_API_ADMIN_PER_MIN",
                    "ROOMCAST_PREKEY_FETCHES_PER_PARTNER_PER_HOUR",
                ]
                .map(|k| (k, "1000000")),
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn roomcast");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(TIMEOUT, lines.next_line())
            .await
            .expect("server did not start in time")
            .expect("read stdout")
            .unwrap_or_else(|| {
                panic!(
                    "server exited before listening; log:\n{}",
                    read_log(dir.path())
                )
            });
        let addr = line
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        // Keep draining stdout so the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            child: Some(child),
            addr,
            dir,
            env,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// Whether the process has not been killed or stopped by the test.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.start_kill().expect("kill");
            let _ = c.wait().await;
        }
    }

    /// SIGTERM; returns the exit code once the process is gone.
    pub async fn sigterm(&mut self) -> Option<i32> {
        let mut c = self.child.take().expect("running");
        let pid = c.id().expect("pid").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let status = tokio::time::timeout(TIMEOUT, c.wait())
            .await
            .expect("server exits after SIGTERM")
            .expect("wait");
        status.code()
    }

    pub fn token(&self, user: &str) -> String {
        token(user, false)
    }

    /// Opens `/ws?roomId=room` as `user`; panics unless the upgrade succeeds.
    pub async fn connect(&self, user: &str, room: &str) -> Client {
        self.ws(&format!("/ws?token={}&roomId={room}", self.token(user)))
            .await
            .expect("upgrade")
    }

    /// Opens a WebSocket at `path_and_query` with extra headers; `Err(status, body)` if
    /// the server refused the upgrade.
    pub async fn ws_with(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        Client::connect(self.addr, path_and_query, headers).await
    }

    pub async fn ws(&self, path_and_query: &str) -> Result<Client, (u16, String)> {
        self.ws_with(path_and_query, &[]).await
    }

    /// `method path` as `user` (an admin token when `user` starts with `admin`), with an
    /// optional JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let token = user.map(|u| token(u, u.starts_with("admin")));
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let body = body.map(|b| b.to_string());
        http(self.addr, method, path, &headers, body.as_deref()).await
    }

    /// GET `path` with an optional bearer token; returns status and body.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        http_get(self.addr, path, bearer).await
    }

    pub async fn get_json(&self, path: &str, bearer: Option<&str>) -> Value {
        let (status, body) = self.get(path, bearer).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("json body")
    }

    /// Reads a metric's value from `/metrics` (sum over label sets matching `filter`).
    pub async fn metric(&self, name: &str, filter: &str) -> f64 {
        let (_, body) = self.get("/metrics", None).await;
        body.lines()
            .filter(|l| {
                l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(filter)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Creates (or finds) a conversation of `me` with `others`; returns its id.
    pub async fn conversation(&self, me: &str, others: &[&str]) -> String {
        let r = self
            .call(
                "POST",
                "/conversations",
                Some(me),
                Some(serde_json::json!({"participantIds": others})),
            )
            .await;
        assert!(r.status == 201 || r.status == 200, "create: {r:?}");
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// `POST /messages`: `user` sends `text` into conversation `conv` with `clientMsgId`.
    pub async fn send_text(&self, user: &str, conv: &str, text: &str, cid: &str) -> Resp {
        self.call(
            "POST",
            "/messages",
            Some(user),
            Some(serde_json::json!({"conversationId": conv, "message": text, "clientMsgId": cid})),
        )
        .await
    }

    /// The newest page of a conversation's history as `user` reads it.
    pub async fn conversation_history(&self, user: &str, conv: &str) -> Value {
        let r = self
            .call(
                "GET",
                &format!("/conversations/{conv}/messages/history"),
                Some(user),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "history: {r:?}");
        r.json()
    }

    /// A socket for `user` in a lobby room of its own: conversation, call and key
    /// events reach it without joining anything.
    pub async fn socket(&self, user: &str) -> Client {
        let mut c = self.connect(user, &format!("lobby-{user}")).await;
        c.next_of("room_joined").await;
        c
    }

    /// Waits until a metric reaches `value` (metrics are recorded after the event a
    /// test observes, e.g. after a webhook's response is read).
    pub async fn wait_metric(&self, name: &str, filter: &str, value: f64) {
        self.wait_metric_until(name, filter, |v| v == value, &format!("{value}"))
            .await;
    }

    /// Waits until a metric reaches at least `value` (for counts that other sessions,
    /// closing at their own pace, may add to).
    pub async fn wait_metric_at_least(&self, name: &str, filter: &str, value: f64) {
        self.wait_metric_until(name, filter, |v| v >= value, &format!("at least {value}"))
            .await;
    }

    async fn wait_metric_until(
        &self,
        name: &str,
        filter: &str,
        done: impl Fn(f64) -> bool,
        want: &str,
    ) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let v = self.metric(name, filter).await;
            if done(v) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}{{{filter}}} stayed at {v}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every message of `room` in history, oldest first (pages backwards).
    pub async fn history(&self, room: &str) -> Vec<Value> {
        let token = self.token("history-reader");
        let mut all = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let path = match &before {
                None => format!("/api/rooms/{room}/messages?limit=200"),
                Some(b) => format!("/api/rooms/{room}/messages?limit=200&before={b}"),
            };
            let page = self.get_json(&path, Some(&token)).await;
            let msgs = page["messages"].as_array().cloned().unwrap_or_default();
            if msgs.is_empty() {
                break;
            }
            before = msgs[0]["messageId"].as_str().map(str::to_owned);
            let more = page["hasMore"].as_bool().unwrap_or(false);
            all.splice(0..0, msgs);
            if !more {
                break;
            }
        }
        all
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// An HS256 token for `user` signed with the test secret.
pub fn token(user: &str, admin: bool) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    let mut claims =
        serde_json::json!({"sub": user, "username": format!("{user}-name"), "exp": exp});
    if admin {
        claims["roles"] = serde_json::json!(["admin"]);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

/// An HTTP response: status, raw header block, body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// The stable error code of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A minimal HTTP/1.1 request with `Connection: close`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    } else if matches!(method, "POST" | "PUT" | "DELETE") {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Bodies here are small and not chunked unless the server chose to; undo chunking.
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Resp {
        status,
        headers: head.to_owned(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A minimal HTTP/1.1 GET with `Connection: close`.
pub async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

mod client;
pub mod tools;

pub use client::{Client, Event};
