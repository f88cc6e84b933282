//! Authentication before the upgrade: every bad token is an HTTP 401 with a typed body.

use serde_json::{Value, json};

use crate::support::{SECRET, Server, token};

fn sign(claims: Value, alg: jsonwebtoken::Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A JWT with `alg: none` and no signature, as an attacker would send it.
fn alg_none() -> String {
    use std::fmt::Write;
    fn b64url(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                let _ = out.write_char(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64url(
        json!({"sub": "mallory", "username": "m", "exp": now() + 3600})
            .to_string()
            .as_bytes(),
    );
    format!("{header}.{claims}.")
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_before_the_upgrade() {
    let server = Server::start(&[]).await;
    let exp = now() + 3600;
    let cases = [
        ("missing", "/ws".to_owned()),
        ("garbage", "/ws?token=not-a-jwt".to_owned()),
        (
            "expired",
            format!(
                "/ws?token={}",
                sign(
                    json!({"sub": "u", "username": "u", "exp": now() - 3600}),
                    jsonwebtoken::Algorithm::HS256,
                    SECRET
                )
            ),
        ),
        ("alg none", format!("/ws?token={}", alg_none())),
        (
            "wrong secret",
            format!(
                "/ws?token={}",
                sign(
                    json!({"sub": "u", "username": "u", "exp": exp}),
                    jsonwebtoken::Algorithm::HS256,
                    "some-other-secret-123"
                )
            ),
        ),
        (
            "wrong algorithm",
            format!(
                "/ws?token={}",
                sign(
                    json!({"sub": "u", "username": "u", "exp": exp}),
                    jsonwebtoken::Algorithm::HS384,
                    SECRET
                )
            ),
        ),
        (
            "no username",
            format!(
                "/ws?token={}",
                sign(
                    json!({"sub": "u", "exp": exp}),
                    jsonwebtoken::Algorithm::HS256,
                    SECRET
                )
            ),
        ),
    ];
    for (what, path) in cases {
        match server.ws(&path).await {
            Ok(_) => panic!("{what}: upgraded"),
            Err((status, body)) => {
                assert_eq!(status, 401, "{what}: {body}");
                let v: Value = serde_json::from_str(&body).expect("json error body");
                assert_eq!(v["error"]["code"], "unauthorized", "{what}");
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty())
                );
            }
        }
    }
    assert!(server.metric("roomcast_auth_failures_total", "").await >= 7.0);
    // The same checks guard the HTTP API.
    let (status, _) = server.get("/api/rooms/lobby/messages", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn tokens_are_accepted_in_the_query_or_the_authorization_header() {
    let server = Server::start(&[]).await;
    let mut a = server
        .ws(&format!(
            "/ws?token={}&roomId=general",
            token("alice", false)
        ))
        .await
        .expect("query token");
    let joined = a.next_of("room_joined").await;
    assert_eq!(joined["roomId"], "general");
    let bearer = format!("Bearer {}", token("bob", false));
    let mut b = server
        .ws_with("/ws?roomId=general", &[("Authorization", &bearer)])
        .await
        .expect("header token");
    assert_eq!(b.next_of("room_joined").await["memberCount"], 2);
    // No roomId: the lobby.
    let mut c = server
        .ws(&format!("/ws?token={}", token("carol", false)))
        .await
        .expect("default room");
    assert_eq!(c.next_of("room_joined").await["roomId"], "lobby");
}

/// The reason a refused upgrade gives (`error.details.reason`), or `"accepted"`.
async fn verdict(server: &Server, claims: Value) -> String {
    let t = sign(claims, jsonwebtoken::Algorithm::HS256, SECRET);
    match server.ws(&format!("/ws?token={t}")).await {
        Ok(_) => "accepted".to_owned(),
        Err((status, body)) => {
            assert_eq!(status, 401, "{body}");
            let v: Value = serde_json::from_str(&body).expect("json error body");
            v["error"]["details"]["reason"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        }
    }
}

#[tokio::test]
async fn a_configured_issuer_and_audience_are_required_and_an_audience_list_is_accepted() {
    let server = Server::start(&[
        ("ROOMCAST_JWT_ISSUER", "https://idp.example"),
        ("ROOMCAST_JWT_AUDIENCE", "roomcast"),
    ])
    .await;
    let exp = now() + 3600;
    let base = |extra: Value| {
        let mut c = json!({"sub": "u", "username": "u", "exp": exp});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let iss = "https://idp.example";
    assert_eq!(
        verdict(&server, base(json!({"iss": iss, "aud": "roomcast"}))).await,
        "accepted"
    );
    assert_eq!(
        verdict(
            &server,
            base(json!({"iss": iss, "aud": ["other", "roomcast"]}))
        )
        .await,
        "accepted",
        "RFC 7519: aud may be an array"
    );
    assert_eq!(
        verdict(&server, base(json!({"aud": "roomcast"}))).await,
        "claims",
        "no iss"
    );
    assert_eq!(
        verdict(&server, base(json!({"iss": iss}))).await,
        "claims",
        "no aud"
    );
    assert_eq!(
        verdict(&server, base(json!({"iss": iss, "aud": ["other"]}))).await,
        "issuer_audience"
    );
    assert_eq!(
        verdict(
            &server,
            base(json!({"iss": "https://evil", "aud": "roomcast"}))
        )
        .await,
        "issuer_audience"
    );
}

#[tokio::test]
async fn tokens_from_the_future_and_odd_user_ids_are_refused_and_the_leeway_is_30_seconds() {
    let server = Server::start(&[]).await;
    let (n, exp) = (now(), now() + 3600);
    let claims = |sub: &str, extra: Value| {
        let mut c = json!({"sub": sub, "username": "U", "exp": exp});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    assert_eq!(
        verdict(&server, claims("u", json!({"nbf": n + 3600}))).await,
        "not_yet_valid"
    );
    assert_eq!(
        verdict(&server, claims("u", json!({"iat": n + 10 * 365 * 86_400}))).await,
        "not_yet_valid"
    );
    // Within the 30 s leeway: clocks differ a little.
    assert_eq!(
        verdict(&server, claims("u", json!({"nbf": n + 10, "iat": n + 10}))).await,
        "accepted"
    );
    assert_eq!(
        verdict(&server, json!({"sub": "u", "username": "U", "exp": n - 10})).await,
        "accepted",
        "expired 10 s ago is within the leeway"
    );
    assert_eq!(
        verdict(
            &server,
            json!({"sub": "u", "username": "U", "exp": n - 120})
        )
        .await,
        "expired"
    );
    for bad in ["a\u{0}b", "a\r\nb", "a b", "ünï", "", &"x".repeat(129)] {
        assert_eq!(
            verdict(&server, claims(bad, json!({}))).await,
            "claims",
            "sub {bad:?}"
        );
    }
    assert_eq!(
        verdict(
            &server,
            json!({"sub": "u", "username": "line\nbreak", "exp": exp})
        )
        .await,
        "claims",
        "a control character in the display name"
    );
    assert_eq!(
        verdict(
            &server,
            json!({"sub": "u", "username": "Zoë 🌙", "exp": exp})
        )
        .await,
        "accepted",
        "any other text is a fine display name"
    );
    // The scheme of the Authorization header is case-insensitive (RFC 7235).
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let header = format!("{scheme} {}", token("alice", false));
        assert!(
            server
                .ws_with("/ws", &[("Authorization", &header)])
                .await
                .is_ok(),
            "{scheme}"
        );
    }
    let header = format!("Basic {}", token("alice", false));
    assert!(
        server
            .ws_with("/ws", &[("Authorization", &header)])
            .await
            .is_err()
    );
}
