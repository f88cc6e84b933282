//! Budgets through the real server: every REST route's group budget with its
//! `RateLimit-*` headers and 429s, the message allowance shared by the socket and REST
//! (told by `get_quota` and the send's headers), and one-time pre-keys that another
//! user cannot drain.

use serde_json::json;

use crate::keys::public_key;
use crate::support::{Resp, Server};

/// The `RateLimit-*` headers as numbers: (limit, remaining, reset seconds).
fn quota(r: &Resp) -> (u64, u64, u64) {
    let n = |name: &str| {
        r.header(name)
            .unwrap_or_else(|| panic!("no {name} header: {r:?}"))
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    (
        n("ratelimit-limit"),
        n("ratelimit-remaining"),
        n("ratelimit-reset"),
    )
}

#[tokio::test]
async fn every_rest_group_has_its_own_budget_told_in_headers_and_refused_with_429() {
    let s = Server::start(&[
        ("ROOMCAST_API_READS_PER_MIN", "3"),
        ("ROOMCAST_API_WRITES_PER_MIN", "2"),
        ("RATE_LIMIT_MAX_MESSAGES", "5"),
    ])
    .await;
    // Writes: creating the conversation is one of ann's two.
    let conv = s.conversation("ann", &["bob"]).await;
    // Reads: three per minute, each response says what is left.
    let mut left = Vec::new();
    for _ in 0..3 {
        let r = s.call("GET", "/conversations", Some("ann"), None).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("ratelimit-policy").as_deref(), Some("3;w=60"));
        let (limit, remaining, reset) = quota(&r);
        assert_eq!(limit, 3);
        assert!((1..=20).contains(&reset), "reset {reset}");
        left.push(remaining);
    }
    assert_eq!(left, [2, 1, 0]);
    let r = s
        .call("GET", &format!("/conversations/{conv}"), Some("ann"), None)
        .await;
    assert_eq!((r.status, r.code()), (429, "rate_limited".into()), "{r:?}");
    let retry_ms = r.json()["error"]["details"]["retryAfterMs"]
        .as_u64()
        .expect("retryAfterMs");
    assert!((1..=20_000).contains(&retry_ms), "one refill: {retry_ms}");
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("secs");
    assert_eq!(retry_after, retry_ms.div_ceil(1000));
    assert_eq!(quota(&r).1, 0);
    // Another user's budget is untouched, and ann's writes are a budget of their own.
    let r = s.call("GET", "/conversations", Some("bob"), None).await;
    assert_eq!((r.status, quota(&r).1), (200, 2));
    let r = s
        .call(
            "POST",
            "/conversations",
            Some("ann"),
            Some(json!({"participantIds": ["carol"]})),
        )
        .await;
    assert_eq!((r.status, quota(&r).1), (201, 0), "{r:?}");
    let r = s
        .call(
            "POST",
            "/conversations",
            Some("ann"),
            Some(json!({"participantIds": ["dave"]})),
        )
        .await;
    assert_eq!((r.status, r.code()), (429, "rate_limited".into()), "{r:?}");

    // Sending a message takes from the message allowance instead, and says so; the
    // socket asks for the same allowance with `get_quota` without taking from it.
    let mut ann = s.socket("ann").await;
    ann.send_json(json!({"type": "get_quota"})).await;
    let q = ann.next_of("quota").await;
    assert_eq!(
        (
            q["limit"].clone(),
            q["remaining"].clone(),
            q["windowMs"].clone(),
            q["resetMs"].clone()
        ),
        (json!(5), json!(5), json!(60_000), json!(0)),
        "{q}"
    );
    ann.send_json(json!({"type": "join_room", "roomId": conv}))
        .await;
    ann.next_of("room_joined").await;
    ann.publish(&conv, "over the socket", "q-1").await;
    ann.next_of("ack").await;
    let r = s.send_text("ann", &conv, "over REST", "q-2").await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("ratelimit-policy").as_deref(), Some("5;w=60"));
    let (limit, remaining, reset) = quota(&r);
    assert_eq!((limit, remaining), (5, 3));
    assert!(
        (59..=60).contains(&reset),
        "the first send leaves in ~60 s: {reset}"
    );
    ann.send_json(json!({"type": "get_quota"})).await;
    let q = ann.next_of("quota").await;
    assert_eq!(q["remaining"], 3, "{q}");
    let reset_ms = q["resetMs"].as_u64().expect("resetMs");
    assert!((55_000..=60_000).contains(&reset_ms), "{q}");
    // Asking took nothing: three more are admitted, the next is refused.
    for i in 0..3 {
        let r = s.send_text("ann", &conv, "more", &format!("m-{i}")).await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(quota(&r).1, 2 - i);
    }
    let r = s.send_text("ann", &conv, "one too many", "m-x").await;
    assert_eq!((r.status, r.code()), (429, "rate_limited".into()), "{r:?}");
    assert_eq!(quota(&r).1, 0);
    ann.send_json(json!({"type": "get_quota"})).await;
    assert_eq!(ann.next_of("quota").await["remaining"], 0);
    // Refusals are counted by budget.
    s.wait_metric("roomcast_rate_limited_total", "limit=\"api_reads\"", 1.0)
        .await;
    s.wait_metric("roomcast_rate_limited_total", "limit=\"api_writes\"", 1.0)
        .await;
    s.wait_metric("roomcast_rate_limited_total", "limit=\"messages\"", 1.0)
        .await;
}

