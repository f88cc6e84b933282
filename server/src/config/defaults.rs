//! The one source of every default: named constants for what the engine's `Default`
//! impls do not own, and [`documented_defaults`], the table the README must match.

use std::net::IpAddr;
use std::time::Duration;

use roomcast_engine::EngineConfig;

// Defaults of the variables the engine's `Default` impls do not own. Together with
// `EngineConfig::default()` they are the one source of every default; the README's
// table is checked against `documented_defaults`.
pub(super) const DEFAULT_PORT: u16 = 8000;
pub(super) const DEFAULT_BIND: [u8; 4] = [0, 0, 0, 0];
pub(super) const DEFAULT_DATA_DIR: &str = "data";
pub(super) const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
pub(super) const DEFAULT_SOCKET_SEND_BUFFER_BYTES: usize = 262_144;
pub(super) const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
pub(super) const DEFAULT_WRITE_TIMEOUT_MS: u64 = 10_000;
pub(super) const DEFAULT_PING_INTERVAL_MS: u64 = 25_000;
pub(super) const DEFAULT_SHUTDOWN_DRAIN_DELAY_MS: u64 = 0;
pub(super) const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
pub(super) const DEFAULT_PUSH_QUEUE: usize = 10_000;
pub(super) const DEFAULT_PUSH_MAX_ATTEMPTS: u32 = 5;
pub(super) const DEFAULT_PUSH_BACKOFF_MS: u64 = 500;
pub(super) const DEFAULT_PUSH_TIMEOUT_MS: u64 = 5_000;
pub(super) const DEFAULT_VIDEO_TOKEN_TTL_SECS: u64 = 600;
pub(super) const DEFAULT_PREKEY_LOW_THRESHOLD: usize = 10;
pub(super) const DEFAULT_JWKS_REFRESH_SECS: u64 = 3_600;
pub(super) const DEFAULT_JWKS_MISS_REFETCH_MS: u64 = 10_000;
pub(super) const DEFAULT_API_READS_PER_MIN: u32 = 600;
pub(super) const DEFAULT_API_WRITES_PER_MIN: u32 = 120;
pub(super) const DEFAULT_API_CALLS_PER_MIN: u32 = 30;
pub(super) const DEFAULT_API_KEYS_PER_MIN: u32 = 60;
pub(super) const DEFAULT_API_ADMIN_PER_MIN: u32 = 600;
pub(super) const DEFAULT_PREKEY_FETCHES_PER_PARTNER_PER_HOUR: u32 = 10;
pub(super) const DEFAULT_SCYLLA_KEYSPACE: &str = "roomcast";
pub(super) const DEFAULT_REDIS_TIMEOUT_MS: u64 = 2_000;
pub(super) const DEFAULT_CLUSTER_LEASE_MS: u64 = 6_000;
pub(super) const DEFAULT_CLUSTER_CUT_OFF_CLOSE_MS: u64 = 10_000;
pub(super) const DEFAULT_HTTP_BODY_TIMEOUT_MS: u64 = 10_000;
pub(super) const DEFAULT_SCYLLA_REPLICATION: &str =
    "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}";
pub(super) const DEFAULT_SCYLLA_CONSISTENCY: &str = "local_quorum";
pub(super) const DEFAULT_SCYLLA_REQUEST_TIMEOUT_MS: u64 = 5_000;
pub(super) const DEFAULT_SCYLLA_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub(super) const DEFAULT_SCYLLA_CONNECTIONS_PER_SHARD: usize = 1;

