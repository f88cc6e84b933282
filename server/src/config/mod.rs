//! Configuration: every environment variable roomcast reads, parsed and validated in
//! one place, with the defaults documented in the README's configuration table. Names
//! follow the seed where it has one (`PORT`, `JWT_SECRET`, `RATE_LIMIT_*`,
//! `ENABLE_MODERATION`, `MAX_MESSAGE_LENGTH`, `NODE_ENV`); ours start with `ROOMCAST_`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use roomcast_engine::EngineConfig;
use roomcast_engine::moderation::{ModerationConfig, ModerationMode};
use roomcast_engine::ratelimit::RateLimitConfig;

/// A configuration error: which variable, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

/// The server's whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub production: bool,
    /// `JWT_SECRET`; `None` means dev mode (a generated secret kept in the data dir).
    pub jwt_secret: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// The identity provider's keys (`ROOMCAST_JWKS_URL`): RS256 and ES256 tokens.
    pub jwks: Option<crate::jwks::JwksConfig>,
    /// Cognito's app-client and `token_use` checks.
    pub cognito: crate::auth::CognitoChecks,
    /// Largest accepted WebSocket message (after reassembling fragments), bytes.
    pub max_frame_bytes: usize,
    /// How long one socket write may take before the client counts as dead.
    pub write_timeout: Duration,
    /// How long an HTTP request body may take to arrive (408 after).
    pub http_body_timeout: Duration,
    /// How long `/readyz` reports draining before the listener closes.
    pub shutdown_drain_delay: Duration,
    /// How long shutdown waits for connections to close.
    pub shutdown_timeout: Duration,
    /// Server pings every this often; a connection silent for two intervals is closed.
    /// `None` (0) disables heartbeats.
    pub ping_interval: Option<Duration>,
    /// The listen backlog (the kernel caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// `SO_SNDBUF` of every accepted socket (set on the listener, which they inherit);
    /// `None` (0) leaves the kernel's autotuning. A fixed size bounds what a client
    /// that stops reading can hold in the kernel beside its outbox.
    pub socket_send_buffer: Option<usize>,
    pub echo_endpoint: bool,
    pub log_json: bool,
    /// Origins allowed by CORS; `None` = any origin (`*`).
    pub cors_origins: Option<Vec<String>>,
    /// Push notification webhook; `None` turns push off.
    pub push: Option<PushConfig>,
    /// A ringing call nobody answers becomes `missed` after this.
    /// The video provider (LiveKit-style); `None` makes video tokens 503.
    pub video: Option<VideoConfig>,
    /// A user whose one-time pre-keys fall below this many gets `prekeys_low`.
    pub prekey_low_threshold: usize,
    /// The REST routes' per-user budgets.
    pub api_budgets: ApiBudgetConfig,
    pub engine: EngineConfig,
    /// The CQL store (ScyllaDB or Cassandra), when `ROOMCAST_SCYLLA_NODES` is set; the
    /// embedded store otherwise.
    pub cql: Option<roomcast_engine::store::cql::CqlConfig>,
    /// Cluster membership over Redis, when `REDIS_URL` is set.
    pub redis: Option<RedisConfig>,
}

/// The REST routes' per-user budgets (`server/src/api/budget.rs`): requests per minute
/// of each group of routes, and one-time pre-key fetches per hour per requester and
/// partner; 0 turns a budget off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiBudgetConfig {
    pub reads_per_min: u32,
    pub writes_per_min: u32,
    pub calls_per_min: u32,
    pub keys_per_min: u32,
    pub admin_per_min: u32,
    pub prekey_fetches_per_partner_per_hour: u32,
}

impl Default for ApiBudgetConfig {
    fn default() -> Self {
        Self {
            reads_per_min: DEFAULT_API_READS_PER_MIN,
            writes_per_min: DEFAULT_API_WRITES_PER_MIN,
            calls_per_min: DEFAULT_API_CALLS_PER_MIN,
            keys_per_min: DEFAULT_API_KEYS_PER_MIN,
            admin_per_min: DEFAULT_API_ADMIN_PER_MIN,
            prekey_fetches_per_partner_per_hour: DEFAULT_PREKEY_FETCHES_PER_PARTNER_PER_HOUR,
        }
    }
}

impl ApiBudgetConfig {
    fn from_lookup(env: Env<'_>) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            reads_per_min: parse(env, "ROOMCAST_API_READS_PER_MIN", d.reads_per_min)?,
            writes_per_min: parse(env, "ROOMCAST_API_WRITES_PER_MIN", d.writes_per_min)?,
            calls_per_min: parse(env, "ROOMCAST_API_CALLS_PER_MIN", d.calls_per_min)?,
            keys_per_min: parse(env, "ROOMCAST_API_KEYS_PER_MIN", d.keys_per_min)?,
            admin_per_min: parse(env, "ROOMCAST_API_ADMIN_PER_MIN", d.admin_per_min)?,
            prekey_fetches_per_partner_per_hour: parse(
                env,
                "ROOMCAST_PREKEY_FETCHES_PER_PARTNER_PER_HOUR",
                d.prekey_fetches_per_partner_per_hour,
            )?,
        })
    }
}

