//! Authentication: a JWT from `?token=` or `Authorization: Bearer`, turned into a
//! [`Principal`]. HS256 with `JWT_SECRET` (development and service tokens), and RS256 or
//! ES256 against the identity provider's keys ([`crate::jwks`], Cognito User Pools),
//! each key pinned to its algorithm. With Cognito's checks configured, `client_id` (access
//! tokens) or `aud` (ID tokens) must be the app client and `token_use` one of those
//! allowed. Also mints tokens for `roomcast token` and manages the dev-mode secret kept
//! in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roomcast_engine::UserInfo;
use serde::{Deserialize, Serialize};

use crate::jwks::Jwks;

/// An authenticated caller. Only [`Verifier::verify`] makes one, so holding a
/// `Principal` proves the token was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    user: UserInfo,
    /// `exp`, Unix seconds.
    expires_at: u64,
}

impl Principal {
    /// When the token expires (Unix seconds).
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    pub fn user(&self) -> &UserInfo {
        &self.user
    }

    pub fn into_user(self) -> UserInfo {
        self.user
    }
}

/// Why a token was refused (the metric label and the 401 message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required (?token= or Authorization: Bearer)")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token lacks a required claim (sub, username, exp) or has a malformed one")]
    Claims,
    #[error("the token's issuer or audience is not accepted")]
    IssuerOrAudience,
    #[error("the token is not valid yet (nbf or iat in the future)")]
    NotYetValid,
    #[error("the token's key id is not among the identity provider's keys")]
    UnknownKey,
    #[error("the token is not for this app client, or not a kind of token accepted here")]
    Client,
    #[error("the token is malformed")]
    Malformed,
}

