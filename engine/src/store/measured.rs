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
    /// Per operation (indexed as [`OPS`]): its latency histogram and its timeout and
    /// error counters, made once (`find_client_msg` runs per message with a
    /// `clientMsgId`: no registry lookup on that path).
    handles: Vec<(metrics::Histogram, metrics::Counter, metrics::Counter)>,
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

const APPEND: usize = 0;
const PAGE: usize = 1;
const GET: usize = 2;
const TOMBSTONE: usize = 3;
const FIND_CLIENT_MSG: usize = 4;
const AUDIT_PAGE: usize = 5;

impl Measured {
    pub fn wrap(inner: Arc<dyn HistoryStore>) -> Arc<dyn HistoryStore> {
        let backend = inner.backend();
        let handles = OPS
            .iter()
            .map(|op| {
                let errors = |kind: &'static str| {
                    metrics::counter!(m::STORE_OPERATION_ERRORS, "backend" => backend, "op" => *op, "kind" => kind)
                };
                (
                    metrics::histogram!(m::STORE_OPERATION_SECONDS, "backend" => backend, "op" => *op),
                    errors("timeout"),
                    errors("error"),
                )
            })
            .collect();
        Arc::new(Self { inner, handles })
    }

    /// Records one operation's outcome; gives the result back.
    fn record<T>(
        &self,
        op: usize,
        started: Instant,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (seconds, timeouts, errors) = &self.handles[op];
        seconds.record(started.elapsed().as_secs_f64());
        match &result {
            Err(StoreError::Timeout(_)) => timeouts.increment(1),
            Err(StoreError::Backend(_) | StoreError::Corrupt(_)) => errors.increment(1),
            Ok(_) => {}
        }
        result
    }
}

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
        self.record(APPEND, t, r)
    }

    async fn page(&self, room_id: &str, query: PageQuery) -> Result<Vec<ChatMessage>, StoreError> {
        let t = Instant::now();
        let r = self.inner.page(room_id, query).await;
        self.record(PAGE, t, r)
    }

    async fn get(&self, room_id: &str, id: MessageId) -> Result<Option<ChatMessage>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(room_id, id).await;
        self.record(GET, t, r)
    }

    async fn tombstone(&self, room_id: &str, id: MessageId) -> Result<bool, StoreError> {
        let t = Instant::now();
        let r = self.inner.tombstone(room_id, id).await;
        self.record(TOMBSTONE, t, r)
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
        self.record(FIND_CLIENT_MSG, t, r)
    }

    async fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let t = Instant::now();
        let r = self.inner.audit_page(after, limit).await;
        self.record(AUDIT_PAGE, t, r)
    }
}
