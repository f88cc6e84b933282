//! The Signal key directory routes: upload the caller's identity key, signed pre-key
//! and one-time pre-keys (`PUT /keys/...`), and fetch a partner's
//! (`GET /keys/users/{partnerUserId}/...`), the latter only for users who share a
//! conversation with the partner. A one-time pre-key is handed out exactly once; when
//! a user's supply falls below `ROOMCAST_PREKEY_LOW_THRESHOLD`, their open sessions get
//! `{"type":"prekeys_low","remaining","threshold"}`.

use axum::Json;
use axum::extract::State;
use roomcast_engine::keys::{
    IdentityKey, MAX_PRE_KEYS_PER_UPLOAD, MAX_PRE_KEYS_TOTAL, PreKey, PreKeysStored, SignedPreKey,
    validate_key_id, validate_public_key, validate_signature,
};
use roomcast_engine::metrics as m;
use roomcast_engine::protocol::encode_event;
use roomcast_engine::{ClientError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Caller, JsonBody, PathParam};
use crate::error::ApiError;
use crate::state::AppState;

fn key_not_found() -> ApiError {
    ApiError::Client(ClientError::new(ErrorCode::KeyNotFound, "no such key"))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Saved {
    pub saved: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PutIdentityKey {
    /// Base64 of the 33-byte serialised Curve25519 public key (0x05 + 32 bytes).
    #[schema(pattern = "^B[Q-Za-f][A-Za-z0-9+/_-]{42}$")]
    pub identity_key: String,
    /// 0-16777215.
    #[schema(maximum = 16777215)]
    pub key_id: u32,
}

/// `PUT /keys/identityKey`: sets (replaces) the caller's identity key.
#[utoipa::path(put, path = "/keys/identityKey", tag = "keys", request_body = PutIdentityKey, responses(
    (status = 200, description = "Saved", body = Saved),
    (status = 400, description = "Invalid key data; `details.field` names the field", body = crate::error::ErrorBody),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_identity_key(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<PutIdentityKey>,
) -> Result<Json<Saved>, ApiError> {
    validate_key_id("keyId", body.key_id)?;
    validate_public_key("identityKey", &body.identity_key)?;
    app.keys
        .put_identity_key(
            caller.id(),
            IdentityKey {
                key_id: body.key_id,
                identity_key: body.identity_key,
            },
        )
        .await?;
    metrics::counter!(m::KEYS_UPLOADED, "kind" => "identity").increment(1);
    Ok(Json(Saved { saved: true }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PutSignedPreKey {
    #[schema(maximum = 16777215)]
    pub key_id: u32,
    /// Base64 of the 33-byte serialised public key (`signedPreKey` is accepted too, as
    /// the seed names it).
    #[serde(alias = "signedPreKey")]
    #[schema(pattern = "^B[Q-Za-f][A-Za-z0-9+/_-]{42}$")]
    pub public_key: String,
    /// Base64 of the 64-byte XEdDSA signature by the identity key.
    #[schema(pattern = "^[A-Za-z0-9+/_-]{85}[AQgw](==)?$")]
    pub signature: String,
}

/// `PUT /keys/signedPreKey`: sets (replaces) the caller's signed pre-key.
#[utoipa::path(put, path = "/keys/signedPreKey", tag = "keys", request_body = PutSignedPreKey, responses(
    (status = 200, description = "Saved", body = Saved),
    (status = 400, description = "Invalid key data; `details.field` names the field", body = crate::error::ErrorBody),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_signed_pre_key(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<PutSignedPreKey>,
) -> Result<Json<Saved>, ApiError> {
    validate_key_id("keyId", body.key_id)?;
    validate_public_key("publicKey", &body.public_key)?;
    validate_signature("signature", &body.signature)?;
    app.keys
        .put_signed_pre_key(
            caller.id(),
            SignedPreKey {
                key_id: body.key_id,
                public_key: body.public_key,
                signature: body.signature,
            },
        )
        .await?;
    metrics::counter!(m::KEYS_UPLOADED, "kind" => "signed_pre_key").increment(1);
    Ok(Json(Saved { saved: true }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PutPreKeys {
    /// 1-100 one-time pre-keys with distinct ids; a user keeps at most 1000.
    #[schema(min_items = 1, max_items = 100)]
    pub pre_keys: Vec<PreKey>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreKeysSaved {
    pub saved: usize,
    /// One-time pre-keys the caller now has stored.
    pub total: usize,
}

/// `PUT /keys/preKeys`: adds one-time pre-keys (an existing key id is replaced).
#[utoipa::path(put, path = "/keys/preKeys", tag = "keys", request_body = PutPreKeys, responses(
    (status = 200, description = "Saved", body = PreKeysSaved),
    (status = 400, description = "Invalid key data; `details.field` names the field", body = crate::error::ErrorBody),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 409, description = "Would exceed 1000 stored pre-keys", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_pre_keys(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<PutPreKeys>,
) -> Result<Json<PreKeysSaved>, ApiError> {
    let n = body.pre_keys.len();
    if n == 0 || n > MAX_PRE_KEYS_PER_UPLOAD {
        return Err(ApiError::BadRequest {
            field: "preKeys".into(),
            message: format!("upload 1-{MAX_PRE_KEYS_PER_UPLOAD} pre-keys at a time"),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for (i, k) in body.pre_keys.iter().enumerate() {
        validate_key_id(&format!("preKeys[{i}].keyId"), k.key_id)?;
        validate_public_key(&format!("preKeys[{i}].publicKey"), &k.public_key)?;
        if !seen.insert(k.key_id) {
            return Err(ApiError::BadRequest {
                field: format!("preKeys[{i}].keyId"),
                message: "key ids must be unique within an upload".into(),
            });
        }
    }
    match app.keys.put_pre_keys(caller.id(), body.pre_keys).await? {
        PreKeysStored::Stored { total } => {
            metrics::counter!(m::KEYS_UPLOADED, "kind" => "pre_keys").increment(n as u64);
            Ok(Json(PreKeysSaved { saved: n, total }))
        }
        PreKeysStored::OverCap { current } => Err(ApiError::Client(ClientError::new(
            ErrorCode::TooManyPreKeys,
            format!(
                "a user keeps at most {MAX_PRE_KEYS_TOTAL} one-time pre-keys; {current} are stored"
            ),
        ))),
    }
}

/// 404 unless the caller shares a conversation with `partner` (or is the partner):
/// keys are not handed to strangers, and a stranger cannot tell whether keys exist.
async fn may_see_keys_of(app: &AppState, me: &str, partner: &str) -> Result<(), ApiError> {
    if me == partner {
        return Ok(());
    }
    let shares = app
        .engine
        .store()
        .user_conversations(me)
        .await?
        .iter()
        .any(|(c, _)| c.is_participant(partner));
    if shares { Ok(()) } else { Err(key_not_found()) }
}

/// `GET /keys/users/{partnerUserId}/identityKey`.
#[utoipa::path(get, path = "/keys/users/{partnerUserId}/identityKey", tag = "keys",
    params(("partnerUserId" = String, Path, description = "The partner's user id")),
    responses(
    (status = 200, description = "The partner's identity key", body = IdentityKey),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 404, description = "No such key, or no conversation shared with the partner", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn identity_key(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(partner): PathParam<String>,
) -> Result<Json<IdentityKey>, ApiError> {
    may_see_keys_of(&app, caller.id(), &partner).await?;
    app.keys
        .identity_key(&partner)
        .await?
        .map(Json)
        .ok_or_else(key_not_found)
}

/// `GET /keys/users/{partnerUserId}/signedPreKey`.
#[utoipa::path(get, path = "/keys/users/{partnerUserId}/signedPreKey", tag = "keys",
    params(("partnerUserId" = String, Path, description = "The partner's user id")),
    responses(
    (status = 200, description = "The partner's signed pre-key", body = SignedPreKey),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 404, description = "No such key, or no conversation shared with the partner", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn signed_pre_key(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(partner): PathParam<String>,
) -> Result<Json<SignedPreKey>, ApiError> {
    may_see_keys_of(&app, caller.id(), &partner).await?;
    app.keys
        .signed_pre_key(&partner)
        .await?
        .map(Json)
        .ok_or_else(key_not_found)
}

/// `GET /keys/users/{partnerUserId}/preKey`: takes one of the partner's one-time
/// pre-keys: each is handed out exactly once. None left: 404 `no_prekeys_left` (use the
/// signed pre-key alone).
#[utoipa::path(get, path = "/keys/users/{partnerUserId}/preKey", tag = "keys",
    params(("partnerUserId" = String, Path, description = "The partner's user id")),
    responses(
    (status = 200, description = "A one-time pre-key, now gone from the directory", body = PreKey),
    (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    (status = 404, description = "None left (`no_prekeys_left`), or no conversation shared with the partner", body = crate::error::ErrorBody),
    (status = 429, description = "Over the keys budget, or over `ROOMCAST_PREKEY_FETCHES_PER_PARTNER_PER_HOUR` for this partner", body = crate::error::ErrorBody),
    (status = 503, description = "Storage unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn pre_key(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(partner): PathParam<String>,
) -> Result<Json<PreKey>, ApiError> {
    may_see_keys_of(&app, caller.id(), &partner).await?;
    // One more budget, per requester and partner: nobody drains a partner's supply.
    match app.budgets.take_pre_key(caller.id(), &partner) {
        Ok(Some(quota)) => caller.report_quota(quota),
        Ok(None) => {}
        Err(refused) => {
            caller.report_quota(refused.quota);
            return Err(*refused.error);
        }
    }
    let taken = app.keys.take_pre_key(&partner).await?;
    let threshold = app.config.prekey_low_threshold;
    if taken.key.is_some() && taken.remaining < threshold {
        let frame = encode_event(
            "prekeys_low",
            &json!({"remaining": taken.remaining, "threshold": threshold}),
        );
        app.engine.notify_user(&partner, "prekeys_low", &frame);
    }
    let outcome = if taken.key.is_some() {
        "handed_out"
    } else {
        "none_left"
    };
    metrics::counter!(m::PREKEYS_TAKEN, "outcome" => outcome).increment(1);
    taken.key.map(Json).ok_or_else(|| {
        ApiError::Client(ClientError::new(
            ErrorCode::NoPreKeysLeft,
            "this user has no one-time pre-key left; use the signed pre-key",
        ))
    })
}
