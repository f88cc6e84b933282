//! Fan-out: every member gets every message once, in the same order; acks; dedupe;
//! slow consumers are cut off without hurting the others.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::support::{Client, Event, Server};

#[tokio::test]
async fn fan_out_to_sixty_members_is_complete_ordered_and_duplicate_free() {
    let server = Server::start(&[]).await;
    const MEMBERS: usize = 60;
    const PUBLISHERS: usize = 3;
    const PER_PUBLISHER: usize = 40;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let mut c = server.connect(&format!("m{i}"), "big").await;
        c.next_of("room_joined").await;
        members.push(c);
    }
    // Publishers are members 0..PUBLISHERS, sending concurrently.
    let mut publishers: Vec<Client> = members.drain(..PUBLISHERS).collect();
    let mut sends = Vec::new();
    for (p, mut client) in publishers.drain(..).enumerate() {
        sends.push(tokio::spawn(async move {
            for n in 0..PER_PUBLISHER {
                client
                    .publish("big", &format!("p{p}-{n}"), &format!("p{p}-c{n}"))
                    .await;
            }
            // Collect acks and deliveries of this publisher's connection.
            let mut acks = 0;
            let mut seen = Vec::new();
            while acks < PER_PUBLISHER || seen.len() < PUBLISHERS * PER_PUBLISHER {
                match client.next().await {
                    Event::Json(v) if v["type"] == "ack" => acks += 1,
                    Event::Json(v) if v["type"] == "message" => seen.push(v),
                    Event::Json(_) => {}
                    other => panic!("publisher {p}: {other:?}"),
                }
            }
            seen
        }));
    }
    let expected = PUBLISHERS * PER_PUBLISHER;
    let mut orders: Vec<Vec<String>> = Vec::new();
    for s in sends {
        let seen = s.await.expect("publisher task");
        orders.push(
            seen.iter()
                .map(|v| v["messageId"].as_str().unwrap_or_default().to_owned())
                .collect(),
        );
    }
    for (i, member) in members.iter_mut().enumerate() {
        let mut seen: Vec<Value> = Vec::with_capacity(expected);
        while seen.len() < expected {
            let v = member.next_of("message").await;
            seen.push(v);
        }
        // Nothing more arrives: no duplicates (publishers leaving may show as presence).
        member.quiet_except(&["presence"]).await;
        let contents: Vec<&str> = seen
            .iter()
            .map(|v| v["content"].as_str().unwrap_or_default())
            .collect();
        let mut by_publisher: HashMap<&str, Vec<usize>> = HashMap::new();
        for c in &contents {
            let (p, n) = c.split_once('-').expect("content shape");
            by_publisher
                .entry(p)
                .or_default()
                .push(n.parse().expect("seq"));
        }
        for p in 0..PUBLISHERS {
            let got = &by_publisher[format!("p{p}").as_str()];
            assert_eq!(
                got,
                &(0..PER_PUBLISHER).collect::<Vec<_>>(),
                "member {i}: publisher {p} out of order or incomplete"
            );
        }
        orders.push(
            seen.iter()
                .map(|v| v["messageId"].as_str().unwrap_or_default().to_owned())
                .collect(),
        );
        // Ids increase in delivery order.
        let ids: Vec<u64> = seen
            .iter()
            .map(|v| {
                v["messageId"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
            })
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "member {i}: ids not increasing"
        );
    }
    // Every member saw the same total order.
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "members disagree on order"
    );
    // And history holds exactly what was delivered.
    let history: Vec<String> = server
        .history("big")
        .await
        .iter()
        .map(|v| v["messageId"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(history, orders[0]);
}

#[tokio::test]
async fn acks_carry_ids_and_a_resend_is_neither_stored_nor_delivered_twice() {
    let server = Server::start(&[]).await;
    let mut alice = server.connect("alice", "r").await;
    alice.next_of("room_joined").await;
    let mut bob = server.connect("bob", "r").await;
    bob.next_of("room_joined").await;

    alice.send_json(json!({"type": "message", "roomId": "r", "content": "hello", "clientMsgId": "c-1", "timestamp": "2024-01-01T12:00:00Z"})).await;
    let ack = alice.next_of("ack").await;
    assert_eq!(ack["clientMsgId"], "c-1");
    assert!(ack.get("duplicate").is_none());
    let id = ack["messageId"].as_str().expect("id").to_owned();
    let m = bob.next_of("message").await;
    assert_eq!(
        (
            m["messageId"].as_str(),
            m["clientMsgId"].as_str(),
            m["content"].as_str()
        ),
        (Some(id.as_str()), Some("c-1"), Some("hello"))
    );
    assert_eq!(
        (
            m["userId"].as_str(),
            m["username"].as_str(),
            m["roomId"].as_str()
        ),
        (Some("alice"), Some("alice-name"), Some("r"))
    );
    assert!(
        m["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{m}"
    );

    // The resend after a "lost ack": same id back, flagged duplicate, nothing delivered.
    alice
        .send_json(
            json!({"type": "message", "roomId": "r", "content": "hello", "clientMsgId": "c-1"}),
        )
        .await;
    let ack2 = alice.next_of("ack").await;
    assert_eq!(
        (ack2["messageId"].as_str(), ack2["duplicate"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    bob.quiet().await;
    assert_eq!(server.history("r").await.len(), 1);

    // After a restart the store still knows the clientMsgId.
    drop((alice, bob));
    let mut server = server;
    server.restart().await;
    let mut alice = server.connect("alice", "r").await;
    alice.next_of("room_joined").await;
    let mut bob = server.connect("bob", "r").await;
    bob.next_of("room_joined").await;
    alice
        .send_json(
            json!({"type": "message", "roomId": "r", "content": "hello", "clientMsgId": "c-1"}),
        )
        .await;
    let ack3 = alice.next_of("ack").await;
    assert_eq!(
        (ack3["messageId"].as_str(), ack3["duplicate"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    bob.quiet().await;
    assert_eq!(server.history("r").await.len(), 1);
}

#[tokio::test]
async fn a_member_that_stops_reading_is_closed_with_1013_and_others_keep_receiving() {
    let server = Server::start(&[
        ("ROOMCAST_OUTBOX_MAX_BYTES", "65536"),
        ("MAX_MESSAGE_LENGTH", "8000"),
        ("ROOMCAST_WRITE_TIMEOUT_MS", "60000"),
    ])
    .await;
    // The slow member: a tiny receive buffer and no reads from here on.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(server.addr).await.expect("connect");
    let mut slow = Client::connect_on(
        stream,
        server.addr,
        &format!("/ws?token={}&roomId=r", server.token("slow")),
        &[],
    )
    .await
    .expect("upgrade");
    slow.next_of("room_joined").await;

    let mut reader = server.connect("reader", "r").await;
    reader.next_of("room_joined").await;
    let mut publisher = server.connect("pub", "r").await;
    publisher.next_of("room_joined").await;

    // Rounds of 20 x 2 KB stay under the 64 KiB cap for members that read.
    let body = "x".repeat(2000);
    let mut sent = 0;
    let mut received = 0;
    // Publish until the server reports the slow consumer; the reader and the publisher
    // (which gets its own messages and acks) keep up.
    'outer: for _round in 0..1000 {
        for _ in 0..20 {
            publisher.publish("r", &body, &format!("c{sent}")).await;
            sent += 1;
        }
        let (mut acks, mut echoes) = (0, 0);
        while acks < 20 || echoes < 20 {
            match publisher.next().await {
                Event::Json(v) if v["type"] == "ack" => acks += 1,
                Event::Json(v) if v["type"] == "message" => echoes += 1,
                Event::Json(_) => {}
                other => panic!("publisher: {other:?}"),
            }
        }
        while received < sent {
            reader.next_of("message").await;
            received += 1;
        }
        if server
            .metric("roomcast_slow_consumer_disconnects_total", "")
            .await
            >= 1.0
        {
            break 'outer;
        }
    }
    assert!(
        server
            .metric("roomcast_slow_consumer_disconnects_total", "")
            .await
            >= 1.0,
        "no slow consumer after {sent} messages"
    );
    // Cut near the caps: the 64 KiB outbox plus the socket's fixed send buffer
    // (ROOMCAST_SOCKET_SEND_BUFFER_BYTES, 256 KiB, doubled by Linux) plus the slow
    // member's tiny receive buffer; with the kernel's autotuning the send buffer alone
    // would have absorbed megabytes first.
    let bytes = sent * body.len();
    assert!(
        bytes < 1_200_000,
        "the slow member held {bytes} bytes before it was cut"
    );
    // The reader got everything, and keeps receiving after the cut.
    assert_eq!(received, sent);
    publisher.publish("r", "after", "after").await;
    assert_eq!(reader.next_of("message").await["content"], "after");
    // The slow member, reading at last, finds the 1013 close after what was written.
    assert_eq!(slow.closed().await, 1013);
    assert_eq!(
        server
            .metric("roomcast_slow_consumer_disconnects_total", "")
            .await,
        1.0,
        "only the slow member was cut"
    );
}
