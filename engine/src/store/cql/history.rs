//! CQL backend of [`HistoryStore`]: per-message concurrent writes, pages walked across
//! a room's non-empty day buckets, the audit log by day.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures_util::future::join_all;

use super::{CqlStore, audit_bucket_of, bucket_of, id_i64};
use crate::ids::MessageId;
use crate::message::ChatMessage;
use crate::store::{AppendOutcome, AuditEntry, HistoryStore, PageQuery, StoreError, WriteBatch};
use crate::store::{decode, encode};

/// Buckets one read of `room_buckets` (or of the audit's) lists, at most.
const MAX_BUCKETS_PER_READ: i32 = 64;

fn limit_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What the store already holds for a message about to be appended.
enum Existing {
    Nothing,
    /// Its `(room, user, clientMsgId)` is stored under this id.
    ClientId(MessageId),
    /// A row with its id exists: the same message (an earlier attempt whose index
    /// writes failed, or a retry) or another one.
    Row(ChatMessage),
}

impl CqlStore {
    async fn existing(&self, m: &ChatMessage) -> Result<Existing, StoreError> {
        if let Some(cid) = &m.client_msg_id
            && let Some(id) = self.find_client_msg(&m.room_id, &m.user_id, cid).await?
        {
            return Ok(Existing::ClientId(id));
        }
        Ok(match self.get(&m.room_id, m.message_id).await? {
            Some(row) => Existing::Row(row),
            None => Existing::Nothing,
        })
    }

    /// Writes one message: its row, its bucket, its locator, then (only once those are
    /// written) its `clientMsgId` index.
    async fn write_message(&self, m: &ChatMessage) -> Result<(), StoreError> {
        let id = id_i64(m.message_id);
        let bucket = bucket_of(&m.room_id, m.message_id);
        let body = encode(m)?;
        let s = &self.session;
        let (row, bucket_row, locator) = futures_util::join!(
            s.execute_unpaged(&self.st.insert_message, (&m.room_id, bucket, id, &body)),
            s.execute_unpaged(&self.st.insert_bucket, (&m.room_id, bucket)),
            s.execute_unpaged(&self.st.insert_message_room, (id, &m.room_id)),
        );
        row?;
        bucket_row?;
        locator?;
        if let Some(cid) = &m.client_msg_id {
            s.execute_unpaged(&self.st.insert_client_id, (&m.room_id, &m.user_id, cid, id))
                .await?;
        }
        Ok(())
    }

    async fn write_audit(&self, a: &AuditEntry) -> Result<(), StoreError> {
        let bucket = audit_bucket_of(a.id);
        let body = encode(a)?;
        let s = &self.session;
        let (row, b) = futures_util::join!(
            s.execute_unpaged(&self.st.insert_audit, (bucket, id_i64(a.id), &body)),
            s.execute_unpaged(&self.st.insert_audit_bucket, (bucket,)),
        );
        row?;
        b?;
        Ok(())
    }

    /// Up to `MAX_BUCKETS_PER_READ` of `room`'s buckets from `from` in the walk's direction.
    async fn buckets(&self, room: &str, from: i32, forward: bool) -> Result<Vec<i32>, StoreError> {
        let st = if forward {
            &self.st.select_buckets_asc
        } else {
            &self.st.select_buckets_desc
        };
        let rows = self
            .session
            .execute_unpaged(st, (room, from, MAX_BUCKETS_PER_READ))
            .await?
            .into_rows_result()?;
        rows.rows::<(i32,)>()?
            .map(|r| r.map(|(b,)| b).map_err(StoreError::from))
            .collect()
    }
}

