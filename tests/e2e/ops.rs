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
    c.send_text("{}").await;
    // Binary echoes come back as binary: read the raw frames.
    let _ = c.next_within(std::time::Duration::from_secs(5)).await;
}
