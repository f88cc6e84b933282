//! The server on the CQL store, against the real Apache Cassandra 5.0 that
//! `scripts/test.sh` starts (`ROOMCAST_TEST_CQL`): `roomcast migrate`, the refusal of a
//! keyspace without the schema, the chat REST walk, fan-out with acks, recovery with
//! `since`, kill -9 durability, two nodes sharing one keyspace, the store going away and
//! coming back, and TLS to the cluster.

use std::collections::HashSet;

use serde_json::json;

use crate::support::{Event, Server, id_of};

/// The CQL node, or a loud failure (`ROOMCAST_SKIP_CQL=1` skips explicitly).
pub(crate) fn node() -> Option<String> {
    if std::env::var("ROOMCAST_SKIP_CQL").as_deref() == Ok("1") {
        eprintln!("cql e2e: skipped because ROOMCAST_SKIP_CQL=1");
        return None;
    }
    match std::env::var("ROOMCAST_TEST_CQL") {
        Ok(n) if !n.is_empty() => Some(n),
        _ => panic!(
            "ROOMCAST_TEST_CQL is not set: run `bash scripts/test.sh` (it starts Cassandra); \
             ROOMCAST_SKIP_CQL=1 skips explicitly"
        ),
    }
}

pub(crate) fn keyspace(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("e2e_{name}_{}_{nanos}", std::process::id())
}

