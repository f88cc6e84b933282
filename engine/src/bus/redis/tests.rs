//! The Redis bus against a real `redis-server` started on a free loopback port (never a
//! fake). A missing `redis-server` fails these tests: `scripts/test.sh` installs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::bus::RoomMessage;
use crate::message::ChatMessage;
use crate::sessions::SessionRegistry;
use crate::testkit::{RedisServer, free_port};

/// A node's bus with one shard queue the test reads.
async fn node(redis: &RedisServer) -> (Arc<RedisBus>, flume::Receiver<Envelope>) {
    let (tx, rx) = flume::bounded(1024);
    let inbound = Inbound::new(Arc::from(vec![tx]), Arc::new(SessionRegistry::default()));
    let mut cfg = RedisBusConfig::new(&redis.url());
    cfg.ping_every = Duration::from_millis(500);
    cfg.timeout = Duration::from_millis(500);
    let bus = RedisBus::start(cfg, inbound, None)
        .await
        .expect("start bus");
    (bus, rx)
}

fn message(room: &str, seq: u64, audience: Option<&[&str]>) -> Envelope {
    Envelope::Message(Box::new(RoomMessage {
        msg: ChatMessage {
            message_id: 1000 + seq,
            seq,
            room_id: room.into(),
            user_id: "ann".into(),
            username: "ann".into(),
            content: format!("m{seq}"),
            client_msg_id: None,
            deleted: false,
            message_type: Default::default(),
            attachments: Vec::new(),
            reactions: Default::default(),
            encrypted: false,
        },
        audience: audience
            .map(|a| Arc::from(a.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>())),
        received_at: Instant::now(),
    }))
}

/// The next envelope on a shard queue as (room, seq), bounded in time.
async fn next(rx: &flume::Receiver<Envelope>) -> (String, u64) {
    let env = tokio::time::timeout(Duration::from_secs(10), rx.recv_async())
        .await
        .expect("an envelope within 10 s")
        .expect("queue open");
    match env {
        Envelope::Message(m) => (m.msg.room_id, m.msg.seq),
        other => panic!("not a message: {other:?}"),
    }
}

#[tokio::test]
async fn a_publish_reaches_subscribed_nodes_once_and_no_other() {
    let redis = RedisServer::start();
    let (a, a_rx) = node(&redis).await;
    let (b, b_rx) = node(&redis).await;
    b.subscribe_room("r");
    b.subscribe_user("bob");
    b.subscribe_room("marker");
    a.subscribe_room("marker");
    a.synced().await;
    b.synced().await;

    // To room r and to bob's channel: B hears it on both, delivers it once.
    a.publish(message("r", 1, Some(&["ann", "bob"])));
    // A is not subscribed to r (nor to ann/bob): it gets only the marker, which
    // Redis delivers after r's message (one publisher connection keeps the order).
    a.publish(message("marker", 1, None));
    assert_eq!(next(&b_rx).await, ("r".into(), 1));
    assert_eq!(
        next(&b_rx).await,
        ("marker".into(), 1),
        "no second copy of r/1"
    );
    assert_eq!(next(&a_rx).await, ("marker".into(), 1), "A never heard r");

    // After unsubscribing, B stops hearing r.
    b.unsubscribe_room("r");
    b.unsubscribe_user("bob");
    b.synced().await;
    a.publish(message("r", 2, None));
    a.publish(message("marker", 2, None));
    assert_eq!(
        next(&b_rx).await,
        ("marker".into(), 2),
        "r/2 after unsubscribe"
    );
    assert!(b_rx.is_empty() && a_rx.len() <= 1);
}

#[tokio::test]
async fn after_redis_restarts_empty_the_subscriber_resubscribes_everything() {
    let mut redis = RedisServer::start();
    let (a, _a_rx) = node(&redis).await;
    let (b, b_rx) = node(&redis).await;
    // Many channels, one SUBSCRIBE each.
    for i in 0..2000 {
        b.subscribe_room(&format!("room-{i}"));
    }
    b.synced().await;
    let mut generations = b.connections();
    let first = *generations.borrow_and_update();

    redis.kill_and_restart();
    // The subscriber notices (stream end or unanswered PING) and subscribes all 2000
    // again on the new server.
    tokio::time::timeout(Duration::from_secs(20), generations.changed())
        .await
        .expect("reconnected within 20 s")
        .expect("bus alive");
    assert!(*generations.borrow() > first);
    b.synced().await;
    // The publisher reconnects too; every room is heard again, in order.
    for i in [0, 999, 1999] {
        a.publish(message(&format!("room-{i}"), 1, None));
    }
    for i in [0, 999, 1999] {
        assert_eq!(next(&b_rx).await, (format!("room-{i}"), 1));
    }
}

#[tokio::test]
async fn a_bus_that_cannot_reach_redis_fails_to_start_with_the_cause() {
    let port = free_port();
    let (tx, _rx) = flume::bounded(1);
    let inbound = Inbound::new(Arc::from(vec![tx]), Arc::new(SessionRegistry::default()));
    let mut cfg = RedisBusConfig::new(&format!("redis://127.0.0.1:{port}/"));
    cfg.timeout = Duration::from_millis(500);
    let e = RedisBus::start(cfg, inbound, None)
        .await
        .expect_err("nothing listens");
    assert!(e.to_string().starts_with("redis bus:"), "{e}");
}
