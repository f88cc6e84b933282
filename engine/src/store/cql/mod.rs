//! The CQL backend (ScyllaDB in production; Apache Cassandra 5.0 in this repository's
//! tests): the session, the versioned schema and `migrate`, and the prepared statements
//! every contract file uses. One file per contract implements it.
//!
//! How it keeps contracts written without a transaction across partitions:
//! - Appends are concurrent per-partition writes, each idempotent (the same row by
//!   primary key), at the configured consistency (`LOCAL_QUORUM` by default): a message
//!   is `Stored` once its row and its indexes were written at that level; a message
//!   whose writes failed is `Failed` and the writer retries it alone. The `clientMsgId`
//!   index is written after the message row, so a resend never finds an id whose row is
//!   missing. No logged batches, no lightweight transactions on the message path.
//! - Messages are partitioned by `(room_id, bucket)`, clustered by id descending; the
//!   bucket is the message's day (`BUCKET_MS`). `room_buckets` lists a room's non-empty
//!   buckets, so a page walks only buckets that exist.
//!
//! Schema changes are versioned: `migrate` creates what is missing (every statement is
//! `IF NOT EXISTS`, so several nodes may run it at once) and records the version it
//! brought the keyspace to; [`CqlStore::connect`] refuses a keyspace at another version
//! and says what to run.

mod calls;
mod chat;
mod history;
mod keys;

use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
pub use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

use super::StoreError;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = 1;

/// Width of a conversation's message partition: 30 days. Conversations are sparse (two
/// people; hundreds of messages a day at most, ~30 KB), so a wide bucket keeps a page of
/// 50 within one or two partitions; measured on Cassandra 5.0 here, each extra bucket a
/// page touches costs ~0.3 ms beside ~0.8 ms for the page itself (docs/PERFORMANCE.md).
pub const CONVERSATION_BUCKET_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// Width of a public room's message partition: 1 hour. A busy room (100 msgs/s of
/// ~300 bytes) writes ~108 MB an hour, about the largest partition ScyllaDB is happy
/// with; a quieter room pays a few more bucket reads per page.
pub const ROOM_BUCKET_MS: u64 = 60 * 60 * 1000;
/// Width of an audit-log partition: one day.
pub const AUDIT_BUCKET_MS: u64 = 24 * 60 * 60 * 1000;

/// How to reach the cluster and how to write to it.
#[derive(Debug, Clone)]
pub struct CqlConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// The keyspace's replication, as CQL: for example
    /// `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`.
    pub replication: String,
    pub consistency: Consistency,
    /// Per-request timeout (bounded: a store that does not answer fails the request).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub credentials: Option<(String, String)>,
    /// Connections per shard of each node (Cassandra counts as one shard); the
    /// driver's recommendation for ScyllaDB is 1.
    pub connections_per_shard: std::num::NonZeroUsize,
    /// TLS to the cluster, when set. The driver names each node by its IP address, so
    /// a node's certificate must carry that IP as a subject alternative name.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl CqlConfig {
    /// A single local node, replication factor 1 (tests, development). The request
    /// timeout is generous: a test node shares two cores with everything else.
    pub fn local(node: &str, keyspace: &str) -> Self {
        Self {
            nodes: vec![node.to_owned()],
            keyspace: keyspace.to_owned(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".to_owned(),
            consistency: Consistency::LocalQuorum,
            request_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            credentials: None,
            connections_per_shard: std::num::NonZeroUsize::MIN,
            tls: None,
        }
    }
}

impl From<scylla::errors::ExecutionError> for StoreError {
    fn from(e: scylla::errors::ExecutionError) -> Self {
        use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
        let timed_out = matches!(
            &e,
            ExecutionError::RequestTimeout(_)
                | ExecutionError::LastAttemptError(RequestAttemptError::DbError(
                    DbError::WriteTimeout { .. } | DbError::ReadTimeout { .. },
                    _
                ))
        );
        if timed_out {
            StoreError::Timeout(e.to_string())
        } else {
            StoreError::backend(e)
        }
    }
}

impl From<scylla::errors::PrepareError> for StoreError {
    fn from(e: scylla::errors::PrepareError) -> Self {
        StoreError::backend(e)
    }
}

