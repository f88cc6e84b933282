//! Three `roomcast` processes as one cluster: a real `redis-server` on a free loopback
//! port (started here, SIGKILLed and restarted here) and one keyspace on the Cassandra
//! that `scripts/test.sh` starts (`ROOMCAST_TEST_CQL`). Publishers on every node; each
//! test checks that every acknowledged message reached every member exactly once, in
//! `seq` order, and is in history.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roomcast_engine::testkit::RedisServer;
use serde_json::{Value, json};

use crate::cql::{cql_env, keyspace, node, run_binary, server_on};
use crate::support::{Event, Server, TIMEOUT, id_of};

struct Cluster {
    redis: Option<RedisServer>,
    nodes: Vec<Server>,
    ks: String,
}

impl Drop for Cluster {
    /// A failing test shows what the nodes logged about delivery (gaps, fills, leases),
    /// the last lines of each: the processes are gone once the test ends.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let log = n.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    [
                        "gap",
                        "Gap",
                        "fill",
                        "delivery read",
                        "Position",
                        "position",
                        "lease",
                        "fenc",
                        "resync",
                        "WARN",
                        "ERROR",
                    ]
                    .iter()
                    .any(|k| l.contains(k))
                })
                .collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- node {i} (keyspace {}): last delivery lines of {} ---",
                self.ks,
                lines.len()
            );
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

/// Error codes a client answers by sending the same message again.
const RETRYABLE: [&str; 4] = [
    "unavailable",
    "store_unavailable",
    "overloaded",
    "shutting_down",
];

impl Cluster {
    async fn start(name: &str, n: usize) -> Option<Cluster> {
        Self::start_with(name, n, &[("RATE_LIMIT_MAX_MESSAGES", "100000")]).await
    }

    async fn start_with(name: &str, n: usize, extra: &[(&str, &str)]) -> Option<Cluster> {
        let node = node()?;
        let ks = keyspace(name);
        let env = cql_env(&node, &ks);
        let (ok, text) = run_binary(&["migrate"], &env);
        assert!(ok, "migrate: {text}");
        let redis = RedisServer::start();
        let url = redis.url();
        let mut nodes = Vec::new();
        for _ in 0..n {
            let mut vars = vec![
                ("RUST_LOG", "info,roomcast_engine::shard=debug"),
                ("REDIS_URL", url.as_str()),
                ("ROOMCAST_CLUSTER_LEASE_MS", "1500"),
                ("ROOMCAST_REDIS_TIMEOUT_MS", "500"),
            ];
            vars.extend_from_slice(extra);
            nodes.push(server_on(&env, &vars).await);
        }
        let c = Cluster {
            redis: Some(redis),
            nodes,
            ks,
        };
        c.settled(n).await;
        Some(c)
    }

    /// `GET /api/admin/cluster` on node `i`.
    async fn view(&self, i: usize, room: Option<&str>) -> Value {
        let path = match room {
            Some(r) => format!("/api/admin/cluster?room={r}"),
            None => "/api/admin/cluster".to_owned(),
        };
        let r = self.nodes[i].call("GET", &path, Some("admin"), None).await;
        assert_eq!(r.status, 200, "{r:?}");
        r.json()
    }

    /// Waits until every running node sees the same `n` live nodes and holds exactly
    /// the slots the rendezvous hash gives it (no handover under way).
    async fn settled(&self, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut views = Vec::new();
            for i in 0..self.nodes.len() {
                if self.nodes[i].running() {
                    views.push(self.view(i, None).await);
                }
            }
            let live: Vec<u16> = views[0]["nodes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_u64())
                        .map(|v| v as u16)
                        .collect()
                })
                .unwrap_or_default();
            let stable = live.len() == n
                && views.iter().all(|v| {
                    let node = v["node"].as_u64().unwrap_or(u64::MAX) as u16;
                    let share = (0..roomcast_engine::cluster::SLOTS)
                        .filter(|s| roomcast_engine::cluster::owner_among(*s, &live) == Some(node))
                        .count() as u64;
                    v["nodes"] == views[0]["nodes"] && v["slotsHeld"].as_u64() == Some(share)
                });
            if stable {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle on {n} nodes: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the node that orders `room`.
    async fn owner_of(&self, room: &str) -> usize {
        let v = self.view(0, Some(room)).await;
        let owner = v["room"]["owner"].as_u64().expect("owner");
        for i in 0..self.nodes.len() {
            if self.view(i, None).await["node"].as_u64() == Some(owner) {
                return i;
            }
        }
        panic!("no node is {owner}")
    }
}

/// One connection that publishes to the room and is a member of it.
struct Peer {
    name: String,
    ws: crate::support::Client,
    /// `clientMsgId -> content` not acknowledged yet.
    pending: BTreeMap<String, String>,
    /// `seq -> clientMsgId` of this peer's acknowledged messages.
    acked: BTreeMap<u64, String>,
    /// `(seq, clientMsgId, messageId)` of every message frame, in arrival order.
    got: Vec<(u64, String, u64)>,
    /// Refused with a retryable error: sent again at `retry_at`.
    retry: std::collections::BTreeSet<String>,
    retry_at: Option<Instant>,
}

impl Peer {
    async fn join(server: &Server, user: &str, room: &str) -> Peer {
        let mut ws = server.connect(user, room).await;
        ws.next_of("room_joined").await;
        Peer {
            name: user.to_owned(),
            ws,
            pending: BTreeMap::new(),
            acked: BTreeMap::new(),
            got: Vec::new(),
            retry: Default::default(),
            retry_at: None,
        }
    }

    async fn publish(&mut self, room: &str, from: usize, n: usize) {
        for i in from..from + n {
            let cid = format!("{}-{i}", self.name);
            let content = format!("m {cid}");
            self.ws.publish(room, &content, &cid).await;
            self.pending.insert(cid, content);
        }
    }

    /// Handles one event; false when the connection is gone.
    async fn handle(&mut self, room: &str, ev: Event) -> bool {
        let v = match ev {
            Event::Json(v) => v,
            Event::Close(_) | Event::Gone => return false,
        };
        match v["type"].as_str() {
            Some("message") => self.got.push((
                v["seq"].as_u64().expect("seq"),
                v["clientMsgId"].as_str().unwrap_or("").to_owned(),
                id_of(&v),
            )),
            Some("ack") => {
                let cid = v["clientMsgId"].as_str().expect("ack cid").to_owned();
                assert!(
                    v["seq"].as_u64().is_some_and(|s| s > 0),
                    "{}: an ack without its seq: {v}",
                    self.name
                );
                if self.pending.remove(&cid).is_some() {
                    self.acked.insert(v["seq"].as_u64().expect("ack seq"), cid);
                }
            }
            Some("error") => {
                let code = v["code"].as_str().unwrap_or("");
                let cid = v["clientMsgId"].as_str().unwrap_or("").to_owned();
                assert!(
                    RETRYABLE.contains(&code),
                    "{} got a final error: {v}",
                    self.name
                );
                // The client's rule: send the same message again, after the hint.
                let wait = v["retryAfterMs"].as_u64().unwrap_or(200).min(1000);
                let at = Instant::now() + Duration::from_millis(wait);
                self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
                self.retry.insert(cid);
                let _ = room;
            }
            _ => {}
        }
        true
    }

