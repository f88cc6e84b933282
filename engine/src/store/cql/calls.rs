//! CQL backend of [`CallStore`]. Where the embedded store had one transaction:
//! - the busy index is one conditional claim per party (`IF NOT EXISTS`); losing the
//!   second claim releases the first (`IF call_id = ?`), so two racing calls involving
//!   one user have one winner; a claim left by a call that ended without clearing it
//!   (a crash between the two writes) is cleared when it blocks a new call;
//! - a transition is a compare-and-set on the stored state (`IF state = ?`), so a double
//!   accept, or an accept racing an end, has exactly one winner.
//!
//! These are lightweight transactions: a ScyllaDB keyspace holding these tables needs
//! tablets disabled (LWT is not supported in tablets keyspaces).

use async_trait::async_trait;
use futures_util::future::join_all;
use scylla::statement::prepared::PreparedStatement;

use super::{CqlStore, Preparer, applied};
use crate::calls::{Call, CallState, StartError, Transition, TransitionError, apply};
use crate::store::{CallStore, StoreError};
use crate::store::{decode, encode};

/// Compare-and-set attempts of one transition before it reports the conflict it sees.
const CAS_ATTEMPTS: usize = 4;

pub(crate) struct CallStatements {
    insert_call: PreparedStatement,
    delete_call: PreparedStatement,
    select_call: PreparedStatement,
    cas_call: PreparedStatement,
    claim: PreparedStatement,
    release: PreparedStatement,
    select_live: PreparedStatement,
    insert_ringing: PreparedStatement,
    delete_ringing: PreparedStatement,
    select_ringing: PreparedStatement,
}

impl CallStatements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            insert_call: p
                .prep("INSERT INTO {ks}.calls (id, body, state) VALUES (?, ?, ?)")
                .await?,
            delete_call: p.prep("DELETE FROM {ks}.calls WHERE id = ?").await?,
            select_call: p.prep("SELECT body FROM {ks}.calls WHERE id = ?").await?,
            cas_call: p
                .lwt("UPDATE {ks}.calls SET body = ?, state = ? WHERE id = ? IF state = ?")
                .await?,
            claim: p
                .lwt("INSERT INTO {ks}.live_calls (user_id, call_id) VALUES (?, ?) IF NOT EXISTS")
                .await?,
            release: p
                .lwt("DELETE FROM {ks}.live_calls WHERE user_id = ? IF call_id = ?")
                .await?,
            select_live: p
                .prep("SELECT call_id FROM {ks}.live_calls WHERE user_id = ?")
                .await?,
            insert_ringing: p
                .prep("INSERT INTO {ks}.ringing_calls (part, call_id) VALUES (0, ?)")
                .await?,
            delete_ringing: p
                .prep("DELETE FROM {ks}.ringing_calls WHERE part = 0 AND call_id = ?")
                .await?,
            select_ringing: p
                .prep("SELECT call_id FROM {ks}.ringing_calls WHERE part = 0 LIMIT 10000")
                .await?,
        })
    }
}

fn state_name(s: CallState) -> &'static str {
    match s {
        CallState::Ringing => "ringing",
        CallState::Active => "active",
        CallState::Ended => "ended",
        CallState::Missed => "missed",
    }
}

impl CqlStore {
    fn calls_st(&self) -> &CallStatements {
        &self.st.calls
    }