impl AuthError {
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Algorithm => "algorithm",
            Self::Signature => "signature",
            Self::Claims => "claims",
            Self::IssuerOrAudience => "issuer_audience",
            Self::NotYetValid => "not_yet_valid",
            Self::UnknownKey => "unknown_key",
            Self::Client => "client",
            Self::Malformed => "malformed",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(
        rename = "cognito:username",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    cognito_username: Option<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    #[serde(
        rename = "cognito:groups",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    cognito_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// One audience or several (RFC 7519 allows both); checked by the validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    /// Cognito: `access` or `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_use: Option<String>,
    /// Cognito access tokens name their app client here (ID tokens in `aud`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds (documented in PROTOCOL.md).
pub const LEEWAY_SECS: u64 = 30;

impl Audience {
    fn contains(&self, want: &str) -> bool {
        match self {
            Audience::One(a) => a == want,
            Audience::Many(all) => all.iter().any(|a| a == want),
        }
    }
}

/// Cognito's checks beyond the signature (`ROOMCAST_COGNITO_CLIENT_ID`,
/// `ROOMCAST_COGNITO_TOKEN_USE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CognitoChecks {
    /// The app client: an access token's `client_id`, or an ID token's `aud`.
    pub client_id: Option<String>,
    /// Accepted `token_use` values (empty: not checked).
    pub token_use: Vec<String>,
}

/// Checks tokens.
pub struct Verifier {
    /// HS256 with the shared secret, when one is configured.
    hs: Option<Arc<DecodingKey>>,
    /// RS256 and ES256 against the provider's keys.
    jwks: Option<Arc<Jwks>>,
    /// One validation per accepted algorithm (each pins `algorithms` to its own).
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
    cognito: CognitoChecks,
}

fn validation(alg: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    // A configured issuer or audience is required, not only checked when present.
    let mut required = vec!["exp", "sub"];
    if issuer.is_some() {
        required.push("iss");
    }
    if audience.is_some() {
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    match issuer {
        Some(iss) => validation.set_issuer(&[iss]),
        None => validation.iss = None,
    }
    match audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    validation
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

impl Verifier {
    /// HS256 tokens only (development, `roomcast token`).
    pub fn new(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Self {
        Self::with_provider(
            Some(secret),
            None,
            issuer,
            audience,
            CognitoChecks::default(),
        )
    }

    /// HS256 with `secret` (when given) and RS256/ES256 against `jwks` (when given).
    pub fn with_provider(
        secret: Option<&[u8]>,
        jwks: Option<Arc<Jwks>>,
        issuer: Option<&str>,
        audience: Option<&str>,
        cognito: CognitoChecks,
    ) -> Self {
        Self {
            hs: secret.map(|s| Arc::new(DecodingKey::from_secret(s))),
            jwks,
            hs256: validation(Algorithm::HS256, issuer, audience),
            rs256: validation(Algorithm::RS256, issuer, audience),
            es256: validation(Algorithm::ES256, issuer, audience),
            cognito,
        }
    }

    /// The key and validation for a token's header: HS256 with the secret, RS256 or
    /// ES256 with the provider's key of that id (fetched again on a miss, at a bounded
    /// rate) when the key's own algorithm is the token's.
    async fn key_for(&self, token: &str) -> Result<(Arc<DecodingKey>, &Validation), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                AuthError::Algorithm
            }
            _ => AuthError::Malformed,
        })?;
        match header.alg {
            Algorithm::HS256 => self
                .hs
                .clone()
                .map(|k| (k, &self.hs256))
                .ok_or(AuthError::Algorithm),
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::Algorithm)?;
                let kid = header.kid.ok_or(AuthError::UnknownKey)?;
                let pinned = jwks
                    .key_or_refetch(&kid)
                    .await
                    .ok_or(AuthError::UnknownKey)?;
                if pinned.alg != header.alg {
                    return Err(AuthError::Algorithm);
                }
                let validation = match pinned.alg {
                    Algorithm::RS256 => &self.rs256,
                    _ => &self.es256,
                };
                Ok((pinned.key, validation))
            }
            _ => Err(AuthError::Algorithm),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let (key, validation) = self.key_for(token).await?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm => AuthError::Algorithm,
            ErrorKind::InvalidSignature => AuthError::Signature,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => AuthError::IssuerOrAudience,
            ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::Json(_) => AuthError::Claims,
            _ => AuthError::Malformed,
        })?;
        let c = data.claims;
        // Issued in the future (beyond the skew allowed): refused like an early `nbf`.
        if c.iat.is_some_and(|iat| iat > now_secs() + LEEWAY_SECS) {
            return Err(AuthError::NotYetValid);
        }
        if !self.cognito.token_use.is_empty()
            && !c
                .token_use
                .as_ref()
                .is_some_and(|u| self.cognito.token_use.contains(u))
        {
            return Err(AuthError::Client);
        }
        if let Some(client) = &self.cognito.client_id {
            let named = c.client_id.as_deref() == Some(client.as_str())
                || c.aud.as_ref().is_some_and(|a| a.contains(client));
            if !named {
                return Err(AuthError::Client);
            }
        }
        let username = c
            .username
            .or(c.cognito_username)
            .filter(|u| !u.is_empty())
            .ok_or(AuthError::Claims)?;
        // The user id rule used everywhere else: 1-128 printable ASCII, no spaces or
        // control characters; a display name may be any text but control characters.
        if roomcast_engine::protocol::validate_user_id(&c.sub).is_err()
            || username.len() > 128
            || username.chars().any(char::is_control)
        {
            return Err(AuthError::Claims);
        }
        let is_admin = c
            .roles
            .iter()
            .chain(&c.cognito_groups)
            .any(|r| r == "admin");
        Ok(Principal {
            user: UserInfo {
                user_id: c.sub,
                username,
                is_admin,
            },
            expires_at: c.exp,
        })
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mints an HS256 token for `user_id` valid for `ttl_secs`.
pub fn mint(
    secret: &[u8],
    user_id: &str,
    username: &str,
    admin: bool,
    ttl_secs: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, String> {
    let now = roomcast_engine::clock::now_unix_ms() / 1000;
    let claims = Claims {
        sub: user_id.to_owned(),
        username: Some(username.to_owned()),
        cognito_username: None,
        exp: now + ttl_secs,
        roles: if admin { vec!["admin".into()] } else { vec![] },
        cognito_groups: vec![],
        iss: issuer.map(str::to_owned),
        aud: audience.map(|a| Audience::One(a.to_owned())),
        iat: Some(now),
        nbf: None,
        token_use: None,
        client_id: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// The dev-mode secret file in the data directory.
pub fn dev_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("jwt-secret")
}

/// Reads the dev secret, creating it (32 random bytes, hex, mode 0600) if absent.
pub fn load_or_create_dev_secret(data_dir: &Path) -> std::io::Result<(String, bool)> {
    let path = dev_secret_path(data_dir);
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_owned();
        if s.len() >= 16 {
            return Ok((s, false));
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok((secret, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123";

    #[tokio::test]
    async fn accepts_minted_tokens_and_reads_admin_roles() {
        let v = Verifier::new(SECRET, None, None);
        let t = mint(SECRET, "u1", "Alice", true, 60, None, None).expect("mint");
        let p = v.verify(&t).await.expect("valid");
        assert_eq!(p.user().user_id, "u1");
        assert_eq!(p.user().username, "Alice");
        assert!(p.user().is_admin);
        let t = mint(SECRET, "u2", "Bob", false, 60, None, None).expect("mint");
        assert!(!v.verify(&t).await.expect("valid").user().is_admin);
    }

    #[tokio::test]
    async fn refuses_bad_tokens_with_a_reason() {
        let v = Verifier::new(SECRET, None, None);
        let other = mint(b"another-secret-0000", "u", "U", false, 60, None, None).expect("mint");
        assert_eq!(v.verify(&other).await, Err(AuthError::Signature));
        assert_eq!(v.verify("nonsense").await, Err(AuthError::Malformed));
        let expired = {
            let now = roomcast_engine::clock::now_unix_ms() / 1000;
            let claims = serde_json::json!({"sub": "u", "username": "U", "exp": now - 3600});
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .expect("encode")
        };
        assert_eq!(v.verify(&expired).await, Err(AuthError::Expired));
        let hs512 = {
            let claims = serde_json::json!({"sub": "u", "username": "U", "exp": u64::MAX / 2});
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS512),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .expect("encode")
        };
        assert_eq!(v.verify(&hs512).await, Err(AuthError::Algorithm));
        let no_username = {
            let claims = serde_json::json!({"sub": "u", "exp": u64::MAX / 2});
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .expect("encode")
        };
        assert_eq!(v.verify(&no_username).await, Err(AuthError::Claims));
    }

    #[tokio::test]
    async fn checks_issuer_and_audience_when_configured() {
        let v = Verifier::new(SECRET, Some("iss-a"), Some("aud-a"));
        let good = mint(SECRET, "u", "U", false, 60, Some("iss-a"), Some("aud-a")).expect("mint");
        assert!(v.verify(&good).await.is_ok());
        let bad = mint(SECRET, "u", "U", false, 60, Some("iss-b"), Some("aud-a")).expect("mint");
        assert_eq!(v.verify(&bad).await, Err(AuthError::IssuerOrAudience));
    }

    #[test]
    fn dev_secret_is_created_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, created) = load_or_create_dev_secret(dir.path()).expect("create");
        assert!(created && a.len() == 64);
        let (b, created) = load_or_create_dev_secret(dir.path()).expect("load");
        assert!(!created);
        assert_eq!(a, b);
    }
}
