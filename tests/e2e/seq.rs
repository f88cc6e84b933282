//! Per-room `seq`: every message of a room gets the next number, 1, 2, 3, ..., on the
//! frame members see, on the sender's ack and in history; it continues across a restart
//! (the room's position is read back from the store) and across socket and REST sends.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::support::{Event, Server};

fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

#[tokio::test]
async fn seq_counts_each_room_without_gaps_across_a_restart() {
    let mut server = Server::start(&[]).await;
    let mut alice = server.connect("alice", "r1").await;
    alice.next_of("room_joined").await;
    alice
        .send_json(json!({"type": "join_room", "roomId": "r2"}))
        .await;
    alice.next_of("room_joined").await;
    let mut bob = server.connect("bob", "r1").await;
    bob.next_of("room_joined").await;

    for i in 0..10 {
        let room = if i % 2 == 0 { "r1" } else { "r2" };
        alice
            .publish(room, &format!("m{i}"), &format!("c{i}"))
            .await;
    }
    // Acks and echoes: seq per room, in order, no gaps.
    let mut acked: HashMap<String, Vec<u64>> = HashMap::new();
    let mut echoed: HashMap<String, Vec<u64>> = HashMap::new();
    while acked.values().map(Vec::len).sum::<usize>() < 10
        || echoed.values().map(Vec::len).sum::<usize>() < 10
    {
        match alice.next().await {
            Event::Json(v) if v["type"] == "ack" => {
                acked
                    .entry(v["roomId"].as_str().unwrap_or("").into())
                    .or_default()
                    .push(seq(&v));
            }
            Event::Json(v) if v["type"] == "message" => {
                echoed
                    .entry(v["roomId"].as_str().unwrap_or("").into())
                    .or_default()
                    .push(seq(&v));
            }
            Event::Json(_) => {}
            other => panic!("{other:?}"),
        }
    }
    for room in ["r1", "r2"] {
        assert_eq!(acked[room], vec![1, 2, 3, 4, 5], "acks of {room}");
        assert_eq!(echoed[room], vec![1, 2, 3, 4, 5], "echoes of {room}");
    }
    let mut bob_seen = Vec::new();
    while bob_seen.len() < 5 {
        bob_seen.push(seq(&bob.next_of("message").await));
    }
    assert_eq!(bob_seen, vec![1, 2, 3, 4, 5]);
    bob.quiet().await;
    let stored: Vec<u64> = server.history("r1").await.iter().map(seq).collect();
    assert_eq!(stored, vec![1, 2, 3, 4, 5]);

    // After a restart the room continues where it was.
    drop((alice, bob));
    server.restart().await;
    let mut carol = server.connect("carol", "r1").await;
    let joined = carol.next_of("room_joined").await;
    carol.publish("r1", "after restart", "c-after").await;
    let mut got = (None, None);
    while got.0.is_none() || got.1.is_none() {
        let Event::Json(v) = carol.next().await else {
            panic!("closed")
        };
        match v["type"].as_str() {
            Some("ack") => got.0 = Some(seq(&v)),
            Some("message") => got.1 = Some(seq(&v)),
            _ => {}
        }
    }
    assert_eq!(got, (Some(6), Some(6)), "joined: {joined}");
    // Joining a room whose position is known tells it.
    let mut dave = server.connect("dave", "r1").await;
    assert_eq!(dave.next_of("room_joined").await["lastSeq"], 6);
}

#[tokio::test]
async fn conversation_seq_is_shared_by_socket_and_rest_sends() {
    let server = Server::start(&[]).await;
    let conv = server.conversation("alice", &["bob"]).await;
    let mut alice = server.socket("alice").await;
    alice
        .send_json(json!({"type": "join_room", "roomId": conv}))
        .await;
    alice.next_of("room_joined").await;
    alice.publish(&conv, "over the socket", "s1").await;
    // The echo may come before the ack (fan-out does not wait for the disk).
    let mut delivered = Vec::new();
    let mut ack = None;
    while ack.is_none() {
        let v = alice.next_of_any(&["ack", "message"]).await;
        if v["type"] == "ack" {
            ack = Some(seq(&v));
        } else {
            delivered.push(seq(&v));
        }
    }
    assert_eq!(ack, Some(1));
    let r = server
        .call(
            "POST",
            "/messages",
            Some("bob"),
            Some(json!({"conversationId": conv, "message": "over REST", "clientMsgId": "r1"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(seq(&r.json()["message"]), 2, "{r:?}");
    while delivered.len() < 2 {
        delivered.push(seq(&alice.next_of("message").await));
    }
    assert_eq!(delivered, vec![1, 2]);
    alice.quiet().await;
    let page = server
        .call(
            "GET",
            &format!("/conversations/{conv}/messages/history"),
            Some("bob"),
            None,
        )
        .await
        .json();
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(seq)
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![1, 2], "{page}");
}
