//! Why a connection is closed, as named values, and the WebSocket close code each one
//! sends. This table is the close-code policy (docs/PROTOCOL.md repeats it):
//! codes that mean "reconnect" (1012, 1013) and codes that mean "fix the client" (1002,
//! 1007, 1008, 1009) are never mixed.

/// A server-initiated close: the close code and a short reason for the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: &'static str,
    /// Whether frames already queued are written before the close frame.
    pub drain: bool,
    /// Metric label for `roomcast_disconnects_total{reason}`.
    pub label: &'static str,
}

impl Disconnect {
    /// The usual `roomcast_disconnects_total{reason}` labels: every server-initiated
    /// close's, and a client's close frame and a connection that just ended.
    pub const LABELS: &'static [&'static str] = &[
        "client_close",
        "eof",
        Self::SLOW_CONSUMER.label,
        Self::SHUTDOWN.label,
        Self::CUT_OFF.label,
        Self::PROTOCOL_ERROR.label,
        Self::INVALID_UTF8.label,
        Self::POLICY.label,
        Self::TOO_BIG.label,
        Self::IDLE_TIMEOUT.label,
        Self::TOKEN_EXPIRED.label,
    ];

    /// The client read too slowly and its outbox filled: reconnect and recover.
    pub const SLOW_CONSUMER: Self = Self {
        code: 1013,
        reason: "slow consumer",
        drain: false,
        label: "slow_consumer",
    };
    /// The server is shutting down or restarting: reconnect (to another node).
    pub const SHUTDOWN: Self = Self {
        code: 1012,
        reason: "server restarting",
        drain: true,
        label: "shutdown",
    };
    /// In a cluster: this node has been cut off from Redis for longer than
    /// `ROOMCAST_CLUSTER_CUT_OFF_CLOSE_MS` and hears no other node: reconnect (to
    /// another node) and recover with `since`.
    pub const CUT_OFF: Self = Self {
        code: 1012,
        reason: "cut off from the cluster",
        drain: true,
        label: "cut_off",
    };
    /// A frame violated the WebSocket protocol.
    pub const PROTOCOL_ERROR: Self = Self {
        code: 1002,
        reason: "protocol error",
        drain: false,
        label: "protocol_error",
    };
    /// A text message was not valid UTF-8.
    pub const INVALID_UTF8: Self = Self {
        code: 1007,
        reason: "invalid utf-8",
        drain: false,
        label: "invalid_utf8",
    };
    /// The client broke a rule that is not worth an error frame (binary frames on the
    /// chat endpoint, a token that expired while connected).
    pub const POLICY: Self = Self {
        code: 1008,
        reason: "policy violation",
        drain: true,
        label: "policy",
    };
    /// A message exceeded the frame size limit.
    pub const TOO_BIG: Self = Self {
        code: 1009,
        reason: "message too big",
        drain: false,
        label: "too_big",
    };
    /// Nothing (not even a pong) arrived for two ping intervals: the peer is gone.
    pub const IDLE_TIMEOUT: Self = Self {
        code: 1001,
        reason: "idle timeout",
        drain: false,
        label: "idle_timeout",
    };
    /// The connection's token expired: reconnect with a fresh one.
    pub const TOKEN_EXPIRED: Self = Self {
        code: 1008,
        reason: "token expired",
        drain: true,
        label: "token_expired",
    };
}
