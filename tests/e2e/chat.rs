//! The chat REST API of seed 000 through the real server: conversations, messages,
//! receipts, reactions, typing, deletion, and the WebSocket event each mutation emits.

use serde_json::{Value, json};

use crate::support::{Event, Server};

pub(crate) async fn send(s: &Server, me: &str, conv: &str, text: &str) -> Value {
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
pub(crate) async fn page_ids(
    s: &Server,
    user: &str,
    conv: &str,
    query: &str,
) -> (Vec<String>, bool) {
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
    // Any single emoji is a reaction too (percent-encoded in the path); two are not.
    let encode = |e: &str| -> String { e.bytes().map(|b| format!("%{b:02X}")).collect() };
    let thumbs = "👍🏽";
    let r = s
        .call(
            "PUT",
            &format!("/messages/{m1_id}/reaction/{}", encode(thumbs)),
            Some("bob"),
            None,
        )
        .await;
    let mut counts = serde_json::Map::new();
    counts.insert(thumbs.to_owned(), json!(1));
    assert_eq!(
        (r.status, r.json()["message"]["reactions"].clone()),
        (200, Value::Object(counts)),
        "{r:?}"
    );
    loop {
        let ev = ann.next_of("reaction").await;
        if ev["reaction"] == thumbs {
            assert_eq!(ev["userId"], "bob");
            break;
        }
    }
    for not_one in ["😀😀", "a", "👍🏽 "] {
        let r = s
            .call(
                "PUT",
                &format!("/messages/{m1_id}/reaction/{}", encode(not_one)),
                Some("bob"),
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["details"]["field"].clone()),
            (400, json!("reaction")),
            "{not_one:?}"
        );
    }

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
