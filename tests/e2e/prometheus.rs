//! The operator's views, proven on a real Prometheus (Debian's `prometheus`, which
//! `scripts/test.sh` installs): the rules pass `promtool check rules` and their unit
//! tests, the dashboards are what `dashboards/generate.py` writes, and a Prometheus
//! scraping a two-node roomcast cluster under a short load returns data for every
//! recording rule and every dashboard panel expression (a renamed metric, a wrong
//! label or a typo gives an empty result or an error, and fails here).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roomcast_engine::testkit::{RedisServer, free_port};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cql::{cql_env, keyspace, node, run_binary, server_on};
use crate::support::Server;
use crate::support::tools::{repo, run, tool};

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let text = run(Command::new(tool("promtool"))
        .arg("check")
        .arg("rules")
        .arg(dir.join("roomcast.rules.yml")));
    assert!(text.contains("SUCCESS"), "{text}");
    let text = run(Command::new(tool("promtool"))
        .current_dir(&dir)
        .arg("test")
        .arg("rules")
        .arg("roomcast.rules.test.yml"));
    assert!(text.contains("SUCCESS"), "{text}");
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(dir.join("roomcast.rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("roomcast.rules.test.yml")).expect("tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}\n")),
            "alert {a} has no promtool unit test"
        );
    }
}

#[test]
fn the_dashboards_are_what_their_generator_writes() {
    run(Command::new("python3")
        .arg(repo().join("dashboards/generate.py"))
        .arg("--check"));
}

/// A Prometheus on a free loopback port; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = repo().join("deploy/prometheus/roomcast.rules.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: roomcast\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = p.try_get("/-/ready").await {
                return p;
            }
            let log = std::fs::read_to_string(p._dir.path().join("prometheus.log"));
            assert!(
                Instant::now() < deadline,
                "prometheus never became ready: {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET path` over HTTP/1.0 (so the body is not chunked); `None` if not listening.
    async fn try_get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    /// An instant query: `Ok(number of series)` or `Err(why)`.
    async fn query(&self, expr: &str) -> Result<usize, String> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (status, body) = self
            .try_get(&path)
            .await
            .ok_or_else(|| "no answer".to_owned())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{status}: {}", v["error"]));
        }
        Ok(v["data"]["result"].as_array().map_or(0, Vec::len))
    }
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every panel expression of every dashboard, with Grafana's variables as a query
/// over all instances would have them.
fn panel_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dashboards/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let d: Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("read")).expect("json");
        for p in d["panels"].as_array().expect("panels") {
            assert!(
                p["fieldConfig"]["defaults"]["unit"].is_string(),
                "{}: panel {} has no unit",
                f.display(),
                p["title"]
            );
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"]
                    .as_str()
                    .expect("expr")
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*")
                    .replace("$node", ".*");
                out.push((format!("{} / {}", d["title"], p["title"]), expr));
            }
        }
    }
    out
}

fn recording_rules() -> Vec<String> {
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/roomcast.rules.yml"))
        .expect("rules");
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_dashboard_query_and_recording_rule_returns_data_from_a_real_prometheus() {
    let Some(cql) = node() else { return };
    let env = cql_env(&cql, &keyspace("prom"));
    let (ok, text) = run_binary(&["migrate"], &env);
    assert!(ok, "migrate: {text}");
    let redis = RedisServer::start();
    let url = redis.url();
    let room = "prom-room";
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let vars = [
            ("REDIS_URL", url.as_str()),
            ("ROOMCAST_CLUSTER_LEASE_MS", "1500"),
            ("ROOMCAST_METRICS_ROOMS", room),
        ];
        nodes.push(server_on(&env, &vars).await);
    }
    let targets: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let prom = Prometheus::start(&targets).await;
    let _open = load(&nodes, room).await;

    let mut pending: Vec<(String, String)> = panel_queries();
    for r in recording_rules() {
        pending.push((format!("recording rule {r}"), r.clone()));
    }
    // The variables' source.
    pending.push((
        "the node and instance variables".into(),
        "roomcast_node_info{node=~\".+\"}".into(),
    ));
    assert!(pending.len() > 60, "{}", pending.len());
    // Recording rules run every 15 s; rates need two scrapes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while !pending.is_empty() && Instant::now() < deadline {
        last.clear();
        let mut still = Vec::new();
        for (what, expr) in pending {
            match prom.query(&expr).await {
                Ok(n) if n > 0 => {}
                Ok(_) => {
                    last.push(format!("{what}: no data: {expr}"));
                    still.push((what, expr));
                }
                Err(e) => panic!("{what}: the query fails: {expr}: {e}"),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    assert!(
        pending.is_empty(),
        "expressions without data:\n{}",
        last.join("\n")
    );
    // Every rule evaluates without error.
    let (_, body) = prom.try_get("/api/v1/rules").await.expect("rules");
    let v: Value = serde_json::from_str(&body).expect("json");
    let mut n = 0;
    for g in v["data"]["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            n += 1;
            assert_eq!(r["health"], "ok", "{r}");
        }
    }
    assert_eq!(n, 33, "every rule is loaded");
    drop(redis);
}

/// A short load that touches every panel: messages across the two nodes (forwarded
/// to the owner), a recovery with `since`, socket and REST errors, a refused token.
/// Returns the sockets it leaves open.
async fn load(nodes: &[Server], room: &str) -> Vec<crate::support::Client> {
    let mut a = nodes[0].connect("prom-a", room).await;
    a.next_of("room_joined").await;
    let mut b = nodes[1].connect("prom-b", room).await;
    b.next_of("room_joined").await;
    let mut first = None;
    for i in 0..20 {
        let (c, sender) = if i % 2 == 0 {
            (&mut a, "a")
        } else {
            (&mut b, "b")
        };
        let ack = send_acked(c, room, &format!("{sender}-{i}")).await;
        first.get_or_insert_with(|| crate::support::id_of(&ack));
    }
    // b reconnects and recovers from the first message.
    drop(b);
    let since = first.expect("acked");
    let mut back = nodes[1]
        .ws(&format!(
            "/ws?token={}&roomId={room}&since={since}",
            nodes[1].token("prom-b")
        ))
        .await
        .expect("upgrade");
    back.next_of("recovered").await;
    // Errors: an unknown frame type, a REST 404, a refused token.
    a.send_text(r#"{"type":"nope"}"#).await;
    a.next_of("error").await;
    let r = nodes[0]
        .call("GET", "/conversations/conv_nope", Some("prom-a"), None)
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = nodes[1]
        .call("GET", "/conversations", Some("prom-a"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    match nodes[0].ws(&format!("/ws?token=nope&roomId={room}")).await {
        Err((401, _)) => {}
        Err(other) => panic!("a bad token: {other:?}"),
        Ok(_) => panic!("a bad token was accepted"),
    }
    // Sessions stay open while Prometheus scrapes (the connection panels).
    vec![a, back]
}

/// Sends until acknowledged: a node that just joined answers `unavailable` while the
/// room's slot finds its owner (the client's rule: send the same message again).
async fn send_acked(c: &mut crate::support::Client, room: &str, cid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        c.publish(room, &format!("hello {cid}"), cid).await;
        let v = c.next_of_any(&["ack", "error"]).await;
        if v["type"] == "ack" {
            return v;
        }
        assert_eq!(v["code"], "unavailable", "{v}");
        assert!(Instant::now() < deadline, "never acknowledged: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
