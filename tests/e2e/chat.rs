//! The chat REST API of seed 000 through the real server: conversations, messages,
//! receipts, reactions, typing, deletion, and the WebSocket event each mutation emits.

use serde_json::{Value, json};

use crate::support::{Event, Server};

async fn send(s: &Server, me: &str, conv: &str, text: &str) -> Value {
    let r = s
        .call(
            "POST",
            "/messages",
            Some(me),
            Some(json!({"conversationId": conv, "message": text})),
        )
        .await;
    assert_eq!(r.status, 201, "send: {r:?}");
    r.json()["message"].clone()
}

/// One history page as `user`: the message ids and `hasMore`.
async fn page_ids(s: &Server, user: &str, conv: &str, query: &str) -> (Vec<String>, bool) {
    let page = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history?{query}"),
            Some(user),
            None,
        )
        .await
        .json();
    let ids = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["messageId"].as_str().expect("id").to_owned())
        .collect();
    (ids, page["hasMore"] == true)
}

#[tokio::test]
async fn conversations_are_created_once_per_pair_listed_filtered_and_private() {
    let s = Server::start(&[]).await;
    // 401 without a token, 400 naming the field for bad input.
    let r = s.call("GET", "/conversations", None, None).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized".into()));
    let r = s
        .call(
            "POST",
            "/conversations",
            Some("ann"),
            Some(json!({"participantIds": [""]})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["details"]["field"], "participantIds[0]");
    let r = s
        .call(
            "POST",
            "/conversations",
            Some("ann"),
            Some(json!({"participantIds": "bob"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["details"]["field"], "participantIds");
    let r = s
        .call("POST", "/conversations", Some("ann"), Some(json!({})))
        .await;
    assert_eq!(
        r.json()["error"]["details"]["field"],
        "participantIds",
        "{r:?}"
    );
    let r = s
        .call(
            "POST",
            "/conversations",
            Some("ann"),
            Some(json!({"participantIds": ["ann"]})),
        )
        .await;
    assert_eq!(r.status, 400);

    // Bob's open socket hears about the new conversation.
    let mut bob = s.socket("bob").await;
    let r = s
        .call(
            "POST",
            "/conversations",
            Some("ann"),
            Some(json!({"participantIds": ["bob"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let direct = r.json();
    assert_eq!(direct["type"], "direct");
    assert_eq!(direct["participantIds"], json!(["ann", "bob"]));
    assert_eq!(direct["status"], "active");
    assert_eq!(direct["unreadCount"], 0);
    let id = direct["id"].as_str().expect("id").to_owned();
    let ev = bob.next_of("conversation_created").await;
    assert_eq!(ev["conversationId"], id.as_str());

    // The same pair, either way round: the same conversation, 200.
    let r = s
        .call(
            "POST",
            "/conversations",
            Some("bob"),
            Some(json!({"participantIds": ["ann"]})),
        )
        .await;
    assert_eq!((r.status, r.json()["id"].clone()), (200, json!(id)));
    let group = s.conversation("ann", &["bob", "cat"]).await;
    assert_ne!(group, id);

    // Non-members get 404 on every conversation route, with nothing leaked.
    for path in [
        format!("/conversations/{id}"),
        format!("/conversations/{id}/messages/history"),
        format!("/conversations/{id}/messages/unread"),
        format!("/api/rooms/{id}/messages"),
        "/conversations/conv_999/messages/history".to_owned(),
    ] {
        let r = s.call("GET", &path, Some("cat"), None).await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(!r.body.contains("ann"), "{path} leaked: {}", r.body);
    }
    let r = s
        .call(
            "PUT",
            &format!("/conversations/{id}/archive"),
            Some("cat"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found".into()));

    // Lists: newest activity first, with last message and unread count; status filter.
    send(&s, "bob", &id, "hello ann").await;
    let list = s
        .call("GET", "/conversations", Some("ann"), None)
        .await
        .json();
    assert_eq!(list["total"], 2);
    assert_eq!(list["conversations"][0]["id"], id.as_str());
    assert_eq!(
        list["conversations"][0]["lastMessage"]["content"],
        "hello ann"
    );
    assert_eq!(list["conversations"][0]["unreadCount"], 1);
    assert_eq!(list["conversations"][1]["id"], group.as_str());
    let page = s
        .call("GET", "/conversations?limit=1&offset=1", Some("ann"), None)
        .await
        .json();
    assert_eq!(page["conversations"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["conversations"][0]["id"], group.as_str());
    let mut ann_device = s.socket("ann").await;
    let r = s
        .call(
            "PUT",
            &format!("/conversations/{group}/archive"),
            Some("ann"),
            None,
        )
        .await;
    // Ann's other devices follow the archive.
    let ev = ann_device.next_of("conversation_archived").await;
    assert_eq!(ev["conversationId"], group.as_str());
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("archived"))
    );
    let archived = s
        .call("GET", "/conversations?status=archived", Some("ann"), None)
        .await
        .json();
    assert_eq!(archived["total"], 1);
    assert_eq!(archived["conversations"][0]["id"], group.as_str());
    let active = s
        .call("GET", "/conversations?status=active", Some("ann"), None)
        .await
        .json();
    assert_eq!(active["total"], 1);
    // Archiving is per member: bob still sees the group as active.
    let bobs = s
        .call("GET", "/conversations?status=active", Some("bob"), None)
        .await
        .json();
    assert_eq!(bobs["total"], 2);
    s.call(
        "PUT",
        &format!("/conversations/{group}/unarchive"),
        Some("ann"),
        None,
    )
    .await;
    let active = s
        .call("GET", "/conversations?status=active", Some("ann"), None)
        .await
        .json();
    assert_eq!(active["total"], 2);
    for bad in [
        "status=open",
        "limit=0",
        "limit=101",
        "offset=-1",
        "limit=x",
    ] {
        let r = s
            .call("GET", &format!("/conversations?{bad}"), Some("ann"), None)
            .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(r.code(), "invalid_field");
    }
}

#[tokio::test]
async fn messages_receipts_reactions_typing_and_deletion_emit_their_events() {
    let s = Server::start(&[("ROOMCAST_BLOCKED_WORDS", "darn")]).await;
    let conv = s.conversation("ann", &["bob"]).await;
    let mut ann = s.socket("ann").await;
    let mut bob = s.socket("bob").await;
    let mut bob2 = s.socket("bob").await;

    // Sent over REST, delivered in real time to every session of every participant
    // (none joined the conversation), moderated like a socket's message.
    let m1 = send(&s, "ann", &conv, "hi bob, darn it").await;
    assert_eq!(m1["content"], "hi bob, **** it");
    assert_eq!(m1["messageType"], "text");
    assert_eq!(m1["senderId"], "ann");
    for c in [&mut bob, &mut bob2, &mut ann] {
        let ev = c.next_of("message").await;
        assert_eq!(ev["messageId"], m1["messageId"]);
        assert_eq!(ev["roomId"], conv.as_str());
    }
    let m2 = send(&s, "ann", &conv, "second").await;
    let m3 = send(&s, "ann", &conv, "third").await;

    // Validation names the field; non-members get 404; system type is admin-only.
    let cases = [
        (json!({"message": "x"}), "conversationId"),
        (json!({"conversationId": conv, "message": 5}), "message"),
        (
            json!({"conversationId": conv, "message": "x", "messageType": "video"}),
            "messageType",
        ),
        (
            json!({"conversationId": conv, "messageType": "image"}),
            "attachments",
        ),
        (
            json!({"conversationId": conv, "message": "", "messageType": "text"}),
            "message",
        ),
        (
            json!({"conversationId": conv, "message": "x", "messageType": "system"}),
            "messageType",
        ),
        (
            json!({"conversationId": conv, "messageType": "image", "attachments": [
            {"url": "https://cdn/x.pdf", "mimeType": "application/pdf", "size": 10, "name": "x.pdf"}]}),
            "attachments[0].mimeType",
        ),
        (
            json!({"conversationId": conv, "messageType": "file", "attachments": [
            {"url": "https://cdn/x.pdf", "mimeType": "application/pdf", "size": 0, "name": "x.pdf"}]}),
            "attachments[0].size",
        ),
    ];
    for (body, field) in cases {
        let r = s
            .call("POST", "/messages", Some("ann"), Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(
            r.json()["error"]["details"]["field"],
            field,
            "{body}: {r:?}"
        );
    }
    let r = s
        .call(
            "POST",
            "/messages",
            Some("cat"),
            Some(json!({"conversationId": conv, "message": "x"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "conversation_not_found".into()));
    let r = s.call("POST", "/messages", None, Some(json!({}))).await;
    assert_eq!(r.status, 401);
    let r = s.call("POST", "/messages", Some("ann"), None).await;
    assert_eq!(r.status, 400);
    // An image with attachments and no caption.
    let img = s
        .call("POST", "/messages", Some("bob"), Some(json!({"conversationId": conv, "messageType": "image",
            "attachments": [{"url": "https://cdn.example/p.jpg", "mimeType": "image/jpeg", "size": 2048, "name": "p.jpg"}]})))
        .await;
    assert_eq!(img.status, 201, "{img:?}");
    assert_eq!(
        img.json()["message"]["attachments"][0]["mimeType"],
        "image/jpeg"
    );
    // Idempotent with clientMsgId: the resend is 200, same id, stored once.
    let body = json!({"conversationId": conv, "message": "once", "clientMsgId": "k-1"});
    let first = s
        .call("POST", "/messages", Some("bob"), Some(body.clone()))
        .await;
    let again = s.call("POST", "/messages", Some("bob"), Some(body)).await;
    assert_eq!((first.status, again.status), (201, 200));
    assert_eq!(
        first.json()["message"]["messageId"],
        again.json()["message"]["messageId"]
    );
    assert_eq!(again.json()["duplicate"], true);

    // Unread for bob: ann's three messages; reading moves forward only, and ann's
    // sockets get a `read` receipt.
    let unread = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/unread"),
            Some("bob"),
            None,
        )
        .await
        .json();
    assert_eq!(unread["count"], 3);
    assert_eq!(unread["messages"].as_array().map(Vec::len), Some(3));
    assert_eq!(unread["lastReadMessageId"], Value::Null);
    let m2_id = m2["messageId"].as_str().expect("id");
    let r = s
        .call("PUT", &format!("/messages/{m2_id}/read"), Some("bob"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["moved"], true);
    let receipt = ann.next_of("read").await;
    assert_eq!(
        (receipt["userId"].clone(), receipt["messageId"].clone()),
        (json!("bob"), json!(m2_id))
    );
    let m1_id = m1["messageId"].as_str().expect("id");
    let r = s
        .call("PUT", &format!("/messages/{m1_id}/read"), Some("bob"), None)
        .await;
    assert_eq!(
        (
            r.json()["moved"].clone(),
            r.json()["lastReadMessageId"].clone()
        ),
        (json!(false), json!(m2_id))
    );
    let unread = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/unread"),
            Some("bob"),
            None,
        )
        .await
        .json();
    assert_eq!(unread["count"], 1);
    assert_eq!(unread["messages"][0]["messageId"], m3["messageId"]);
    for (user, path) in [
        ("cat", format!("/messages/{m1_id}/read")),
        ("bob", "/messages/123/read".into()),
        ("bob", "/messages/abc/read".into()),
    ] {
        let r = s.call("PUT", &path, Some(user), None).await;
        assert_eq!(
            (r.status, r.code()),
            (404, "message_not_found".into()),
            "{path}"
        );
    }

    // Reactions: one per user, replaceable, removable, counted in history; events.
    let react = |user: &'static str, r: &'static str| {
        let path = format!("/messages/{m1_id}/reaction/{r}");
        let s = &s;
        async move { s.call("PUT", &path, Some(user), None).await }
    };
    let r = react("bob", "like").await;
    assert_eq!(
        (r.status, r.json()["message"]["reactions"].clone()),
        (200, json!({"like": 1}))
    );
    let ev = ann.next_of("reaction").await;
    assert_eq!(
        (ev["userId"].clone(), ev["reaction"].clone()),
        (json!("bob"), json!("like"))
    );
    react("ann", "like").await;
    let r = react("bob", "love").await;
    assert_eq!(
        r.json()["message"]["reactions"],
        json!({"like": 1, "love": 1})
    );
    let r = react("bob", "meh").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["details"]["field"], "reaction");
    assert_eq!(react("cat", "like").await.status, 404);
    let r = s
        .call(
            "DELETE",
            &format!("/messages/{m1_id}/reaction"),
            Some("ann"),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["myReaction"].clone()),
        (200, Value::Null)
    );
    let hist = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history"),
            Some("bob"),
            None,
        )
        .await
        .json();
    let first = &hist["messages"][0];
    assert_eq!(first["messageId"], m1["messageId"]);
    assert_eq!(first["reactions"], json!({"love": 1}));

    // Typing over REST reaches the others, not the typist; bad values are 400.
    let r = s
        .call(
            "PUT",
            "/messages/typing/true",
            Some("bob"),
            Some(json!({"conversationId": conv})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let ev = ann.next_of("typing_indicator").await;
    assert_eq!(
        (ev["userId"].clone(), ev["isTyping"].clone()),
        (json!("bob"), json!(true))
    );
    let r = s
        .call(
            "PUT",
            "/messages/typing/maybe",
            Some("bob"),
            Some(json!({"conversationId": conv})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["details"]["field"].clone()),
        (400, json!("isTyping"))
    );
    let r = s
        .call("PUT", "/messages/typing/true", Some("bob"), Some(json!({})))
        .await;
    assert_eq!(r.json()["error"]["details"]["field"], "conversationId");
    let r = s
        .call(
            "PUT",
            "/messages/typing/true",
            Some("cat"),
            Some(json!({"conversationId": conv})),
        )
        .await;
    assert_eq!(r.status, 404);

    // Deletion: only the sender (or an admin); a tombstone stays in history.
    let r = s
        .call("DELETE", &format!("/messages/{m1_id}"), Some("bob"), None)
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden".into()));
    let r = s
        .call("DELETE", &format!("/messages/{m1_id}"), Some("cat"), None)
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .call("DELETE", &format!("/messages/{m1_id}"), Some("ann"), None)
        .await;
    assert_eq!(
        (
            r.status,
            r.json()["deleted"].clone(),
            r.json()["content"].clone()
        ),
        (200, json!(true), json!(""))
    );
    let ev = bob.next_of("message_deleted").await;
    assert_eq!(
        (ev["messageId"].clone(), ev["deletedBy"].clone()),
        (json!(m1_id), json!("ann"))
    );
    let hist = s
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history"),
            Some("bob"),
            None,
        )
        .await
        .json();
    assert_eq!(hist["messages"][0]["deleted"], true);
    let m3_id = m3["messageId"].as_str().expect("id");
    let r = s
        .call(
            "DELETE",
            &format!("/messages/{m3_id}"),
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "admins may delete: {r:?}");

    // A socket may join the conversation (members only) and send into it.
    bob.send_json(json!({"type": "join_room", "roomId": conv}))
        .await;
    bob.next_of("room_joined").await;
    let mut cat = s.socket("cat").await;
    cat.send_json(json!({"type": "join_room", "roomId": conv}))
        .await;
    let e = cat.next_of("error").await;
    assert_eq!(e["code"], "conversation_not_found");
    bob.publish(&conv, "over the socket", "ws-1").await;
    // The joined session gets it once (through the room, not again as a participant).
    let mut frames = Vec::new();
    while let Some(Event::Json(v)) = bob.next_within(std::time::Duration::from_millis(500)).await {
        frames.push(v);
    }
    let ack = frames
        .iter()
        .find(|v| v["type"] == "ack")
        .cloned()
        .expect("ack");
    let seen = frames
        .iter()
        .filter(|v| v["type"] == "message" && v["messageId"] == ack["messageId"])
        .count();
    let ev = ann.next_of("message").await;
    assert_eq!(
        (ev["content"].clone(), ev["messageId"].clone()),
        (json!("over the socket"), ack["messageId"].clone())
    );
    assert_eq!(seen, 1);
}

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
