//! redb backend of [`KeyStore`]: `identity_keys[user]`, `signed_pre_keys[user]` (json),
//! `pre_keys[(user, key id)] = public key`. Taking a pre-key reads and deletes it in one
//! write transaction, so each key is handed out once.

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

use super::*;
use crate::keys::{IdentityKey, MAX_PRE_KEYS_TOTAL, PreKey, PreKeysStored, SignedPreKey, Taken};
use crate::store::KeyStore;

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn put_identity_key(&self, user_id: &str, key: IdentityKey) -> Result<(), StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            txn.open_table(IDENTITY_KEYS)?
                .insert(user.as_str(), encode(&key)?.as_slice())?;
            Ok(txn.commit()?)
        })
        .await
    }

    async fn identity_key(&self, user_id: &str) -> Result<Option<IdentityKey>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(IDENTITY_KEYS)?;
        t.get(user_id)?.map(|v| decode(v.value())).transpose()
    }

    async fn put_signed_pre_key(&self, user_id: &str, key: SignedPreKey) -> Result<(), StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            txn.open_table(SIGNED_PRE_KEYS)?
                .insert(user.as_str(), encode(&key)?.as_slice())?;
            Ok(txn.commit()?)
        })
        .await
    }

    async fn signed_pre_key(&self, user_id: &str) -> Result<Option<SignedPreKey>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SIGNED_PRE_KEYS)?;
        t.get(user_id)?.map(|v| decode(v.value())).transpose()
    }

    async fn put_pre_keys(
        &self,
        user_id: &str,
        keys: Vec<PreKey>,
    ) -> Result<PreKeysStored, StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut t = txn.open_table(PRE_KEYS)?;
                let current = count_user(&t, &user)?;
                let mut new = 0;
                for k in &keys {
                    if t.get((user.as_str(), k.key_id))?.is_none() {
                        new += 1;
                    }
                }
                if current + new > MAX_PRE_KEYS_TOTAL {
                    PreKeysStored::OverCap { current }
                } else {
                    for k in &keys {
                        t.insert((user.as_str(), k.key_id), k.public_key.as_str())?;
                    }
                    PreKeysStored::Stored {
                        total: current + new,
                    }
                }
            };
            txn.commit()?;
            Ok(out)
        })
        .await
    }

    async fn take_pre_key(&self, user_id: &str) -> Result<Taken, StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut t = txn.open_table(PRE_KEYS)?;
                let first = t
                    .range((user.as_str(), 0)..=(user.as_str(), u32::MAX))?
                    .next()
                    .transpose()?
                    .map(|(k, v)| (k.value().1, v.value().to_owned()));
                let key = match first {
                    Some((key_id, public_key)) => {
                        t.remove((user.as_str(), key_id))?;
                        Some(PreKey { key_id, public_key })
                    }
                    None => None,
                };
                Taken {
                    key,
                    remaining: count_user(&t, &user)?,
                }
            };
            txn.commit()?;
            Ok(out)
        })
        .await
    }

    async fn pre_key_count(&self, user_id: &str) -> Result<usize, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PRE_KEYS)?;
        count_user(&t, user_id)
    }
}

/// One user's stored one-time pre-keys (at most `MAX_PRE_KEYS_TOTAL`, so counting the
/// range is cheap).
fn count_user(
    t: &impl ReadableTable<(&'static str, u32), &'static str>,
    user: &str,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for item in t.range((user, 0)..=(user, u32::MAX))? {
        item?;
        n += 1;
    }
    Ok(n)
}
