//! The history writer: one task that group-commits messages and audit entries to the
//! [`HistoryStore`] and only then acknowledges senders.
//!
//! Shards hand it messages through a bounded flume queue with `try_send` (a full queue
//! makes the publish fail with `overloaded` before any fan-out, so a shard never waits).
//! The task takes whatever is queued (up to `max_batch`) as one batch: while a commit's
//! fsync runs, the next batch accumulates, so throughput grows with load and latency
//! stays one commit at low load. Acks are sent in queue order after their batch is
//! durable. A [`HistoryWriter::barrier`] resolves once everything queued before it is
//! durable (used by recovery and shutdown).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{AppendOutcome, AuditEntry, HistoryStore, WriteBatch};
use crate::error::{ClientError, ErrorCode};
use crate::ids::MessageId;
use crate::message::ChatMessage;
use crate::metrics as m;
use crate::outbox::Outbox;
use crate::protocol;

/// A message that is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub message: ChatMessage,
    /// The same `clientMsgId` had been stored before; `message.message_id` is the
    /// original id.
    pub duplicate: bool,
}

/// Where the acknowledgement of a publish goes.
#[derive(Debug)]
pub enum AckTo {
    /// Nobody waits (system messages).
    Nobody,
    /// An `ack` (or `error`) frame into the sender's outbox.
    Outbox(Arc<Outbox>),
    /// A reply channel (REST publishes wait for it).
    Reply(oneshot::Sender<Result<Acked, ClientError>>),
}