/// Every variable and its default as the README's configuration table writes it
/// (without backticks). Values come from parsing an empty environment and from the
/// constants above, so the table cannot drift from the code unnoticed.
pub fn documented_defaults() -> Vec<(&'static str, String)> {
    let e = EngineConfig::default();
    let unset = || "(unset)".to_owned();
    let ms = |d: Duration| d.as_millis().to_string();
    vec![
        ("PORT", DEFAULT_PORT.to_string()),
        ("ROOMCAST_BIND", IpAddr::from(DEFAULT_BIND).to_string()),
        (
            "ROOMCAST_LISTEN_BACKLOG",
            DEFAULT_LISTEN_BACKLOG.to_string(),
        ),
        (
            "ROOMCAST_SOCKET_SEND_BUFFER_BYTES",
            DEFAULT_SOCKET_SEND_BUFFER_BYTES.to_string(),
        ),
        ("ROOMCAST_DATA_DIR", DEFAULT_DATA_DIR.to_owned()),
        ("NODE_ENV", unset()),
        ("JWT_SECRET", "dev secret in the data dir".to_owned()),
        ("ROOMCAST_JWT_ISSUER", unset()),
        ("ROOMCAST_JWT_AUDIENCE", unset()),
        ("ROOMCAST_JWKS_URL", unset()),
        (
            "ROOMCAST_JWKS_REFRESH_SECS",
            DEFAULT_JWKS_REFRESH_SECS.to_string(),
        ),
        (
            "ROOMCAST_JWKS_MISS_REFETCH_MS",
            DEFAULT_JWKS_MISS_REFETCH_MS.to_string(),
        ),
        ("ROOMCAST_COGNITO_CLIENT_ID", unset()),
        ("ROOMCAST_COGNITO_TOKEN_USE", unset()),
        ("RATE_LIMIT_WINDOW_MS", ms(e.rate.window)),
        ("RATE_LIMIT_MAX_MESSAGES", e.rate.max_messages.to_string()),
        (
            "ROOMCAST_CONNECT_RATE_PER_IP",
            e.rate.connects_per_ip_per_sec.to_string(),
        ),
        (
            "ROOMCAST_TYPING_RATE_PER_SEC",
            e.rate.typing_per_sec.to_string(),
        ),
        (
            "ROOMCAST_API_READS_PER_MIN",
            DEFAULT_API_READS_PER_MIN.to_string(),
        ),
        (
            "ROOMCAST_API_WRITES_PER_MIN",
            DEFAULT_API_WRITES_PER_MIN.to_string(),
        ),
        (
            "ROOMCAST_API_CALLS_PER_MIN",
            DEFAULT_API_CALLS_PER_MIN.to_string(),
        ),
        (
            "ROOMCAST_API_KEYS_PER_MIN",
            DEFAULT_API_KEYS_PER_MIN.to_string(),
        ),
        (
            "ROOMCAST_API_ADMIN_PER_MIN",
            DEFAULT_API_ADMIN_PER_MIN.to_string(),
        ),
        (
            "ROOMCAST_PREKEY_FETCHES_PER_PARTNER_PER_HOUR",
            DEFAULT_PREKEY_FETCHES_PER_PARTNER_PER_HOUR.to_string(),
        ),
        ("ENABLE_MODERATION", e.moderation.enabled.to_string()),
        (
            "MAX_MESSAGE_LENGTH",
            e.moderation.max_message_length.to_string(),
        ),
        ("ROOMCAST_BLOCKED_WORDS", "(empty)".to_owned()),
        ("ROOMCAST_MODERATION_MODE", "mask".to_owned()),
        (
            "ROOMCAST_MAX_FRAME_BYTES",
            DEFAULT_MAX_FRAME_BYTES.to_string(),
        ),
        ("ROOMCAST_OUTBOX_MAX_BYTES", e.outbox_max_bytes.to_string()),
        (
            "ROOMCAST_WRITE_TIMEOUT_MS",
            DEFAULT_WRITE_TIMEOUT_MS.to_string(),
        ),
        (
            "ROOMCAST_HTTP_BODY_TIMEOUT_MS",
            DEFAULT_HTTP_BODY_TIMEOUT_MS.to_string(),
        ),
        (
            "ROOMCAST_PING_INTERVAL_MS",
            DEFAULT_PING_INTERVAL_MS.to_string(),
        ),
        (
            "ROOMCAST_MAX_ROOMS_PER_CONNECTION",
            e.max_rooms_per_connection.to_string(),
        ),
        (
            "ROOMCAST_MAX_CONNECTIONS_PER_USER",
            e.max_connections_per_user.to_string(),
        ),
        (
            "ROOMCAST_RECOVERY_MAX_MESSAGES",
            e.recovery_max_messages.to_string(),
        ),
        (
            "ROOMCAST_ROOM_PRESENCE_MAX_MEMBERS",
            e.room_presence_max_members.to_string(),
        ),
        ("ROOMCAST_DEDUPE_WINDOW", e.dedupe_window.to_string()),
        ("ROOMCAST_SHARDS", "cores".to_owned()),
        ("ROOMCAST_SHARD_QUEUE", e.shard_queue.to_string()),
        ("ROOMCAST_HISTORY_QUEUE", e.writer_queue.to_string()),
        ("ROOMCAST_HISTORY_MAX_BATCH", e.writer_max_batch.to_string()),
        ("ROOMCAST_NODE_ID", e.node_id.to_string()),
        (
            "ROOMCAST_SHUTDOWN_DRAIN_DELAY_MS",
            DEFAULT_SHUTDOWN_DRAIN_DELAY_MS.to_string(),
        ),
        (
            "ROOMCAST_SHUTDOWN_TIMEOUT_MS",
            DEFAULT_SHUTDOWN_TIMEOUT_MS.to_string(),
        ),
        ("ROOMCAST_CORS_ORIGINS", "*".to_owned()),
        ("ROOMCAST_PUSH_WEBHOOK_URL", unset()),
        ("ROOMCAST_PUSH_QUEUE", DEFAULT_PUSH_QUEUE.to_string()),
        (
            "ROOMCAST_PUSH_MAX_ATTEMPTS",
            DEFAULT_PUSH_MAX_ATTEMPTS.to_string(),
        ),
        (
            "ROOMCAST_PUSH_BACKOFF_MS",
            DEFAULT_PUSH_BACKOFF_MS.to_string(),
        ),
        (
            "ROOMCAST_PUSH_TIMEOUT_MS",
            DEFAULT_PUSH_TIMEOUT_MS.to_string(),
        ),
        ("ROOMCAST_CALL_RING_TIMEOUT_MS", ms(e.call_ring_timeout)),
        ("ROOMCAST_METRICS_ROOMS", unset()),
        ("ROOMCAST_VIDEO_URL", unset()),
        ("ROOMCAST_VIDEO_API_KEY", unset()),
        ("ROOMCAST_VIDEO_API_SECRET", unset()),
        (
            "ROOMCAST_VIDEO_TOKEN_TTL_SECS",
            DEFAULT_VIDEO_TOKEN_TTL_SECS.to_string(),
        ),
        (
            "ROOMCAST_PREKEY_LOW_THRESHOLD",
            DEFAULT_PREKEY_LOW_THRESHOLD.to_string(),
        ),
        ("ROOMCAST_SCYLLA_NODES", unset()),
        (
            "ROOMCAST_SCYLLA_KEYSPACE",
            DEFAULT_SCYLLA_KEYSPACE.to_owned(),
        ),
        (
            "ROOMCAST_SCYLLA_REPLICATION",
            DEFAULT_SCYLLA_REPLICATION.to_owned(),
        ),
        (
            "ROOMCAST_SCYLLA_CONSISTENCY",
            DEFAULT_SCYLLA_CONSISTENCY.to_owned(),
        ),
        (
            "ROOMCAST_SCYLLA_REQUEST_TIMEOUT_MS",
            DEFAULT_SCYLLA_REQUEST_TIMEOUT_MS.to_string(),
        ),
        (
            "ROOMCAST_SCYLLA_CONNECT_TIMEOUT_MS",
            DEFAULT_SCYLLA_CONNECT_TIMEOUT_MS.to_string(),
        ),
        (
            "ROOMCAST_SCYLLA_CONNECTIONS_PER_SHARD",
            DEFAULT_SCYLLA_CONNECTIONS_PER_SHARD.to_string(),
        ),
        ("ROOMCAST_SCYLLA_USERNAME", unset()),
        ("ROOMCAST_SCYLLA_PASSWORD", unset()),
        ("ROOMCAST_SCYLLA_TLS_CA_FILE", unset()),
        ("ROOMCAST_SCYLLA_TLS_CERT_FILE", unset()),
        ("ROOMCAST_SCYLLA_TLS_KEY_FILE", unset()),
        ("REDIS_URL", unset()),
        ("ROOMCAST_REDIS_TLS_CA_FILE", unset()),
        ("ROOMCAST_REDIS_TLS_CERT_FILE", unset()),
        ("ROOMCAST_REDIS_TLS_KEY_FILE", unset()),
        (
            "ROOMCAST_REDIS_TIMEOUT_MS",
            DEFAULT_REDIS_TIMEOUT_MS.to_string(),
        ),
        (
            "ROOMCAST_CLUSTER_LEASE_MS",
            DEFAULT_CLUSTER_LEASE_MS.to_string(),
        ),
        (
            "ROOMCAST_CLUSTER_CUT_OFF_CLOSE_MS",
            DEFAULT_CLUSTER_CUT_OFF_CLOSE_MS.to_string(),
        ),
        ("ROOMCAST_ECHO_ENDPOINT", "false".to_owned()),
        ("ROOMCAST_LOG_FORMAT", "plain".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
}