impl From<scylla::errors::IntoRowsResultError> for StoreError {
    fn from(e: scylla::errors::IntoRowsResultError) -> Self {
        StoreError::backend(e)
    }
}

impl From<scylla::errors::RowsError> for StoreError {
    fn from(e: scylla::errors::RowsError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<scylla::errors::DeserializationError> for StoreError {
    fn from(e: scylla::errors::DeserializationError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Whether a lightweight transaction applied: the `[applied]` column of its one row.
pub(crate) fn applied(
    result: scylla::response::query_result::QueryResult,
) -> Result<bool, StoreError> {
    Ok(result
        .into_rows_result()?
        .maybe_first_row::<scylla::value::Row>()?
        .and_then(|row| match row.columns.first() {
            Some(Some(scylla::value::CqlValue::Boolean(applied))) => Some(*applied),
            _ => None,
        })
        .unwrap_or(false))
}

impl From<scylla::errors::MaybeFirstRowError> for StoreError {
    fn from(e: scylla::errors::MaybeFirstRowError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// The tables of schema version 1, in creation order (`{ks}` is the keyspace).
const SCHEMA_V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS {ks}.schema_version (id int PRIMARY KEY, version int)",
    // History.
    "CREATE TABLE IF NOT EXISTS {ks}.messages (room_id text, bucket int, message_id bigint, \
     body blob, PRIMARY KEY ((room_id, bucket), message_id)) \
     WITH CLUSTERING ORDER BY (message_id DESC)",
    "CREATE TABLE IF NOT EXISTS {ks}.room_buckets (room_id text, bucket int, \
     PRIMARY KEY ((room_id), bucket)) WITH CLUSTERING ORDER BY (bucket DESC)",
    "CREATE TABLE IF NOT EXISTS {ks}.client_ids (room_id text, user_id text, \
     client_msg_id text, message_id bigint, PRIMARY KEY ((room_id, user_id, client_msg_id)))",
    "CREATE TABLE IF NOT EXISTS {ks}.message_rooms (message_id bigint PRIMARY KEY, room_id text)",
    "CREATE TABLE IF NOT EXISTS {ks}.audit (bucket int, id bigint, body blob, \
     PRIMARY KEY ((bucket), id)) WITH CLUSTERING ORDER BY (id ASC)",
    "CREATE TABLE IF NOT EXISTS {ks}.audit_buckets (all_rows int, bucket int, \
     PRIMARY KEY ((all_rows), bucket)) WITH CLUSTERING ORDER BY (bucket ASC)",
    // Chat. `last_message_id` and `last_activity_ms` are written `USING TIMESTAMP <id>`
    // by appends only (monotone by last-write-wins); `body` by creation and admin.
    "CREATE TABLE IF NOT EXISTS {ks}.conversations (id text PRIMARY KEY, body blob, \
     last_message_id bigint, last_activity_ms bigint)",
    // `last_read_id` is written `USING TIMESTAMP <id>` only: it never moves back.
    "CREATE TABLE IF NOT EXISTS {ks}.members (user_id text, conv_id text, archived boolean, \
     last_read_id bigint, PRIMARY KEY ((user_id), conv_id))",
    // One direct conversation per pair: the one conditional insert of the chat store.
    "CREATE TABLE IF NOT EXISTS {ks}.direct (a text, b text, conv_id text, \
     PRIMARY KEY ((a, b)))",
    // Open conversations by last activity, spread over ACTIVITY_PARTS partitions.
    "CREATE TABLE IF NOT EXISTS {ks}.activity (part int, last_ms bigint, conv_id text, \
     PRIMARY KEY ((part), last_ms, conv_id))",
    "CREATE TABLE IF NOT EXISTS {ks}.reactions (room_id text, message_id bigint, user_id text, \
     reaction text, PRIMARY KEY ((room_id, message_id), user_id))",
    // Calls: transitions are compare-and-set on `state` (IF state = ?); who is busy is a
    // conditional claim per user (IF NOT EXISTS); ringing calls are listed for resume.
    "CREATE TABLE IF NOT EXISTS {ks}.calls (id text PRIMARY KEY, body blob, state text)",
    "CREATE TABLE IF NOT EXISTS {ks}.live_calls (user_id text PRIMARY KEY, call_id text)",
    "CREATE TABLE IF NOT EXISTS {ks}.ringing_calls (part int, call_id text, \
     PRIMARY KEY ((part), call_id))",
    // Keys: a one-time pre-key is taken with DELETE ... IF EXISTS (one winner).
    "CREATE TABLE IF NOT EXISTS {ks}.identity_keys (user_id text PRIMARY KEY, body blob)",
    "CREATE TABLE IF NOT EXISTS {ks}.signed_pre_keys (user_id text PRIMARY KEY, body blob)",
    "CREATE TABLE IF NOT EXISTS {ks}.pre_keys (user_id text, key_id int, public_key text, \
     PRIMARY KEY ((user_id), key_id))",
];

/// Prepares statements with the store's settings.
pub(crate) struct Preparer<'a> {
    session: &'a Session,
    cfg: &'a CqlConfig,
}

impl Preparer<'_> {
    /// An idempotent statement at the configured consistency and timeout.
    pub(crate) async fn prep(&self, q: &str) -> Result<PreparedStatement, StoreError> {
        let mut p = self
            .session
            .prepare(q.replace("{ks}", &self.cfg.keyspace))
            .await?;
        p.set_consistency(self.cfg.consistency);
        p.set_is_idempotent(true);
        p.set_request_timeout(Some(self.cfg.request_timeout));
        Ok(p)
    }

    /// A lightweight transaction (`IF ...`): serial consistency, not retried blindly.
    pub(crate) async fn lwt(&self, q: &str) -> Result<PreparedStatement, StoreError> {
        let mut p = self.prep(q).await?;
        p.set_is_idempotent(false);
        p.set_serial_consistency(Some(scylla::statement::SerialConsistency::LocalSerial));
        Ok(p)
    }
}

/// The prepared statements, prepared once per process.
pub(crate) struct Statements {
    pub(crate) insert_message: PreparedStatement,
    pub(crate) insert_bucket: PreparedStatement,
    pub(crate) insert_client_id: PreparedStatement,
    pub(crate) insert_message_room: PreparedStatement,
    pub(crate) insert_audit: PreparedStatement,
    pub(crate) insert_audit_bucket: PreparedStatement,
    pub(crate) select_message: PreparedStatement,
    pub(crate) select_client_id: PreparedStatement,
    pub(crate) select_buckets_desc: PreparedStatement,
    pub(crate) select_buckets_asc: PreparedStatement,
    pub(crate) page_desc: PreparedStatement,
    pub(crate) page_asc: PreparedStatement,
    pub(crate) select_audit_buckets: PreparedStatement,
    pub(crate) audit_page: PreparedStatement,
    pub(crate) chat: chat::ChatStatements,
    pub(crate) calls: calls::CallStatements,
    pub(crate) keys: keys::KeyStatements,
}

/// See the module doc. Cheap to clone.
#[derive(Clone)]
pub struct CqlStore {
    pub(crate) session: Arc<Session>,
    pub(crate) st: Arc<Statements>,
}

impl std::fmt::Debug for CqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlStore").finish_non_exhaustive()
    }
}

async fn session(cfg: &CqlConfig) -> Result<Session, StoreError> {
    let mut b = SessionBuilder::new()
        .known_nodes(&cfg.nodes)
        .connection_timeout(cfg.connect_timeout)
        // Cassandra has no shard-aware port; ScyllaDB works either way.
        .disallow_shard_aware_port(true)
        .pool_size(scylla::client::PoolSize::PerShard(
            cfg.connections_per_shard,
        ));
    if let Some((user, pass)) = &cfg.credentials {
        b = b.user(user, pass);
    }
    if let Some(tls) = &cfg.tls {
        let config = tls
            .client_config()
            .map_err(|e| StoreError::Backend(format!("CQL TLS: {e}")))?;
        b = b.tls_context(Some(config));
    }
    b.build().await.map_err(|e| {
        StoreError::Backend(format!(
            "cannot connect to the CQL cluster at {}: {e}",
            cfg.nodes.join(",")
        ))
    })
}

fn check_keyspace_name(ks: &str) -> Result<(), StoreError> {
    if !ks.is_empty()
        && ks.len() <= 48
        && ks.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "keyspace {ks:?} must be 1-48 of A-Z a-z 0-9 _"
        )))
    }
}

