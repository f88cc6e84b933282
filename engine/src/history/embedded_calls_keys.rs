//! The embedded (redb) backend of [`CallStore`] and [`KeyStore`], in the same database
//! as history and conversations.
//!
//! Layout: `calls[id] = json(Call)`, `live_calls[user] = call id` (who is busy),
//! `identity_keys[user]`, `signed_pre_keys[user]` (json), `pre_keys[(user, key id)] =
//! public key`. Every check-then-write (busy check, state transition, taking a pre-key)
//! runs in one write transaction; redb has one writer at a time, so each is atomic.

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;
use super::embedded::{EmbeddedStore, decode, encode, write_txn};
use crate::calls::{Call, CallStore, StartError, Transition, TransitionError, apply};
use crate::keys::{
    IdentityKey, KeyStore, MAX_PRE_KEYS_TOTAL, PreKey, PreKeysStored, SignedPreKey, Taken,
};

pub(super) const CALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("calls");
pub(super) const LIVE_CALLS: TableDefinition<&str, &str> = TableDefinition::new("live_calls");
pub(super) const IDENTITY_KEYS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("identity_keys");
pub(super) const SIGNED_PRE_KEYS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("signed_pre_keys");
pub(super) const PRE_KEYS: TableDefinition<(&str, u32), &str> = TableDefinition::new("pre_keys");

