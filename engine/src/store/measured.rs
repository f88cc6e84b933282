//! A [`HistoryStore`] that measures the one it wraps: every operation's latency, errors
//! and timeouts, labelled by backend and operation (`roomcast_store_operation_seconds`,
//! `roomcast_store_operation_errors_total`), for the storage dashboard. One wrapper at
//! the place that chooses the backend, so every caller (writer, fills, recovery, REST
//! history) is measured the same way.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{AppendOutcome, AuditEntry, HistoryStore, PageQuery, StoreError, WriteBatch};
use crate::ids::MessageId;
use crate::message::ChatMessage;
use crate::metrics as m;

/// See the module doc.
pub struct Measured {
    inner: Arc<dyn HistoryStore>,
}

impl Measured {
    pub fn wrap(inner: Arc<dyn HistoryStore>) -> Arc<dyn HistoryStore> {
        Arc::new(Self { inner })
    }

    /// Records one operation's outcome; gives the result back.
    fn record<T>(
        &self,
        op: &'static str,
        started: Instant,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let backend = self.inner.backend();
        metrics::histogram!(m::STORE_OPERATION_SECONDS, "backend" => backend, "op" => op)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            let kind = match e {
                StoreError::Timeout(_) => "timeout",
                StoreError::Backend(_) | StoreError::Corrupt(_) => "error",
            };
            metrics::counter!(m::STORE_OPERATION_ERRORS, "backend" => backend, "op" => op, "kind" => kind)
                .increment(1);
        }
        result
    }
}

/// The operation labels, for metrics registered at zero.
pub const OPS: &[&str] = &[
    "append",
    "page",
    "get",
    "tombstone",
    "find_client_msg",
    "audit_page",
];

#[async_trait]
impl HistoryStore for Measured {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn settles_within(&self) -> std::time::Duration {
        self.inner.settles_within()
    }

    async fn append(&self, batch: WriteBatch) -> Result<Vec<AppendOutcome>, StoreError> {
        let t = Instant::now();
        let r = self.inner.append(batch).await;
        self.record("append", t, r)
    }

    async fn page(&self, room_id: &str, query: PageQuery) -> Result<Vec<ChatMessage>, StoreError> {
        let t = Instant::now();
        let r = self.inner.page(room_id, query).await;
        self.record("page", t, r)
    }

    async fn get(&self, room_id: &str, id: MessageId) -> Result<Option<ChatMessage>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(room_id, id).await;
        self.record("get", t, r)
    }

    async fn tombstone(&self, room_id: &str, id: MessageId) -> Result<bool, StoreError> {
        let t = Instant::now();
        let r = self.inner.tombstone(room_id, id).await;
        self.record("tombstone", t, r)
    }

    async fn find_client_msg(
        &self,
        room_id: &str,
        user_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageId>, StoreError> {
        let t = Instant::now();
        let r = self
            .inner
            .find_client_msg(room_id, user_id, client_msg_id)
            .await;
        self.record("find_client_msg", t, r)
    }

    async fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let t = Instant::now();
        let r = self.inner.audit_page(after, limit).await;
        self.record("audit_page", t, r)
    }
}
