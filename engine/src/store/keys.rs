//! The key directory contract: [`KeyStore`], users' public keys and one-time pre-keys.

use async_trait::async_trait;

use super::StoreError;
use crate::keys::*;

/// Keeps users' public keys. Contract (checked by `conformance::run_keys`):
/// - `put_*` replace the user's previous identity or signed pre-key.
/// - `put_pre_keys` adds keys (replacing any with the same key id), atomically refusing
///   a batch that would take the user over `MAX_PRE_KEYS_TOTAL`.
/// - `take_pre_key` returns each stored one-time pre-key to exactly one caller, even
///   under concurrent calls, and then it is gone.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn put_identity_key(&self, user_id: &str, key: IdentityKey) -> Result<(), StoreError>;
    async fn identity_key(&self, user_id: &str) -> Result<Option<IdentityKey>, StoreError>;
    async fn put_signed_pre_key(&self, user_id: &str, key: SignedPreKey) -> Result<(), StoreError>;
    async fn signed_pre_key(&self, user_id: &str) -> Result<Option<SignedPreKey>, StoreError>;
    async fn put_pre_keys(
        &self,
        user_id: &str,
        keys: Vec<PreKey>,
    ) -> Result<PreKeysStored, StoreError>;
    async fn take_pre_key(&self, user_id: &str) -> Result<Taken, StoreError>;
    async fn pre_key_count(&self, user_id: &str) -> Result<usize, StoreError>;
}