/// A cluster member's Redis settings (`REDIS_URL` and friends).
#[derive(Clone)]
pub struct RedisConfig {
    pub url: String,
    /// For `rediss://`: the CA to trust and an optional client certificate.
    pub tls: Option<roomcast_engine::tls::TlsFiles>,
    /// The node id to claim (`ROOMCAST_NODE_ID` when set), else the first free one.
    pub node_id: Option<u16>,
    /// Connect and command timeout.
    pub timeout: Duration,
    /// Lease and membership lifetime.
    pub lease_ttl: Duration,
    /// Cut off from Redis this long, the node closes its sockets with 1012 (`None`:
    /// `ROOMCAST_CLUSTER_CUT_OFF_CLOSE_MS=0`, never).
    pub cut_off_close: Option<Duration>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &roomcast_engine::tls::redacted(&self.url))
            .field("tls", &self.tls)
            .field("node_id", &self.node_id)
            .field("timeout", &self.timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("cut_off_close", &self.cut_off_close)
            .finish()
    }
}

/// The video provider: tokens are LiveKit access tokens (HS256 JWTs signed with the
/// API secret, `iss` = API key).
#[derive(Clone)]
pub struct VideoConfig {
    /// The provider's URL clients connect to (returned with each token).
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
    pub token_ttl: Duration,
}

impl std::fmt::Debug for VideoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key)
            .field("token_ttl", &self.token_ttl)
            .finish_non_exhaustive()
    }
}

/// Where and how push notification jobs are posted.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// `http://host:port/path` (plain HTTP: a sidecar or in-cluster receiver).
    pub url: String,
    /// Attempts per job, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles per attempt (with jitter), capped at 30 s.
    pub backoff: Duration,
    /// Time allowed for one POST.
    pub timeout: Duration,
}

mod defaults;

pub use defaults::documented_defaults;
use defaults::*;

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn get(env: Env<'_>, var: &'static str) -> Option<String> {
    env(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn parse<T: std::str::FromStr>(
    env: Env<'_>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(env, var) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| ConfigError {
            var,
            problem: format!("cannot parse {v:?}: {e}"),
        }),
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    env: Env<'_>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let v = parse(env, var, default)?;
    if v <= T::default() {
        return Err(ConfigError {
            var,
            problem: "must be greater than zero".into(),
        });
    }
    Ok(v)
}

fn flag(env: Env<'_>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match get(env, var).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(v) => Err(ConfigError {
            var,
            problem: format!("expected true or false, got {v:?}"),
        }),
    }
}

/// Most rooms `ROOMCAST_METRICS_ROOMS` may name: each is a label value on every node.
const MAX_METRICS_ROOMS: usize = 100;

