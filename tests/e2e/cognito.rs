//! Sign-in with the platform's identity provider through the real server: RS256 and
//! ES256 tokens shaped like Cognito's (access and ID tokens) verified against a JWKS
//! served by a local provider that rotates its keys; the attacks a security reviewer
//! would try (alg none, HS/RS confusion, a key used with another algorithm, unknown
//! kid, expired, nbf, wrong issuer or app client, tampered payload) refused; unknown key
//! ids fetch the set at a bounded rate; in production the provider alone may be the way
//! in. Keys are made by `openssl` (installed by the test command).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{Server, TIMEOUT};

const ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TestPool";
const CLIENT: &str = "app-client-1";

fn b64url(bytes: &[u8]) -> String {
    roomcast_engine::keys::encode_base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A signing key of the provider: its private half for tokens, its JWK for the set.
struct Key {
    kid: &'static str,
    alg: Algorithm,
    private: EncodingKey,
    jwk: Value,
}

impl Key {
    fn rsa(dir: &Path, kid: &'static str) -> Key {
        let pem = dir.join(format!("{kid}.pem"));
        let pem = pem.to_str().expect("path");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            pem,
        ]);
        let der = openssl(&["rsa", "-in", pem, "-outform", "DER", "-traditional"]);
        let modulus =
            String::from_utf8(openssl(&["rsa", "-in", pem, "-noout", "-modulus"])).expect("text");
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        Key {
            kid,
            alg: Algorithm::RS256,
            private: EncodingKey::from_rsa_der(&der),
            jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64url(&n), "e": "AQAB"}),
        }
    }

    fn ec(dir: &Path, kid: &'static str) -> Key {
        let pem = dir.join(format!("{kid}.pem"));
        let pem = pem.to_str().expect("path");
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            pem,
        ]);
        let der = openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", pem, "-outform", "DER"]);
        // The public key's DER ends with the point 04 || x || y.
        let public = openssl(&["pkey", "-in", pem, "-pubout", "-outform", "DER"]);
        let xy = &public[public.len() - 64..];
        Key {
            kid,
            alg: Algorithm::ES256,
            private: EncodingKey::from_ec_der(&der),
            jwk: json!({"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64url(&xy[..32]), "y": b64url(&xy[32..])}),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.alg, self.kid, claims)
    }

    /// Signed with this key, but with a header claiming `alg` and `kid`.
    fn sign_as(&self, alg: Algorithm, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        let token = jsonwebtoken::encode(&header, claims, &self.private).expect("sign");
        if alg == self.alg {
            return token;
        }
        // Re-label the header, keeping the signature: what an attacker can do.
        let (_, rest) = token.split_once('.').expect("jwt");
        let forged = json!({"alg": format!("{alg:?}"), "kid": kid, "typ": "JWT"});
        format!("{}.{rest}", b64url(forged.to_string().as_bytes()))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Cognito access token's claims.
fn access(user: &str) -> Value {
    json!({
        "sub": format!("{user}-5f1c-4c0e-9d7a"), "username": user, "token_use": "access",
        "client_id": CLIENT, "iss": ISSUER, "iat": now(), "exp": now() + 600,
        "scope": "aws.cognito.signin.user.admin",
    })
}

/// A Cognito ID token's claims, in the admin group.
fn id_token(user: &str) -> Value {
    json!({
        "sub": format!("{user}-0a7e-4b1d-8c3f"), "cognito:username": user, "token_use": "id",
        "aud": CLIENT, "iss": ISSUER, "iat": now(), "exp": now() + 600,
        "cognito:groups": ["admin"],
    })
}

/// The local identity provider: serves `/jwks.json` from a set the test may replace,
/// counting fetches.
struct Provider {
    url: String,
    keys: Arc<parking_lot::Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(keys: &[&Key]) -> Provider {
        let set = Arc::new(parking_lot::Mutex::new(Value::Null));
        let fetches = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let (s, f) = (set.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let body = s.lock().clone();
                async move { axum::Json(body) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let p = Provider {
            url,
            keys: set,
            fetches,
        };
        p.publish(keys);
        p
    }

    fn publish(&self, keys: &[&Key]) {
        let jwks: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.keys.lock() = json!({ "keys": jwks });
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// `GET /conversations` with `token`: (status, the refusal's reason).
async fn try_token(s: &Server, token: &str) -> (u16, String) {
    let (status, body) = s.get("/conversations", Some(token)).await;
    let reason = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["details"]["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, reason)
}

async fn refused(s: &Server, token: &str, reason: &str, what: &str) {
    assert_eq!(
        try_token(s, token).await,
        (401, reason.to_owned()),
        "{what} must be refused with {reason}"
    );
}

#[tokio::test]
async fn cognito_tokens_verify_against_a_rotating_jwks_and_attacks_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k1 = Key::rsa(dir.path(), "k1");
    let e1 = Key::ec(dir.path(), "e1");
    let k2 = Key::rsa(dir.path(), "k2");
    let provider = Provider::start(&[&k1, &e1]).await;
    let s = Server::start(&[
        ("ROOMCAST_JWKS_URL", provider.url.as_str()),
        ("ROOMCAST_JWT_ISSUER", ISSUER),
        ("ROOMCAST_COGNITO_CLIENT_ID", CLIENT),
        ("ROOMCAST_COGNITO_TOKEN_USE", "access,id"),
        ("ROOMCAST_JWKS_MISS_REFETCH_MS", "1500"),
    ])
    .await;
    assert_eq!(provider.fetches(), 1, "the keys are fetched at start");

    // An RS256 access token on REST and on the socket upgrade.
    let ann = k1.sign(&access("ann"));
    assert_eq!(try_token(&s, &ann).await, (200, String::new()));
    let mut ws = s
        .ws(&format!("/ws?token={ann}&roomId=lobby"))
        .await
        .expect("an RS256 token opens a socket");
    let joined = ws.next_of("room_joined").await;
    assert_eq!(joined["roomId"], "lobby");
    // An ES256 ID token; `cognito:groups` makes an admin.
    let admin = e1.sign(&id_token("root"));
    let (status, body) = s.get("/api/admin/audit", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = s
        .get("/api/admin/audit", Some(&k1.sign(&access("ann"))))
        .await;
    assert_eq!(status, 403, "an access token without the group is no admin");

    // The attacks.
    let claims = access("eve");
    let payload = b64url(claims.to_string().as_bytes());
    let none = format!("{}.{payload}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
    let (status, reason) = try_token(&s, &none).await;
    assert_eq!(status, 401, "alg none");
    assert!(reason == "algorithm" || reason == "malformed", "{reason}");
    // HS256 keyed with the provider's public key (the classic confusion).
    let public_n = k1.jwk["n"].as_str().expect("n").as_bytes().to_vec();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confused =
        jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&public_n)).expect("hs");
    refused(
        &s,
        &confused,
        "signature",
        "HS256 keyed with the public key",
    )
    .await;
    refused(
        &s,
        &k1.sign_as(Algorithm::ES256, "k1", &claims),
        "algorithm",
        "an RSA key's token relabelled ES256",
    )
    .await;
    refused(
        &s,
        &k1.sign_as(Algorithm::RS256, "e1", &claims),
        "algorithm",
        "the EC key asked to verify RS256",
    )
    .await;
    refused(
        &s,
        &k1.sign_as(Algorithm::RS256, "nope", &claims),
        "unknown_key",
        "unknown kid",
    )
    .await;
    let mut expired = access("eve");
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    refused(&s, &k1.sign(&expired), "expired", "an expired token").await;
    let mut early = access("eve");
    early["nbf"] = json!(now() + 3600);
    refused(&s, &k1.sign(&early), "not_yet_valid", "nbf an hour ahead").await;
    let mut other_pool = access("eve");
    other_pool["iss"] = json!("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other");
    refused(&s, &k1.sign(&other_pool), "issuer_audience", "another pool").await;
    let mut other_app = access("eve");
    other_app["client_id"] = json!("another-app");
    refused(&s, &k1.sign(&other_app), "client", "another app client").await;
    let mut refresh = access("eve");
    refresh["token_use"] = json!("refresh");
    refused(&s, &k1.sign(&refresh), "client", "a token_use not accepted").await;
    let good = k1.sign(&access("eve"));
    let parts: Vec<&str> = good.split('.').collect();
    let mut more = access("eve");
    more["cognito:groups"] = json!(["admin"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(more.to_string().as_bytes()),
        parts[2]
    );
    refused(&s, &tampered, "signature", "a tampered payload").await;

    // A flood of made-up key ids fetches the set at most once per interval.
    let before = provider.fetches();
    let started = Instant::now();
    for i in 0..20 {
        let t = k1.sign_as(Algorithm::RS256, &format!("made-up-{i}"), &claims);
        refused(&s, &t, "unknown_key", "a made-up kid").await;
    }
    let allowed = 1 + (started.elapsed().as_millis() / 1500) as usize;
    let fetched = provider.fetches() - before;
    assert!(
        fetched <= allowed,
        "{fetched} fetches for 20 unknown kids in {:?}",
        started.elapsed()
    );
    assert!(
        s.metric("roomcast_jwks_fetches_total", "outcome=\"throttled\"")
            .await
            >= 1.0
    );

    // Rotation without a restart: k2 replaces k1. A token signed with k2 is accepted
    // once the miss interval allows a fetch; then k1's are refused.
    provider.publish(&[&k2, &e1]);
    let rotated = k2.sign(&access("ann"));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match try_token(&s, &rotated).await {
            (200, _) => break,
            (401, reason) if reason == "unknown_key" => {}
            other => panic!("a token of the new key: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the new key was never fetched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    refused(&s, &ann, "unknown_key", "a token of the retired key").await;
    let failures = s
        .metric("roomcast_auth_failures_total", "reason=\"unknown_key\"")
        .await;
    assert!(failures >= 22.0, "{failures}");
}

#[tokio::test]
async fn in_production_the_provider_alone_signs_users_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k1 = Key::rsa(dir.path(), "k1");
    let provider = Provider::start(&[&k1]).await;
    // No shared secret: HS256 is off, and the server starts on the provider's keys.
    let s = Server::start(&[
        ("NODE_ENV", "production"),
        ("JWT_SECRET", ""),
        ("ROOMCAST_JWKS_URL", provider.url.as_str()),
    ])
    .await;
    let hs = crate::support::token("ann", false);
    refused(
        &s,
        &hs,
        "algorithm",
        "an HS256 token with no secret configured",
    )
    .await;
    let mut claims = access("ann");
    // Without Cognito's checks configured, they are not applied.
    claims["client_id"] = json!("any");
    assert_eq!(try_token(&s, &k1.sign(&claims)).await, (200, String::new()));
}
