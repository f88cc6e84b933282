//! The chat REST API, continued: history paging while messages arrive, one rate limit
//! for REST and socket sends, end-to-end encrypted content.

use serde_json::json;

use crate::chat::{page_ids, send};
use crate::support::Server;

#[tokio::test]
async fn history_pages_have_no_gap_and_no_duplicate_while_messages_arrive() {
    let s = Server::start(&[]).await;
    let conv = s.conversation("ann", &["bob"]).await;
    for i in 0..120 {
        send(&s, "ann", &conv, &format!("before {i}")).await;
    }
    let newest = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history?limit=1"),
            Some("bob"),
            None,
        )
        .await
        .json();
    let pivot = newest["messages"][0]["messageId"]
        .as_str()
        .expect("id")
        .to_owned();

    // Inserts keep coming while bob pages backwards from the pivot and forwards from it.
    let writer = {
        let (addr, conv) = (s.addr, conv.clone());
        tokio::spawn(async move {
            let auth = format!("Bearer {}", crate::support::token("ann", false));
            for i in 0..120 {
                let body =
                    json!({"conversationId": conv, "message": format!("during {i}")}).to_string();
                let r = crate::support::http(
                    addr,
                    "POST",
                    "/messages",
                    &[("Authorization", &auth)],
                    Some(&body),
                )
                .await;
                assert_eq!(r.status, 201);
            }
        })
    };
    let mut older: Vec<String> = Vec::new();
    let mut cursor = pivot.clone();
    loop {
        let (ids, more) = page_ids(&s, "bob", &conv, &format!("limit=7&before={cursor}")).await;
        if ids.is_empty() {
            break;
        }
        cursor = ids[0].clone();
        older.splice(0..0, ids);
        if !more {
            break;
        }
    }
    let mut newer: Vec<String> = Vec::new();
    let mut cursor = pivot.clone();
    let mut writer = Some(writer);
    loop {
        let (ids, more) = page_ids(&s, "bob", &conv, &format!("limit=9&after={cursor}")).await;
        if let Some(last) = ids.last() {
            cursor = last.clone();
        }
        newer.extend(ids);
        if !more {
            // Caught up: once the writer is done, one more pass picks up the rest.
            match writer.take() {
                Some(w) => w.await.expect("writer"),
                None => break,
            }
        }
    }
    let mut all = older.clone();
    all.push(pivot);
    all.extend(newer);
    assert_eq!(all.len(), 240, "every message exactly once across pages");
    let nums: Vec<u64> = all.iter().map(|i| i.parse().expect("numeric id")).collect();
    assert!(
        nums.windows(2).all(|w| w[0] < w[1]),
        "ascending, no duplicate"
    );
    // And it is exactly what history holds.
    let mut stored = Vec::new();
    let mut after = "0".to_owned();
    loop {
        let (ids, more) = page_ids(&s, "ann", &conv, &format!("limit=200&after={after}")).await;
        if let Some(l) = ids.last() {
            after = l.clone();
        }
        stored.extend(ids);
        if !more {
            break;
        }
    }
    assert_eq!(stored, all);
    // Timestamps work as bounds too, and bad bounds name the field.
    let r = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history?before=2020-01-01T00:00:00Z"),
            Some("ann"),
            None,
        )
        .await;
    assert_eq!(r.json()["messages"], json!([]));
    // Epoch milliseconds and ISO 8601 without a zone cut where the message's own time
    // does (ids carry their millisecond).
    let pivot_iso = newest["messages"][0]["timestamp"]
        .as_str()
        .expect("timestamp")
        .to_owned();
    let pivot_ms =
        roomcast_engine::clock::parse_rfc3339_ms(&pivot_iso).expect("an RFC 3339 timestamp");
    let ms_of = |id: &String| roomcast_engine::ids::unix_ms_of(id.parse().expect("id"));
    let later: Vec<String> = all
        .iter()
        .filter(|i| ms_of(i) > pivot_ms)
        .cloned()
        .collect();
    let upto: Vec<String> = all
        .iter()
        .filter(|i| ms_of(i) <= pivot_ms)
        .cloned()
        .collect();
    assert!(
        later.len() >= 100 && upto.len() >= 120,
        "{} {}",
        later.len(),
        upto.len()
    );
    let zoneless = pivot_iso.trim_end_matches('Z').to_owned();
    for after in [pivot_ms.to_string(), zoneless] {
        let mut got: Vec<String> = Vec::new();
        let mut cursor = after.clone();
        loop {
            let (ids, more) =
                page_ids(&s, "ann", &conv, &format!("limit=200&after={cursor}")).await;
            if let Some(l) = ids.last() {
                cursor = l.clone();
            }
            got.extend(ids);
            if !more {
                break;
            }
        }
        assert_eq!(got, later, "after={after}");
    }
    let (ids, _) = page_ids(
        &s,
        "ann",
        &conv,
        &format!("limit=200&before={}", pivot_ms + 1),
    )
    .await;
    assert_eq!(ids, upto, "before epoch milliseconds");
    let hour_before = pivot_ms - 3_600_000;
    let (ids, more) = page_ids(&s, "ann", &conv, &format!("limit=200&before={hour_before}")).await;
    assert!(ids.is_empty() && !more, "nothing was sent an hour before");
    let r = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history?after=yesterday"),
            Some("ann"),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["details"]["field"].clone()),
        (400, json!("after"))
    );
    let r = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history?limit=201"),
            Some("ann"),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["details"]["field"].clone()),
        (400, json!("limit"))
    );
}