/// `ROOMCAST_METRICS_ROOMS`: rooms whose messages are counted by room.
fn metrics_rooms(env: Env<'_>) -> Result<std::collections::HashSet<String>, ConfigError> {
    let var = "ROOMCAST_METRICS_ROOMS";
    let rooms: std::collections::HashSet<String> = get(env, var)
        .map(|v| {
            v.split(',')
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if rooms.len() > MAX_METRICS_ROOMS {
        return Err(ConfigError {
            var,
            problem: format!(
                "{} rooms; at most {MAX_METRICS_ROOMS} (each is a metric label)",
                rooms.len()
            ),
        });
    }
    if let Some(bad) = rooms
        .iter()
        .find(|r| roomcast_engine::protocol::validate_room_id(r).is_err())
    {
        return Err(ConfigError {
            var,
            problem: format!("{bad:?} is not a room id"),
        });
    }
    Ok(rooms)
}

/// `ROOMCAST_SCYLLA_*`: the CQL store, when `ROOMCAST_SCYLLA_NODES` names contact points.
/// `REDIS_URL` makes the node a cluster member; nodes share history through the CQL
/// store, so a cluster needs `ROOMCAST_SCYLLA_NODES` too.
fn redis_config(
    env: Env<'_>,
    cql: &Option<roomcast_engine::store::cql::CqlConfig>,
) -> Result<Option<RedisConfig>, ConfigError> {
    let Some(url) = get(env, "REDIS_URL") else {
        return Ok(None);
    };
    let tls_scheme = url.starts_with("rediss://");
    if !tls_scheme && !url.starts_with("redis://") {
        return Err(ConfigError {
            var: "REDIS_URL",
            problem: format!(
                "expected redis:// or rediss://[user:password@]host:port[/db], got {:?}",
                roomcast_engine::tls::redacted(&url)
            ),
        });
    }
    let tls = tls_files(
        env,
        [
            "ROOMCAST_REDIS_TLS_CA_FILE",
            "ROOMCAST_REDIS_TLS_CERT_FILE",
            "ROOMCAST_REDIS_TLS_KEY_FILE",
        ],
    )?;
    if tls.is_some() && !tls_scheme {
        return Err(ConfigError {
            var: "ROOMCAST_REDIS_TLS_CA_FILE",
            problem: "TLS files are for a rediss:// REDIS_URL; this one is redis:// (clear)".into(),
        });
    }
    if cql.is_none() {
        return Err(ConfigError {
            var: "REDIS_URL",
            problem:
                "a cluster shares history through the CQL store: set ROOMCAST_SCYLLA_NODES too"
                    .into(),
        });
    }
    let node_id = match get(env, "ROOMCAST_NODE_ID") {
        None => None,
        Some(_) => Some(parse(env, "ROOMCAST_NODE_ID", 0u16)?),
    };
    Ok(Some(RedisConfig {
        url,
        tls,
        node_id,
        timeout: Duration::from_millis(positive(
            env,
            "ROOMCAST_REDIS_TIMEOUT_MS",
            DEFAULT_REDIS_TIMEOUT_MS,
        )?),
        lease_ttl: Duration::from_millis(positive(
            env,
            "ROOMCAST_CLUSTER_LEASE_MS",
            DEFAULT_CLUSTER_LEASE_MS,
        )?),
        cut_off_close: match parse(
            env,
            "ROOMCAST_CLUSTER_CUT_OFF_CLOSE_MS",
            DEFAULT_CLUSTER_CUT_OFF_CLOSE_MS,
        )? {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
    }))
}

fn cql_config(env: Env<'_>) -> Result<Option<roomcast_engine::store::cql::CqlConfig>, ConfigError> {
    use scylla_consistency as c;
    let Some(nodes) = get(env, "ROOMCAST_SCYLLA_NODES") else {
        return Ok(None);
    };
    let nodes: Vec<String> = nodes
        .split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.is_empty() || nodes.iter().any(|n| !n.contains(':')) {
        return Err(ConfigError {
            var: "ROOMCAST_SCYLLA_NODES",
            problem: "expected comma-separated host:port contact points".into(),
        });
    }
    let keyspace =
        get(env, "ROOMCAST_SCYLLA_KEYSPACE").unwrap_or_else(|| DEFAULT_SCYLLA_KEYSPACE.to_owned());
    if keyspace.is_empty()
        || keyspace.len() > 48
        || !keyspace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ConfigError {
            var: "ROOMCAST_SCYLLA_KEYSPACE",
            problem: "must be 1-48 of A-Z a-z 0-9 _".into(),
        });
    }
    let consistency = match get(env, "ROOMCAST_SCYLLA_CONSISTENCY") {
        None => c::parse(DEFAULT_SCYLLA_CONSISTENCY),
        Some(v) => c::parse(&v),
    }
    .ok_or_else(|| ConfigError {
        var: "ROOMCAST_SCYLLA_CONSISTENCY",
        problem: "expected one, two, three, quorum, all, local_quorum, each_quorum or local_one"
            .into(),
    })?;
    let credentials = match (
        get(env, "ROOMCAST_SCYLLA_USERNAME"),
        get(env, "ROOMCAST_SCYLLA_PASSWORD"),
    ) {
        (None, None) => None,
        (Some(u), Some(p)) => Some((u, p)),
        _ => {
            return Err(ConfigError {
                var: "ROOMCAST_SCYLLA_USERNAME",
                problem: "set ROOMCAST_SCYLLA_USERNAME and ROOMCAST_SCYLLA_PASSWORD together"
                    .into(),
            });
        }
    };
    let tls = tls_files(
        env,
        [
            "ROOMCAST_SCYLLA_TLS_CA_FILE",
            "ROOMCAST_SCYLLA_TLS_CERT_FILE",
            "ROOMCAST_SCYLLA_TLS_KEY_FILE",
        ],
    )?;
    Ok(Some(roomcast_engine::store::cql::CqlConfig {
        nodes,
        tls,
        keyspace,
        replication: get(env, "ROOMCAST_SCYLLA_REPLICATION")
            .unwrap_or_else(|| DEFAULT_SCYLLA_REPLICATION.to_owned()),
        consistency,
        request_timeout: Duration::from_millis(positive(
            env,
            "ROOMCAST_SCYLLA_REQUEST_TIMEOUT_MS",
            DEFAULT_SCYLLA_REQUEST_TIMEOUT_MS,
        )?),
        connect_timeout: Duration::from_millis(positive(
            env,
            "ROOMCAST_SCYLLA_CONNECT_TIMEOUT_MS",
            DEFAULT_SCYLLA_CONNECT_TIMEOUT_MS,
        )?),
        credentials,
        connections_per_shard: std::num::NonZeroUsize::new(positive(
            env,
            "ROOMCAST_SCYLLA_CONNECTIONS_PER_SHARD",
            DEFAULT_SCYLLA_CONNECTIONS_PER_SHARD,
        )?)
        .unwrap_or(std::num::NonZeroUsize::MIN),
    }))
}

/// TLS to a backing service from three variables: the CA file (TLS is on when it is
/// set), and a client certificate and key for mutual TLS (both or neither).
fn tls_files(
    env: Env<'_>,
    [ca, cert, key]: [&'static str; 3],
) -> Result<Option<roomcast_engine::tls::TlsFiles>, ConfigError> {
    let client = match (get(env, cert), get(env, key)) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c.into(), k.into())),
        _ => {
            return Err(ConfigError {
                var: cert,
                problem: format!("set {cert} and {key} together"),
            });
        }
    };
    match get(env, ca) {
        Some(ca) => Ok(Some(roomcast_engine::tls::TlsFiles {
            ca: ca.into(),
            client,
        })),
        None if client.is_some() => Err(ConfigError {
            var: ca,
            problem: format!("a client certificate needs {ca} (the CA to trust)"),
        }),
        None => Ok(None),
    }
}

