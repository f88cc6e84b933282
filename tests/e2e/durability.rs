//! Durability and recovery: acknowledged messages survive `kill -9`; a reconnect with
//! `since` replays exactly the gap; SIGTERM closes clients with 1012 and flushes history.

use std::collections::HashSet;

use crate::support::{Event, Server, id_of};

#[tokio::test]
async fn every_acknowledged_message_survives_kill_dash_nine() {
    let mut server = Server::start(&[]).await;
    let mut c = server.connect("alice", "r").await;
    c.next_of("room_joined").await;
    let mut acked: HashSet<u64> = HashSet::new();
    let mut sent = 0;
    // Keep 50 messages in flight; kill the server once 300 are acknowledged.
    while acked.len() < 300 {
        while sent < acked.len() + 50 {
            c.publish("r", &format!("m{sent}"), &format!("c{sent}"))
                .await;
            sent += 1;
        }
        match c.next().await {
            Event::Json(v) if v["type"] == "ack" => {
                acked.insert(id_of(&v));
            }
            Event::Json(_) => {}
            other => panic!("{other:?}"),
        }
    }
    server.kill9().await;
    server.restart().await;
    let stored: HashSet<u64> = server.history("r").await.iter().map(id_of).collect();
    let missing: Vec<&u64> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost",
        missing.len()
    );
}

#[tokio::test]
async fn reconnecting_with_since_replays_exactly_the_gap() {
    let server = Server::start(&[]).await;
    let mut alice = server.connect("alice", "r").await;
    alice.next_of("room_joined").await;
    let mut bob = server.connect("bob", "r").await;
    bob.next_of("room_joined").await;
    for i in 0..3 {
        bob.publish("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    let mut last_seen = 0;
    for _ in 0..3 {
        last_seen = id_of(&alice.next_of("message").await);
    }
    drop(alice);
    for i in 3..10 {
        bob.publish("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    for _ in 3..10 {
        bob.next_of("ack").await;
    }
    let mut alice = server
        .ws(&format!(
            "/ws?token={}&roomId=r&since={last_seen}",
            server.token("alice")
        ))
        .await
        .expect("reconnect");
    assert_eq!(alice.next_of("room_joined").await["roomId"], "r");
    let mut replayed = Vec::new();
    let done = loop {
        match alice.next().await {
            Event::Json(v) if v["type"] == "message" => {
                assert_eq!(v["replay"], true);
                replayed.push(v["content"].as_str().unwrap_or_default().to_owned());
            }
            Event::Json(v) if v["type"] == "recovered" => break v,
            Event::Json(_) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        replayed,
        (3..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        (done["count"].as_u64(), done["complete"].as_bool()),
        (Some(7), Some(true))
    );
    assert_eq!(done["since"], last_seen.to_string());
    // Then live.
    bob.publish("r", "live", "live").await;
    let live = alice.next_of("message").await;
    assert_eq!(live["content"], "live");
    assert!(live.get("replay").is_none());
}

#[tokio::test]
async fn recovery_during_a_stream_has_no_gap_and_no_duplicate() {
    let server = Server::start(&[]).await;
    let mut alice = server.connect("alice", "r").await;
    alice.next_of("room_joined").await;
    let mut bob = server.connect("bob", "r").await;
    bob.next_of("room_joined").await;
    const TOTAL: usize = 400;
    // Bob streams TOTAL messages without pause while Alice drops and recovers.
    let streamer = tokio::spawn(async move {
        for i in 0..TOTAL {
            bob.publish("r", &format!("{i}"), &format!("c{i}")).await;
        }
        let mut acks = 0;
        while acks < TOTAL {
            if bob.next_of("ack").await.is_object() {
                acks += 1;
            }
        }
    });
    let mut got: Vec<usize> = Vec::new();
    let mut last = 0;
    while got.len() < 20 {
        let m = alice.next_of("message").await;
        last = id_of(&m);
        got.push(
            m["content"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("seq"),
        );
    }
    drop(alice);
    let mut alice = server
        .ws(&format!(
            "/ws?token={}&roomId=r&since={last}",
            server.token("alice")
        ))
        .await
        .expect("reconnect");
    while got.len() < TOTAL {
        let m = alice.next_of("message").await;
        got.push(
            m["content"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("seq"),
        );
    }
    assert_eq!(
        got,
        (0..TOTAL).collect::<Vec<_>>(),
        "gap or duplicate across the reconnect"
    );
    streamer.await.expect("streamer");
    alice.sync().await;
}

#[tokio::test]
async fn sigterm_closes_clients_with_1012_and_flushes_history() {
    let mut server = Server::start(&[]).await;
    let mut alice = server.connect("alice", "r").await;
    alice.next_of("room_joined").await;
    let mut bob = server.connect("bob", "r").await;
    bob.next_of("room_joined").await;
    for i in 0..50 {
        alice.publish("r", &format!("m{i}"), &format!("c{i}")).await;
    }
    // At least one ack before the SIGTERM, so the check below is over a non-empty set.
    let mut acked = Vec::new();
    while acked.is_empty() {
        match alice.next().await {
            Event::Json(v) if v["type"] == "ack" => acked.push(id_of(&v)),
            Event::Json(_) => {}
            other => panic!("before the SIGTERM: {other:?}"),
        }
    }
    let code = server.sigterm().await;
    assert_eq!(code, Some(0), "log:\n{}", server.log());
    assert_eq!(bob.closed().await, 1012);
    // Alice's acks that arrived before the close are all in history after a restart.
    loop {
        match alice.next().await {
            Event::Json(v) if v["type"] == "ack" => acked.push(id_of(&v)),
            Event::Json(_) => {}
            Event::Close(code) => {
                assert_eq!(code, 1012);
                break;
            }
            Event::Gone => panic!("closed without a close frame"),
        }
    }
    server.restart().await;
    let stored: HashSet<u64> = server.history("r").await.iter().map(id_of).collect();
    assert!(!acked.is_empty());
    let missing: Vec<&u64> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "acked but not stored: {missing:?}");
    assert!(server.log().contains("shutdown complete"));
}