/// Creates or upgrades the keyspace and its tables to [`SCHEMA_VERSION`]. Idempotent and
/// safe to run from several nodes at once (every statement is `IF NOT EXISTS`; the
/// version row is written last with the same value by all of them).
pub async fn migrate(cfg: &CqlConfig) -> Result<i32, StoreError> {
    check_keyspace_name(&cfg.keyspace)?;
    let s = session(cfg).await?;
    let ks = &cfg.keyspace;
    s.query_unpaged(
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
            cfg.replication
        ),
        (),
    )
    .await?;
    for ddl in SCHEMA_V1 {
        s.query_unpaged(ddl.replace("{ks}", ks), ()).await?;
    }
    s.await_schema_agreement()
        .await
        .map_err(StoreError::backend)?;
    s.query_unpaged(
        format!("INSERT INTO {ks}.schema_version (id, version) VALUES (0, {SCHEMA_VERSION})"),
        (),
    )
    .await?;
    Ok(SCHEMA_VERSION)
}

impl CqlStore {
    /// Connects and prepares every statement. Fails with a message naming the contact
    /// points when the cluster is unreachable, and with what to run when the keyspace's
    /// schema is missing or at another version.
    pub async fn connect(cfg: &CqlConfig) -> Result<Self, StoreError> {
        check_keyspace_name(&cfg.keyspace)?;
        let s = session(cfg).await?;
        let ks = &cfg.keyspace;
        let version = s
            .query_unpaged(
                format!("SELECT version FROM {ks}.schema_version WHERE id = 0"),
                (),
            )
            .await
            .ok()
            .and_then(|r| r.into_rows_result().ok())
            .and_then(|r| r.maybe_first_row::<(i32,)>().ok().flatten())
            .map(|(v,)| v);
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(StoreError::Backend(format!(
                    "keyspace {ks} is at schema version {v}; this build needs {SCHEMA_VERSION}: \
                     run `roomcast migrate` with this build"
                )));
            }
            None => {
                return Err(StoreError::Backend(format!(
                    "keyspace {ks} has no roomcast schema: run `roomcast migrate` first"
                )));
            }
        }
        let p = Preparer { session: &s, cfg };
        let prep = |q: &'static str| p.prep(q);
        let st = Statements {
            insert_message: prep(
                "INSERT INTO {ks}.messages (room_id, bucket, message_id, body) VALUES (?, ?, ?, ?)",
            )
            .await?,
            insert_bucket: prep("INSERT INTO {ks}.room_buckets (room_id, bucket) VALUES (?, ?)")
                .await?,
            insert_client_id: prep(
                "INSERT INTO {ks}.client_ids (room_id, user_id, client_msg_id, message_id) \
                 VALUES (?, ?, ?, ?)",
            )
            .await?,
            insert_message_room: prep(
                "INSERT INTO {ks}.message_rooms (message_id, room_id) VALUES (?, ?)",
            )
            .await?,
            insert_audit: prep("INSERT INTO {ks}.audit (bucket, id, body) VALUES (?, ?, ?)").await?,
            insert_audit_bucket: prep(
                "INSERT INTO {ks}.audit_buckets (all_rows, bucket) VALUES (0, ?)",
            )
            .await?,
            select_message: prep(
                "SELECT body FROM {ks}.messages WHERE room_id = ? AND bucket = ? AND message_id = ?",
            )
            .await?,
            select_client_id: prep(
                "SELECT message_id FROM {ks}.client_ids \
                 WHERE room_id = ? AND user_id = ? AND client_msg_id = ?",
            )
            .await?,
            select_buckets_desc: prep(
                "SELECT bucket FROM {ks}.room_buckets WHERE room_id = ? AND bucket <= ? \
                 ORDER BY bucket DESC LIMIT ?",
            )
            .await?,
            select_buckets_asc: prep(
                "SELECT bucket FROM {ks}.room_buckets WHERE room_id = ? AND bucket >= ? \
                 ORDER BY bucket ASC LIMIT ?",
            )
            .await?,
            page_desc: prep(
                "SELECT body FROM {ks}.messages WHERE room_id = ? AND bucket = ? \
                 AND message_id > ? AND message_id < ? ORDER BY message_id DESC LIMIT ?",
            )
            .await?,
            page_asc: prep(
                "SELECT body FROM {ks}.messages WHERE room_id = ? AND bucket = ? \
                 AND message_id > ? AND message_id < ? ORDER BY message_id ASC LIMIT ?",
            )
            .await?,
            select_audit_buckets: prep(
                "SELECT bucket FROM {ks}.audit_buckets WHERE all_rows = 0 AND bucket >= ? LIMIT 64",
            )
            .await?,
            audit_page: prep(
                "SELECT body FROM {ks}.audit WHERE bucket = ? AND id > ? LIMIT ?",
            )
            .await?,
            chat: chat::ChatStatements::prepare(&p).await?,
            calls: calls::CallStatements::prepare(&p).await?,
            keys: keys::KeyStatements::prepare(&p).await?,
        };
        Ok(Self {
            session: Arc::new(s),
            st: Arc::new(st),
        })
    }
}