#[async_trait]
impl HistoryStore for CqlStore {
    fn backend(&self) -> &'static str {
        "cql"
    }

    /// Cassandra and ScyllaDB apply a mutation within their write timeout (2 s by
    /// default) or drop it; a coordinator timeout or a lost reply leaves it open until
    /// then.
    fn settles_within(&self) -> std::time::Duration {
        std::time::Duration::from_secs(2)
    }

    async fn append(&self, batch: WriteBatch) -> Result<Vec<AppendOutcome>, StoreError> {
        // What is stored already, for every message at once (one round trip deep).
        let existing = join_all(batch.messages.iter().map(|m| self.existing(m))).await;
        let mut outcomes = vec![AppendOutcome::Failed; batch.messages.len()];
        let mut to_write = Vec::new();
        let mut batch_cids: HashMap<(&str, &str, &str), MessageId> = HashMap::new();
        let mut batch_ids: HashSet<(&str, MessageId)> = HashSet::new();
        for (i, (m, found)) in batch.messages.iter().zip(existing).enumerate() {
            let cid_key = m
                .client_msg_id
                .as_deref()
                .map(|c| (m.room_id.as_str(), m.user_id.as_str(), c));
            // The first of two equal messages in one batch wins.
            if let Some(&original) = cid_key.as_ref().and_then(|k| batch_cids.get(k)) {
                outcomes[i] = AppendOutcome::Duplicate(original);
                continue;
            }
            if !batch_ids.insert((m.room_id.as_str(), m.message_id)) {
                outcomes[i] = AppendOutcome::Duplicate(m.message_id);
                continue;
            }
            match found {
                // Not known: this attempt's outcome decides (Failed if the lookup failed).
                Err(_) => continue,
                Ok(Existing::ClientId(original)) => {
                    outcomes[i] = AppendOutcome::Duplicate(original);
                    continue;
                }
                Ok(Existing::Row(row))
                    if row.user_id != m.user_id || row.client_msg_id != m.client_msg_id =>
                {
                    outcomes[i] = AppendOutcome::Duplicate(m.message_id);
                    continue;
                }
                // Nothing stored, or this very message partly stored by an earlier
                // attempt: (re)write it, indexes included. Every write is idempotent.
                Ok(Existing::Row(_)) | Ok(Existing::Nothing) => {}
            }
            if let Some(k) = cid_key {
                batch_cids.insert(k, m.message_id);
            }
            to_write.push(i);
        }
        let written = join_all(
            to_write
                .iter()
                .map(|&i| self.write_message(&batch.messages[i])),
        )
        .await;
        for (&i, result) in to_write.iter().zip(written) {
            outcomes[i] = match result {
                Ok(()) => AppendOutcome::Stored,
                Err(e) => {
                    tracing::warn!(error = %e, "cql: message write failed");
                    AppendOutcome::Failed
                }
            };
        }
        // Conversation activity, a monotone follow-up: once per conversation per batch,
        // with its newest stored message. Until it is written, that message does not
        // count as stored (a retry resumes it and writes the activity again).
        let mut newest: HashMap<&str, usize> = HashMap::new();
        for (i, m) in batch.messages.iter().enumerate() {
            if outcomes[i] == AppendOutcome::Stored && crate::chat::is_conversation(&m.room_id) {
                let e = newest.entry(m.room_id.as_str()).or_insert(i);
                if batch.messages[*e].message_id < m.message_id {
                    *e = i;
                }
            }
        }
        let touches: Vec<(&str, usize)> = newest.into_iter().collect();
        let touched = join_all(
            touches
                .iter()
                .map(|&(_, i)| self.touch_conversation(&batch.messages[i])),
        )
        .await;
        for (&(room, _), result) in touches.iter().zip(touched) {
            if let Err(e) = result {
                tracing::warn!(error = %e, "cql: conversation activity write failed");
                for (i, m) in batch.messages.iter().enumerate() {
                    if m.room_id == room && outcomes[i] == AppendOutcome::Stored {
                        outcomes[i] = AppendOutcome::Failed;
                    }
                }
            }
        }
        // Audit entries of the batch: all durable, or the call fails (the writer then
        // retries the batch; every write above is idempotent).
        for r in join_all(batch.audit.iter().map(|a| self.write_audit(a))).await {
            r?;
        }
        Ok(outcomes)
    }

    async fn page(&self, room_id: &str, query: PageQuery) -> Result<Vec<ChatMessage>, StoreError> {
        let forward = query.after.is_some() && query.before.is_none();
        let lower = query.after.unwrap_or(0);
        let upper = query.before.unwrap_or(i64::MAX as u64);
        if query.limit == 0 || upper <= lower.saturating_add(1) {
            return Ok(Vec::new());
        }
        let start = if forward {
            bucket_of(room_id, lower.saturating_add(1))
        } else {
            bucket_of(room_id, upper - 1)
        };
        let end = if forward {
            bucket_of(room_id, upper - 1)
        } else {
            bucket_of(room_id, lower.saturating_add(1))
        };
        let st = if forward {
            &self.st.page_asc
        } else {
            &self.st.page_desc
        };
        let mut out: Vec<ChatMessage> = Vec::with_capacity(query.limit.min(1024));
        // Every listed bucket holds at least one message, so this walk reads at most
        // about `limit` buckets (in lists of MAX_BUCKETS_PER_READ): bounded by the page.
        let mut from = start;
        'walk: loop {
            let buckets = self.buckets(room_id, from, forward).await?;
            let full = buckets.len() == MAX_BUCKETS_PER_READ as usize;
            for &bucket in &buckets {
                if (forward && bucket > end) || (!forward && bucket < end) {
                    break 'walk;
                }
                let left = query.limit - out.len();
                let rows = self
                    .session
                    .execute_unpaged(
                        st,
                        (
                            room_id,
                            bucket,
                            id_i64(lower),
                            id_i64(upper),
                            limit_i32(left),
                        ),
                    )
                    .await?
                    .into_rows_result()?;
                for row in rows.rows::<(Vec<u8>,)>()? {
                    let (body,) = row?;
                    out.push(decode(&body)?);
                }
                if out.len() >= query.limit {
                    break 'walk;
                }
            }
            match buckets.last() {
                Some(&last) if full => from = if forward { last + 1 } else { last - 1 },
                _ => break,
            }
        }
        if !forward {
            out.reverse();
        }
        Ok(out)
    }

    async fn get(&self, room_id: &str, id: MessageId) -> Result<Option<ChatMessage>, StoreError> {
        let row = self
            .session
            .execute_unpaged(
                &self.st.select_message,
                (room_id, bucket_of(room_id, id), id_i64(id)),
            )
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Vec<u8>,)>()?;
        row.map(|(body,)| decode(&body)).transpose()
    }

    /// Soft delete as an overwrite of the row (no CQL tombstone): it keeps its id, `seq`,
    /// room, sender and time.
    async fn tombstone(&self, room_id: &str, id: MessageId) -> Result<bool, StoreError> {
        let Some(mut m) = self.get(room_id, id).await? else {
            return Ok(false);
        };
        if !m.deleted {
            m.deleted = true;
            m.content.clear();
            let body = encode(&m)?;
            self.session
                .execute_unpaged(
                    &self.st.insert_message,
                    (room_id, bucket_of(room_id, id), id_i64(id), &body),
                )
                .await?;
        }
        Ok(true)
    }

    async fn find_client_msg(
        &self,
        room_id: &str,
        user_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        let row = self
            .session
            .execute_unpaged(&self.st.select_client_id, (room_id, user_id, client_msg_id))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(i64,)>()?;
        Ok(row.map(|(id,)| id as u64))
    }

    async fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = after.unwrap_or(0);
        let rows = self
            .session
            .execute_unpaged(&self.st.select_audit_buckets, (audit_bucket_of(after),))
            .await?
            .into_rows_result()?;
        let buckets: Vec<i32> = rows
            .rows::<(i32,)>()?
            .map(|r| r.map(|(b,)| b).map_err(StoreError::from))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for bucket in buckets {
            if out.len() >= limit {
                break;
            }
            let rows = self
                .session
                .execute_unpaged(
                    &self.st.audit_page,
                    (bucket, id_i64(after), limit_i32(limit - out.len())),
                )
                .await?
                .into_rows_result()?;
            for row in rows.rows::<(Vec<u8>,)>()? {
                let (body,) = row?;
                out.push(decode(&body)?);
            }
        }
        Ok(out)
    }
}
