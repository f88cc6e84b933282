//! Rooms: join, leave, member counts, presence and typing.

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn join_leave_presence_and_member_counts() {
    let server = Server::start(&[]).await;
    let mut alice = server.connect("alice", "general").await;
    assert_eq!(alice.next_of("room_joined").await["memberCount"], 1);

    let mut bob = server.connect("bob", "general").await;
    assert_eq!(bob.next_of("room_joined").await["memberCount"], 2);
    let p = alice.next_of("presence").await;
    assert_eq!(
        (
            p["userId"].as_str(),
            p["status"].as_str(),
            p["memberCount"].as_i64()
        ),
        (Some("bob"), Some("online"), Some(2))
    );
    assert_eq!(p["username"], "bob-name");

    // A second connection of the same user does not change the member count.
    let mut bob2 = server.connect("bob", "general").await;
    assert_eq!(bob2.next_of("room_joined").await["memberCount"], 2);

    // Joining another room over the same connection.
    bob.send_json(json!({"type": "join_room", "roomId": "development"}))
        .await;
    let j = bob.next_of("room_joined").await;
    assert_eq!(
        (j["roomId"].as_str(), j["memberCount"].as_i64()),
        (Some("development"), Some(1))
    );

    bob.send_json(json!({"type": "leave_room", "roomId": "general"}))
        .await;
    assert_eq!(bob.next_of("room_left").await["roomId"], "general");
    // bob still has bob2 in general: no offline yet. Closing bob2 makes bob leave.
    drop(bob2);
    let p = alice.next_of("presence").await;
    assert_eq!(
        (
            p["userId"].as_str(),
            p["status"].as_str(),
            p["memberCount"].as_i64()
        ),
        (Some("bob"), Some("offline"), Some(1))
    );

    // Leaving a room one is not in is an error, and the connection stays.
    bob.send_json(json!({"type": "leave_room", "roomId": "general"}))
        .await;
    assert_eq!(bob.next_of("error").await["code"], "not_member");
    // Sending to a room one has not joined is refused.
    bob.send_json(json!({"type": "message", "roomId": "general", "content": "hi"}))
        .await;
    assert_eq!(bob.next_of("error").await["code"], "not_member");
    bob.quiet().await;
}

#[tokio::test]
async fn typing_reaches_the_other_members_only() {
    let server = Server::start(&[]).await;
    let mut alice = server.connect("alice", "r").await;
    alice.next_of("room_joined").await;
    let mut bob = server.connect("bob", "r").await;
    bob.next_of("room_joined").await;
    alice.next_of("presence").await;

    alice
        .send_json(json!({"type": "typing", "roomId": "r", "isTyping": true}))
        .await;
    let t = bob.next_of("typing_indicator").await;
    assert_eq!(
        (
            t["userId"].as_str(),
            t["roomId"].as_str(),
            t["isTyping"].as_bool()
        ),
        (Some("alice"), Some("r"), Some(true))
    );
    // The sender does not get its own indicator: the next thing it sees is its pong.
    alice.send_json(json!({"type": "ping"})).await;
    match alice.next().await {
        crate::support::Event::Json(v) => assert_eq!(v["type"], "pong", "got {v}"),
        other => panic!("{other:?}"),
    }
    // Typing is never stored.
    assert!(server.history("r").await.is_empty());
}

#[tokio::test]
async fn rooms_per_connection_and_connections_per_user_are_limited() {
    let server = Server::start(&[
        ("ROOMCAST_MAX_ROOMS_PER_CONNECTION", "2"),
        ("ROOMCAST_MAX_CONNECTIONS_PER_USER", "2"),
    ])
    .await;
    let mut a = server.connect("alice", "one").await;
    a.next_of("room_joined").await;
    a.send_json(json!({"type": "join_room", "roomId": "two"}))
        .await;
    a.next_of("room_joined").await;
    a.send_json(json!({"type": "join_room", "roomId": "three"}))
        .await;
    assert_eq!(a.next_of("error").await["code"], "too_many_rooms");

    let _b = server.connect("alice", "one").await;
    match server
        .ws(&format!("/ws?token={}", server.token("alice")))
        .await
    {
        Ok(_) => panic!("third connection accepted"),
        Err((status, body)) => {
            assert_eq!(status, 429);
            assert!(body.contains("too_many_connections"), "{body}");
        }
    }
}

#[tokio::test]
async fn connection_attempts_per_ip_are_rate_limited() {
    let server = Server::start(&[("ROOMCAST_CONNECT_RATE_PER_IP", "3")]).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let status = match server
            .ws(&format!("/ws?token={}", server.token(&format!("u{i}"))))
            .await
        {
            Ok(_) => 101,
            Err((s, _)) => s,
        };
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], &[101, 101, 101]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
}