    /// The next ack (messages meanwhile are recorded).
    async fn next_ack(&mut self) -> Value {
        loop {
            match self.ws.next().await {
                Event::Json(v) if v["type"] == "ack" => return v,
                Event::Json(v) if v["type"] == "message" => {
                    self.handle("", Event::Json(v)).await;
                }
                Event::Json(_) => {}
                other => panic!("{}: connection ended: {other:?}", self.name),
            }
        }
    }

    /// Reads until every message this peer sent is acknowledged.
    async fn until_acked(&mut self, room: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{}: not acknowledged: {:?}",
                self.name,
                self.pending.keys().collect::<Vec<_>>()
            );
            self.step(room).await;
        }
    }

    /// Sends what is due for a retry, then handles the next event (or a quiet 100 ms).
    async fn step(&mut self, room: &str) {
        if self.retry_at.is_some_and(|t| Instant::now() >= t) {
            self.retry_at = None;
            for cid in std::mem::take(&mut self.retry) {
                if let Some(content) = self.pending.get(&cid).cloned() {
                    self.ws.publish(room, &content, &cid).await;
                }
            }
        }
        if let Some(ev) = self.ws.next_within(Duration::from_millis(100)).await {
            assert!(
                self.handle(room, ev).await,
                "{}: connection lost",
                self.name
            );
        }
    }

    /// Reads until the server closes the connection (recording what arrives before);
    /// returns the close code.
    async fn until_closed(&mut self, room: &str) -> u16 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "{}: never closed", self.name);
            match self.ws.next_within(Duration::from_millis(100)).await {
                Some(Event::Close(code)) => return code,
                Some(Event::Gone) => panic!("{}: gone without a close frame", self.name),
                Some(ev) => {
                    self.handle(room, ev).await;
                }
                None => {}
            }
        }
    }

    /// Connects again, on `server`, recovering from the last message this peer got
    /// (`since`), and sends again (same `clientMsgId`) what was not acknowledged.
    async fn reconnect(&mut self, server: &Server, room: &str) {
        let since = self.got.last().map(|g| g.2).expect("got messages before");
        self.ws = server
            .ws(&format!(
                "/ws?token={}&roomId={room}&since={since}",
                server.token(&self.name)
            ))
            .await
            .expect("upgrade");
        self.retry.extend(self.pending.keys().cloned());
        self.retry_at = Some(Instant::now());
    }

    /// Reads until every seq in `acked` has arrived.
    async fn until_received(&mut self, room: &str, acked: &BTreeMap<u64, String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let have: HashSet<u64> = self.got.iter().map(|g| g.0).collect();
            let missing: Vec<u64> = acked
                .keys()
                .filter(|s| !have.contains(s))
                .copied()
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: never got seqs {missing:?}; got first {:?}",
                self.name,
                self.got.iter().take(12).map(|g| g.0).collect::<Vec<_>>()
            );
            self.step(room).await;
        }
    }
}

/// Every peer got every acknowledged message once, in `seq` order, the message its
/// `seq` was acknowledged for; and every one is in history (read on `reader`).
/// One peer per node, named `{prefix}{i}`, each joined to `room`.
async fn peers_on(nodes: &[Server], prefix: &str, room: &str) -> Vec<Peer> {
    let mut peers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        peers.push(Peer::join(n, &format!("{prefix}{i}"), room).await);
    }
    peers
}

/// Every peer publishes `n` messages numbered from `from`, then each waits for its acks.
async fn publish_acked(peers: &mut [Peer], room: &str, from: usize, n: usize) {
    for p in peers.iter_mut() {
        p.publish(room, from, n).await;
    }
    for p in peers.iter_mut() {
        p.until_acked(room).await;
    }
}

async fn check(peers: &[&Peer], acked: &BTreeMap<u64, String>, reader: &Server, room: &str) {
    assert!(!acked.is_empty(), "nothing was acknowledged");
    for p in peers {
        let seqs: Vec<u64> = p.got.iter().map(|g| g.0).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{}: not in seq order or repeated: {seqs:?}",
            p.name
        );
        for (seq, cid) in acked {
            let got = p.got.iter().find(|g| g.0 == *seq).map(|g| g.1.as_str());
            assert_eq!(got, Some(cid.as_str()), "{}: seq {seq}", p.name);
        }
    }
    let history = reader.history(room).await;
    let stored: HashSet<(u64, String)> = history
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap_or(0),
                m["clientMsgId"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (seq, cid) in acked {
        assert!(
            stored.contains(&(*seq, cid.clone())),
            "seq {seq} ({cid}) not in history"
        );
    }
}

fn all_acked(peers: &[&Peer]) -> BTreeMap<u64, String> {
    let mut all = BTreeMap::new();
    for p in peers {
        for (seq, cid) in &p.acked {
            assert!(
                all.insert(*seq, cid.clone()).is_none(),
                "seq {seq} acked twice"
            );
        }
    }
    all
}

#[tokio::test]
async fn publishers_on_three_nodes_reach_every_member_once_in_one_order() {
    let Some(c) = Cluster::start("fanout", 3).await else {
        return;
    };
    let room = "lobby";
    let mut peers = peers_on(&c.nodes, "p", room).await;
    publish_acked(&mut peers, room, 0, 100).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let acked = all_acked(&refs);
    assert_eq!(acked.len(), 300);
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (1..=300).collect::<Vec<_>>(),
        "contiguous seqs"
    );
    // Each sender's 100 messages (sent back to back) are sequenced in the order it sent
    // them, forwarded or not.
    for p in &peers {
        let sent_order: Vec<u64> = p
            .acked
            .values()
            .filter_map(|cid| cid.rsplit('-').next()?.parse().ok())
            .collect();
        assert_eq!(
            sent_order,
            (0..100).collect::<Vec<u64>>(),
            "{}: sequenced out of the order sent",
            p.name
        );
    }
    for p in &mut peers {
        p.until_received(room, &acked).await;
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[2], room).await;
    // Two of three nodes forwarded their publishers' messages to the owner.
    let owner = c.owner_of(room).await;
    for (i, n) in c.nodes.iter().enumerate() {
        let forwarded = n
            .metric("roomcast_cluster_forwarded_total", "outcome=\"ok\"")
            .await;
        if i == owner {
            assert_eq!(forwarded, 0.0, "the owner forwards nothing");
        } else {
            assert_eq!(
                forwarded, 100.0,
                "node {i} forwards every one of its publisher's messages"
            );
        }
    }
    drop(c);
}