impl AckTo {
    pub(crate) fn send(self, result: Result<Acked, ClientError>) {
        match self {
            AckTo::Nobody => {}
            AckTo::Outbox(outbox) => {
                let frame = match &result {
                    Ok(a) => protocol::encode_ack(&a.message, a.duplicate),
                    Err(e) => protocol::encode_error(e),
                };
                outbox.push(frame, Instant::now());
            }
            AckTo::Reply(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

pub(crate) enum WriteOp {
    Message {
        msg: ChatMessage,
        ack: AckTo,
        /// A moderation action on this message: committed in the same batch, so it is
        /// durable when the sender is acknowledged.
        audit: Option<AuditEntry>,
        /// In a cluster: publish the message once it is stored (commit before publish,
        /// so whatever a node receives any node can recover from the store).
        publish: Option<AfterCommit>,
    },
    /// Acknowledge a message already queued or stored (a deduplicated resend). Sent
    /// through the queue so that it is answered after the original's commit.
    AckExisting {
        msg: ChatMessage,
        ack: AckTo,
    },
    Audit(AuditEntry),
    Barrier(oneshot::Sender<()>),
}

/// A publish that waits for its message's commit (see [`WriteOp::Message`]). Batches
/// commit one after another and every retry of a batch ends before the next begins, so
/// these publishes leave in the order the sequencer admitted the messages: a room's
/// `seq` order.
pub(crate) struct AfterCommit {
    pub(crate) bus: Arc<dyn crate::bus::Bus>,
    pub(crate) audience: Option<Arc<[String]>>,
    pub(crate) received_at: Instant,
}

/// Ids whose write failed for good, so a resend of them is treated as new. Bounded.
#[derive(Debug, Default)]
pub(crate) struct FailedWrites {
    inner: Mutex<(HashSet<MessageId>, VecDeque<MessageId>)>,
}

const FAILED_KEEP: usize = 10_000;

impl FailedWrites {
    fn insert(&self, id: MessageId) {
        let mut g = self.inner.lock();
        if g.0.insert(id) {
            g.1.push_back(id);
            if g.1.len() > FAILED_KEEP
                && let Some(old) = g.1.pop_front()
            {
                g.0.remove(&old);
            }
        }
    }

    pub(crate) fn contains(&self, id: MessageId) -> bool {
        self.inner.lock().0.contains(&id)
    }
}

/// A handle to the writer task. Cloned into every shard.
#[derive(Clone)]
pub struct HistoryWriter {
    tx: flume::Sender<WriteOp>,
    pub(crate) failed: Arc<FailedWrites>,
}

impl std::fmt::Debug for HistoryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryWriter")
            .field("queued", &self.tx.len())
            .finish()
    }
}

impl HistoryWriter {
    /// Starts the writer task. `capacity` bounds the queue (ops), `max_batch` one commit.
    pub fn spawn(
        store: Arc<dyn HistoryStore>,
        capacity: usize,
        max_batch: usize,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = flume::bounded(capacity);
        metrics::gauge!(m::WRITER_QUEUE_CAPACITY).set(capacity as f64);
        let failed = Arc::new(FailedWrites::default());
        let task = tokio::spawn(run(rx, store, max_batch.max(1), failed.clone()));
        (Self { tx, failed }, task)
    }

    /// Queues without waiting; `Err` gives the op back when the queue is full (boxed:
    /// the failure path is rare and the op is large).
    pub(crate) fn try_send(&self, op: WriteOp) -> Result<(), Box<WriteOp>> {
        self.tx.try_send(op).map_err(|e| Box::new(e.into_inner()))
    }

    /// Queues an audit entry, waiting for room if the queue is full.
    pub async fn audit(&self, entry: AuditEntry) {
        let _ = self.tx.send_async(WriteOp::Audit(entry)).await;
    }

    /// Resolves when everything queued before this call is durable (or failed for good).
    pub async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send_async(WriteOp::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Ops waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

fn not_stored(msg: &ChatMessage) -> ClientError {
    ClientError::new(
        ErrorCode::StoreUnavailable,
        "the message could not be stored; retry with the same clientMsgId",
    )
    .in_room(&msg.room_id)
    .for_client_msg(msg.client_msg_id.as_deref())
}

async fn run(
    rx: flume::Receiver<WriteOp>,
    store: Arc<dyn HistoryStore>,
    max_batch: usize,
    failed: Arc<FailedWrites>,
) {
    let mut ops = Vec::with_capacity(max_batch.min(4096));
    let depth = metrics::gauge!(m::WRITER_QUEUE_DEPTH);
    while let Ok(first) = rx.recv_async().await {
        ops.push(first);
        while ops.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        // What is left once a batch is taken: near capacity, publishes are refused.
        depth.set(rx.len() as f64);
        commit(&*store, &mut ops, &failed).await;
    }
    tracing::debug!("history writer stopped");
}

/// Retry delays after a failed commit; the batch is abandoned after the last.
const RETRIES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(1),
];

async fn commit(store: &dyn HistoryStore, ops: &mut Vec<WriteOp>, failed: &FailedWrites) {
    let mut messages = Vec::new();
    let mut audit = Vec::new();
    for op in ops.iter() {
        match op {
            WriteOp::Message { msg, audit: a, .. } => {
                messages.push(msg.clone());
                audit.extend(a.iter().cloned());
            }
            WriteOp::Audit(a) => audit.push(a.clone()),
            WriteOp::AckExisting { .. } | WriteOp::Barrier(_) => {}
        }
    }
    let outcomes = if messages.is_empty() && audit.is_empty() {
        Vec::new()
    } else {
        append_with_retries(store, messages, audit).await
    };

    let mut outcomes = outcomes.into_iter();
    for op in ops.drain(..) {
        match op {
            WriteOp::Message {
                msg, ack, publish, ..
            } => {
                let outcome = match outcomes.next().flatten() {
                    // Its own id: an earlier attempt of this append stored it (the
                    // reply was lost, or a later write of the batch failed). Ids are
                    // assigned once per message, so this is the message itself.
                    Some(AppendOutcome::Duplicate(original)) if original == msg.message_id => {
                        Some(AppendOutcome::Stored)
                    }
                    other => other,
                };
                let result = match outcome {
                    Some(AppendOutcome::Stored) => {
                        metrics::counter!(m::MESSAGES_STORED).increment(1);
                        if let Some(p) = publish {
                            p.bus.publish(crate::bus::Envelope::Message(Box::new(
                                crate::bus::RoomMessage {
                                    msg: msg.clone(),
                                    audience: p.audience,
                                    received_at: p.received_at,
                                },
                            )));
                        }
                        Ok(Acked {
                            message: msg,
                            duplicate: false,
                        })
                    }
                    Some(AppendOutcome::Duplicate(original)) => {
                        // A resend the sequencer's window did not know (another node
                        // took it, or a restart): answer with the original as stored,
                        // its `seq` included. Rare, so one read here is cheap.
                        let message = match store.get(&msg.room_id, original).await {
                            Ok(Some(stored)) => stored,
                            _ => {
                                let mut message = msg;
                                message.message_id = original;
                                // Not readable now: the id is what a client dedupes by.
                                message.seq = 0;
                                message
                            }
                        };
                        Ok(Acked {
                            message,
                            duplicate: true,
                        })
                    }
                    Some(AppendOutcome::Failed) | None => {
                        failed.insert(msg.message_id);
                        Err(not_stored(&msg))
                    }
                };
                ack.send(result);
            }
            WriteOp::AckExisting { msg, ack } => {
                let result = if failed.contains(msg.message_id) {
                    Err(not_stored(&msg))
                } else {
                    Ok(Acked {
                        message: msg,
                        duplicate: true,
                    })
                };
                ack.send(result);
            }
            WriteOp::Audit(_) => {}
            WriteOp::Barrier(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// Appends, then retries what is not known stored: the whole batch after an `Err`, only
/// the `Failed` messages after a partial success (appends are idempotent, so a retry
/// never stores anything twice). Returns each message's final outcome in order; `None`
/// (or `Failed`) for a message that was not stored after the last retry.
async fn append_with_retries(
    store: &dyn HistoryStore,
    messages: Vec<crate::message::ChatMessage>,
    mut audit: Vec<AuditEntry>,
) -> Vec<Option<AppendOutcome>> {
    let started = Instant::now();
    metrics::histogram!(m::STORE_BATCH_SIZE).record((messages.len() + audit.len()) as f64);
    let mut outcomes: Vec<Option<AppendOutcome>> = vec![None; messages.len()];
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut attempt = 0;
    loop {
        let batch = WriteBatch {
            messages: pending.iter().map(|&i| messages[i].clone()).collect(),
            audit: audit.clone(),
        };
        match store.append(batch).await {
            Ok(out) => {
                audit.clear();
                let mut still = Vec::new();
                for (k, &i) in pending.iter().enumerate() {
                    match out.get(k) {
                        Some(AppendOutcome::Failed) | None => still.push(i),
                        Some(o) => outcomes[i] = Some(*o),
                    }
                }
                if !still.is_empty() {
                    metrics::counter!(m::STORE_ERRORS).increment(1);
                    tracing::warn!(
                        failed = still.len(),
                        attempt,
                        backend = store.backend(),
                        "history append: some messages failed"
                    );
                }
                pending = still;
            }
            Err(e) => {
                metrics::counter!(m::STORE_ERRORS).increment(1);
                tracing::warn!(error = %e, attempt, backend = store.backend(), "history commit failed");
            }
        }
        if pending.is_empty() && audit.is_empty() {
            break;
        }
        match RETRIES.get(attempt) {
            Some(delay) => tokio::time::sleep(*delay).await,
            None => break,
        }
        attempt += 1;
    }
    if !pending.is_empty() {
        settle(store, &messages, &pending, &mut outcomes).await;
    }
    metrics::histogram!(m::STORE_WRITE_SECONDS).record(started.elapsed().as_secs_f64());
    outcomes
}

/// The last attempt failed for these messages, but a timed-out write may still land:
/// after the backend's settling time, read each one; found, it is stored (acked and
/// published like any other), else it failed for good. Without this a late write would
/// leave a `seq` that receivers had skipped (their gap fill did not find it) and that a
/// resend of its `clientMsgId` would then acknowledge as a duplicate.
async fn settle(
    store: &dyn HistoryStore,
    messages: &[ChatMessage],
    pending: &[usize],
    outcomes: &mut [Option<AppendOutcome>],
) {
    let wait = store.settles_within();
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let reads = pending
        .iter()
        .map(|&i| store.get(&messages[i].room_id, messages[i].message_id));
    for (&i, found) in pending
        .iter()
        .zip(futures_util::future::join_all(reads).await)
    {
        match found {
            Ok(Some(_)) => {
                tracing::warn!(
                    message_id = messages[i].message_id,
                    room_id = messages[i].room_id,
                    "history append: a write reported failed was applied after all"
                );
                outcomes[i] = Some(AppendOutcome::Stored);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "history append: cannot tell whether a failed write landed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::store::conformance::message;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn acks_come_after_commit_and_duplicates_keep_the_original_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let (writer, _task) = HistoryWriter::spawn(store.clone(), 1024, 64);
        let mut replies = Vec::new();
        for (id, cid) in [(1, "a"), (2, "b"), (3, "a")] {
            let (tx, rx) = oneshot::channel();
            let op = WriteOp::Message {
                msg: message("r", id, "u", Some(cid)),
                ack: AckTo::Reply(tx),
                audit: None,
                publish: None,
            };
            assert!(writer.try_send(op).is_ok());
            replies.push(rx);
        }
        let mut got = Vec::new();
        for rx in replies {
            let acked = rx.await.expect("reply").expect("stored");
            // durable before the ack: the store already has it
            assert!(
                store
                    .get("r", acked.message.message_id)
                    .await
                    .expect("get")
                    .is_some()
            );
            got.push((acked.message.message_id, acked.duplicate));
        }
        assert_eq!(got, vec![(1, false), (2, false), (1, true)]);
        writer.barrier().await;
    }

    /// A store that fails every append while `failing` is set, and for the next
    /// `partial` appends reports messages of room `shaky` as `Failed` (storing the rest).
    struct Flaky {
        inner: Arc<EmbeddedStore>,
        failing: std::sync::atomic::AtomicBool,
        attempts: std::sync::atomic::AtomicUsize,
        partial: std::sync::atomic::AtomicUsize,
        /// The next this many appends store the batch, then answer `Err` (a reply lost
        /// after the write, as a timed-out write that went through).
        lost_replies: std::sync::atomic::AtomicUsize,
        /// Every append times out, and the first one's batch is applied this long
        /// later (a write that lands after its timeout).
        lands_after: Option<Duration>,
        scheduled: std::sync::atomic::AtomicBool,
        /// What `settles_within` answers.
        settle: Duration,
    }

    /// A [`Flaky`] that behaves: each test turns on what it needs.
    fn flaky(dir: &std::path::Path) -> Flaky {
        Flaky {
            inner: Arc::new(EmbeddedStore::open(dir).expect("open")),
            failing: Default::default(),
            attempts: Default::default(),
            partial: Default::default(),
            lost_replies: Default::default(),
            lands_after: None,
            scheduled: Default::default(),
            settle: Duration::ZERO,
        }
    }

    #[async_trait::async_trait]
    impl HistoryStore for Flaky {
        fn backend(&self) -> &'static str {
            "flaky"
        }
        fn settles_within(&self) -> Duration {
            self.settle
        }
        async fn append(
            &self,
            batch: WriteBatch,
        ) -> Result<Vec<AppendOutcome>, crate::store::StoreError> {
            self.attempts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(after) = self.lands_after {
                if !self
                    .scheduled
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = inner.append(batch).await;
                    });
                }
                return Err(crate::store::StoreError::Timeout(
                    "no answer in time".into(),
                ));
            }
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(crate::store::StoreError::Backend("disk on fire".into()));
            }
            if self
                .lost_replies
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                self.inner.append(batch).await?;
                return Err(crate::store::StoreError::Backend("reply lost".into()));
            }
            let partial = self
                .partial
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            if !partial {
                return self.inner.append(batch).await;
            }
            let rest: Vec<_> = batch
                .messages
                .iter()
                .filter(|m| m.room_id != "shaky")
                .cloned()
                .collect();
            let mut stored = self
                .inner
                .append(WriteBatch {
                    messages: rest,
                    audit: batch.audit,
                })
                .await?
                .into_iter();
            Ok(batch
                .messages
                .iter()
                .map(|m| {
                    if m.room_id == "shaky" {
                        AppendOutcome::Failed
                    } else {
                        stored.next().unwrap_or(AppendOutcome::Failed)
                    }
                })
                .collect())
        }
        async fn page(
            &self,
            room: &str,
            q: crate::store::PageQuery,
        ) -> Result<Vec<ChatMessage>, crate::store::StoreError> {
            self.inner.page(room, q).await
        }
        async fn get(
            &self,
            room: &str,
            id: MessageId,
        ) -> Result<Option<ChatMessage>, crate::store::StoreError> {
            self.inner.get(room, id).await
        }
        async fn tombstone(
            &self,
            room: &str,
            id: MessageId,
        ) -> Result<bool, crate::store::StoreError> {
            self.inner.tombstone(room, id).await
        }
        async fn find_client_msg(
            &self,
            room: &str,
            user: &str,
            cid: &str,
        ) -> Result<Option<MessageId>, crate::store::StoreError> {
            self.inner.find_client_msg(room, user, cid).await
        }
        async fn audit_page(
            &self,
            after: Option<u64>,
            limit: usize,
        ) -> Result<Vec<AuditEntry>, crate::store::StoreError> {
            self.inner.audit_page(after, limit).await
        }
    }

    type Reply = oneshot::Receiver<Result<Acked, ClientError>>;

    /// Queues `msg` and returns where its ack will arrive.
    fn queue(writer: &HistoryWriter, msg: ChatMessage) -> Reply {
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::Message {
            msg,
            ack: AckTo::Reply(tx),
            audit: None,
            publish: None,
        };
        assert!(writer.try_send(op).is_ok(), "writer queue full");
        rx
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_commit_is_retried_then_reported_and_never_acked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Flaky {
            failing: std::sync::atomic::AtomicBool::new(true),
            ..flaky(dir.path())
        });
        let (writer, _task) = HistoryWriter::spawn(store.clone(), 64, 64);
        let rx = queue(&writer, message("r", 7, "u", Some("c")));
        let err = rx.await.expect("reply").expect_err("must not be acked");
        assert_eq!(err.code, ErrorCode::StoreUnavailable);
        assert_eq!(err.client_msg_id.as_deref(), Some("c"));
        assert_eq!(
            store.attempts.load(std::sync::atomic::Ordering::SeqCst),
            1 + RETRIES.len(),
            "retried before giving up"
        );
        assert!(writer.failed.contains(7));
        // A deduplicated resend of the failed message is not acked as stored either.
        let (tx, rx) = oneshot::channel();
        assert!(
            writer
                .try_send(WriteOp::AckExisting {
                    msg: message("r", 7, "u", Some("c")),
                    ack: AckTo::Reply(tx),
                })
                .is_ok()
        );
        assert_eq!(
            rx.await.expect("reply").map_err(|e| e.code),
            Err(ErrorCode::StoreUnavailable)
        );
        // Once the store recovers, new messages are stored and acked.
        store
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let rx = queue(&writer, message("r", 8, "u", Some("d")));
        let acked = rx.await.expect("reply").expect("stored");
        assert_eq!(acked.message.message_id, 8);
        assert!(store.get("r", 8).await.expect("get").is_some());
        assert!(
            store.get("r", 7).await.expect("get").is_none(),
            "the failed message was never stored"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_partly_failed_append_retries_only_the_failed_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Flaky {
            // The first append fails the shaky message; its retry succeeds.
            partial: std::sync::atomic::AtomicUsize::new(1),
            ..flaky(dir.path())
        });
        let (writer, _task) = HistoryWriter::spawn(store.clone(), 64, 64);
        let replies: Vec<Reply> = [("calm", 1), ("shaky", 2), ("calm", 3)]
            .into_iter()
            .map(|(room, id)| queue(&writer, message(room, id, "u", None)))
            .collect();
        for (rx, id) in replies.into_iter().zip([1, 2, 3]) {
            let acked = rx.await.expect("reply").expect("stored in the end");
            assert_eq!((acked.message.message_id, acked.duplicate), (id, false));
        }
        assert_eq!(
            store.attempts.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one append, then one retry of the failed message alone"
        );
        assert!(store.get("shaky", 2).await.expect("get").is_some());
        assert_eq!(
            store
                .page(
                    "calm",
                    crate::store::PageQuery {
                        before: None,
                        after: None,
                        limit: 10
                    }
                )
                .await
                .expect("page")
                .len(),
            2
        );

        // A message that keeps failing is reported, the others of its batch are acked.
        store
            .partial
            .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
        let rx_ok = queue(&writer, message("calm", 4, "u", None));
        let rx_bad = queue(&writer, message("shaky", 5, "u", None));
        assert!(rx_ok.await.expect("reply").is_ok());
        let err = rx_bad.await.expect("reply").expect_err("never stored");
        assert_eq!(err.code, ErrorCode::StoreUnavailable);
        assert!(writer.failed.contains(5));
    }

    /// A write that went through but whose reply was lost: the retry finds the message
    /// stored under its own id. That is this message stored, not a duplicate: it is
    /// acked with its own `seq` and published. A true resend (another id, the same
    /// `clientMsgId`) is acked with the original as stored, `seq` included.
    #[tokio::test(start_paused = true)]
    async fn a_retry_that_finds_its_own_write_is_stored_and_a_resend_gets_the_original_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Flaky {
            lost_replies: std::sync::atomic::AtomicUsize::new(1),
            ..flaky(dir.path())
        });
        let (writer, _task) = HistoryWriter::spawn(store.clone(), 64, 64);
        let (tx, heard) = flume::unbounded();
        let inbound = crate::bus::Inbound::new(
            Arc::from(vec![tx]),
            Arc::new(crate::sessions::SessionRegistry::default()),
        );
        let bus: Arc<dyn crate::bus::Bus> = Arc::new(crate::bus::LocalBus::new(inbound));
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::Message {
            msg: message("r", 7, "u", Some("c")),
            ack: AckTo::Reply(tx),
            audit: None,
            publish: Some(AfterCommit {
                bus,
                audience: None,
                received_at: Instant::now(),
            }),
        };
        assert!(writer.try_send(op).is_ok());
        let acked = rx.await.expect("reply").expect("stored");
        assert_eq!(
            (acked.message.message_id, acked.message.seq, acked.duplicate),
            (7, 8, false)
        );
        assert_eq!(store.attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
        let published: Vec<u64> = heard
            .drain()
            .filter_map(|e| match e {
                crate::bus::Envelope::Message(m) => Some(m.msg.seq),
                _ => None,
            })
            .collect();
        assert_eq!(published, vec![8], "published once, after the commit");

        let acked = queue(&writer, message("r", 9, "u", Some("c")))
            .await
            .expect("reply")
            .expect("acked");
        assert_eq!(
            (acked.message.message_id, acked.message.seq, acked.duplicate),
            (7, 8, true)
        );
    }

    #[tokio::test]
    async fn a_timed_out_write_that_lands_before_it_settles_is_acked_as_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The retries end after 1.3 s; the write lands at 1.6 s; the writer reads again
        // at 2.1 s (1.3 + 0.8).
        let store = Arc::new(Flaky {
            lands_after: Some(Duration::from_millis(1600)),
            settle: Duration::from_millis(800),
            ..flaky(dir.path())
        });
        let inner = store.inner.clone();
        let (writer, _task) = HistoryWriter::spawn(store, 64, 64);
        let acked = queue(&writer, message("r", 9, "u", Some("late")))
            .await
            .expect("reply")
            .expect("found stored after all: acknowledged, not failed");
        assert_eq!((acked.message.message_id, acked.duplicate), (9, false));
        assert!(!writer.failed.contains(9));
        assert!(inner.get("r", 9).await.expect("get").is_some());
    }

    #[tokio::test]
    async fn a_timed_out_write_that_never_lands_fails_after_it_settles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Flaky {
            // Lands long after anyone looked (the residual risk ARCHITECTURE.md names).
            lands_after: Some(Duration::from_secs(3600)),
            settle: Duration::from_millis(800),
            ..flaky(dir.path())
        });
        let (writer, _task) = HistoryWriter::spawn(store, 64, 64);
        let started = Instant::now();
        let err = queue(&writer, message("r", 10, "u", Some("never")))
            .await
            .expect("reply")
            .expect_err("not stored");
        assert_eq!(err.code, ErrorCode::StoreUnavailable);
        assert!(
            started.elapsed() >= Duration::from_millis(1300 + 800),
            "reported only after the retries and the settling time: {:?}",
            started.elapsed()
        );
        assert!(writer.failed.contains(10));
    }
}
