//! Calls through the real server: the whole state machine (accept, decline, cancel,
//! hangup, accept after end, double accept, end by a third user, timeout to missed,
//! busy, a restart during a ring), the events both parties get on every session, the
//! system message a finished call leaves, and the LiveKit-style video token.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Server;

const VIDEO_SECRET: &str = "video-secret-0123456789abcdef";

async fn ring(s: &Server, caller: &str, callee: &str, body: Value) -> Value {
    let mut body = body;
    body["partnerId"] = json!(callee);
    let r = s.call("POST", "/calls", Some(caller), Some(body)).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json()
}

async fn put(s: &Server, path: &str, user: &str, body: Value) -> crate::support::Resp {
    s.call("PUT", path, Some(user), Some(body)).await
}

/// The conversation's messages' contents, oldest first.
async fn history(s: &Server, user: &str, conv: &str) -> Vec<String> {
    let page = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history"),
            Some(user),
            None,
        )
        .await
        .json();
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_call_state_machine_through_the_api() {
    let s = Server::start(&[
        ("ROOMCAST_VIDEO_URL", "wss://video.example"),
        ("ROOMCAST_VIDEO_API_KEY", "APIkey123"),
        ("ROOMCAST_VIDEO_API_SECRET", VIDEO_SECRET),
    ])
    .await;
    let conv = s.conversation("ann", &["bob"]).await;
    s.conversation("cat", &["dan"]).await;
    let mut ann = s.socket("ann").await;
    let mut bob = s.socket("bob").await;
    let mut bob2 = s.socket("bob").await;

    // Who may call whom.
    let r = s
        .call(
            "POST",
            "/calls",
            Some("ann"),
            Some(json!({"partnerId": "cat"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden".into()),
        "no shared conversation"
    );
    let r = s
        .call(
            "POST",
            "/calls",
            Some("ann"),
            Some(json!({"partnerId": "nobody"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "user_not_found".into()));
    let r = s
        .call(
            "POST",
            "/calls",
            Some("ann"),
            Some(json!({"partnerId": "ann"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .call(
            "POST",
            "/calls",
            Some("ann"),
            Some(json!({"partnerId": "bob", "callType": "hologram"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["details"]["field"].clone()),
        (400, json!("callType"))
    );
    let r = s
        .call("POST", "/calls", None, Some(json!({"partnerId": "bob"})))
        .await;
    assert_eq!(r.status, 401);
    let r = s.call("GET", "/calls/active", Some("ann"), None).await;
    assert_eq!((r.status, r.code()), (404, "call_not_found".into()));

    // Ring: both parties, every session, get call_incoming.
    let call = ring(
        &s,
        "ann",
        "bob",
        json!({"callType": "video", "screenShare": true, "recording": true}),
    )
    .await;
    let id = call["id"].as_str().expect("id").to_owned();
    assert_eq!(
        (call["state"].clone(), call["conversationId"].clone()),
        (json!("ringing"), json!(conv))
    );
    for c in [&mut ann, &mut bob, &mut bob2] {
        let ev = c.next_of("call_incoming").await;
        assert_eq!(ev["call"]["id"], id.as_str());
    }
    let active = s
        .call("GET", "/calls/active", Some("bob"), None)
        .await
        .json();
    assert_eq!(active["id"], id.as_str());
    // Busy: a third call involving either party.
    s.conversation("cat", &["bob"]).await;
    let r = s
        .call(
            "POST",
            "/calls",
            Some("cat"),
            Some(json!({"partnerId": "bob"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "busy".into()));
    let r = s
        .call(
            "POST",
            "/calls",
            Some("bob"),
            Some(json!({"partnerId": "ann"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "busy".into()));

    // Only the callee accepts; a third user sees nothing; a double accept conflicts.
    let accept = json!({"callId": id, "recording": true});
    let r = put(&s, "/calls/accept", "ann", accept.clone()).await;
    assert_eq!((r.status, r.code()), (403, "forbidden".into()));
    let r = put(&s, "/calls/accept", "cat", accept.clone()).await;
    assert_eq!((r.status, r.code()), (404, "call_not_found".into()));
    let r = put(&s, "/calls/accept", "bob", accept.clone()).await;
    assert_eq!(
        (
            r.status,
            r.json()["state"].clone(),
            r.json()["recording"].clone()
        ),
        (200, json!("active"), json!(true))
    );
    for c in [&mut ann, &mut bob2] {
        assert_eq!(c.next_of("call_accepted").await["call"]["state"], "active");
    }
    let r = put(&s, "/calls/accept", "bob", accept.clone()).await;
    assert_eq!((r.status, r.code()), (409, "call_state_conflict".into()));

    // The provider token: for parties only, with the call's grants.
    let r = s
        .call("GET", &format!("/video/{id}/token"), Some("bob"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let t = r.json();
    assert_eq!(
        (t["url"].clone(), t["room"].clone(), t["identity"].clone()),
        (json!("wss://video.example"), json!(id), json!("bob"))
    );
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(
        t["token"].as_str().expect("token"),
        &jsonwebtoken::DecodingKey::from_secret(VIDEO_SECRET.as_bytes()),
        &v,
    )
    .expect("a token signed with the provider secret")
    .claims;
    assert_eq!(claims["iss"], "APIkey123");
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["video"]["room"], id.as_str());
    assert_eq!(claims["video"]["roomJoin"], true);
    assert_eq!(claims["video"]["roomRecord"], true, "both consented");
    assert_eq!(
        claims["video"]["canPublishSources"],
        json!(["microphone", "camera", "screen_share", "screen_share_audio"])
    );
    let ttl = claims["exp"].as_u64().unwrap_or(0) - claims["nbf"].as_u64().unwrap_or(0);
    assert!(ttl > 0 && ttl <= 600, "short TTL: {ttl}");
    let r = s
        .call("GET", &format!("/video/{id}/token"), Some("cat"), None)
        .await;
    assert_eq!((r.status, r.code()), (404, "call_not_found".into()));
    let r = s
        .call("GET", "/video/call_404/token", Some("bob"), None)
        .await;
    assert_eq!(r.status, 404);

    // End by a third user: 404; by a party: ended, with reason, events, summary message.
    let r = put(&s, "/calls/end", "cat", json!({"callId": id})).await;
    assert_eq!(r.status, 404);
    let r = put(
        &s,
        "/calls/end",
        "ann",
        json!({"callId": id, "reason": "bye"}),
    )
    .await;
    assert_eq!(
        (
            r.status,
            r.json()["state"].clone(),
            r.json()["endReason"].clone()
        ),
        (200, json!("ended"), json!("bye"))
    );
    let ev = bob.next_of("call_ended").await;
    assert_eq!(ev["call"]["endReason"], "bye");
    let summary = bob.next_of("message").await;
    assert_eq!(
        (summary["messageType"].clone(), summary["content"].clone()),
        (json!("system"), json!("Video call, 0 s"))
    );
    // Accept after end; end after end; a token after end.
    assert_eq!(
        put(&s, "/calls/accept", "bob", accept).await.code(),
        "call_state_conflict"
    );
    assert_eq!(
        put(&s, "/calls/end", "bob", json!({"callId": id}))
            .await
            .status,
        409
    );
    assert_eq!(
        s.call("GET", &format!("/video/{id}/token"), Some("bob"), None)
            .await
            .status,
        409
    );
    assert_eq!(
        s.call("GET", "/calls/active", Some("ann"), None)
            .await
            .status,
        404
    );

    // Declined (callee ends a ringing call) and cancelled (caller does).
    let c2 = ring(&s, "ann", "bob", json!({})).await;
    let r = put(&s, "/calls/end", "bob", json!({"callId": c2["id"]})).await;
    assert_eq!(r.json()["endReason"], "declined");
    let c3 = ring(&s, "ann", "bob", json!({"callType": "audio"})).await;
    let r = put(&s, "/calls/end", "ann", json!({"callId": c3["id"]})).await;
    assert_eq!(r.json()["endReason"], "cancelled");
    let msgs = history(&s, "ann", &conv).await;
    assert!(
        msgs.ends_with(&[
            "Video call, 0 s".into(),
            "Declined audio call".into(),
            "Cancelled audio call".into()
        ]),
        "{msgs:?}"
    );

    // Audio calls may publish the microphone only; no recording without both consents.
    let c4 = ring(&s, "bob", "ann", json!({"recording": true})).await;
    let id4 = c4["id"].as_str().expect("id");
    put(&s, "/calls/accept", "ann", json!({"callId": id4})).await;
    let t = s
        .call("GET", &format!("/video/{id4}/token"), Some("ann"), None)
        .await
        .json();
    let claims = jsonwebtoken::decode::<Value>(
        t["token"].as_str().expect("token"),
        &jsonwebtoken::DecodingKey::from_secret(VIDEO_SECRET.as_bytes()),
        &v,
    )
    .expect("token")
    .claims;
    assert_eq!(claims["video"]["canPublishSources"], json!(["microphone"]));
    assert_eq!(claims["video"]["roomRecord"], false);
    put(&s, "/calls/end", "bob", json!({"callId": id4})).await;
    let r = s
        .call(
            "POST",
            "/calls",
            Some("ann"),
            Some(json!({"partnerId": "bob", "screenShare": true})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["details"]["field"].clone()),
        (400, json!("screenShare"))
    );
}

#[tokio::test]
async fn unanswered_calls_become_missed_also_across_a_restart() {
    let mut s = Server::start(&[("ROOMCAST_CALL_RING_TIMEOUT_MS", "3000")]).await;
    let conv = s.conversation("ann", &["bob"]).await;
    let r = s
        .call("GET", "/video/call_1/token", Some("ann"), None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (503, "video_unavailable".into()),
        "no provider configured"
    );

    // Timeout to missed while running.
    let mut bob = s.socket("bob").await;
    let call = ring(&s, "ann", "bob", json!({"callType": "video"})).await;
    let ev = bob.next_of("call_ended").await;
    assert_eq!(
        (
            ev["call"]["id"].clone(),
            ev["call"]["state"].clone(),
            ev["call"]["endReason"].clone()
        ),
        (call["id"].clone(), json!("missed"), json!("missed"))
    );
    assert_eq!(bob.next_of("message").await["content"], "Missed video call");
    drop(bob);

    // A restart during a ring: the call is still ringing afterwards, and its timeout
    // still turns it into a missed call.
    let call = ring(&s, "bob", "ann", json!({})).await;
    s.restart().await;
    // The restart takes well under the 3 s ring timeout, so the call is still ringing.
    let active = s.call("GET", "/calls/active", Some("ann"), None).await;
    assert_eq!(active.status, 200, "{active:?}");
    assert_eq!(
        (active.json()["id"].clone(), active.json()["state"].clone()),
        (call["id"].clone(), json!("ringing"))
    );
    let mut ann = s.socket("ann").await;
    let ev = ann.next_of("call_ended").await;
    assert_eq!(ev["call"]["state"], "missed");
    // It ended as missed once: one summary message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msgs = history(&s, "ann", &conv).await;
        let missed = msgs.iter().filter(|m| *m == "Missed audio call").count();
        if missed == 1 {
            break;
        }
        assert!(
            missed == 0 && tokio::time::Instant::now() < deadline,
            "{msgs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.call("GET", "/calls/active", Some("bob"), None)
            .await
            .status,
        404
    );
    // Both are free again.
    let again = ring(&s, "ann", "bob", json!({})).await;
    assert_eq!(again["state"], "ringing");
}
