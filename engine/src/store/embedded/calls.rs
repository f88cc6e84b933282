//! redb backend of [`CallStore`]: `calls[id] = json(Call)`, `live_calls[user] = call id`
//! (who is busy). The busy check and every state transition run in one write
//! transaction; redb has one writer at a time, so each is atomic.

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

use super::*;
use crate::calls::{Call, StartError, Transition, TransitionError, apply};
use crate::store::CallStore;

fn read_call(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Call>, StoreError> {
    table.get(id)?.map(|v| decode(v.value())).transpose()
}

#[async_trait]
impl CallStore for EmbeddedStore {
    async fn start(&self, call: Call) -> Result<Result<Call, StartError>, StoreError> {
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let out = {
                let mut live = txn.open_table(LIVE_CALLS)?;
                let mut busy = None;
                for user in [&call.caller_id, &call.callee_id] {
                    if live.get(user.as_str())?.is_some() {
                        busy = Some(user.clone());
                        break;
                    }
                }
                match busy {
                    Some(user_id) => Err(StartError::Busy { user_id }),
                    None => {
                        for user in [&call.caller_id, &call.callee_id] {
                            live.insert(user.as_str(), call.id.as_str())?;
                        }
                        let mut calls = txn.open_table(CALLS)?;
                        calls.insert(call.id.as_str(), encode(&call)?.as_slice())?;
                        Ok(call)
                    }
                }
            };
            txn.commit()?;
            Ok(out)
        })
        .await
    }

    async fn call(&self, id: &str) -> Result<Option<Call>, StoreError> {
        let txn = self.db.begin_read()?;
        let calls = txn.open_table(CALLS)?;
        read_call(&calls, id)
    }

    async fn live_call_of(&self, user_id: &str) -> Result<Option<Call>, StoreError> {
        let txn = self.db.begin_read()?;
        let live = txn.open_table(LIVE_CALLS)?;
        let Some(id) = live.get(user_id)? else {
            return Ok(None);
        };
        let calls = txn.open_table(CALLS)?;
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
                let mut calls = txn.open_table(CALLS)?;
                match read_call(&calls, &id)? {
                    None => Err(TransitionError::NotFound),
                    Some(call) => match apply(&call, &t) {
                        Err(e) => Err(e),
                        Ok(next) => {
                            calls.insert(id.as_str(), encode(&next)?.as_slice())?;
                            if !next.state.is_live() {
                                let mut live = txn.open_table(LIVE_CALLS)?;
                                for user in [&next.caller_id, &next.callee_id] {
                                    let mine =
                                        live.get(user.as_str())?.is_some_and(|v| v.value() == id);
                                    if mine {
                                        live.remove(user.as_str())?;
                                    }
                                }
                            }
                            Ok(next)
                        }
                    },
                }
            };
            txn.commit()?;
            Ok(out)
        })
        .await
    }

    async fn ringing_calls(&self) -> Result<Vec<Call>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read()?;
            let live = txn.open_table(LIVE_CALLS)?;
            let calls = txn.open_table(CALLS)?;
            let mut out: Vec<Call> = Vec::new();
            for item in live.iter()? {
                let (_, id) = item?;
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
