//! CQL backend of [`KeyStore`]. A one-time pre-key is handed out with
//! `DELETE ... IF EXISTS` (a lightweight transaction): of two callers racing for the same
//! key one sees `[applied] = true` and gets it, the other moves on to the next key, so
//! each key goes to exactly one caller. Uploads are one single-partition batch (atomic
//! within the user's partition); the cap is checked against the count read just before,
//! so two concurrent uploads of one user may pass it by one batch (a user uploads from
//! one device at a time).

use async_trait::async_trait;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use super::{CqlStore, Preparer, applied};
use crate::keys::{IdentityKey, MAX_PRE_KEYS_TOTAL, PreKey, PreKeysStored, SignedPreKey, Taken};
use crate::store::{KeyStore, StoreError};
use crate::store::{decode, encode};

/// Keys one `take_pre_key` tries before it reports none left (each lost race moves on).
const TAKE_ATTEMPTS: usize = 32;

pub(crate) struct KeyStatements {
    put_identity: PreparedStatement,
    get_identity: PreparedStatement,
    put_signed: PreparedStatement,
    get_signed: PreparedStatement,
    insert_pre_key: PreparedStatement,
    select_pre_key_ids: PreparedStatement,
    select_first_pre_keys: PreparedStatement,
    take_pre_key: PreparedStatement,
}

impl KeyStatements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            put_identity: p
                .prep("INSERT INTO {ks}.identity_keys (user_id, body) VALUES (?, ?)")
                .await?,
            get_identity: p
                .prep("SELECT body FROM {ks}.identity_keys WHERE user_id = ?")
                .await?,
            put_signed: p
                .prep("INSERT INTO {ks}.signed_pre_keys (user_id, body) VALUES (?, ?)")
                .await?,
            get_signed: p
                .prep("SELECT body FROM {ks}.signed_pre_keys WHERE user_id = ?")
                .await?,
            insert_pre_key: p
                .prep("INSERT INTO {ks}.pre_keys (user_id, key_id, public_key) VALUES (?, ?, ?)")
                .await?,
            select_pre_key_ids: p
                .prep("SELECT key_id FROM {ks}.pre_keys WHERE user_id = ? LIMIT 100000")
                .await?,
            select_first_pre_keys: p
                .prep("SELECT key_id, public_key FROM {ks}.pre_keys WHERE user_id = ? LIMIT 32")
                .await?,
            take_pre_key: p
                .lwt("DELETE FROM {ks}.pre_keys WHERE user_id = ? AND key_id = ? IF EXISTS")
                .await?,
        })
    }
}

impl CqlStore {
    fn keys_st(&self) -> &KeyStatements {
        &self.st.keys
    }

    async fn body_of(
        &self,
        st: &PreparedStatement,
        user_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self
            .session
            .execute_unpaged(st, (user_id,))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<Vec<u8>>,)>()?;
        Ok(row.and_then(|(b,)| b))
    }

    async fn pre_key_ids(&self, user_id: &str) -> Result<Vec<i32>, StoreError> {
        let rows = self
            .session
            .execute_unpaged(&self.keys_st().select_pre_key_ids, (user_id,))
            .await?
            .into_rows_result()?;
        rows.rows::<(i32,)>()?
            .map(|r| r.map(|(id,)| id).map_err(StoreError::from))
            .collect()
    }
}

#[async_trait]
impl KeyStore for CqlStore {
    async fn put_identity_key(&self, user_id: &str, key: IdentityKey) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.keys_st().put_identity, (user_id, encode(&key)?))
            .await?;
        Ok(())
    }

    async fn identity_key(&self, user_id: &str) -> Result<Option<IdentityKey>, StoreError> {
        self.body_of(&self.keys_st().get_identity, user_id)
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    async fn put_signed_pre_key(&self, user_id: &str, key: SignedPreKey) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.keys_st().put_signed, (user_id, encode(&key)?))
            .await?;
        Ok(())
    }

    async fn signed_pre_key(&self, user_id: &str) -> Result<Option<SignedPreKey>, StoreError> {
        self.body_of(&self.keys_st().get_signed, user_id)
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    async fn put_pre_keys(
        &self,
        user_id: &str,
        keys: Vec<PreKey>,
    ) -> Result<PreKeysStored, StoreError> {
        let existing = self.pre_key_ids(user_id).await?;
        let current = existing.len();
        let mut new_ids: Vec<i32> = keys
            .iter()
            .map(|k| k.key_id as i32)
            .filter(|id| !existing.contains(id))
            .collect();
        new_ids.sort_unstable();
        new_ids.dedup();
        if current + new_ids.len() > MAX_PRE_KEYS_TOTAL {
            return Ok(PreKeysStored::OverCap { current });
        }
        if keys.is_empty() {
            return Ok(PreKeysStored::Stored { total: current });
        }
        // One partition (the user's): an unlogged batch is atomic and isolated there.
        let mut batch = Batch::new(BatchType::Unlogged);
        let mut values = Vec::with_capacity(keys.len());
        for k in &keys {
            batch.append_statement(self.keys_st().insert_pre_key.clone());
            values.push((user_id, k.key_id as i32, k.public_key.as_str()));
        }
        batch.set_is_idempotent(true);
        self.session.batch(&batch, values).await?;
        Ok(PreKeysStored::Stored {
            total: current + new_ids.len(),
        })
    }

    async fn take_pre_key(&self, user_id: &str) -> Result<Taken, StoreError> {
        let st = self.keys_st();
        let mut key = None;
        'attempts: for _ in 0..TAKE_ATTEMPTS {
            let rows = self
                .session
                .execute_unpaged(&st.select_first_pre_keys, (user_id,))
                .await?
                .into_rows_result()?;
            let candidates: Vec<(i32, String)> =
                rows.rows::<(i32, String)>()?.collect::<Result<_, _>>()?;
            if candidates.is_empty() {
                break;
            }
            // Start at a random candidate: concurrent takers of one user's keys then
            // mostly try different keys instead of all contending for the first.
            let start = {
                use std::hash::{BuildHasher, Hasher};
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish() as usize
                    % candidates.len()
            };
            let mut candidates = candidates;
            candidates.rotate_left(start);
            for (key_id, public_key) in candidates {
                let r = self
                    .session
                    .execute_unpaged(&st.take_pre_key, (user_id, key_id))
                    .await?;
                if applied(r)? {
                    key = Some(PreKey {
                        key_id: key_id as u32,
                        public_key,
                    });
                    break 'attempts;
                }
            }
        }
        Ok(Taken {
            key,
            remaining: self.pre_key_count(user_id).await?,
        })
    }

    async fn pre_key_count(&self, user_id: &str) -> Result<usize, StoreError> {
        Ok(self.pre_key_ids(user_id).await?.len())
    }
}