#[tokio::test]
async fn no_sticky_sessions_and_a_resend_to_another_node_is_one_message() {
    let Some(c) = Cluster::start("sticky", 3).await else {
        return;
    };
    // Socket on node 0, REST send on node 1, history read on node 2.
    let conv = c.nodes[1].conversation("ann", &["bob"]).await;
    let mut bob = c.nodes[0].socket("bob").await;
    let r = c.nodes[1]
        .send_text("ann", &conv, "hello from node 1", "rest-1")
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let live = bob.next_of("message").await;
    assert_eq!(live["content"], "hello from node 1");
    let page = c.nodes[2].conversation_history("bob", &conv).await;
    assert_eq!(
        page["messages"][0]["content"], "hello from node 1",
        "{page}"
    );

    // A resend with the same clientMsgId to a different node (its ack was lost): one
    // message, the original's id and seq.
    let mut on0 = Peer::join(&c.nodes[0], "carol", "resend").await;
    let mut on2 = Peer::join(&c.nodes[2], "carol", "resend").await;
    on0.ws.publish("resend", "once", "same-cid").await;
    let first = on0.next_ack().await;
    on2.ws.publish("resend", "once", "same-cid").await;
    let again = on2.next_ack().await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["messageId"], first["messageId"]);
    assert_eq!(again["seq"], first["seq"]);
    on2.ws.publish("resend", "after", "next-cid").await;
    let next = on2.next_ack().await;
    assert_eq!(next["seq"].as_u64(), first["seq"].as_u64().map(|s| s + 1));
    let history = c.nodes[1].history("resend").await;
    let contents: Vec<&str> = history
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["once", "after"], "stored once");
    // Each connection saw each message once.
    let acked: BTreeMap<u64, String> =
        [(1, "same-cid".to_owned()), (2, "next-cid".to_owned())].into();
    for p in [&mut on0, &mut on2] {
        p.until_received("resend", &acked).await;
        p.ws.quiet_except(&["presence"]).await;
    }
    check(&[&on0, &on2], &acked, &c.nodes[1], "resend").await;
}

#[tokio::test]
async fn redis_killed_under_load_and_restarted_empty_loses_no_acknowledged_message() {
    let Some(mut c) = Cluster::start("redis_kill", 3).await else {
        return;
    };
    let room = "busy";
    let mut peers = peers_on(&c.nodes, "r", room).await;
    for p in &mut peers {
        p.publish(room, 0, 40).await;
    }
    // SIGKILL Redis with messages in flight; a fresh, empty Redis on the same port
    // 1.5 s later.
    let mut redis = c.redis.take().expect("redis");
    redis.kill();
    for p in &mut peers {
        p.publish(room, 40, 20).await;
    }
    let restarted = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        redis.spawn();
        redis
    });
    for p in &mut peers {
        p.until_acked(room).await;
    }
    c.redis = Some(restarted.await.expect("restart"));
    publish_acked(&mut peers, room, 60, 20).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let acked = all_acked(&refs);
    assert_eq!(acked.len(), 240, "every message acknowledged in the end");
    for p in &mut peers {
        let done =
            tokio::time::timeout(Duration::from_secs(30), p.until_received(room, &acked)).await;
        if done.is_err() {
            for (i, n) in c.nodes.iter().enumerate() {
                let log: Vec<String> = n
                    .log()
                    .lines()
                    .filter(|l| !l.contains("scylla"))
                    .map(str::to_owned)
                    .collect();
                eprintln!("--- node {i}:\n{}", log.join("\n"));
            }
            let have: Vec<u64> = p.got.iter().map(|g| g.0).take(20).collect();
            panic!(
                "{}: missing some of {:?}; got {have:?}",
                p.name,
                acked.keys().take(20).collect::<Vec<_>>()
            );
        }
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[0], room).await;
}

#[tokio::test]
async fn the_owner_of_the_busiest_room_killed_with_sigkill_loses_no_acknowledged_message() {
    let Some(mut c) = Cluster::start("owner_kill", 3).await else {
        return;
    };
    let room = "busiest";
    let victim = c.owner_of(room).await;
    let mut peers = peers_on(&c.nodes, "o", room).await;
    publish_acked(&mut peers, room, 0, 50).await;
    // The victim's own publisher: what it had acknowledged stays acknowledged.
    let victim_peer = peers.remove(victim);
    let victim_acked = victim_peer.acked.clone();
    let victim_last = victim_peer
        .got
        .last()
        .map(|g| g.2)
        .expect("victim saw messages");
    c.nodes[victim].kill9().await;
    drop(victim_peer);
    // The survivors keep publishing; until the victim's leases expire their messages
    // get `unavailable` and are sent again.
    publish_acked(&mut peers, room, 50, 30).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let mut acked = all_acked(&refs);
    for (s, cid) in &victim_acked {
        assert!(
            acked.insert(*s, cid.clone()).is_none(),
            "seq {s} acknowledged twice"
        );
    }
    for p in &mut peers {
        p.until_received(room, &acked).await;
    }
    let survivor = if victim == 0 { 1 } else { 0 };
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[survivor], room).await;
    // The victim's client reconnects to a survivor with `since` and recovers exactly
    // what it missed.
    let mut back = c.nodes[survivor]
        .ws(&format!(
            "/ws?token={}&roomId={room}&since={victim_last}",
            c.nodes[survivor].token(&format!("o{victim}"))
        ))
        .await
        .expect("upgrade");
    let mut replay = Vec::new();
    loop {
        let Event::Json(v) = back.next().await else {
            panic!("closed")
        };
        match v["type"].as_str() {
            Some("message") => replay.push(v["seq"].as_u64().expect("seq")),
            Some("recovered") => break,
            _ => {}
        }
    }
    let expected: Vec<u64> = acked
        .keys()
        .copied()
        .filter(|s| acked_after(&acked, *s, victim_last, &peers))
        .collect();
    assert_eq!(
        replay.first(),
        expected.first(),
        "replay starts right after what it saw"
    );
    assert_eq!(
        replay.last(),
        acked.keys().last(),
        "replay reaches the newest"
    );
    assert!(replay.windows(2).all(|w| w[0] < w[1]), "{replay:?}");
}

/// Whether `seq` came after the message `since` (by the survivors' view of ids).
fn acked_after(_acked: &BTreeMap<u64, String>, seq: u64, since: u64, peers: &[Peer]) -> bool {
    peers
        .iter()
        .flat_map(|p| p.got.iter())
        .find(|g| g.0 == seq)
        .is_some_and(|g| g.2 > since)
}

