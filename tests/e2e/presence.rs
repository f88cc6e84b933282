//! Presence: conversation partners hear each other come online and go offline without
//! joining anything; `get_online_users` / `get_user_status` (socket and REST) answer
//! only about users the caller shares a room or conversation with.

use serde_json::json;

use crate::support::{Client, Server};

async fn user_status(c: &mut Client, user: &str) -> serde_json::Value {
    c.send_json(json!({"type": "get_user_status", "userId": user}))
        .await;
    let v = c.next_of("user_status").await;
    assert_eq!(v["userId"], user, "{v}");
    v
}

#[tokio::test]
async fn partners_hear_online_and_offline_and_nobody_else_does() {
    let server = Server::start(&[]).await;
    let conv = server.conversation("bob", &["alice"]).await;
    let mut bob = server.socket("bob").await;
    let mut carol = server.socket("carol").await;

    let alice = server.socket("alice").await;
    let online = bob.next_of("user_status").await;
    assert_eq!(
        (online["userId"].as_str(), online["online"].as_bool()),
        (Some("alice"), Some(true)),
        "{online}"
    );
    assert!(online.get("lastSeen").is_none(), "{online}");

    // The conversation list shows who is online.
    let view = server
        .call("GET", &format!("/conversations/{conv}"), Some("bob"), None)
        .await
        .json();
    assert_eq!(view["onlineParticipantIds"], json!(["alice"]), "{view}");

    drop(alice);
    let offline = bob.next_of("user_status").await;
    assert_eq!(
        (offline["userId"].as_str(), offline["online"].as_bool()),
        (Some("alice"), Some(false)),
        "{offline}"
    );
    assert!(
        offline["lastSeen"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{offline}"
    );
    let view = server
        .call("GET", &format!("/conversations/{conv}"), Some("bob"), None)
        .await
        .json();
    assert_eq!(view["onlineParticipantIds"], json!([]), "{view}");

    // Carol shares nothing with alice: her socket heard none of it.
    carol.quiet().await;
    assert!(
        server
            .metric("roomcast_presence_updates_total", "change=\"online\"")
            .await
            >= 3.0
    );
    assert!(
        server
            .metric("roomcast_presence_updates_total", "change=\"offline\"")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn user_status_is_told_to_partners_and_room_mates_only() {
    let server = Server::start(&[]).await;
    server.conversation("bob", &["alice"]).await;
    let mut alice = server.socket("alice").await;
    let mut bob = server.socket("bob").await;
    let mut carol = server.socket("carol").await;

    let seen_by_partner = user_status(&mut bob, "alice").await;
    assert_eq!(seen_by_partner["online"], true, "{seen_by_partner}");
    // A stranger gets exactly what an unknown user gets: offline, never seen.
    let seen_by_stranger = user_status(&mut carol, "alice").await;
    let unknown = user_status(&mut carol, "nobody-at-all").await;
    assert_eq!(seen_by_stranger["online"], false);
    assert_eq!(
        seen_by_stranger.as_object().map(|o| o.len()),
        unknown.as_object().map(|o| o.len()),
        "{seen_by_stranger} vs {unknown}"
    );

    // Sharing a public room makes the status visible to the room mate.
    alice
        .send_json(json!({"type": "join_room", "roomId": "lobby"}))
        .await;
    alice.next_of("room_joined").await;
    carol
        .send_json(json!({"type": "join_room", "roomId": "lobby"}))
        .await;
    carol.next_of("room_joined").await;
    assert_eq!(user_status(&mut carol, "alice").await["online"], true);

    // Over REST: the partner sees it; a stranger reads an unknown user.
    let r = server
        .call("GET", "/api/presence/users/alice", Some("bob"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["online"], true);
    let r = server
        .call("GET", "/api/presence/users/alice", Some("dave"), None)
        .await;
    assert_eq!(r.json(), json!({"userId": "alice", "online": false}));
    let r = server
        .call("GET", "/api/presence/users/bad%20id", Some("dave"), None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_field".to_owned()),
        "{r:?}"
    );

    // Bad input on the socket is a typed error, not silence.
    carol
        .send_json(json!({"type": "get_user_status", "userId": ""}))
        .await;
    assert_eq!(carol.next_of("error").await["code"], "invalid_field");
}

#[tokio::test]
async fn online_users_of_a_room_a_conversation_and_the_partners() {
    let server = Server::start(&[]).await;
    let conv = server.conversation("bob", &["alice", "erin"]).await;
    let _alice = server.socket("alice").await;
    let mut bob = server.socket("bob").await;

    bob.send_json(json!({"type": "get_online_users", "roomId": conv}))
        .await;
    let v = bob.next_of("online_users").await;
    assert_eq!(
        (v["roomId"].as_str(), &v["users"]),
        (Some(conv.as_str()), &json!(["alice", "bob"])),
        "{v}"
    );
    bob.send_json(json!({"type": "get_online_users"})).await;
    assert_eq!(bob.next_of("online_users").await["users"], json!(["alice"]));

    // A public room: its members, to a member; a non-member is refused.
    let mut carol = server.connect("carol", "hall").await;
    carol.next_of("room_joined").await;
    let mut dave = server.connect("dave", "hall").await;
    dave.next_of("room_joined").await;
    carol
        .send_json(json!({"type": "get_online_users", "roomId": "hall"}))
        .await;
    assert_eq!(
        carol.next_of("online_users").await["users"],
        json!(["carol", "dave"])
    );
    bob.send_json(json!({"type": "get_online_users", "roomId": "hall"}))
        .await;
    assert_eq!(bob.next_of("error").await["code"], "not_member");
    // A conversation the caller is not part of looks like a missing one.
    carol
        .send_json(json!({"type": "get_online_users", "roomId": conv}))
        .await;
    assert_eq!(
        carol.next_of("error").await["code"],
        "conversation_not_found"
    );

    // REST, the same answers.
    let r = server
        .call(
            "GET",
            &format!("/api/presence/online?roomId={conv}"),
            Some("erin"),
            None,
        )
        .await;
    assert_eq!(r.json()["users"], json!(["alice", "bob"]), "{r:?}");
    let r = server
        .call("GET", "/api/presence/online", Some("erin"), None)
        .await;
    assert_eq!(r.json()["users"], json!(["alice", "bob"]), "{r:?}");
    let r = server
        .call(
            "GET",
            "/api/presence/online?roomId=hall",
            Some("carol"),
            None,
        )
        .await;
    assert_eq!(r.json()["users"], json!(["carol", "dave"]), "{r:?}");
    let r = server
        .call(
            "GET",
            "/api/presence/online?roomId=hall",
            Some("erin"),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (404, "not_member".to_owned()),
        "{r:?}"
    );
    let r = server
        .call(
            "GET",
            &format!("/api/presence/online?roomId={conv}"),
            Some("carol"),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (404, "conversation_not_found".to_owned()),
        "{r:?}"
    );
}