#[tokio::test]
async fn rest_and_socket_sends_share_one_rate_limit() {
    let s = Server::start(&[("RATE_LIMIT_MAX_MESSAGES", "2")]).await;
    let conv = s.conversation("ann", &["bob"]).await;
    let mut ann = s.socket("ann").await;
    ann.send_json(json!({"type": "join_room", "roomId": conv}))
        .await;
    ann.next_of("room_joined").await;
    ann.publish(&conv, "over the socket", "s-1").await;
    ann.next_of("ack").await;
    send(&s, "ann", &conv, "over REST").await;
    let r = s
        .call(
            "POST",
            "/messages",
            Some("ann"),
            Some(json!({"conversationId": conv, "message": "one too many"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (429, "rate_limited".into()), "{r:?}");
    assert!(r.header("retry-after").is_some());
    assert!(
        r.json()["error"]["details"]["retryAfterMs"]
            .as_u64()
            .is_some()
    );
    // Bob's allowance is his own.
    send(&s, "bob", &conv, "hi").await;
}

#[tokio::test]
async fn end_to_end_encrypted_content_is_opaque_to_moderation() {
    let s = Server::start(&[
        ("ROOMCAST_BLOCKED_WORDS", "darn"),
        ("MAX_MESSAGE_LENGTH", "100"),
    ])
    .await;
    let conv = s.conversation("ann", &["bob"]).await;
    let mut bob = s.socket("bob").await;
    // Ciphertext is not moderated and may exceed the plaintext length limit.
    let cipher = format!("darn {}", "QUJD".repeat(500));
    let r = s
        .call(
            "POST",
            "/messages",
            Some("ann"),
            Some(json!({"conversationId": conv, "message": cipher, "encrypted": true})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["message"]["content"], cipher.as_str());
    assert_eq!(r.json()["message"]["encrypted"], true);
    let ev = bob.next_of("message").await;
    assert_eq!(
        (ev["encrypted"].clone(), ev["content"].clone()),
        (json!(true), json!(cipher))
    );
    // Plaintext still is moderated and limited.
    let r = s
        .call(
            "POST",
            "/messages",
            Some("ann"),
            Some(json!({"conversationId": conv, "message": "darn"})),
        )
        .await;
    assert_eq!(r.json()["message"]["content"], "****");
    let r = s
        .call(
            "POST",
            "/messages",
            Some("ann"),
            Some(json!({"conversationId": conv, "message": "x".repeat(101)})),
        )
        .await;
    assert_eq!((r.status, r.code()), (413, "message_too_long".into()));
    // Encrypted content has its own cap, and must not be empty.
    let r = s
        .call("POST", "/messages", Some("ann"), Some(json!({"conversationId": conv, "message": "A".repeat(16 * 1024 + 1), "encrypted": true})))
        .await;
    assert_eq!((r.status, r.code()), (413, "message_too_long".into()));
    let r = s
        .call(
            "POST",
            "/messages",
            Some("ann"),
            Some(json!({"conversationId": conv, "message": "", "encrypted": true})),
        )
        .await;
    assert_eq!(r.status, 400);
    // Over the socket too.
    bob.send_json(json!({"type": "join_room", "roomId": conv}))
        .await;
    bob.next_of("room_joined").await;
    bob.send_json(json!({"type": "message", "roomId": conv, "content": "darn QUJD", "encrypted": true, "clientMsgId": "e-1"}))
        .await;
    let m = bob.next_of("message").await;
    assert_eq!(
        (m["content"].clone(), m["encrypted"].clone()),
        (json!("darn QUJD"), json!(true))
    );
}