#[tokio::test]
async fn a_partner_cannot_drain_anothers_one_time_pre_keys() {
    let s = Server::start(&[
        ("ROOMCAST_PREKEY_FETCHES_PER_PARTNER_PER_HOUR", "2"),
        ("ROOMCAST_LOG_FORMAT", "json"),
    ])
    .await;
    s.conversation("mallory", &["alice"]).await;
    s.conversation("carol", &["alice"]).await;
    let keys: Vec<_> = (1..=6u8)
        .map(|i| json!({"keyId": i, "publicKey": public_key(i)}))
        .collect();
    let r = s
        .call(
            "PUT",
            "/keys/preKeys",
            Some("alice"),
            Some(json!({"preKeys": keys})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let take = |who: &'static str| {
        let s = &s;
        async move {
            s.call("GET", "/keys/users/alice/preKey", Some(who), None)
                .await
        }
    };
    // Mallory gets two of alice's keys an hour, and the headers tell that budget.
    for left in [1, 0] {
        let r = take("mallory").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("ratelimit-policy").as_deref(), Some("2;w=3600"));
        assert_eq!(quota(&r).1, left);
    }
    for _ in 0..5 {
        let r = take("mallory").await;
        assert_eq!((r.status, r.code()), (429, "rate_limited".into()), "{r:?}");
        let retry_ms = r.json()["error"]["details"]["retryAfterMs"]
            .as_u64()
            .expect("retryAfterMs");
        assert!(
            retry_ms > 1_700_000,
            "half an hour for one more: {retry_ms}"
        );
    }
    // Alice's supply is intact for her other partners: four keys are left.
    let mut handed = 0;
    for _ in 0..2 {
        let r = take("carol").await;
        assert_eq!(r.status, 200, "{r:?}");
        handed += 1;
    }
    assert_eq!(handed, 2);
    // Mallory's refusals took nothing.
    s.wait_metric(
        "roomcast_prekeys_taken_total",
        "outcome=\"handed_out\"",
        4.0,
    )
    .await;
    s.wait_metric(
        "roomcast_rate_limited_total",
        "limit=\"prekey_partner\"",
        5.0,
    )
    .await;
    // The refusal is logged at warn with who asked for whose keys.
    let logged: Vec<serde_json::Value> = s
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"] == "rate limit exceeded"
                && v["fields"]["limit"] == "prekey_partner"
        })
        .collect();
    assert!(!logged.is_empty(), "no warning for the refused fetches");
    assert_eq!(logged[0]["level"], "WARN");
    assert_eq!(logged[0]["fields"]["user_id"], "mallory");
    assert_eq!(logged[0]["fields"]["target"], "alice");
}