/// The partition window of a message of `room_id` with this id.
pub(crate) fn bucket_of(room_id: &str, id: u64) -> i32 {
    let width = if crate::chat::is_conversation(room_id) {
        CONVERSATION_BUCKET_MS
    } else {
        ROOM_BUCKET_MS
    };
    window(id, width)
}

/// The audit-log partition of an entry id.
pub(crate) fn audit_bucket_of(id: u64) -> i32 {
    window(id, AUDIT_BUCKET_MS)
}

fn window(id: u64, width: u64) -> i32 {
    let ms = crate::ids::unix_ms_of(id).saturating_sub(crate::ids::EPOCH_MS);
    i32::try_from(ms / width).unwrap_or(i32::MAX)
}

/// A message id as CQL's signed `bigint` (ids keep their top bit clear).
pub(crate) fn id_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CQL node the suite runs against: `ROOMCAST_TEST_CQL` (`host:port`), which
    /// `scripts/test.sh` sets after starting Cassandra. Missing, the test fails loudly,
    /// unless `ROOMCAST_SKIP_CQL=1` skips it explicitly.
    fn test_node() -> Option<String> {
        if std::env::var("ROOMCAST_SKIP_CQL").as_deref() == Ok("1") {
            eprintln!("cql: skipped because ROOMCAST_SKIP_CQL=1");
            return None;
        }
        match std::env::var("ROOMCAST_TEST_CQL") {
            Ok(node) if !node.is_empty() => Some(node),
            _ => panic!(
                "ROOMCAST_TEST_CQL is not set: run `bash scripts/test.sh` (it starts Cassandra), \
                 or start one with `bash scripts/cassandra/start.sh` and export \
                 ROOMCAST_TEST_CQL=<its last line>; ROOMCAST_SKIP_CQL=1 skips explicitly"
            ),
        }
    }

    /// A keyspace of its own for each test.
    fn keyspace(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("rc_{name}_{}_{nanos}", std::process::id())
    }

    #[tokio::test]
    async fn passes_the_conformance_suite_on_cassandra() {
        let Some(node) = test_node() else { return };
        let cfg = CqlConfig::local(&node, &keyspace("history"));
        // Unmigrated: refused with what to run.
        let err = CqlStore::connect(&cfg).await.expect_err("no schema yet");
        assert!(err.to_string().contains("roomcast migrate"), "{err}");
        // Migrating from two nodes at once, and again, is harmless.
        let (a, b) = tokio::join!(migrate(&cfg), migrate(&cfg));
        assert_eq!(
            (a.ok(), b.ok()),
            (Some(SCHEMA_VERSION), Some(SCHEMA_VERSION))
        );
        assert_eq!(migrate(&cfg).await.ok(), Some(SCHEMA_VERSION));
        let store = CqlStore::connect(&cfg).await.expect("connect");
        crate::store::conformance::run(&store).await;
        crate::store::conformance::run_chat(&store).await;
        crate::store::conformance::run_calls(&store).await;
        crate::store::conformance::run_keys(&store).await;
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_a_clear_error() {
        let mut cfg = CqlConfig::local("127.0.0.1:1", "nowhere");
        cfg.connect_timeout = Duration::from_secs(2);
        let err = CqlStore::connect(&cfg)
            .await
            .expect_err("nothing listens there");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