fn read_call(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Call>, StoreError> {
    table
        .get(id)
        .map_err(StoreError::backend)?
        .map(|v| decode(v.value()))
        .transpose()
}

#[async_trait]
impl CallStore for EmbeddedStore {
    async fn start(&self, call: Call) -> Result<Result<Call, StartError>, StoreError> {
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut live = txn.open_table(LIVE_CALLS).map_err(StoreError::backend)?;
                let mut busy = None;
                for user in [&call.caller_id, &call.callee_id] {
                    if live
                        .get(user.as_str())
                        .map_err(StoreError::backend)?
                        .is_some()
                    {
                        busy = Some(user.clone());
                        break;
                    }
                }
                match busy {
                    Some(user_id) => Err(StartError::Busy { user_id }),
                    None => {
                        for user in [&call.caller_id, &call.callee_id] {
                            live.insert(user.as_str(), call.id.as_str())
                                .map_err(StoreError::backend)?;
                        }
                        let mut calls = txn.open_table(CALLS).map_err(StoreError::backend)?;
                        calls
                            .insert(call.id.as_str(), encode(&call)?.as_slice())
                            .map_err(StoreError::backend)?;
                        Ok(call)
                    }
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(out)
        })
        .await
    }

    async fn call(&self, id: &str) -> Result<Option<Call>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let calls = txn.open_table(CALLS).map_err(StoreError::backend)?;
        read_call(&calls, id)
    }

    async fn live_call_of(&self, user_id: &str) -> Result<Option<Call>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let live = txn.open_table(LIVE_CALLS).map_err(StoreError::backend)?;
        let Some(id) = live.get(user_id).map_err(StoreError::backend)? else {
            return Ok(None);
        };
        let calls = txn.open_table(CALLS).map_err(StoreError::backend)?;
        read_call(&calls, id.value())
    }

    async fn transition(
        &self,
        id: &str,
        t: Transition,
    ) -> Result<Result<Call, TransitionError>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut calls = txn.open_table(CALLS).map_err(StoreError::backend)?;
                match read_call(&calls, &id)? {
                    None => Err(TransitionError::NotFound),
                    Some(call) => match apply(&call, &t) {
                        Err(e) => Err(e),
                        Ok(next) => {
                            calls
                                .insert(id.as_str(), encode(&next)?.as_slice())
                                .map_err(StoreError::backend)?;
                            if !next.state.is_live() {
                                let mut live =
                                    txn.open_table(LIVE_CALLS).map_err(StoreError::backend)?;
                                for user in [&next.caller_id, &next.callee_id] {
                                    let mine = live
                                        .get(user.as_str())
                                        .map_err(StoreError::backend)?
                                        .is_some_and(|v| v.value() == id);
                                    if mine {
                                        live.remove(user.as_str()).map_err(StoreError::backend)?;
                                    }
                                }
                            }
                            Ok(next)
                        }
                    },
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(out)
        })
        .await
    }

    async fn ringing_calls(&self) -> Result<Vec<Call>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let live = txn.open_table(LIVE_CALLS).map_err(StoreError::backend)?;
            let calls = txn.open_table(CALLS).map_err(StoreError::backend)?;
            let mut out: Vec<Call> = Vec::new();
            for item in live.iter().map_err(StoreError::backend)? {
                let (_, id) = item.map_err(StoreError::backend)?;
                if let Some(call) = read_call(&calls, id.value())?
                    && call.state == crate::calls::CallState::Ringing
                    && !out.iter().any(|c| c.id == call.id)
                {
                    out.push(call);
                }
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn put_identity_key(&self, user_id: &str, key: IdentityKey) -> Result<(), StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            txn.open_table(IDENTITY_KEYS)
                .map_err(StoreError::backend)?
                .insert(user.as_str(), encode(&key)?.as_slice())
                .map_err(StoreError::backend)?;
            txn.commit().map_err(StoreError::backend)
        })
        .await
    }

    async fn identity_key(&self, user_id: &str) -> Result<Option<IdentityKey>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let t = txn.open_table(IDENTITY_KEYS).map_err(StoreError::backend)?;
        t.get(user_id)
            .map_err(StoreError::backend)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    async fn put_signed_pre_key(&self, user_id: &str, key: SignedPreKey) -> Result<(), StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            txn.open_table(SIGNED_PRE_KEYS)
                .map_err(StoreError::backend)?
                .insert(user.as_str(), encode(&key)?.as_slice())
                .map_err(StoreError::backend)?;
            txn.commit().map_err(StoreError::backend)
        })
        .await
    }

    async fn signed_pre_key(&self, user_id: &str) -> Result<Option<SignedPreKey>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let t = txn
            .open_table(SIGNED_PRE_KEYS)
            .map_err(StoreError::backend)?;
        t.get(user_id)
            .map_err(StoreError::backend)?
            .map(|v| decode(v.value()))
            .transpose()
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
                let mut t = txn.open_table(PRE_KEYS).map_err(StoreError::backend)?;
                let current = count_user(&t, &user)?;
                let mut new = 0;
                for k in &keys {
                    if t.get((user.as_str(), k.key_id))
                        .map_err(StoreError::backend)?
                        .is_none()
                    {
                        new += 1;
                    }
                }
                if current + new > MAX_PRE_KEYS_TOTAL {
                    PreKeysStored::OverCap { current }
                } else {
                    for k in &keys {
                        t.insert((user.as_str(), k.key_id), k.public_key.as_str())
                            .map_err(StoreError::backend)?;
                    }
                    PreKeysStored::Stored {
                        total: current + new,
                    }
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(out)
        })
        .await
    }

    async fn take_pre_key(&self, user_id: &str) -> Result<Taken, StoreError> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut t = txn.open_table(PRE_KEYS).map_err(StoreError::backend)?;
                let first = t
                    .range((user.as_str(), 0)..=(user.as_str(), u32::MAX))
                    .map_err(StoreError::backend)?
                    .next()
                    .transpose()
                    .map_err(StoreError::backend)?
                    .map(|(k, v)| (k.value().1, v.value().to_owned()));
                let key = match first {
                    Some((key_id, public_key)) => {
                        t.remove((user.as_str(), key_id))
                            .map_err(StoreError::backend)?;
                        Some(PreKey { key_id, public_key })
                    }
                    None => None,
                };
                Taken {
                    key,
                    remaining: count_user(&t, &user)?,
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(out)
        })
        .await
    }

    async fn pre_key_count(&self, user_id: &str) -> Result<usize, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::backend)?;
        let t = txn.open_table(PRE_KEYS).map_err(StoreError::backend)?;
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
    for item in t
        .range((user, 0)..=(user, u32::MAX))
        .map_err(StoreError::backend)?
    {
        item.map_err(StoreError::backend)?;
        n += 1;
    }
    Ok(n)
}