/// Polls `node`'s `GET /api/presence/users/{user}` (as ann) until it says `online`,
/// failing the test after `within`.
async fn node_says_online(node: &Server, user: &str, online: bool, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let r = node
            .call(
                "GET",
                &format!("/api/presence/users/{user}"),
                Some("ann"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        if r.json()["online"] == online {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node never said {user} online={online}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn presence_is_cluster_wide_and_a_dead_node_takes_its_users_offline_once() {
    let Some(mut c) = Cluster::start("presence", 3).await else {
        return;
    };
    c.nodes[1].conversation("ann", &["bob"]).await;
    let mut ann = c.nodes[2].socket("ann").await;
    let _bob = c.nodes[0].socket("bob").await;
    // The partner on another node hears bob come online, once.
    let up = ann.next_of("user_status").await;
    assert_eq!(
        (up["userId"].as_str(), up["online"].as_bool()),
        (Some("bob"), Some(true)),
        "{up}"
    );
    // A third node answers for the whole cluster (within a presence round).
    node_says_online(&c.nodes[1], "bob", true, TIMEOUT).await;
    // Bob's node dies without telling anyone: he is offline for the cluster within the
    // presence TTL plus a round (1.5 s + 0.5 s here; 6 s + 2 s by default).
    let killed = Instant::now();
    c.nodes[0].kill9().await;
    let down = ann.next_of("user_status").await;
    let took = killed.elapsed();
    assert_eq!(
        (down["userId"].as_str(), down["online"].as_bool()),
        (Some("bob"), Some(false)),
        "{down}"
    );
    assert!(down["lastSeen"].is_string(), "{down}");
    assert!(took < Duration::from_secs(10), "offline after {took:?}");
    // Node 1 reads its own view, refreshed by its next round (0.5 s here).
    node_says_online(&c.nodes[1], "bob", false, Duration::from_secs(3)).await;
    // Told once, by one node.
    ann.quiet().await;
}

#[tokio::test]
async fn sigterm_on_the_owner_hands_its_rooms_over_without_loss() {
    let Some(mut c) = Cluster::start("drain", 3).await else {
        return;
    };
    let room = "handover";
    let owner = c.owner_of(room).await;
    let mut peers = peers_on(&c.nodes, "d", room).await;
    publish_acked(&mut peers, room, 0, 30).await;
    let mut leaving = peers.remove(owner);
    // The survivors keep publishing while the owner drains.
    for p in &mut peers {
        p.publish(room, 30, 30).await;
    }
    let code = c.nodes[owner].sigterm().await;
    assert_eq!(code, Some(0), "a clean exit");
    // Its sessions were told to reconnect elsewhere.
    let close = loop {
        match leaving.ws.next().await {
            Event::Close(code) => break code,
            Event::Gone => panic!("closed without a close frame"),
            Event::Json(v) => {
                leaving.handle(room, Event::Json(v)).await;
            }
        }
    };
    assert_eq!(close, 1012, "service restart: reconnect");
    assert!(
        c.nodes[owner].log().contains("left the cluster"),
        "the owner released its leases on the way out"
    );
    publish_acked(&mut peers, room, 60, 10).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let mut acked = all_acked(&refs);
    for (s, cid) in &leaving.acked {
        assert!(
            acked.insert(*s, cid.clone()).is_none(),
            "seq {s} acknowledged twice"
        );
    }
    assert_eq!(acked.len(), 30 * 3 + 40 * 2);
    for p in &mut peers {
        p.until_received(room, &acked).await;
    }
    let survivor = if owner == 0 { 1 } else { 0 };
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[survivor], room).await;
    c.settled(2).await;
}

#[tokio::test]
async fn a_user_with_sockets_on_three_nodes_has_one_message_budget() {
    let Some(c) = Cluster::start_with("rate", 3, &[("RATE_LIMIT_MAX_MESSAGES", "6")]).await else {
        return;
    };
    let mut socks = Vec::new();
    for n in &c.nodes {
        let mut ws = n.connect("spammer", "flood").await;
        ws.next_of("room_joined").await;
        socks.push(ws);
    }
    socks[1].send_json(json!({"type": "get_quota"})).await;
    let q = socks[1].next_of("quota").await;
    assert_eq!(
        (q["limit"].clone(), q["remaining"].clone()),
        (json!(6), json!(6)),
        "{q}"
    );
    for (i, ws) in socks.iter_mut().enumerate() {
        for k in 0..4 {
            ws.publish("flood", "hi", &format!("s{i}-{k}")).await;
        }
    }
    let (mut acked, mut limited) = (0, 0);
    for ws in &mut socks {
        for _ in 0..4 {
            let v = ws.next_of_any(&["ack", "error"]).await;
            match v["type"].as_str() {
                Some("ack") => acked += 1,
                _ => {
                    assert_eq!(v["code"], "rate_limited", "{v}");
                    assert!(v["retryAfterMs"].as_u64().is_some_and(|ms| ms > 0), "{v}");
                    limited += 1;
                }
            }
        }
    }
    assert_eq!(
        (acked, limited),
        (6, 6),
        "6 per window across the cluster, not per node"
    );
    // Every node tells the one cluster-wide allowance (seed 004's getRemainingQuota).
    for ws in &mut socks {
        ws.send_json(json!({"type": "get_quota"})).await;
        let q = ws.next_of("quota").await;
        assert_eq!(q["remaining"], 0, "{q}");
        assert!(q["resetMs"].as_u64().is_some_and(|ms| ms > 0), "{q}");
    }
    let stored = c.nodes[0].history("flood").await;
    assert_eq!(stored.len(), 6);
}

#[tokio::test]
async fn connection_and_typing_limits_hold_across_nodes() {
    let Some(c) = Cluster::start_with(
        "conns",
        3,
        &[
            ("ROOMCAST_MAX_CONNECTIONS_PER_USER", "2"),
            ("ROOMCAST_TYPING_RATE_PER_SEC", "3"),
        ],
    )
    .await
    else {
        return;
    };
    // Two sockets on two nodes use up the user's two; the third node refuses a third.
    let token = c.nodes[0].token("typist");
    let mut a = c.nodes[0].connect("typist", "tr").await;
    a.next_of("room_joined").await;
    let mut b = c.nodes[1].connect("typist", "tr").await;
    b.next_of("room_joined").await;
    match c.nodes[2].ws(&format!("/ws?token={token}&roomId=tr")).await {
        Ok(_) => panic!("a third connection across the cluster was accepted"),
        Err((status, body)) => {
            assert_eq!(status, 429, "{body}");
            assert!(body.contains("too_many_connections"), "{body}");
        }
    }
    // A close gives the slot back, on whichever node the next one opens.
    drop(b);
    let deadline = Instant::now() + TIMEOUT;
    let mut b = loop {
        match c.nodes[2].ws(&format!("/ws?token={token}&roomId=tr")).await {
            Ok(ws) => break ws,
            Err((429, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the freed slot was not given back: {e:?}"),
        }
    };
    b.next_of("room_joined").await;

    // One typing budget (3 per second) for the user's sockets on two nodes.
    let mut watcher = c.nodes[1].connect("watcher", "tr").await;
    watcher.next_of("room_joined").await;
    for ws in [&mut a, &mut b] {
        for _ in 0..4 {
            ws.send_json(serde_json::json!({"type": "typing", "roomId": "tr", "isTyping": true}))
                .await;
        }
    }
    let mut typed = 0;
    while let Some(ev) = watcher.next_within(Duration::from_millis(1500)).await {
        if let Event::Json(v) = ev
            && v["type"] == "typing_indicator"
        {
            assert_eq!(v["userId"], "typist", "{v}");
            typed += 1;
        }
    }
    assert_eq!(
        typed, 3,
        "3 typing signals per second across the cluster, not per socket"
    );
}

#[tokio::test]
async fn call_events_reach_parties_on_other_nodes_and_a_dead_nodes_ring_timeout_fires_once() {
    let Some(mut c) =
        Cluster::start_with("calls", 3, &[("ROOMCAST_CALL_RING_TIMEOUT_MS", "3000")]).await
    else {
        return;
    };
    let conv = c.nodes[1].conversation("ann", &["bob"]).await;
    let mut ann = c.nodes[2].socket("ann").await;
    let mut bob = c.nodes[1].socket("bob").await;
    // Node 0 starts the call (and holds its ring timer), the parties are elsewhere.
    let r = c.nodes[0]
        .call(
            "POST",
            "/calls",
            Some("ann"),
            Some(serde_json::json!({"partnerId": "bob"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let call_id = r.json()["id"].clone();
    for ws in [&mut ann, &mut bob] {
        assert_eq!(ws.next_of("call_incoming").await["call"]["id"], call_id);
    }
    // The node holding the timer dies before the ring times out.
    c.nodes[0].kill9().await;
    for ws in [&mut ann, &mut bob] {
        let ev = ws.next_of("call_ended").await;
        assert_eq!(
            (ev["call"]["id"].clone(), ev["call"]["state"].clone()),
            (call_id.clone(), serde_json::json!("missed"))
        );
    }
    // Once: no second `call_ended` over two more sweeps, and one summary message.
    let mut ended_again = 0;
    while let Some(ev) = bob.next_within(Duration::from_millis(4500)).await {
        if let Event::Json(v) = ev
            && v["type"] == "call_ended"
        {
            ended_again += 1;
        }
    }
    assert_eq!(ended_again, 0, "the ring timeout fired more than once");
    let page = c.nodes[2].conversation_history("ann", &conv).await;
    let missed = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["content"] == "Missed audio call")
        .count();
    assert_eq!(missed, 1, "{page}");
}

/// A TCP proxy to Redis that the test can freeze: connections stay open but no byte
/// moves either way (a node cut off from Redis), or only the subscriber connections
/// open at that moment go silent (a stale subscription; a new one works).
struct FreezableProxy {
    port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
    conns: Arc<Mutex<Vec<Arc<ProxiedConn>>>>,
}

/// One proxied connection: whether it subscribed, and its own freeze.
struct ProxiedConn {
    subscriber: AtomicBool,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl FreezableProxy {
    async fn start(to: u16) -> FreezableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let conns: Arc<Mutex<Vec<Arc<ProxiedConn>>>> = Arc::default();
        let list = conns.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let conn = Arc::new(ProxiedConn {
                    subscriber: AtomicBool::new(false),
                    frozen: tokio::sync::watch::Sender::new(false),
                });
                list.lock().expect("conns").push(conn.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, watch.clone(), conn.clone(), true));
                tokio::spawn(pump(sr, cw, watch.clone(), conn, false));
            }
        });
        FreezableProxy {
            port,
            frozen,
            conns,
        }
    }

    fn freeze(&self, on: bool) {
        let _ = self.frozen.send(on);
    }

    /// Silences the subscriber connections open now; returns how many.
    fn freeze_subscribers(&self) -> usize {
        let conns = self.conns.lock().expect("conns");
        let mut n = 0;
        for c in conns
            .iter()
            .filter(|c| c.subscriber.load(Ordering::Relaxed))
        {
            let _ = c.frozen.send(true);
            n += 1;
        }
        n
    }
}

/// Copies `from` to `to`, holding each chunk while frozen (all, or this connection).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
    conn: Arc<ProxiedConn>,
    from_client: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut own = conn.frozen.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if from_client
            && buf[..n]
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
        {
            conn.subscriber.store(true, Ordering::Relaxed);
        }
        loop {
            if !*frozen.borrow_and_update() && !*own.borrow_and_update() {
                break;
            }
            tokio::select! {
                r = frozen.changed() => if r.is_err() { return },
                r = own.changed() => if r.is_err() { return },
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Three nodes, the third reaching Redis through a [`FreezableProxy`] the test controls.
impl Cluster {
    async fn with_proxied_node(name: &str) -> Option<(Cluster, FreezableProxy)> {
        Self::with_proxied_node_and(name, &[]).await
    }

    async fn with_proxied_node_and(
        name: &str,
        extra: &[(&str, &str)],
    ) -> Option<(Cluster, FreezableProxy)> {
        let node = node()?;
        let env = cql_env(&node, &keyspace(name));
        let (ok, text) = run_binary(&["migrate"], &env);
        assert!(ok, "migrate: {text}");
        let redis = RedisServer::start();
        let proxy = FreezableProxy::start(redis.port).await;
        let direct = redis.url();
        let via_proxy = format!("redis://127.0.0.1:{}/", proxy.port);
        let mut nodes = Vec::new();
        for url in [&direct, &direct, &via_proxy] {
            let mut vars = vec![
                ("REDIS_URL", url.as_str()),
                ("ROOMCAST_CLUSTER_LEASE_MS", "1500"),
                ("ROOMCAST_REDIS_TIMEOUT_MS", "500"),
                ("RATE_LIMIT_MAX_MESSAGES", "100000"),
            ];
            vars.extend_from_slice(extra);
            nodes.push(server_on(&env, &vars).await);
        }
        let c = Cluster {
            redis: Some(redis),
            nodes,
            ks: String::new(),
        };
        c.settled(3).await;
        Some((c, proxy))
    }
}

#[tokio::test]
async fn a_stale_subscription_is_found_by_its_probe_and_nothing_is_missed() {
    let Some((c, proxy)) = Cluster::with_proxied_node("stale").await else {
        return;
    };
    let room = "stale-room";
    let mut peers = peers_on(&c.nodes, "s", room).await;
    publish_acked(&mut peers, room, 0, 10).await;
    let reconnects = "roomcast_bus_redis_reconnects_total";
    assert_eq!(c.nodes[2].metric(reconnects, "").await, 0.0);
    // Node 2's subscription goes silent with its TCP connection open; its commands
    // still work, so it stays in the cluster and hears nothing.
    assert_eq!(
        proxy.freeze_subscribers(),
        1,
        "node 2 has one subscriber connection"
    );
    publish_acked(&mut peers[..2], room, 10, 20).await;
    // The subscriber's PING goes unanswered: it reconnects (a new connection, not
    // frozen), resubscribes and checks positions; the members on node 2 get the gap.
    c.nodes[2]
        .wait_metric(reconnects, "ping unanswered", 1.0)
        .await;
    publish_acked(&mut peers, room, 30, 5).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let acked = all_acked(&refs);
    assert_eq!(acked.len(), 30 + 40 + 15);
    for p in &mut peers {
        p.until_received(room, &acked).await;
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[0], room).await;
}

/// `redis-cli -p PORT args...` (redis-tools comes with Debian's redis-server).
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli (installed with redis-server) runs");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// Redis closes the subscriber connections a burst overflows; each node reconnects,
// resubscribes and fills what it missed from the store. (It once failed under load: a
// retried store write that had gone through was acked as a duplicate with `seq` 0 and
// never published; the writer now treats its own id as stored.)
#[tokio::test]
async fn redis_closing_slow_subscribers_loses_no_acknowledged_message() {
    let Some(c) = Cluster::start("slowsub", 3).await else {
        return;
    };
    let port = c.redis.as_ref().expect("redis").port;
    let room = "slow-sub";
    let mut peers = peers_on(&c.nodes, "b", room).await;
    publish_acked(&mut peers, room, 0, 5).await;
    // A pub/sub output buffer of 1 KiB: a burst closes the subscribers it reaches.
    let reconnects = "roomcast_bus_redis_reconnects_total";
    assert_eq!(
        redis_cli(
            port,
            &[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 1024 512 1"
            ]
        ),
        "OK"
    );
    let deadline = Instant::now() + TIMEOUT;
    let mut batch = 0;
    loop {
        for p in &mut peers {
            p.publish(room, 5 + batch * 20, 20).await;
        }
        for p in &mut peers {
            p.until_acked(room).await;
        }
        batch += 1;
        let mut closed = 0.0;
        for n in &c.nodes {
            closed += n.metric(reconnects, "connection closed").await;
        }
        if closed > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "Redis never closed a subscriber");
    }
    assert_eq!(
        redis_cli(
            port,
            &[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 32mb 8mb 60"
            ]
        ),
        "OK"
    );
    publish_acked(&mut peers, room, 5 + batch * 20, 5).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let acked = all_acked(&refs);
    assert_eq!(acked.len(), 3 * (5 + batch * 20 + 5));
    for p in &mut peers {
        p.until_received(room, &acked).await;
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[0], room).await;
}

#[tokio::test]
async fn a_node_cut_off_from_redis_fences_itself_and_catches_up_without_loss() {
    // A short cut: the node keeps its sessions (the drain is the next test's).
    let keep = [("ROOMCAST_CLUSTER_CUT_OFF_CLOSE_MS", "0")];
    let Some((c, proxy)) = Cluster::with_proxied_node_and("cut", &keep).await else {
        return;
    };
    let room = "cut-room";
    let mut peers = peers_on(&c.nodes, "x", room).await;
    publish_acked(&mut peers, room, 0, 20).await;
    // Cut node 2 off: its connections to Redis stay open and go silent.
    proxy.freeze(true);
    // The others take its slots once its leases expire (it stops sequencing before).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let v = c.view(0, None).await;
        if v["nodes"].as_array().map_or(0, Vec::len) == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cut node never left the live set"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Fenced, the cut node reports unready so a load balancer sends clients elsewhere.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, body) = c.nodes[2].get("/readyz", None).await;
        if status == 503 {
            assert!(body.contains("cut_off"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cut node stayed ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish_acked(&mut peers[..2], room, 20, 20).await;
    // The cut node's publisher gets retryable errors meanwhile; healed, everything it
    // sent is acknowledged and its members get every message, gaps filled.
    peers[2].publish(room, 20, 10).await;
    proxy.freeze(false);
    for p in &mut peers {
        p.until_acked(room).await;
    }
    c.settled(3).await;
    assert_eq!(
        c.nodes[2].get_json("/readyz", None).await["status"],
        "ready"
    );
    publish_acked(&mut peers, room, 40, 5).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let acked = all_acked(&refs);
    assert_eq!(acked.len(), 60 + 40 + 10 + 15);
    for p in &mut peers {
        p.until_received(room, &acked).await;
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[0], room).await;
}

#[tokio::test]
async fn a_node_cut_off_too_long_closes_its_sockets_with_1012_and_they_recover_on_another_node() {
    let close_after = [("ROOMCAST_CLUSTER_CUT_OFF_CLOSE_MS", "2000")];
    let Some((c, proxy)) = Cluster::with_proxied_node_and("cutclose", &close_after).await else {
        return;
    };
    let room = "cut-close";
    let mut peers = peers_on(&c.nodes, "y", room).await;
    publish_acked(&mut peers, room, 0, 10).await;
    proxy.freeze(true);
    // The cut node's publisher goes on sending: whatever it gets acknowledged (before
    // the node fences itself) or not (retryable errors) is settled on another node.
    peers[2].publish(room, 10, 5).await;
    // Fenced, the node refuses new sockets (a load balancer may still send some).
    let late = format!("/ws?token={}&roomId={room}", c.nodes[2].token("late"));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match c.nodes[2].ws(&late).await {
            Err((503, body)) => {
                assert!(body.contains("cut_off"), "{body}");
                break;
            }
            Ok(_) => {}
            Err(other) => panic!("the cut node refused a socket oddly: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the cut node kept taking sockets"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Cut off for longer than the limit, it closes the sockets it holds with 1012.
    assert_eq!(peers[2].until_closed(room).await, 1012);
    // The close frame goes out before the session's end is counted: await the count.
    c.nodes[2]
        .wait_metric_at_least("roomcast_disconnects_total", "reason=\"cut_off\"", 1.0)
        .await;
    publish_acked(&mut peers[..2], room, 10, 20).await;
    // Its client reconnects to a node in the cluster, recovers what it missed with
    // `since`, and resends what was not acknowledged there.
    peers[2].reconnect(&c.nodes[0], room).await;
    peers[2].until_acked(room).await;
    publish_acked(&mut peers, room, 30, 5).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let acked = all_acked(&refs);
    assert_eq!(acked.len(), 30 + 40 + 5 + 15);
    for p in &mut peers {
        p.until_received(room, &acked).await;
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[1], room).await;
    // Healed, the node is ready and takes sockets again.
    proxy.freeze(false);
    c.settled(3).await;
    assert_eq!(
        c.nodes[2].get_json("/readyz", None).await["status"],
        "ready"
    );
    let mut back = c.nodes[2]
        .ws(&late)
        .await
        .expect("a healed node takes sockets");
    back.next_of("room_joined").await;
}

/// Joins `rooms` on one socket (pipelined, then every `room_joined` awaited).
async fn join_many(server: &Server, user: &str, rooms: &[String]) -> crate::support::Client {
    let mut ws = server.connect(user, &rooms[0]).await;
    ws.next_of("room_joined").await;
    for r in &rooms[1..] {
        ws.send_json(json!({"type": "join_room", "roomId": r}))
            .await;
    }
    for _ in 1..rooms.len() {
        ws.next_of("room_joined").await;
    }
    ws
}

#[tokio::test]
async fn two_quick_redis_restarts_while_thousands_of_channels_resubscribe_lose_nothing() {
    const IDLE: usize = 2000;
    let Some(mut c) = Cluster::start_with(
        "resub",
        3,
        &[
            ("RATE_LIMIT_MAX_MESSAGES", "100000"),
            ("ROOMCAST_MAX_ROOMS_PER_CONNECTION", "5000"),
        ],
    )
    .await
    else {
        return;
    };
    // Every node holds 2,000 quiet room channels beside the busy one.
    let idle: Vec<String> = (0..IDLE).map(|i| format!("idle-{i}")).collect();
    let mut idlers = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        idlers.push(join_many(n, &format!("idler{i}"), &idle).await);
    }
    let room = "resub-busy";
    let mut peers = peers_on(&c.nodes, "q", room).await;
    publish_acked(&mut peers, room, 0, 10).await;
    // Kill Redis with messages in flight, restart it empty, and kill it again as the
    // nodes resubscribe their 2,000+ channels; then restart it for good.
    let mut redis = c.redis.take().expect("redis");
    for p in &mut peers {
        p.publish(room, 10, 30).await;
    }
    redis.kill();
    redis.spawn();
    // The second kill lands while the first subscriber to come back is resubscribing.
    let deadline = Instant::now() + TIMEOUT;
    let partial = loop {
        let list = redis_cli(redis.port, &["CLIENT", "LIST"]);
        let subs: Vec<usize> = list
            .split_whitespace()
            .filter_map(|f| f.strip_prefix("sub=")?.parse().ok())
            .filter(|&n| n > 0)
            .collect();
        if let Some(&n) = subs.iter().min() {
            break n;
        }
        assert!(Instant::now() < deadline, "no node resubscribed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    redis.kill();
    eprintln!("second kill with a subscriber at {partial} channels");
    for p in &mut peers {
        p.publish(room, 40, 10).await;
    }
    redis.spawn();
    c.redis = Some(redis);
    for p in &mut peers {
        p.until_acked(room).await;
    }
    publish_acked(&mut peers, room, 50, 10).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let acked = all_acked(&refs);
    assert_eq!(acked.len(), 3 * 60, "every message acknowledged in the end");
    for p in &mut peers {
        p.until_received(room, &acked).await;
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[0], room).await;
    // Every node subscribed again to all of its channels: a message in each of 30 quiet
    // rooms (spread over the list) reaches the idler on every node.
    let mut most = 0.0f64;
    for (i, n) in c.nodes.iter().enumerate() {
        let lost = n.metric("roomcast_bus_redis_reconnects_total", "").await;
        assert!(lost >= 1.0, "node {i}'s subscriber reconnected: {lost}");
        most = most.max(lost);
    }
    assert!(most >= 2.0, "a subscriber lost Redis twice: {most}");
    let sample: Vec<&String> = idle.iter().step_by(IDLE / 30).collect();
    for (k, r) in sample.iter().enumerate() {
        let from = k % 3;
        let mut ws = c.nodes[from].connect(&format!("poster{k}"), r).await;
        ws.next_of("room_joined").await;
        ws.publish(r, &format!("late {k}"), &format!("late-{k}"))
            .await;
        ws.next_of("ack").await;
    }
    for (i, ws) in idlers.iter_mut().enumerate() {
        let mut heard = HashSet::new();
        let deadline = Instant::now() + TIMEOUT;
        while heard.len() < sample.len() {
            assert!(
                Instant::now() < deadline,
                "idler on node {i} heard {} of {} quiet rooms",
                heard.len(),
                sample.len()
            );
            if let Some(Event::Json(v)) = ws.next_within(Duration::from_millis(200)).await
                && v["type"] == "message"
            {
                let r = v["roomId"].as_str().unwrap_or("").to_owned();
                assert!(heard.insert(r.clone()), "idler {i} heard {r} twice");
            }
        }
    }
}

/// One crowd client's connection, in a task of its own so that it keeps answering the
/// server's pings while thousands of others connect: `ready` once joined, then it
/// reads `messages` message frames (with `since`: after `recovered`, which must say
/// complete) and returns their ids.
fn crowd_client(
    addr: std::net::SocketAddr,
    i: usize,
    since: Option<u64>,
    messages: usize,
    gate: Arc<tokio::sync::Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let room = "crowd";
    let mut path = format!(
        "/ws?token={}&roomId={room}",
        crate::support::token(&format!("crowd{i}"), false)
    );
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    tokio::spawn(async move {
        let permit = gate.acquire_owned().await.expect("gate");
        let mut ws = crate::support::Client::connect(addr, &path, &[])
            .await
            .unwrap_or_else(|e| panic!("crowd{i}: upgrade refused: {e:?}"));
        let mut ids = Vec::new();
        if since.is_none() {
            ws.next_of("room_joined").await;
        } else {
            loop {
                let v = ws.next_of_any(&["message", "recovered"]).await;
                if v["type"] == "recovered" {
                    assert_eq!(v["complete"], true, "crowd{i}: {v}");
                    break;
                }
                ids.push(id_of(&v));
            }
        }
        drop(permit);
        let _ = ready.send(());
        while ids.len() < messages {
            ids.push(id_of(&ws.next_of("message").await));
        }
        ids
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_clients_recover_exactly_after_a_node_loss_with_few_store_reads() {
    const CROWD: usize = 5000;
    let Some(mut c) = Cluster::start("crowd", 3).await else {
        return;
    };
    let room = "crowd";
    let owner = c.owner_of(room).await;
    let victim = (owner + 1) % 3;
    let survivors = [owner, (owner + 2) % 3];
    let mut publisher = Peer::join(&c.nodes[owner], "crowd-pub", room).await;
    // The crowd on the victim node (up to 200 upgrades in flight); each reads the
    // first 10 messages and takes one of them as where it got to (clients differ).
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let addr = c.nodes[victim].addr;
    let first: Vec<_> = (0..CROWD)
        .map(|i| crowd_client(addr, i, None, 10, gate.clone(), ready_tx.clone()))
        .collect();
    crowd_ready(&mut ready, CROWD, &mut publisher, room).await;
    publish_acked(std::slice::from_mut(&mut publisher), room, 0, 10).await;
    let mut since = Vec::new();
    for (i, t) in first.into_iter().enumerate() {
        let ids = t.await.expect("crowd client");
        since.push(ids[i % 10]);
    }
    c.nodes[victim].kill9().await;
    publish_acked(std::slice::from_mut(&mut publisher), room, 10, 10).await;
    let reads_before = recovery_reads(&c, &survivors).await;
    // All reconnect at once (up to 1,000 upgrades in flight), alternating survivors;
    // each reads its replay, then the 3 live messages that follow.
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(1000));
    let back: Vec<_> = (0..CROWD)
        .map(|i| {
            let addr = c.nodes[survivors[i % 2]].addr;
            let missed = 23 - (i % 10 + 1);
            crowd_client(
                addr,
                i,
                Some(since[i]),
                missed,
                gate.clone(),
                ready_tx.clone(),
            )
        })
        .collect();
    crowd_ready(&mut ready, CROWD, &mut publisher, room).await;
    let took = started.elapsed();
    let reads_used = recovery_reads(&c, &survivors).await - reads_before;
    publish_acked(std::slice::from_mut(&mut publisher), room, 20, 3).await;
    let acked = publisher.acked.clone();
    publisher.until_received(room, &acked).await;
    let ids_by_seq: Vec<u64> = {
        let mut ids: Vec<(u64, u64)> = publisher.got.iter().map(|g| (g.0, g.2)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|(_, id)| id).collect()
    };
    assert_eq!(
        ids_by_seq.len(),
        23,
        "the publisher saw all 23 of its messages"
    );
    for (i, t) in back.into_iter().enumerate() {
        let got = t.await.expect("crowd client");
        let want: Vec<u64> = ids_by_seq
            .iter()
            .copied()
            .filter(|&id| id > since[i])
            .collect();
        assert_eq!(got, want, "crowd{i} (since {})", since[i]);
    }
    eprintln!(
        "{CROWD} clients reconnected and recovered in {took:?} with {reads_used} store reads"
    );
    // One read per batch: a batch gathers whoever joins while the room's previous
    // read runs (about 5 clients each on this machine's 2 cores).
    assert!(
        reads_used >= 1.0 && reads_used <= (CROWD / 3) as f64,
        "{reads_used} recovery reads for {CROWD} clients"
    );
}

/// Waits for `n` crowd clients to say they are ready, reading the publisher meanwhile
/// (it answers the server's pings only when read: left idle through a long connect
/// phase, the heartbeat would close it).
async fn crowd_ready(
    ready: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    n: usize,
    publisher: &mut Peer,
    room: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut got = 0;
    loop {
        while ready.try_recv().is_ok() {
            got += 1;
        }
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {n} crowd clients were ready"
        );
        publisher.step(room).await;
    }
}

/// `roomcast_recovery_reads_total` summed over the nodes `of`.
async fn recovery_reads(c: &Cluster, of: &[usize]) -> f64 {
    let mut n = 0.0;
    for &i in of {
        n += c.nodes[i].metric("roomcast_recovery_reads_total", "").await;
    }
    n
}

/// `roomcast serve` with `env`, expected to fail at start-up: its output (killed, and
/// the test failed, if it is still running after [`TIMEOUT`]).
fn serve_fails(env: &[(String, String)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("JWT_SECRET", crate::support::SECRET)
        .env("PORT", "0")
        .env("ROOMCAST_BIND", "127.0.0.1")
        .env("ROOMCAST_DATA_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run roomcast");
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("roomcast serve kept running: it was expected to refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success(), "exited 0");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn redis_over_tls_with_a_client_certificate_carries_a_room_across_nodes() {
    let Some(node) = node() else { return };
    let ks = keyspace("redistls");
    let env = cql_env(&node, &ks);
    let (ok, text) = run_binary(&["migrate"], &env);
    assert!(ok, "migrate: {text}");
    let redis = RedisServer::start_tls();
    let f = redis.tls_files();
    let with = |ca: &std::path::Path| {
        let mut e = env.clone();
        for (k, v) in [
            ("REDIS_URL", redis.url()),
            ("ROOMCAST_REDIS_TLS_CA_FILE", ca.display().to_string()),
            (
                "ROOMCAST_REDIS_TLS_CERT_FILE",
                f.client_cert.display().to_string(),
            ),
            (
                "ROOMCAST_REDIS_TLS_KEY_FILE",
                f.client_key.display().to_string(),
            ),
            ("ROOMCAST_CLUSTER_LEASE_MS", "1500".to_owned()),
        ] {
            e.push((k.to_owned(), v));
        }
        e
    };
    // A CA that did not sign the server's certificate: the node refuses to start and
    // says why (the port speaks only TLS, so this also shows the bus uses it).
    let text = serve_fails(&with(&f.other_ca));
    assert!(text.contains("UnknownIssuer"), "{text}");
    // A CA file that is not there is named.
    let text = serve_fails(&with(std::path::Path::new("/nonexistent/redis-ca.pem")));
    assert!(text.contains("/nonexistent/redis-ca.pem"), "{text}");
    // The right CA and a client certificate: two nodes, a room across them.
    let env = with(&f.ca);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(server_on(&env, &[("RATE_LIMIT_MAX_MESSAGES", "100000")]).await);
    }
    let c = Cluster {
        redis: Some(redis),
        nodes,
        ks,
    };
    c.settled(2).await;
    let room = "over-tls";
    let mut peers = peers_on(&c.nodes, "tls", room).await;
    publish_acked(&mut peers, room, 0, 20).await;
    let refs: Vec<&Peer> = peers.iter().collect();
    let acked = all_acked(&refs);
    assert_eq!(acked.len(), 40);
    for p in &mut peers {
        p.until_received(room, &acked).await;
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    check(&refs, &acked, &c.nodes[1], room).await;
}

/// `p` is a `presence` frame saying `user` went `status`, the room now `count` strong.
fn assert_presence(p: &Value, user: &str, status: &str, count: u64) {
    assert_eq!(
        (
            p["userId"].as_str(),
            p["status"].as_str(),
            p["memberCount"].as_u64()
        ),
        (Some(user), Some(status), Some(count)),
        "{p}"
    );
}

/// The next `presence` frame, skipping others.
async fn presence_of(c: &mut crate::support::Client) -> Value {
    c.next_of("presence").await
}

/// `get_online_users` for `room` on `c`'s node.
async fn online_in(c: &mut crate::support::Client, room: &str) -> Value {
    c.send_json(json!({"type": "get_online_users", "roomId": room}))
        .await;
    c.next_of("online_users").await["users"].clone()
}

/// Nothing of type `presence` arrives on `c` within `d` (other frames are skipped; a
/// closed connection fails the test).
async fn no_presence_within(c: &mut crate::support::Client, d: Duration) {
    let end = Instant::now() + d;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match c.next_within(left).await {
            None => return,
            Some(Event::Json(v)) if v["type"] == "presence" => panic!("unexpected {v}"),
            Some(Event::Json(_)) => continue,
            Some(other) => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn room_presence_counts_and_online_users_span_the_cluster_and_a_dead_node_leaves_once() {
    let Some(mut c) = Cluster::start("roster", 3).await else {
        return;
    };
    let room = "lobby";
    let mut ann = c.nodes[0].connect("ann", room).await;
    ann.next_of("room_joined").await;
    // The roster takes a join just after `room_joined`: ann is in it before bob comes.
    let deadline = Instant::now() + TIMEOUT;
    while online_in(&mut ann, room).await != json!(["ann"]) {
        assert!(Instant::now() < deadline, "the roster never had ann");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bob = c.nodes[1].connect("bob", room).await;
    bob.next_of("room_joined").await;
    // A member on another node hears the newcomer, with the cluster's count.
    let p = presence_of(&mut ann).await;
    assert_presence(&p, "bob", "online", 2);
    while online_in(&mut ann, room).await != json!(["ann", "bob"]) {
        assert!(Instant::now() < deadline, "the roster never had bob");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut carol = c.nodes[2].connect("carol", room).await;
    carol.next_of("room_joined").await;
    for m in [&mut ann, &mut bob] {
        let p = presence_of(m).await;
        assert_presence(&p, "carol", "online", 3);
    }
    // Any node answers for the whole room.
    assert_eq!(
        online_in(&mut carol, room).await,
        json!(["ann", "bob", "carol"])
    );
    assert_eq!(
        online_in(&mut ann, room).await,
        json!(["ann", "bob", "carol"])
    );
    // Bob's second session, on a third node, is not news; nor is its leaving.
    let mut bob2 = c.nodes[2].connect("bob", room).await;
    let joined = bob2.next_of("room_joined").await;
    assert_eq!(joined["memberCount"], 3, "{joined}");
    drop(bob2);
    no_presence_within(&mut ann, Duration::from_secs(2)).await;
    assert_eq!(
        online_in(&mut ann, room).await,
        json!(["ann", "bob", "carol"])
    );
    // Ann's node dies without a word: the others hear her leave once, within the
    // node id lease plus a round, and she is gone from the room everywhere.
    let killed = Instant::now();
    c.nodes[0].kill9().await;
    for m in [&mut bob, &mut carol] {
        let p = presence_of(m).await;
        assert_presence(&p, "ann", "offline", 2);
    }
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(online_in(&mut bob, room).await, json!(["bob", "carol"]));
    no_presence_within(&mut carol, Duration::from_secs(2)).await;
    // A clean leave is heard at once, with the count.
    bob.send_json(json!({"type": "leave_room", "roomId": room}))
        .await;
    let p = presence_of(&mut carol).await;
    assert_presence(&p, "bob", "offline", 1);
    assert_eq!(online_in(&mut carol, room).await, json!(["carol"]));
}