pub(crate) fn cql_env(node: &str, ks: &str) -> Vec<(String, String)> {
    vec![
        ("ROOMCAST_SCYLLA_NODES".into(), node.into()),
        ("ROOMCAST_SCYLLA_KEYSPACE".into(), ks.into()),
        (
            "ROOMCAST_SCYLLA_REPLICATION".into(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
        ),
        // The test node shares two cores with the whole suite.
        ("ROOMCAST_SCYLLA_REQUEST_TIMEOUT_MS".into(), "20000".into()),
    ]
}

/// `roomcast <args>` with `env`; (success, stdout + stderr).
pub(crate) fn run_binary(args: &[&str], env: &[(String, String)]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("JWT_SECRET", crate::support::SECRET)
        .env("PORT", "0")
        .env("ROOMCAST_BIND", "127.0.0.1")
        .env(
            "ROOMCAST_DATA_DIR",
            std::env::temp_dir().join("roomcast-cql-e2e"),
        )
        .output()
        .expect("run roomcast");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub(crate) async fn server_on(env: &[(String, String)], extra: &[(&str, &str)]) -> Server {
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    Server::start(&all).await
}

#[tokio::test]
async fn migrate_then_serve_and_refuse_a_keyspace_without_the_schema() {
    let Some(node) = node() else { return };
    let env = cql_env(&node, &keyspace("refuse"));
    // No schema yet: the server stops at start-up and says what to run.
    let (ok, text) = run_binary(&["serve"], &env);
    assert!(!ok, "served on a keyspace without the schema: {text}");
    assert!(text.contains("roomcast migrate"), "{text}");
    // migrate is idempotent.
    for _ in 0..2 {
        let (ok, text) = run_binary(&["migrate"], &env);
        assert!(ok, "migrate: {text}");
        assert!(text.contains("schema version 1"), "{text}");
    }
    // An unreachable cluster is named in the error.
    let bad = cql_env("127.0.0.1:1", "nowhere");
    let (ok, text) = run_binary(&["serve"], &bad);
    assert!(!ok && text.contains("127.0.0.1:1"), "{text}");
}

#[tokio::test]
async fn chat_fanout_recovery_and_kill_dash_nine_on_cassandra() {
    let Some(node) = node() else { return };
    let env = cql_env(&node, &keyspace("walk"));
    let (ok, text) = run_binary(&["migrate"], &env);
    assert!(ok, "migrate: {text}");
    let mut server = server_on(&env, &[]).await;

    // The chat REST walk: a conversation, a message, history, unread, a receipt.
    let conv = server.conversation("ann", &["bob"]).await;
    assert_eq!(
        server.conversation("bob", &["ann"]).await,
        conv,
        "one per pair"
    );
    let r = server
        .call(
            "POST",
            "/messages",
            Some("ann"),
            Some(json!({"conversationId": conv, "message": "hi bob", "clientMsgId": "m1"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let first = r.json()["message"].clone();
    let again = server
        .call(
            "POST",
            "/messages",
            Some("ann"),
            Some(json!({"conversationId": conv, "message": "hi bob", "clientMsgId": "m1"})),
        )
        .await;
    assert_eq!(
        (again.status, &again.json()["message"]["messageId"]),
        (200, &first["messageId"])
    );
    let unread = server
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/unread"),
            Some("bob"),
            None,
        )
        .await
        .json();
    assert_eq!(unread["count"], 1, "{unread}");
    let mid = first["messageId"].as_str().expect("id");
    let r = server
        .call("PUT", &format!("/messages/{mid}/read"), Some("bob"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let list = server
        .call("GET", "/conversations", Some("bob"), None)
        .await
        .json();
    assert_eq!(list["conversations"][0]["unreadCount"], 0, "{list}");

    // Fan-out with acks, then kill -9: every acknowledged message is in history.
    let mut alice = server.connect("alice", "r").await;
    alice.next_of("room_joined").await;
    let mut bob = server.connect("bob", "r").await;
    bob.next_of("room_joined").await;
    let mut acked = HashSet::new();
    for i in 0..40 {
        alice.publish("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    while acked.len() < 40 {
        match alice.next().await {
            Event::Json(v) if v["type"] == "ack" => {
                acked.insert(id_of(&v));
            }
            Event::Json(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let mut got = Vec::new();
    while got.len() < 40 {
        got.push(bob.next_of("message").await["seq"].as_u64().expect("seq"));
    }
    assert_eq!(got, (1..=40).collect::<Vec<_>>());
    let since = {
        let h = server.history("r").await;
        assert_eq!(h.len(), 40);
        h[19]["messageId"].as_str().expect("id").to_owned()
    };
    drop((alice, bob));
    server.kill9().await;
    server.restart().await;
    let stored: HashSet<u64> = server.history("r").await.iter().map(id_of).collect();
    assert!(
        acked.iter().all(|id| stored.contains(id)),
        "acked messages lost"
    );

    // Recovery with `since` after the restart: exactly messages 21-40, then live.
    let mut carol = server
        .ws(&format!(
            "/ws?token={}&roomId=r&since={since}",
            server.token("carol")
        ))
        .await
        .expect("upgrade");
    carol.next_of("room_joined").await;
    let mut replay = Vec::new();
    loop {
        let v = carol.next().await;
        let Event::Json(v) = v else { panic!("{v:?}") };
        match v["type"].as_str() {
            Some("message") => replay.push(v["seq"].as_u64().expect("seq")),
            Some("recovered") => break,
            _ => {}
        }
    }
    assert_eq!(replay, (21..=40).collect::<Vec<_>>());
    carol.publish("r", "after", "c-after").await;
    assert_eq!(carol.next_of("message").await["seq"], 41);
}

#[tokio::test]
async fn two_nodes_share_one_keyspace() {
    let Some(node) = node() else { return };
    let env = cql_env(&node, &keyspace("two"));
    let (ok, text) = run_binary(&["migrate"], &env);
    assert!(ok, "migrate: {text}");
    let a = server_on(&env, &[("ROOMCAST_NODE_ID", "1")]).await;
    let b = server_on(&env, &[("ROOMCAST_NODE_ID", "2")]).await;

    // A conversation made through A is the one B finds; a message sent on A is in B's
    // history; REST works against either.
    let conv = a.conversation("ann", &["bob"]).await;
    assert_eq!(b.conversation("bob", &["ann"]).await, conv);
    let r = a
        .call(
            "POST",
            "/messages",
            Some("ann"),
            Some(json!({"conversationId": conv, "message": "through A"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let page = b
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history"),
            Some("bob"),
            None,
        )
        .await
        .json();
    assert_eq!(page["messages"][0]["content"], "through A", "{page}");

    // A client that saw message 5 on A reconnects to B with `since` and recovers
    // exactly 6-10.
    let mut pub_a = a.connect("alice", "room").await;
    pub_a.next_of("room_joined").await;
    for i in 1..=10 {
        pub_a
            .publish("room", &format!("m{i}"), &format!("c{i}"))
            .await;
    }
    let mut acks = Vec::new();
    while acks.len() < 10 {
        acks.push(pub_a.next_of("ack").await);
    }
    let since = acks[4]["messageId"].as_str().expect("id").to_owned();
    let mut on_b = b
        .ws(&format!(
            "/ws?token={}&roomId=room&since={since}",
            b.token("dave")
        ))
        .await
        .expect("upgrade");
    let mut replay = Vec::new();
    loop {
        let Event::Json(v) = on_b.next().await else {
            panic!("closed")
        };
        match v["type"].as_str() {
            Some("message") => replay.push(v["content"].as_str().unwrap_or("").to_owned()),
            Some("recovered") => break,
            _ => {}
        }
    }
    assert_eq!(replay, ["m6", "m7", "m8", "m9", "m10"]);
    // Calls and keys are shared too: a call started on A is active on B.
    let r = a
        .call(
            "POST",
            "/calls",
            Some("ann"),
            Some(json!({"partnerId": "bob"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let active = b.call("GET", "/calls/active", Some("bob"), None).await;
    assert_eq!(active.status, 200, "{active:?}");
    assert_eq!(active.json()["id"], r.json()["id"]);
}

/// A Cassandra of this test's own (it is stopped and restarted), stopped when dropped.
struct OwnCassandra {
    dir: std::path::PathBuf,
}

impl OwnCassandra {
    fn script(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../scripts/cassandra/{name}"))
    }

    /// Starts (or, with `restart`, restarts on the same ports and data); `host:port`.
    fn start(&self, restart: bool) -> String {
        let out = std::process::Command::new("bash")
            .arg(Self::script("start.sh"))
            .arg(&self.dir)
            .env("CASSANDRA_RESTART", if restart { "1" } else { "0" })
            .output()
            .expect("run start.sh");
        assert!(
            out.status.success(),
            "Cassandra did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("host:port")
            .trim()
            .to_owned()
    }

    fn stop(&self) {
        let _ = std::process::Command::new("bash")
            .arg(Self::script("stop.sh"))
            .arg(&self.dir)
            .status();
    }
}

impl Drop for OwnCassandra {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn the_store_going_away_gives_retryable_errors_and_service_resumes() {
    // Needs what the suite's Cassandra needs (a JDK, Maven's artefacts), not that one.
    if node().is_none() {
        return;
    }
    let cass = OwnCassandra {
        dir: std::env::temp_dir().join(format!("roomcast-cass-fault-{}", std::process::id())),
    };
    // The suite's lib folder is reused when present (no second download).
    let shared_lib =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/cassandra/lib");
    if shared_lib.join(".complete").exists() {
        let _ = std::fs::create_dir_all(&cass.dir);
        let _ = std::os::unix::fs::symlink(&shared_lib, cass.dir.join("lib"));
    }
    let node = cass.start(false);
    let env = cql_env(&node, "fault");
    let (ok, text) = run_binary(&["migrate"], &env);
    assert!(ok, "migrate: {text}");
    let server = server_on(&env, &[("ROOMCAST_SCYLLA_REQUEST_TIMEOUT_MS", "1000")]).await;
    let conv = server.conversation("ann", &["bob"]).await;
    let send = |text: &'static str, cid: &'static str| {
        let conv = conv.clone();
        let server = &server;
        async move {
            server
                .call(
                    "POST",
                    "/messages",
                    Some("ann"),
                    Some(json!({"conversationId": conv, "message": text, "clientMsgId": cid})),
                )
                .await
        }
    };
    assert_eq!(send("before", "c-before").await.status, 201);
    let mut sock = server.socket("ann").await;
    sock.send_json(json!({"type": "join_room", "roomId": conv}))
        .await;
    sock.next_of("room_joined").await;

    cass.stop();
    // Down: a retryable 503 store_unavailable, in bounded time, nothing acknowledged.
    let started = std::time::Instant::now();
    let r = send("while down", "c-down").await;
    assert_eq!(
        (r.status, r.code()),
        (503, "store_unavailable".to_owned()),
        "{r:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    sock.publish(&conv, "socket while down", "s-down").await;
    let v = sock.next_of_any(&["ack", "error"]).await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("store_unavailable")),
        "{v}"
    );

    // Back: service resumes by itself (the driver reconnects), bounded wait.
    cass.start(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = send("after", "c-after").await;
        if r.status == 201 || r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no recovery: {r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // The resend of the failed message is stored now, once; history is consistent.
    assert_eq!(send("while down", "c-down").await.status, 201);
    let page = server
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history"),
            Some("bob"),
            None,
        )
        .await
        .json();
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(texts, ["before", "after", "while down"], "{page}");
}

/// The test node's TLS files (`scripts/test.sh` exports the folder start.sh wrote).
fn tls_dir() -> std::path::PathBuf {
    match std::env::var("ROOMCAST_TEST_CQL_TLS_DIR") {
        Ok(d) if !d.is_empty() => d.into(),
        _ => panic!(
            "ROOMCAST_TEST_CQL_TLS_DIR is not set: run `bash scripts/test.sh` (start.sh \
             writes the node's CA into target/cassandra/tls)"
        ),
    }
}

#[tokio::test]
async fn tls_to_the_cluster_verifies_the_node_certificate() {
    let Some(node) = node() else { return };
    let dir = tls_dir();
    let ks = keyspace("tls");
    let mut env = cql_env(&node, &ks);
    // Trusting a CA that did not sign the node's certificate: the handshake fails and
    // nothing is served (this is also what proves the connection is TLS at all: the
    // node accepts plain clients on the same port).
    let mut wrong = env.clone();
    wrong.push((
        "ROOMCAST_SCYLLA_TLS_CA_FILE".into(),
        dir.join("other-ca.pem").display().to_string(),
    ));
    let (ok, text) = run_binary(&["migrate"], &wrong);
    assert!(!ok, "migrated trusting the wrong CA: {text}");
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
    // A CA file that is not there is named.
    let mut missing = env.clone();
    missing.push((
        "ROOMCAST_SCYLLA_TLS_CA_FILE".into(),
        dir.join("absent.pem").display().to_string(),
    ));
    let (ok, text) = run_binary(&["migrate"], &missing);
    assert!(!ok && text.contains("absent.pem"), "{text}");

    // The node's own CA: migrate, serve, and a message round trip, all over TLS.
    env.push((
        "ROOMCAST_SCYLLA_TLS_CA_FILE".into(),
        dir.join("ca.pem").display().to_string(),
    ));
    let (ok, text) = run_binary(&["migrate"], &env);
    assert!(ok, "migrate over TLS: {text}");
    let server = server_on(&env, &[]).await;
    let conv = server.conversation("ann", &["bob"]).await;
    let r = server.send_text("ann", &conv, "over tls", "t1").await;
    assert_eq!(r.status, 201, "{r:?}");
    let page = server.conversation_history("bob", &conv).await;
    assert_eq!(page["messages"][0]["content"], "over tls", "{page}");
}