/// Consistency levels by name.
mod scylla_consistency {
    use roomcast_engine::store::cql::Consistency;

    pub(super) fn parse(name: &str) -> Option<Consistency> {
        Some(match name.to_ascii_lowercase().as_str() {
            "one" => Consistency::One,
            "two" => Consistency::Two,
            "three" => Consistency::Three,
            "quorum" => Consistency::Quorum,
            "all" => Consistency::All,
            "local_quorum" => Consistency::LocalQuorum,
            "each_quorum" => Consistency::EachQuorum,
            "local_one" => Consistency::LocalOne,
            _ => return None,
        })
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Reads configuration through `env` (tests pass a map).
    pub fn from_lookup(env: Env<'_>) -> Result<Self, ConfigError> {
        let defaults = EngineConfig::default();
        let mode = match get(env, "ROOMCAST_MODERATION_MODE").as_deref() {
            None | Some("mask") => ModerationMode::Mask,
            Some("reject") => ModerationMode::Reject,
            Some(other) => {
                return Err(ConfigError {
                    var: "ROOMCAST_MODERATION_MODE",
                    problem: format!("expected mask or reject, got {other:?}"),
                });
            }
        };
        let node_id: u16 = parse(env, "ROOMCAST_NODE_ID", defaults.node_id)?;
        if node_id > roomcast_engine::ids::MAX_NODE_ID {
            return Err(ConfigError {
                var: "ROOMCAST_NODE_ID",
                problem: "must be 0-255".into(),
            });
        }
        let shards: usize = positive(env, "ROOMCAST_SHARDS", defaults.shards)?;
        if shards >= roomcast_engine::ids::MAX_SHARDS {
            return Err(ConfigError {
                var: "ROOMCAST_SHARDS",
                problem: "must be 1-31".into(),
            });
        }
        let engine = EngineConfig {
            node_id,
            shards,
            shard_queue: positive(env, "ROOMCAST_SHARD_QUEUE", defaults.shard_queue)?,
            outbox_max_bytes: positive(
                env,
                "ROOMCAST_OUTBOX_MAX_BYTES",
                defaults.outbox_max_bytes,
            )?,
            max_rooms_per_connection: positive(
                env,
                "ROOMCAST_MAX_ROOMS_PER_CONNECTION",
                defaults.max_rooms_per_connection,
            )?,
            max_connections_per_user: positive(
                env,
                "ROOMCAST_MAX_CONNECTIONS_PER_USER",
                defaults.max_connections_per_user,
            )?,
            recovery_max_messages: positive(
                env,
                "ROOMCAST_RECOVERY_MAX_MESSAGES",
                defaults.recovery_max_messages,
            )?,
            room_presence_max_members: parse(
                env,
                "ROOMCAST_ROOM_PRESENCE_MAX_MEMBERS",
                defaults.room_presence_max_members,
            )?,
            dedupe_window: positive(env, "ROOMCAST_DEDUPE_WINDOW", defaults.dedupe_window)?,
            writer_queue: positive(env, "ROOMCAST_HISTORY_QUEUE", defaults.writer_queue)?,
            writer_max_batch: positive(
                env,
                "ROOMCAST_HISTORY_MAX_BATCH",
                defaults.writer_max_batch,
            )?,
            rate: RateLimitConfig {
                window: Duration::from_millis(positive(
                    env,
                    "RATE_LIMIT_WINDOW_MS",
                    defaults.rate.window.as_millis() as u64,
                )?),
                max_messages: positive(env, "RATE_LIMIT_MAX_MESSAGES", defaults.rate.max_messages)?,
                connects_per_ip_per_sec: positive(
                    env,
                    "ROOMCAST_CONNECT_RATE_PER_IP",
                    defaults.rate.connects_per_ip_per_sec,
                )?,
                typing_per_sec: positive(
                    env,
                    "ROOMCAST_TYPING_RATE_PER_SEC",
                    defaults.rate.typing_per_sec,
                )?,
            },
            push_queue: 0,
            idle_positions: defaults.idle_positions,
            call_ring_timeout: Duration::from_millis(positive(
                env,
                "ROOMCAST_CALL_RING_TIMEOUT_MS",
                defaults.call_ring_timeout.as_millis() as u64,
            )?),
            metrics_rooms: Arc::new(metrics_rooms(env)?),
            moderation: ModerationConfig {
                enabled: flag(env, "ENABLE_MODERATION", defaults.moderation.enabled)?,
                max_message_length: positive(
                    env,
                    "MAX_MESSAGE_LENGTH",
                    defaults.moderation.max_message_length,
                )?,
                blocked_words: get(env, "ROOMCAST_BLOCKED_WORDS")
                    .map(|v| {
                        v.split(',')
                            .map(|w| w.trim().to_owned())
                            .filter(|w| !w.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                mode,
            },
        };
        let push = match get(env, "ROOMCAST_PUSH_WEBHOOK_URL") {
            None => None,
            Some(url) => {
                if !url.starts_with("http://") || url.len() <= "http://".len() {
                    return Err(ConfigError {
                        var: "ROOMCAST_PUSH_WEBHOOK_URL",
                        problem: format!("expected an http:// URL, got {url:?}"),
                    });
                }
                Some(PushConfig {
                    url,
                    max_attempts: positive(
                        env,
                        "ROOMCAST_PUSH_MAX_ATTEMPTS",
                        DEFAULT_PUSH_MAX_ATTEMPTS,
                    )?,
                    backoff: Duration::from_millis(positive(
                        env,
                        "ROOMCAST_PUSH_BACKOFF_MS",
                        DEFAULT_PUSH_BACKOFF_MS,
                    )?),
                    timeout: Duration::from_millis(positive(
                        env,
                        "ROOMCAST_PUSH_TIMEOUT_MS",
                        DEFAULT_PUSH_TIMEOUT_MS,
                    )?),
                })
            }
        };
        let mut engine = engine;
        if push.is_some() {
            engine.push_queue = positive(env, "ROOMCAST_PUSH_QUEUE", DEFAULT_PUSH_QUEUE)?;
        }
        let video = match (
            get(env, "ROOMCAST_VIDEO_URL"),
            get(env, "ROOMCAST_VIDEO_API_KEY"),
            get(env, "ROOMCAST_VIDEO_API_SECRET"),
        ) {
            (None, None, None) => None,
            (Some(url), Some(api_key), Some(api_secret)) => {
                if api_secret.len() < 16 {
                    return Err(ConfigError {
                        var: "ROOMCAST_VIDEO_API_SECRET",
                        problem: "must be at least 16 bytes".into(),
                    });
                }
                Some(VideoConfig {
                    url,
                    api_key,
                    api_secret,
                    token_ttl: Duration::from_secs(positive(
                        env,
                        "ROOMCAST_VIDEO_TOKEN_TTL_SECS",
                        DEFAULT_VIDEO_TOKEN_TTL_SECS,
                    )?),
                })
            }
            _ => {
                return Err(ConfigError {
                    var: "ROOMCAST_VIDEO_URL",
                    problem: "set ROOMCAST_VIDEO_URL, ROOMCAST_VIDEO_API_KEY and ROOMCAST_VIDEO_API_SECRET together (or none)".into(),
                });
            }
        };
        let cors_origins = match get(env, "ROOMCAST_CORS_ORIGINS").as_deref() {
            None | Some("*") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect(),
            ),
        };
        let production = get(env, "NODE_ENV").is_some_and(|v| v.eq_ignore_ascii_case("production"));
        let jwt_secret = get(env, "JWT_SECRET");
        let jwks = match get(env, "ROOMCAST_JWKS_URL") {
            None => None,
            Some(url) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ConfigError {
                        var: "ROOMCAST_JWKS_URL",
                        problem: "must be an https:// (or http://) URL".into(),
                    });
                }
                Some(crate::jwks::JwksConfig {
                    url,
                    refresh: Duration::from_secs(positive(
                        env,
                        "ROOMCAST_JWKS_REFRESH_SECS",
                        DEFAULT_JWKS_REFRESH_SECS,
                    )?),
                    miss_refetch: Duration::from_millis(parse(
                        env,
                        "ROOMCAST_JWKS_MISS_REFETCH_MS",
                        DEFAULT_JWKS_MISS_REFETCH_MS,
                    )?),
                    timeout: Duration::from_secs(5),
                })
            }
        };
        // In production the identity provider's keys may be the only way in; a shared
        // secret is needed only when there are none.
        if production && jwt_secret.is_none() && jwks.is_none() {
            return Err(ConfigError {
                var: "JWT_SECRET",
                problem: "is required when NODE_ENV=production (unless ROOMCAST_JWKS_URL is set)"
                    .into(),
            });
        }
        let token_use: Vec<String> = get(env, "ROOMCAST_COGNITO_TOKEN_USE")
            .map(|v| {
                v.split(',')
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = token_use.iter().find(|u| *u != "access" && *u != "id") {
            return Err(ConfigError {
                var: "ROOMCAST_COGNITO_TOKEN_USE",
                problem: format!("expected access, id or both, got {bad:?}"),
            });
        }
        let cognito = crate::auth::CognitoChecks {
            client_id: get(env, "ROOMCAST_COGNITO_CLIENT_ID"),
            token_use,
        };
        if let Some(s) = &jwt_secret
            && s.len() < 16
        {
            return Err(ConfigError {
                var: "JWT_SECRET",
                problem: "must be at least 16 bytes".into(),
            });
        }
        let cql = cql_config(env)?;
        let redis = redis_config(env, &cql)?;
        Ok(Self {
            cql,
            redis,
            bind: parse(env, "ROOMCAST_BIND", IpAddr::from(DEFAULT_BIND))?,
            port: parse(env, "PORT", DEFAULT_PORT)?,
            data_dir: get(env, "ROOMCAST_DATA_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from),
            production,
            cors_origins,
            push,
            video,
            prekey_low_threshold: parse(
                env,
                "ROOMCAST_PREKEY_LOW_THRESHOLD",
                DEFAULT_PREKEY_LOW_THRESHOLD,
            )?,
            api_budgets: ApiBudgetConfig::from_lookup(env)?,
            jwt_secret,
            jwks,
            cognito,
            jwt_issuer: get(env, "ROOMCAST_JWT_ISSUER"),
            jwt_audience: get(env, "ROOMCAST_JWT_AUDIENCE"),
            max_frame_bytes: positive(env, "ROOMCAST_MAX_FRAME_BYTES", DEFAULT_MAX_FRAME_BYTES)?,
            write_timeout: Duration::from_millis(positive(
                env,
                "ROOMCAST_WRITE_TIMEOUT_MS",
                DEFAULT_WRITE_TIMEOUT_MS,
            )?),
            http_body_timeout: Duration::from_millis(positive(
                env,
                "ROOMCAST_HTTP_BODY_TIMEOUT_MS",
                DEFAULT_HTTP_BODY_TIMEOUT_MS,
            )?),
            shutdown_drain_delay: Duration::from_millis(parse(
                env,
                "ROOMCAST_SHUTDOWN_DRAIN_DELAY_MS",
                DEFAULT_SHUTDOWN_DRAIN_DELAY_MS,
            )?),
            shutdown_timeout: Duration::from_millis(positive(
                env,
                "ROOMCAST_SHUTDOWN_TIMEOUT_MS",
                DEFAULT_SHUTDOWN_TIMEOUT_MS,
            )?),
            ping_interval: match parse(env, "ROOMCAST_PING_INTERVAL_MS", DEFAULT_PING_INTERVAL_MS)?
            {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            listen_backlog: positive(env, "ROOMCAST_LISTEN_BACKLOG", DEFAULT_LISTEN_BACKLOG)?,
            socket_send_buffer: match parse(
                env,
                "ROOMCAST_SOCKET_SEND_BUFFER_BYTES",
                DEFAULT_SOCKET_SEND_BUFFER_BYTES,
            )? {
                0 => None,
                n => Some(n),
            },
            echo_endpoint: flag(env, "ROOMCAST_ECHO_ENDPOINT", false)?,
            log_json: get(env, "ROOMCAST_LOG_FORMAT").is_some_and(|v| v == "json"),
            engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.port, 8000);
        assert_eq!(c.engine.rate.window, Duration::from_millis(60_000));
        assert_eq!(c.engine.rate.max_messages, 30);
        assert_eq!(c.engine.moderation.max_message_length, 1000);
        assert!(c.engine.moderation.enabled);
        assert_eq!(c.engine.outbox_max_bytes, 1 << 20);
        assert_eq!(c.max_frame_bytes, 64 * 1024);
        assert!(c.jwt_secret.is_none());
        assert!(!c.echo_endpoint);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[("PORT", "eighty")]).err().map(|e| e.var);
        assert_eq!(e, Some("PORT"));
        assert_eq!(
            config(&[("RATE_LIMIT_MAX_MESSAGES", "0")])
                .err()
                .map(|e| e.var),
            Some("RATE_LIMIT_MAX_MESSAGES")
        );
        assert_eq!(
            config(&[("ENABLE_MODERATION", "maybe")])
                .err()
                .map(|e| e.var),
            Some("ENABLE_MODERATION")
        );
        assert_eq!(
            config(&[("ROOMCAST_SHARDS", "64")]).err().map(|e| e.var),
            Some("ROOMCAST_SHARDS")
        );
        assert_eq!(
            config(&[("NODE_ENV", "production")]).err().map(|e| e.var),
            Some("JWT_SECRET")
        );
        assert_eq!(
            config(&[("JWT_SECRET", "short")]).err().map(|e| e.var),
            Some("JWT_SECRET")
        );
    }

    #[test]
    fn lists_and_modes_parse() {
        let c = config(&[
            ("ROOMCAST_BLOCKED_WORDS", "darn, heck,,"),
            ("ROOMCAST_MODERATION_MODE", "reject"),
        ])
        .expect("valid");
        assert_eq!(c.engine.moderation.blocked_words, vec!["darn", "heck"]);
        assert_eq!(c.engine.moderation.mode, ModerationMode::Reject);
    }

    #[test]
    fn metrics_rooms_are_a_short_list_of_room_ids() {
        let c = config(&[("ROOMCAST_METRICS_ROOMS", "lobby, general,,")]).expect("valid");
        let mut rooms: Vec<&String> = c.engine.metrics_rooms.iter().collect();
        rooms.sort();
        assert_eq!(rooms, ["general", "lobby"]);
        let e = config(&[("ROOMCAST_METRICS_ROOMS", "ok,no spaces")]).expect_err("bad id");
        assert_eq!(e.var, "ROOMCAST_METRICS_ROOMS");
        let many: Vec<String> = (0..101).map(|i| format!("r{i}")).collect();
        let many = many.join(",");
        let e = config(&[("ROOMCAST_METRICS_ROOMS", many.as_str())]).expect_err("too many");
        assert!(e.problem.contains("at most 100"), "{}", e.problem);
        assert!(
            config(&[])
                .expect("defaults")
                .engine
                .metrics_rooms
                .is_empty()
        );
    }

    /// The README's configuration table lists exactly the variables the server reads,
    /// each with the default the code uses.
    #[test]
    fn the_readme_table_matches_the_defaults() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<(String, String)> = readme
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let var = cells.get(1)?.trim_matches('`');
                let default = cells.get(2)?.trim_matches('`');
                var.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_')
                    .then(|| (var.to_owned(), default.to_owned()))
            })
            .collect();
        let expected: Vec<(String, String)> = documented_defaults()
            .into_iter()
            .map(|(v, d)| (v.to_owned(), d))
            .collect();
        assert!(rows.len() >= 40, "the table was not found: {rows:?}");
        assert_eq!(
            rows, expected,
            "README configuration table vs documented_defaults()"
        );
        // And the documented defaults are what parsing an empty environment yields.
        let c = config(&[]).expect("defaults parse");
        let e = EngineConfig::default();
        assert_eq!(c.port, DEFAULT_PORT);
        assert_eq!(c.engine.rate.max_messages, e.rate.max_messages);
        assert_eq!(c.engine.call_ring_timeout, e.call_ring_timeout);
        assert_eq!(c.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(c.listen_backlog, DEFAULT_LISTEN_BACKLOG);
    }

    #[test]
    fn redis_url_makes_a_cluster_member_and_needs_the_cql_store() {
        assert!(
            config(&[]).expect("defaults").redis.is_none(),
            "one node by default"
        );
        let cql = ("ROOMCAST_SCYLLA_NODES", "10.0.0.5:9042");
        let r = config(&[cql, ("REDIS_URL", "redis://:pw@10.0.0.9:6379/0")])
            .expect("parse")
            .redis
            .expect("a cluster member");
        assert_eq!(r.url, "redis://:pw@10.0.0.9:6379/0");
        assert_eq!(r.node_id, None, "claims a free node id");
        assert_eq!(r.lease_ttl, Duration::from_millis(DEFAULT_CLUSTER_LEASE_MS));
        let r = config(&[
            cql,
            ("REDIS_URL", "redis://r:6379"),
            ("ROOMCAST_NODE_ID", "7"),
        ])
        .expect("parse")
        .redis
        .expect("member");
        assert_eq!(r.node_id, Some(7));
        assert_eq!(
            r.cut_off_close,
            Some(Duration::from_secs(10)),
            "the default"
        );
        let r = config(&[
            cql,
            ("REDIS_URL", "redis://r:6379"),
            ("ROOMCAST_CLUSTER_CUT_OFF_CLOSE_MS", "0"),
        ])
        .expect("parse")
        .redis
        .expect("member");
        assert_eq!(r.cut_off_close, None, "0 keeps sessions open");
        let r = config(&[
            cql,
            ("REDIS_URL", "rediss://:pw@r:6380"),
            ("ROOMCAST_REDIS_TLS_CA_FILE", "/etc/roomcast/redis-ca.pem"),
            ("ROOMCAST_REDIS_TLS_CERT_FILE", "/etc/roomcast/c.pem"),
            ("ROOMCAST_REDIS_TLS_KEY_FILE", "/etc/roomcast/c.key"),
        ])
        .expect("parse")
        .redis
        .expect("member");
        let tls = r.tls.clone().expect("tls files");
        assert_eq!(tls.ca, std::path::Path::new("/etc/roomcast/redis-ca.pem"));
        assert!(tls.client.is_some());
        assert!(
            !format!("{r:?}").contains("pw"),
            "the password stays out of logs: {r:?}"
        );
        let r = config(&[cql, ("REDIS_URL", "rediss://r:6380")])
            .expect("TLS with the system's roots")
            .redis
            .expect("member");
        assert!(r.tls.is_none());
        assert_eq!(
            config(&[
                cql,
                ("REDIS_URL", "redis://r:6379"),
                ("ROOMCAST_REDIS_TLS_CA_FILE", "/etc/roomcast/redis-ca.pem"),
            ])
            .err()
            .map(|e| e.var),
            Some("ROOMCAST_REDIS_TLS_CA_FILE"),
            "TLS files beside a clear URL are a mistake"
        );
        assert_eq!(
            config(&[
                cql,
                ("REDIS_URL", "rediss://r:6379"),
                ("ROOMCAST_REDIS_TLS_KEY_FILE", "/k"),
            ])
            .err()
            .map(|e| e.var),
            Some("ROOMCAST_REDIS_TLS_CERT_FILE")
        );
        for bad in [
            vec![("REDIS_URL", "redis://r:6379")],
            vec![("REDIS_URL", "rediss://r:6379")],
            vec![cql, ("REDIS_URL", "http://r:6379")],
        ] {
            assert_eq!(
                config(&bad).err().map(|e| e.var),
                Some("REDIS_URL"),
                "{bad:?}"
            );
        }
        assert_eq!(
            config(&[
                cql,
                ("REDIS_URL", "redis://r"),
                ("ROOMCAST_CLUSTER_LEASE_MS", "0")
            ])
            .err()
            .map(|e| e.var),
            Some("ROOMCAST_CLUSTER_LEASE_MS")
        );
    }

    #[test]
    fn the_cql_store_is_configured_by_roomcast_scylla_variables() {
        assert!(
            config(&[]).expect("defaults").cql.is_none(),
            "embedded by default"
        );
        let c = config(&[
            ("ROOMCAST_SCYLLA_NODES", "10.0.0.5:9042, 10.0.0.6:9042"),
            ("ROOMCAST_SCYLLA_CONSISTENCY", "QUORUM"),
            ("ROOMCAST_SCYLLA_CONNECTIONS_PER_SHARD", "2"),
        ])
        .expect("parse")
        .cql
        .expect("cql");
        assert_eq!(c.nodes, ["10.0.0.5:9042", "10.0.0.6:9042"]);
        assert_eq!(c.keyspace, "roomcast");
        assert_eq!(
            c.consistency,
            roomcast_engine::store::cql::Consistency::Quorum
        );
        assert_eq!(c.connections_per_shard.get(), 2);
        assert_eq!(c.tls, None, "plain TCP unless a CA file is named");
        let tls = config(&[
            ("ROOMCAST_SCYLLA_NODES", "10.0.0.5:9042"),
            ("ROOMCAST_SCYLLA_TLS_CA_FILE", "/etc/roomcast/ca.pem"),
        ])
        .expect("parse")
        .cql
        .and_then(|c| c.tls)
        .expect("tls");
        assert_eq!(tls.ca, std::path::Path::new("/etc/roomcast/ca.pem"));
        assert_eq!(tls.client, None);
        for (var, value) in [
            ("ROOMCAST_SCYLLA_NODES", "no-port"),
            ("ROOMCAST_SCYLLA_CONSISTENCY", "mostly"),
            ("ROOMCAST_SCYLLA_KEYSPACE", "bad-name"),
            ("ROOMCAST_SCYLLA_USERNAME", "only-user"),
            ("ROOMCAST_SCYLLA_CONNECTIONS_PER_SHARD", "0"),
            ("ROOMCAST_SCYLLA_TLS_CERT_FILE", "/etc/roomcast/client.pem"),
        ] {
            let mut env = vec![("ROOMCAST_SCYLLA_NODES", "127.0.0.1:9042")];
            env.retain(|(k, _)| *k != var);
            env.push((var, value));
            let err = config(&env).expect_err(var);
            assert_eq!(err.var, var, "{err}");
        }
    }
}
