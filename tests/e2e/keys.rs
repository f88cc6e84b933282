//! The Signal key directory through the real server: uploads validated as libsignal
//! encodes keys, fetches only between users who share a conversation, one-time
//! pre-keys handed out exactly once under 50 concurrent fetchers, and `prekeys_low`.

use roomcast_engine::keys::encode_base64 as b64;
use serde_json::{Value, json};

use crate::support::Server;

/// A Curve25519 public key as libsignal serialises it (0x05 + 32 bytes).
pub(crate) fn public_key(seed: u8) -> String {
    let mut k = vec![0x05];
    k.extend((0..32).map(|i| seed.wrapping_add(i)));
    b64(&k)
}

async fn put(s: &Server, user: &str, path: &str, body: Value) -> crate::support::Resp {
    s.call("PUT", path, Some(user), Some(body)).await
}

#[tokio::test]
async fn keys_are_validated_private_to_partners_and_pre_keys_go_out_once() {
    let s = Server::start(&[("ROOMCAST_PREKEY_LOW_THRESHOLD", "5")]).await;
    let r = s
        .call(
            "POST",
            "/conversations",
            Some("bob"),
            Some(json!({"participantIds": ["ann"]})),
        )
        .await;
    assert_eq!(r.status, 201);

    // Validation: encoding, length, type byte, signature length, key ids; field named.
    let bad = [
        (
            "/keys/identityKey",
            json!({"identityKey": "not base64!", "keyId": 1}),
            "identityKey",
        ),
        (
            "/keys/identityKey",
            json!({"identityKey": b64(&[5u8; 32]), "keyId": 1}),
            "identityKey",
        ),
        (
            "/keys/identityKey",
            json!({"identityKey": b64(&[4u8; 33]), "keyId": 1}),
            "identityKey",
        ),
        (
            "/keys/identityKey",
            json!({"identityKey": public_key(1), "keyId": 16_777_216}),
            "keyId",
        ),
        (
            "/keys/identityKey",
            json!({"identityKey": public_key(1)}),
            "keyId",
        ),
        (
            "/keys/signedPreKey",
            json!({"keyId": 1, "publicKey": public_key(2), "signature": b64(&[1u8; 63])}),
            "signature",
        ),
        ("/keys/preKeys", json!({"preKeys": []}), "preKeys"),
        (
            "/keys/preKeys",
            json!({"preKeys": [{"keyId": 1, "publicKey": public_key(3)}, {"keyId": 1, "publicKey": public_key(4)}]}),
            "preKeys[1].keyId",
        ),
        (
            "/keys/preKeys",
            json!({"preKeys": [{"keyId": 1, "publicKey": "AAAA"}]}),
            "preKeys[0].publicKey",
        ),
    ];
    for (path, body, field) in bad {
        let r = put(&s, "ann", path, body.clone()).await;
        assert_eq!(r.status, 400, "{path} {body}: {r:?}");
        assert_eq!(
            r.json()["error"]["details"]["field"],
            field,
            "{path} {body}"
        );
    }
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"keyId": i, "publicKey": public_key(i as u8)}))
        .collect();
    let r = put(&s, "ann", "/keys/preKeys", json!({"preKeys": too_many})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        s.call("PUT", "/keys/identityKey", None, Some(json!({})))
            .await
            .status,
        401
    );

    // Uploads.
    let r = put(
        &s,
        "ann",
        "/keys/identityKey",
        json!({"identityKey": public_key(9), "keyId": 42}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["saved"].clone()),
        (200, json!(true)),
        "{r:?}"
    );
    let r = put(
        &s,
        "ann",
        "/keys/signedPreKey",
        json!({"keyId": 7, "signedPreKey": public_key(8), "signature": b64(&[3u8; 64])}),
    )
    .await;
    assert_eq!(r.status, 200, "the seed's field name works: {r:?}");
    let keys: Vec<Value> = (1..=20)
        .map(|i| json!({"keyId": i, "publicKey": public_key(i as u8)}))
        .collect();
    let r = put(&s, "ann", "/keys/preKeys", json!({"preKeys": keys})).await;
    assert_eq!((r.status, r.json()["total"].clone()), (200, json!(20)));

    // Privacy: bob shares a conversation with ann; cat does not and cannot tell keys exist.
    let ik = s
        .call("GET", "/keys/users/ann/identityKey", Some("bob"), None)
        .await;
    assert_eq!(
        (
            ik.status,
            ik.json()["identityKey"].clone(),
            ik.json()["keyId"].clone()
        ),
        (200, json!(public_key(9)), json!(42))
    );
    let spk = s
        .call("GET", "/keys/users/ann/signedPreKey", Some("bob"), None)
        .await;
    assert_eq!(spk.json()["keyId"], 7);
    for what in ["identityKey", "signedPreKey", "preKey"] {
        let r = s
            .call("GET", &format!("/keys/users/ann/{what}"), Some("cat"), None)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (404, "key_not_found".into()),
            "{what}"
        );
        let r = s
            .call(
                "GET",
                &format!("/keys/users/nobody/{what}"),
                Some("bob"),
                None,
            )
            .await;
        assert_eq!(r.status, 404, "{what}");
    }
    let r = s
        .call("GET", "/keys/users/bob/identityKey", Some("ann"), None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (404, "key_not_found".into()),
        "bob uploaded none"
    );

    // 50 concurrent fetchers against 20 keys: exactly 20 distinct keys, 30 told none left.
    let mut ann_ws = s.connect("ann", "lobby").await;
    ann_ws.next_of("room_joined").await;
    let addr = s.addr;
    let auth = format!("Bearer {}", crate::support::token("bob", false));
    let fetchers: Vec<_> = (0..50)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move {
                crate::support::http(
                    addr,
                    "GET",
                    "/keys/users/ann/preKey",
                    &[("Authorization", &auth)],
                    None,
                )
                .await
            })
        })
        .collect();
    let mut got = Vec::new();
    let mut none_left = 0;
    for f in fetchers {
        let r = f.await.expect("fetcher");
        match r.status {
            200 => got.push(r.json()["keyId"].as_u64().expect("keyId")),
            404 => {
                assert_eq!(r.code(), "no_prekeys_left");
                none_left += 1;
            }
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    got.sort_unstable();
    got.dedup();
    assert_eq!(
        (got.len(), none_left),
        (20, 30),
        "each key handed out exactly once"
    );
    assert_eq!(got, (1..=20).collect::<Vec<u64>>());
    // Ann heard that she is running low (below 5 left), with the count.
    let low = ann_ws.next_of("prekeys_low").await;
    assert!(low["remaining"].as_u64().is_some_and(|n| n < 5), "{low}");
    assert_eq!(low["threshold"], 5);
    assert_eq!(
        s.metric("roomcast_prekeys_taken_total", "outcome=\"handed_out\"")
            .await,
        20.0
    );

    // Refill, over the total cap: refused whole.
    for batch in 0..10u32 {
        let keys: Vec<Value> = (0..100u32)
            .map(|i| json!({"keyId": 1000 + batch * 100 + i, "publicKey": public_key(i as u8)}))
            .collect();
        let r = put(&s, "ann", "/keys/preKeys", json!({"preKeys": keys})).await;
        assert_eq!(r.status, 200, "batch {batch}: {r:?}");
    }
    let r = put(
        &s,
        "ann",
        "/keys/preKeys",
        json!({"preKeys": [{"keyId": 5000, "publicKey": public_key(1)}]}),
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "too_many_prekeys".into()));
}
