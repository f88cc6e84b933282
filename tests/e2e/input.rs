//! Bad input: each gets a typed error frame or the right close code, and nobody else
//! is affected.

use fastwebsockets::{Frame, OpCode, Payload};
use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn malformed_frames_get_typed_errors_and_the_connection_survives() {
    let server = Server::start(&[("MAX_MESSAGE_LENGTH", "20")]).await;
    let mut c = server.connect("alice", "r").await;
    c.next_of("room_joined").await;
    let cases = [
        ("not json at all", "invalid_json"),
        ("[1,2,3]", "invalid_json"),
        (r#"{"type":"teleport"}"#, "unknown_type"),
        (
            r#"{"type":"message","roomId":"r","content":42}"#,
            "invalid_field",
        ),
        (r#"{"type":"message","roomId":"r"}"#, "invalid_field"),
        (
            r#"{"type":"typing","roomId":"r","isTyping":"yes"}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"join_room","roomId":"bad room!"}"#,
            "invalid_room",
        ),
        (
            r#"{"type":"join_room","roomId":"x","since":"abc"}"#,
            "invalid_field",
        ),
        (
            r#"{"type":"message","roomId":"r","content":"   "}"#,
            "empty_message",
        ),
        (
            r#"{"type":"message","roomId":"r","content":"this is far longer than twenty characters"}"#,
            "message_too_long",
        ),
        (
            r#"{"type":"message","roomId":"r","content":"ok","clientMsgId":""}"#,
            "invalid_field",
        ),
    ];
    for (frame, code) in cases {
        c.send_text(frame).await;
        let e = c.next_of("error").await;
        assert_eq!(e["code"], code, "frame {frame}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    c.send_frame(Frame::binary(Payload::Owned(vec![1, 2, 3])))
        .await;
    assert_eq!(c.next_of("error").await["code"], "invalid_json");
    c.quiet().await;
    assert!(
        server
            .metric("roomcast_client_errors_total", "invalid_field")
            .await
            >= 4.0
    );
}

#[tokio::test]
async fn protocol_violations_close_with_the_right_code_and_others_are_unaffected() {
    let server = Server::start(&[("ROOMCAST_MAX_FRAME_BYTES", "65536")]).await;
    let mut bystander = server.connect("bystander", "r").await;
    bystander.next_of("room_joined").await;

    // Oversize message: 1009.
    let mut big = server.connect("big", "r").await;
    big.next_of("room_joined").await;
    big.send_text(&"x".repeat(70_000)).await;
    assert_eq!(big.closed().await, 1009);

    // Oversize across fragments (each fragment is small): 1009 too.
    let mut frag = server.connect("frag", "r").await;
    frag.next_of("room_joined").await;
    frag.send_frame(Frame::new(
        false,
        OpCode::Text,
        None,
        Payload::Owned(vec![b'a'; 40_000]),
    ))
    .await;
    frag.send_frame(Frame::new(
        true,
        OpCode::Continuation,
        None,
        Payload::Owned(vec![b'a'; 40_000]),
    ))
    .await;
    assert_eq!(frag.closed().await, 1009);

    // Invalid UTF-8 in a text frame: 1007.
    let mut utf = server.connect("utf", "r").await;
    utf.next_of("room_joined").await;
    utf.send_frame(Frame::text(Payload::Owned(vec![b'{', 0xC3, 0x28, b'}'])))
        .await;
    assert_eq!(utf.closed().await, 1007);

    // A continuation with nothing to continue: 1002.
    let mut proto = server.connect("proto", "r").await;
    proto.next_of("room_joined").await;
    proto
        .send_frame(Frame::new(
            true,
            OpCode::Continuation,
            None,
            Payload::Owned(b"x".to_vec()),
        ))
        .await;
    assert_eq!(proto.closed().await, 1002);

    // The bystander is still connected and still receives.
    let mut sender = server.connect("sender", "r").await;
    sender.next_of("room_joined").await;
    sender
        .send_json(json!({"type": "message", "roomId": "r", "content": "still here"}))
        .await;
    loop {
        let m = bystander.next_of("message").await;
        if m["content"] == "still here" {
            break;
        }
    }
    assert!(server.metric("roomcast_disconnects_total", "too_big").await >= 2.0);
    assert!(
        server
            .metric("roomcast_disconnects_total", "invalid_utf8")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn the_message_rate_limit_answers_with_retry_after_and_keeps_the_connection() {
    let server = Server::start(&[
        ("RATE_LIMIT_MAX_MESSAGES", "3"),
        ("RATE_LIMIT_WINDOW_MS", "60000"),
    ])
    .await;
    let mut c = server.connect("alice", "r").await;
    c.next_of("room_joined").await;
    for i in 0..3 {
        c.publish("r", "hi", &format!("c{i}")).await;
        c.next_of("ack").await;
    }
    c.publish("r", "one too many", "c3").await;
    let e = c.next_of("error").await;
    assert_eq!(
        (e["code"].as_str(), e["clientMsgId"].as_str()),
        (Some("rate_limited"), Some("c3"))
    );
    // At most 3 in any 60 s: the next one is allowed when the first leaves the window.
    let retry = e["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!(retry > 50_000 && retry <= 60_000, "{retry}");
    c.quiet().await;
    assert_eq!(server.history("r").await.len(), 3);
    assert!(
        server
            .metric("roomcast_rate_limited_total", "messages")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn moderation_masks_blocked_words_and_audits_every_action() {
    let server = Server::start(&[("ROOMCAST_BLOCKED_WORDS", "darn,heck")]).await;
    let mut c = server.connect("alice", "r").await;
    c.next_of("room_joined").await;
    c.publish("r", "well DARN it, and heckler is fine", "c1")
        .await;
    let m = c.next_of("message").await;
    assert_eq!(m["content"], "well **** it, and heckler is fine");
    c.next_of("ack").await;
    let history = server.history("r").await;
    assert_eq!(history[0]["content"], "well **** it, and heckler is fine");

    let admin = crate::support::token("admin", true);
    let audit = server.get_json("/api/admin/audit", Some(&admin)).await;
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(
        (entries[0]["action"].as_str(), entries[0]["userId"].as_str()),
        (Some("masked"), Some("alice"))
    );
    assert_eq!(entries[0]["messageId"], m["messageId"]);
    // Non-admins may not read it.
    let (status, _) = server
        .get("/api/admin/audit", Some(&server.token("alice")))
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn reject_mode_refuses_blocked_messages_and_audits_them() {
    let server = Server::start(&[
        ("ROOMCAST_BLOCKED_WORDS", "darn"),
        ("ROOMCAST_MODERATION_MODE", "reject"),
    ])
    .await;
    let mut c = server.connect("alice", "r").await;
    c.next_of("room_joined").await;
    c.publish("r", "darn", "c1").await;
    assert_eq!(c.next_of("error").await["code"], "message_blocked");
    // The history writer is first-in first-out: once a later message is acked, the
    // audit entry queued before it is durable.
    c.publish("r", "fine", "c2").await;
    c.next_of("ack").await;
    let history = server.history("r").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["content"], "fine");
    let admin = crate::support::token("admin", true);
    let audit = server.get_json("/api/admin/audit", Some(&admin)).await;
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["action"], "rejected");
    assert!(entries[0].get("messageId").is_none());
}

/// The "nothing more arrives" helper can fail: a frame still due (here an error) makes
/// it panic.
#[tokio::test]
async fn quiet_fails_on_a_pending_frame() {
    let server = Server::start(&[]).await;
    let mut c = server.connect("q", "r").await;
    c.next_of("room_joined").await;
    c.send_text("not json").await;
    let outcome = tokio::spawn(async move { c.quiet().await }).await;
    assert!(
        outcome.is_err_and(|e| e.is_panic()),
        "quiet() passed over an error frame"
    );
}

/// Sends `head` (request line and headers) and `body_part`, keeps the connection open,
/// and returns the response's status line and when it came.
async fn raw_request(
    server: &Server,
    head: &str,
    body_part: &[u8],
) -> (String, std::time::Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body_part).await.expect("body part");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("an answer, not a connection held forever")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    (
        text.lines().next().unwrap_or("").to_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_huge_declared_body_is_refused_at_once_and_a_stalled_body_times_out() {
    let server = Server::start(&[("ROOMCAST_HTTP_BODY_TIMEOUT_MS", "700")]).await;
    let auth = format!("Bearer {}", crate::support::token("alice", false));
    // 10 GB declared, nothing sent: 413 at once, without reading (or waiting for) it.
    let head = format!(
        "POST /messages HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    );
    let (status, took) = raw_request(&server, &head, b"").await;
    assert!(status.contains(" 413 "), "{status}");
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    // Unauthenticated too: the size is checked first.
    let head = "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n";
    let (status, _) = raw_request(&server, head, b"").await;
    assert!(status.contains(" 413 "), "{status}");
    // Part of a body, then silence: 408 once the body timeout passes, not a held socket.
    let head = format!(
        "POST /messages HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    let (status, took) = raw_request(&server, &head, b"{\"conversationId\":").await;
    assert!(status.contains(" 408 "), "{status}");
    assert!(
        took >= std::time::Duration::from_millis(700) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        server
            .metric("roomcast_api_errors_total", "code=\"request_timeout\"")
            .await
            >= 1.0
    );
    // A body within the limit that arrives in time is served as before.
    let r = server
        .call(
            "POST",
            "/conversations",
            Some("alice"),
            Some(json!({"participantIds": ["bob"]})),
        )
        .await;
    assert!(r.status == 201 || r.status == 200, "{r:?}");
}