    async fn live_id(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .session
            .execute_unpaged(&self.calls_st().select_live, (user_id,))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<String>,)>()?;
        Ok(row.and_then(|(c,)| c))
    }

    /// Claims `user_id` for `call_id`. A claim held by a call that is over (left behind
    /// by a crash) is released and the claim tried once more.
    async fn claim(&self, user_id: &str, call_id: &str) -> Result<bool, StoreError> {
        for _ in 0..2 {
            let r = self
                .session
                .execute_unpaged(&self.calls_st().claim, (user_id, call_id))
                .await?;
            if applied(r)? {
                return Ok(true);
            }
            let Some(holder) = self.live_id(user_id).await? else {
                continue;
            };
            if holder == call_id {
                return Ok(true); // our own claim, seen by a retry
            }
            match self.call(&holder).await? {
                Some(c) if c.state.is_live() => return Ok(false),
                _ => self.release(user_id, &holder).await?,
            }
        }
        Ok(false)
    }

    async fn release(&self, user_id: &str, call_id: &str) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.calls_st().release, (user_id, call_id))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl CallStore for CqlStore {
    async fn start(&self, call: Call) -> Result<Result<Call, StartError>, StoreError> {
        let st = self.calls_st();
        // The record first, so whoever finds a claim finds the call.
        self.session
            .execute_unpaged(
                &st.insert_call,
                (&call.id, encode(&call)?, state_name(call.state)),
            )
            .await?;
        if !self.claim(&call.caller_id, &call.id).await? {
            self.session
                .execute_unpaged(&st.delete_call, (&call.id,))
                .await?;
            return Ok(Err(StartError::Busy {
                user_id: call.caller_id.clone(),
            }));
        }
        if !self.claim(&call.callee_id, &call.id).await? {
            self.release(&call.caller_id, &call.id).await?;
            self.session
                .execute_unpaged(&st.delete_call, (&call.id,))
                .await?;
            return Ok(Err(StartError::Busy {
                user_id: call.callee_id.clone(),
            }));
        }
        if call.state == CallState::Ringing {
            self.session
                .execute_unpaged(&st.insert_ringing, (&call.id,))
                .await?;
        }
        Ok(Ok(call))
    }

    async fn call(&self, id: &str) -> Result<Option<Call>, StoreError> {
        let row = self
            .session
            .execute_unpaged(&self.calls_st().select_call, (id,))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<Vec<u8>>,)>()?;
        match row {
            Some((Some(body),)) => decode(&body).map(Some),
            _ => Ok(None),
        }
    }

    async fn live_call_of(&self, user_id: &str) -> Result<Option<Call>, StoreError> {
        let Some(id) = self.live_id(user_id).await? else {
            return Ok(None);
        };
        Ok(self.call(&id).await?.filter(|c| c.state.is_live()))
    }

    async fn transition(
        &self,
        id: &str,
        t: Transition,
    ) -> Result<Result<Call, TransitionError>, StoreError> {
        let st = self.calls_st();
        for _ in 0..CAS_ATTEMPTS {
            let Some(call) = self.call(id).await? else {
                return Ok(Err(TransitionError::NotFound));
            };
            let next = match apply(&call, &t) {
                Ok(next) => next,
                Err(e) => return Ok(Err(e)),
            };
            let r = self
                .session
                .execute_unpaged(
                    &st.cas_call,
                    (
                        encode(&next)?,
                        state_name(next.state),
                        id,
                        state_name(call.state),
                    ),
                )
                .await?;
            if !applied(r)? {
                continue; // someone else moved it: apply to what is there now
            }
            if next.state != CallState::Ringing {
                self.session
                    .execute_unpaged(&st.delete_ringing, (id,))
                    .await?;
            }
            if !next.state.is_live() {
                for r in join_all(
                    [&next.caller_id, &next.callee_id]
                        .into_iter()
                        .map(|u| self.release(u, id)),
                )
                .await
                {
                    r?;
                }
            }
            return Ok(Ok(next));
        }
        match self.call(id).await? {
            None => Ok(Err(TransitionError::NotFound)),
            Some(now) => Ok(Err(TransitionError::Conflict(Box::new(now)))),
        }
    }

    async fn ringing_calls(&self) -> Result<Vec<Call>, StoreError> {
        let rows = self
            .session
            .execute_unpaged(&self.calls_st().select_ringing, ())
            .await?
            .into_rows_result()?;
        let ids: Vec<String> = rows
            .rows::<(String,)>()?
            .map(|r| r.map(|(id,)| id).map_err(StoreError::from))
            .collect::<Result<_, _>>()?;
        let calls = join_all(ids.iter().map(|id| self.call(id))).await;
        let mut out = Vec::new();
        for c in calls {
            if let Some(c) = c?
                && c.state == CallState::Ringing
            {
                out.push(c);
            }
        }
        Ok(out)
    }
}
