//! The admin routes (`/private/...`), quiet chats at scale, the push notification
//! webhook against a local receiver, and CORS.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::Server;

fn msg(conv: &str, text: &str) -> Option<Value> {
    Some(json!({"conversationId": conv, "message": text}))
}

#[tokio::test]
async fn admin_routes_send_list_close_and_snooze() {
    let s = Server::start(&[]).await;
    let conv = s.conversation("ann", &["bob"]).await;
    let other = s.conversation("ann", &["cat"]).await;
    let mut bob = s.socket("bob").await;

    // Every /private route: 401 without a token, 403 for a non-admin.
    let routes = [
        ("POST", "/private/messages".to_owned()),
        ("GET", "/private/users/ann/conversations".to_owned()),
        ("PUT", "/private/users/ann/conversations".to_owned()),
        ("DELETE", format!("/private/conversations/{conv}")),
        ("PUT", format!("/private/conversations/{conv}/snooze")),
        ("GET", "/private/conversations/quietChats".to_owned()),
    ];
    for (method, path) in &routes {
        let r = s.call(method, path, None, Some(json!({}))).await;
        assert_eq!(r.status, 401, "{method} {path}");
        let r = s.call(method, path, Some("ann"), Some(json!({}))).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "forbidden".into()),
            "{method} {path}"
        );
    }

    // Send as the system, and as a named sender; both delivered live.
    let r = s
        .call(
            "POST",
            "/private/messages",
            Some("admin-1"),
            msg(&conv, "Be kind."),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let m = &r.json()["message"];
    assert_eq!(
        (m["senderId"].clone(), m["messageType"].clone()),
        (json!("system"), json!("system"))
    );
    let ev = bob.next_of("message").await;
    assert_eq!(
        (ev["content"].clone(), ev["messageType"].clone()),
        (json!("Be kind."), json!("system"))
    );
    let r = s
        .call(
            "POST",
            "/private/messages",
            Some("admin-1"),
            Some(
                json!({"conversationId": conv, "message": "from support", "senderId": "support-7"}),
            ),
        )
        .await;
    assert_eq!(r.json()["message"]["senderId"], "support-7");
    let r = s
        .call(
            "POST",
            "/private/messages",
            Some("admin-1"),
            msg("conv_404", "x"),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found".into()));
    let r = s
        .call(
            "POST",
            "/private/messages",
            Some("admin-1"),
            Some(json!({"message": "x"})),
        )
        .await;
    assert_eq!(r.json()["error"]["details"]["field"], "conversationId");

    // A user's conversations, by GET or by PUT as the seed has it.
    for method in ["GET", "PUT"] {
        let r = s
            .call(
                method,
                "/private/users/ann/conversations?limit=1",
                Some("admin-1"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["total"], 2);
        assert_eq!(r.json()["conversations"].as_array().map(Vec::len), Some(1));
    }
    let r = s
        .call(
            "GET",
            "/private/users/nobody/conversations",
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "user_not_found".into()));

    // Snooze: members cannot send (409 with until), admins can; active again by
    // itself at expiry, with an event.
    let r = s
        .call(
            "PUT",
            &format!("/private/conversations/{conv}/snooze"),
            Some("admin-1"),
            Some(json!({"duration": 0.0005, "reason": "cool-off"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("snoozed")),
        "{r:?}"
    );
    let ev = bob.next_of("conversation_snoozed").await;
    assert_eq!(ev["reason"], "cool-off");
    let r = s
        .call("POST", "/messages", Some("bob"), msg(&conv, "hey"))
        .await;
    assert_eq!((r.status, r.code()), (409, "conversation_snoozed".into()));
    assert!(
        r.json()["error"]["details"]["retryAfterMs"]
            .as_u64()
            .is_some()
    );
    let r = s
        .call("GET", "/conversations?status=snoozed", Some("bob"), None)
        .await;
    assert_eq!(r.json()["total"], 1);
    let r = s
        .call(
            "POST",
            "/private/messages",
            Some("admin-1"),
            msg(&conv, "admins pass a snooze"),
        )
        .await;
    assert_eq!(r.status, 201);
    bob.next_of("conversation_unsnoozed").await;
    let r = s
        .call("POST", "/messages", Some("bob"), msg(&conv, "back"))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    for bad in [
        json!({"duration": 0}),
        json!({"duration": -1}),
        json!({"duration": 100000}),
        json!({"duration": "1h"}),
    ] {
        let r = s
            .call(
                "PUT",
                &format!("/private/conversations/{conv}/snooze"),
                Some("admin-1"),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["details"]["field"].clone()),
            (400, json!("duration")),
            "{bad}"
        );
    }

    // Close with a reason: members notified, every later send refused (also an
    // admin's, also over the socket), reading still allowed.
    let r = s
        .call(
            "DELETE",
            &format!("/private/conversations/{conv}"),
            Some("admin-1"),
            Some(json!({"reason": "reported"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("closed")),
        "{r:?}"
    );
    assert_eq!(r.json()["closed"]["reason"], "reported");
    let ev = bob.next_of("conversation_closed").await;
    assert_eq!(ev["reason"], "reported");
    let r = s
        .call("POST", "/messages", Some("bob"), msg(&conv, "hello?"))
        .await;
    assert_eq!((r.status, r.code()), (409, "conversation_closed".into()));
    let r = s
        .call(
            "POST",
            "/private/messages",
            Some("admin-1"),
            msg(&conv, "x"),
        )
        .await;
    assert_eq!(r.code(), "conversation_closed");
    bob.send_json(json!({"type": "join_room", "roomId": conv}))
        .await;
    bob.next_of("room_joined").await;
    bob.publish(&conv, "sneaky", "c-1").await;
    assert_eq!(bob.next_of("error").await["code"], "conversation_closed");
    let r = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history"),
            Some("bob"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .call("GET", "/conversations?status=closed", Some("ann"), None)
        .await;
    assert_eq!(r.json()["conversations"][0]["id"], conv.as_str());
    let r = s
        .call(
            "PUT",
            &format!("/private/conversations/{conv}/snooze"),
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conversation_closed".into()));
    let r = s
        .call(
            "DELETE",
            "/private/conversations/conv_1",
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    // The other conversation is untouched.
    let r = s
        .call("POST", "/messages", Some("cat"), msg(&other, "still here"))
        .await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn quiet_chats_come_from_the_activity_index_among_a_thousand() {
    let s = Server::start(&[]).await;
    let addr = s.addr;
    // 1,000 conversations of one admin-less user pair set, created concurrently.
    let mut tasks = Vec::new();
    for w in 0..8 {
        tasks.push(tokio::spawn(async move {
            let auth = format!("Bearer {}", crate::support::token(&format!("u{w}"), false));
            let mut ids = Vec::new();
            for i in 0..125 {
                let body = json!({"participantIds": [format!("p{w}-{i}")]}).to_string();
                let r = crate::support::http(
                    addr,
                    "POST",
                    "/conversations",
                    &[("Authorization", &auth)],
                    Some(&body),
                )
                .await;
                assert_eq!(r.status, 201, "{r:?}");
                ids.push((w, r.json()["id"].as_str().expect("id").to_owned()));
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("creator"));
    }
    assert_eq!(all.len(), 1000);
    // Let them age past the threshold, then touch 550 and close 10 of the rest.
    let threshold = Duration::from_secs(5);
    tokio::time::sleep(threshold + Duration::from_secs(1)).await;
    let (touched, rest) = all.split_at(550);
    let mut tasks = Vec::new();
    for chunk in touched.chunks(70) {
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for (w, id) in chunk {
                let auth = format!("Bearer {}", crate::support::token(&format!("u{w}"), false));
                let body = json!({"conversationId": id, "message": "still talking"}).to_string();
                let r = crate::support::http(
                    addr,
                    "POST",
                    "/messages",
                    &[("Authorization", &auth)],
                    Some(&body),
                )
                .await;
                assert_eq!(r.status, 201, "{r:?}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("toucher");
    }
    for (_, id) in &rest[..10] {
        let r = s
            .call(
                "DELETE",
                &format!("/private/conversations/{id}"),
                Some("admin-1"),
                None,
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let days = threshold.as_secs_f64() / 86_400.0;
    let r = s
        .call(
            "GET",
            &format!("/private/conversations/quietChats?daysInactive={days}&limit=500"),
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let got: Vec<String> = r.json()["conversations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect();
    let mut expected: Vec<String> = rest[10..].iter().map(|(_, id)| id.clone()).collect();
    let mut sorted = got.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "exactly the quiet, open ones");
    let times: Vec<String> = r.json()["conversations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["lastActivityAt"].as_str().expect("t").to_owned())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "least recently active first"
    );
    let r = s
        .call(
            "GET",
            &format!("/private/conversations/quietChats?daysInactive={days}&limit=5"),
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!(r.json()["conversations"].as_array().map(Vec::len), Some(5));
    for bad in ["daysInactive=-1", "daysInactive=x", "limit=0", "limit=501"] {
        let r = s
            .call(
                "GET",
                &format!("/private/conversations/quietChats?{bad}"),
                Some("admin-1"),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
}

async fn wait(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(u16, Value)>) -> (u16, Value) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a webhook call")
        .expect("open")
}

/// A webhook receiver: answers the first `fail_first` POSTs with 500, then 204, and
/// sends every body it got down the channel.
async fn receiver(
    fail_first: usize,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<(u16, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/push", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then Content-Length bytes of body.
            let body = loop {
                let Ok(k) = sock.read(&mut chunk).await else {
                    break None;
                };
                if k == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body[..len].to_owned());
                    }
                }
            };
            let Some(body) = body else { continue };
            n += 1;
            let status: u16 = if n <= fail_first { 500 } else { 204 };
            let _ = sock
                .write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
            let _ = tx.send((status, serde_json::from_str(&body).unwrap_or(Value::Null)));
        }
    });
    (url, rx)
}

#[tokio::test]
async fn offline_participants_get_push_jobs_with_retries_and_online_ones_do_not() {
    let (url, mut hooks) = receiver(1).await;
    let s = Server::start(&[
        ("ROOMCAST_PUSH_WEBHOOK_URL", url.as_str()),
        ("ROOMCAST_PUSH_BACKOFF_MS", "20"),
    ])
    .await;
    let conv = s.conversation("ann", &["bob", "cat"]).await;
    let _cat = s.socket("cat").await;
    let r = s
        .call(
            "POST",
            "/messages",
            Some("ann"),
            msg(&conv, "are you there?"),
        )
        .await;
    assert_eq!(r.status, 201);
    let id = r.json()["message"]["messageId"].clone();
    // Bob is offline: his job fails once (500), then is delivered. Cat is online, Ann
    // sent it: no job for them.
    let (st1, job1) = wait(&mut hooks).await;
    let (st2, job2) = wait(&mut hooks).await;
    assert_eq!((st1, st2), (500, 204));
    assert_eq!(job1, job2);
    assert_eq!(job1["userId"], "bob");
    assert_eq!(job1["conversationId"], conv.as_str());
    assert_eq!(job1["messageId"], id);
    assert_eq!(job1["senderId"], "ann");
    assert_eq!(job1["preview"], "are you there?");
    s.wait_metric("roomcast_push_jobs_total", "outcome=\"delivered\"", 1.0)
        .await;
    s.wait_metric("roomcast_push_jobs_total", "outcome=\"retried\"", 1.0)
        .await;
    // Snoozed: no push. Then bob online: no push either.
    s.call(
        "PUT",
        &format!("/private/conversations/{conv}/snooze"),
        Some("admin-1"),
        Some(json!({"duration": 1})),
    )
    .await;
    let r = s
        .call(
            "POST",
            "/private/messages",
            Some("admin-1"),
            msg(&conv, "quiet please"),
        )
        .await;
    assert_eq!(r.status, 201);
    let other = s.conversation("ann", &["bob"]).await;
    let mut bob = s.socket("bob").await;
    let r = s
        .call("POST", "/messages", Some("ann"), msg(&other, "online now"))
        .await;
    assert_eq!(r.status, 201);
    bob.next_of("message").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(800), hooks.recv())
            .await
            .is_err(),
        "no push for a snoozed conversation or an online user"
    );
}

#[tokio::test]
async fn cors_preflight_and_headers_on_every_route() {
    let s = Server::start(&[]).await;
    let pre = crate::support::http(
        s.addr,
        "OPTIONS",
        "/messages",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        None,
    )
    .await;
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(
        pre.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(
        pre.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST"))
    );
    assert!(
        pre.header("access-control-allow-headers")
            .is_some_and(|h| h.contains("authorization"))
    );
    let r = crate::support::http(
        s.addr,
        "GET",
        "/conversations",
        &[("Origin", "https://app.example")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );

    let s = Server::start(&[("ROOMCAST_CORS_ORIGINS", "https://app.example")]).await;
    let ok = crate::support::http(
        s.addr,
        "GET",
        "/healthz",
        &[("Origin", "https://app.example")],
        None,
    )
    .await;
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    let no = crate::support::http(
        s.addr,
        "GET",
        "/healthz",
        &[("Origin", "https://evil.example")],
        None,
    )
    .await;
    assert_eq!(no.header("access-control-allow-origin"), None);
    // Unknown routes and methods keep the one error shape.
    let r = s.call("PATCH", "/messages", Some("ann"), None).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed".into()));
    let r = s.call("GET", "/nope", Some("ann"), None).await;
    assert_eq!((r.status, r.code()), (404, "not_found".into()));
}
