//! Every Prometheus metric roomcast exports: names, help texts, and histogram buckets,
//! declared once. Names follow the conventions (`roomcast_..._total` for counters,
//! `_seconds` and `_bytes` units). Labels are bounded: never a room or user id.

pub const CONNECTIONS: &str = "roomcast_connections";
pub const CONNECTS: &str = "roomcast_connects_total";
pub const DISCONNECTS: &str = "roomcast_disconnects_total";
pub const CONNECT_REJECTED: &str = "roomcast_connect_rejected_total";
pub const AUTH_FAILURES: &str = "roomcast_auth_failures_total";
pub const JWKS_FETCHES: &str = "roomcast_jwks_fetches_total";
pub const JWKS_KEYS: &str = "roomcast_jwks_keys";
pub const MESSAGES_PUBLISHED: &str = "roomcast_messages_published_total";
pub const MESSAGES_DELIVERED: &str = "roomcast_messages_delivered_total";
pub const MESSAGES_STORED: &str = "roomcast_messages_stored_total";
pub const MESSAGES_DEDUPLICATED: &str = "roomcast_messages_deduplicated_total";
pub const DELIVERY_SECONDS: &str = "roomcast_delivery_latency_seconds";
pub const OUTBOX_QUEUED_BYTES: &str = "roomcast_outbox_queued_bytes";
pub const WRITE_BATCH_FRAMES: &str = "roomcast_write_batch_frames";
pub const SLOW_CONSUMERS: &str = "roomcast_slow_consumer_disconnects_total";
pub const SHARD_QUEUE_DEPTH: &str = "roomcast_shard_queue_depth";
pub const ROOMS: &str = "roomcast_rooms";
pub const STORE_WRITE_SECONDS: &str = "roomcast_store_write_seconds";
pub const STORE_BATCH_SIZE: &str = "roomcast_store_batch_size";
pub const STORE_ERRORS: &str = "roomcast_store_errors_total";
pub const STORE_READ_SECONDS: &str = "roomcast_store_read_seconds";
pub const RATE_LIMITED: &str = "roomcast_rate_limited_total";
pub const MODERATION_ACTIONS: &str = "roomcast_moderation_actions_total";
pub const CLIENT_ERRORS: &str = "roomcast_client_errors_total";
pub const TYPING_DROPPED: &str = "roomcast_typing_dropped_total";
pub const RECOVERIES: &str = "roomcast_recoveries_total";
pub const RECOVERED_MESSAGES: &str = "roomcast_recovered_messages_total";
pub const RECOVERY_READS: &str = "roomcast_recovery_reads_total";
pub const HTTP_REQUESTS: &str = "roomcast_http_requests_total";
pub const HTTP_REQUEST_SECONDS: &str = "roomcast_http_request_duration_seconds";
pub const API_ERRORS: &str = "roomcast_api_errors_total";
pub const CHAT_EVENTS: &str = "roomcast_chat_events_total";
pub const PUSH_JOBS: &str = "roomcast_push_jobs_total";
pub const PUSH_SECONDS: &str = "roomcast_push_delivery_seconds";
pub const CALLS_STARTED: &str = "roomcast_calls_started_total";
pub const CALLS_FINISHED: &str = "roomcast_calls_finished_total";
pub const VIDEO_TOKENS: &str = "roomcast_video_tokens_total";
pub const PREKEYS_TAKEN: &str = "roomcast_prekeys_taken_total";
pub const KEYS_UPLOADED: &str = "roomcast_keys_uploaded_total";
pub const BUS_PUBLISHED: &str = "roomcast_bus_published_total";
pub const BUS_INBOUND_DROPPED: &str = "roomcast_bus_inbound_dropped_total";
pub const BUS_PUBLISH_DROPPED: &str = "roomcast_bus_publish_dropped_total";
pub const BUS_RECEIVED: &str = "roomcast_bus_received_total";
pub const BUS_UNDECODABLE: &str = "roomcast_bus_undecodable_total";
pub const BUS_REDIS_COMMANDS: &str = "roomcast_bus_redis_commands_total";
pub const BUS_REDIS_CONNECTED: &str = "roomcast_bus_redis_connected";
pub const BUS_REDIS_RECONNECTS: &str = "roomcast_bus_redis_reconnects_total";
pub const BUS_DUPLICATES: &str = "roomcast_bus_duplicates_total";
pub const BUS_GAPS: &str = "roomcast_bus_gaps_total";
pub const BUS_GAP_FILLED: &str = "roomcast_bus_gap_filled_messages_total";
pub const BUS_FILL_FAILED: &str = "roomcast_bus_fill_failed_total";
pub const BUS_FENCED: &str = "roomcast_bus_fenced_total";
pub const BUS_POSITION_CHECKS: &str = "roomcast_bus_position_checks_total";
pub const CLUSTER_NODES: &str = "roomcast_cluster_nodes";
pub const CLUSTER_SLOTS_OWNED: &str = "roomcast_cluster_slots_owned";
pub const CLUSTER_LEASE_ROUNDS: &str = "roomcast_cluster_lease_rounds_total";
pub const CLUSTER_SLOT_MOVES: &str = "roomcast_cluster_slot_moves_total";
pub const CLUSTER_FORWARDED: &str = "roomcast_cluster_forwarded_total";
pub const RATE_LIMIT_FALLBACKS: &str = "roomcast_rate_limit_fallbacks_total";
pub const PRESENCE_UPDATES: &str = "roomcast_presence_updates_total";
pub const ROSTER_CHANGES: &str = "roomcast_room_roster_changes_total";
pub const ROSTER_DROPPED: &str = "roomcast_room_roster_dropped_total";
pub const ROSTER_REWRITES: &str = "roomcast_room_roster_rewrites_total";
pub const ROOM_POSITION_LOADS: &str = "roomcast_room_position_loads_total";
pub const WRITER_QUEUE_DEPTH: &str = "roomcast_writer_queue_depth";
pub const WRITER_QUEUE_CAPACITY: &str = "roomcast_writer_queue_capacity";
pub const BUS_PUBLISH_QUEUE_DEPTH: &str = "roomcast_bus_publish_queue_depth";
pub const NODE_INFO: &str = "roomcast_node_info";
pub const ROOM_MESSAGES: &str = "roomcast_room_messages_published_total";
pub const STORE_OPERATION_SECONDS: &str = "roomcast_store_operation_seconds";
pub const STORE_OPERATION_ERRORS: &str = "roomcast_store_operation_errors_total";

/// Buckets for latency histograms, in seconds: 50 µs .. 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Buckets for sizes and counts (batch sizes, queued bytes).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0, 65536.0,
    262144.0, 1048576.0,
];

/// `(name, is_latency_histogram)` of every histogram, so the exporter can give each
/// explicit buckets (otherwise they would render as summaries).
pub const HISTOGRAMS: &[(&str, bool)] = &[
    (DELIVERY_SECONDS, true),
    (STORE_WRITE_SECONDS, true),
    (STORE_READ_SECONDS, true),
    (STORE_OPERATION_SECONDS, true),
    (HTTP_REQUEST_SECONDS, true),
    (PUSH_SECONDS, true),
    (OUTBOX_QUEUED_BYTES, false),
    (WRITE_BATCH_FRAMES, false),
    (STORE_BATCH_SIZE, false),
];

/// Registers help texts with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open WebSocket connections.");
    describe_counter!(CONNECTS, "WebSocket connections accepted.");
    describe_counter!(DISCONNECTS, "WebSocket connections closed, by reason.");
    describe_counter!(
        CONNECT_REJECTED,
        "Connection attempts refused before the upgrade, by reason."
    );
    describe_counter!(
        AUTH_FAILURES,
        "Requests rejected for a missing or invalid token, by reason."
    );
    describe_counter!(
        JWKS_FETCHES,
        "Fetches of the identity provider's JWKS, by outcome (ok, error, throttled: a key-id miss within the refetch interval)."
    );
    describe_gauge!(JWKS_KEYS, "Signing keys cached from the JWKS.");
    describe_counter!(MESSAGES_PUBLISHED, "Messages accepted for fan-out.");
    describe_counter!(
        BUS_PUBLISHED,
        "Envelopes (messages, room events, user frames) handed to the bus, by backend."
    );
    describe_counter!(
        BUS_INBOUND_DROPPED,
        "Envelopes dropped because a shard's inbound queue was full."
    );
    describe_counter!(
        BUS_PUBLISH_DROPPED,
        "Envelopes the Redis bus could not publish (reason=queue_full|encode|redis)."
    );
    describe_counter!(
        BUS_RECEIVED,
        "Envelopes received from Redis and delivered on this node (copies by id dropped)."
    );
    describe_counter!(
        BUS_UNDECODABLE,
        "Payloads on a bus channel this build could not decode."
    );
    describe_counter!(
        BUS_REDIS_COMMANDS,
        "Redis commands the bus sent (kind=publish|subscribe|unsubscribe)."
    );
    describe_gauge!(
        BUS_REDIS_CONNECTED,
        "1 while the bus subscriber is connected with every channel subscribed."
    );
    describe_counter!(
        BUS_REDIS_RECONNECTS,
        "Times the bus subscriber lost its connection and reconnected (reason: connection closed, ping unanswered, subscribe failed, resubscribe failed)."
    );
    describe_counter!(
        BUS_DUPLICATES,
        "Room messages dropped on delivery because this node had delivered their seq already."
    );
    describe_counter!(
        BUS_GAPS,
        "Room seq gaps found on delivery (a jump, or a position check behind), each filled from the store."
    );
    describe_counter!(
        BUS_GAP_FILLED,
        "Messages read from the store to fill delivery gaps."
    );
    describe_counter!(
        BUS_FILL_FAILED,
        "Gap fills or position reads that failed (a gap is read again; a position read goes on without)."
    );
    describe_counter!(
        BUS_FENCED,
        "Messages not published because this node no longer held their slot's lease (durable; recovered by others from the store)."
    );
    describe_counter!(
        BUS_POSITION_CHECKS,
        "Rooms whose published high-water mark the bus checked against delivery."
    );
    describe_gauge!(
        CLUSTER_NODES,
        "Live nodes in the cluster as this node sees them."
    );
    describe_gauge!(
        CLUSTER_SLOTS_OWNED,
        "Room slots (of 1024) whose lease this node holds."
    );
    describe_counter!(
        CLUSTER_LEASE_ROUNDS,
        "Lease rounds against Redis (outcome=ok|failed|node_id_taken)."
    );
    describe_counter!(
        CLUSTER_SLOT_MOVES,
        "Slot leases this node acquired, released or lost (change=acquired|released|lost)."
    );
    describe_counter!(
        CLUSTER_FORWARDED,
        "Publishes forwarded to the owning node (outcome=ok|error|timeout) and served for others (outcome=served)."
    );
    describe_counter!(
        RATE_LIMIT_FALLBACKS,
        "Message rate checks answered by this node's limiter because Redis did not answer (cluster mode)."
    );
    describe_counter!(
        PRESENCE_UPDATES,
        "Users going online or offline (change=online|offline)."
    );
    describe_counter!(
        ROSTER_CHANGES,
        "Users entering or leaving a room cluster-wide, announced by this node (change=online|offline; cluster mode)."
    );
    describe_counter!(
        ROSTER_DROPPED,
        "Room roster updates dropped because the roster queue was full (cluster mode)."
    );
    describe_counter!(
        ROSTER_REWRITES,
        "Times this node wrote its whole room roster share again because Redis had lost it (cluster mode)."
    );
    describe_counter!(
        ROOM_POSITION_LOADS,
        "Reads of a room's last seq from the store before its first message (outcome=ok|failed)."
    );
    describe_gauge!(
        WRITER_QUEUE_DEPTH,
        "Operations waiting in the history writer's queue (a full queue refuses publishes with `overloaded`)."
    );
    describe_gauge!(
        WRITER_QUEUE_CAPACITY,
        "Capacity of the history writer's queue (ROOMCAST_HISTORY_QUEUE)."
    );
    describe_gauge!(
        BUS_PUBLISH_QUEUE_DEPTH,
        "Envelopes waiting for the Redis bus publisher (cluster mode)."
    );
    describe_histogram!(
        STORE_OPERATION_SECONDS,
        Unit::Seconds,
        "History store operation latency, by backend and op (append, page, get, tombstone, find_client_msg, audit_page)."
    );
    describe_counter!(
        STORE_OPERATION_ERRORS,
        "History store operations that failed, by backend, op and kind (timeout: no answer in time, the write may still land; error)."
    );
    describe_counter!(
        ROOM_MESSAGES,
        "Messages sequenced per room, only for the rooms named in ROOMCAST_METRICS_ROOMS (bounded cardinality)."
    );
    describe_gauge!(
        NODE_INFO,
        "Always 1; labels: node (the cluster node id, or `single`) and version."
    );
    describe_counter!(MESSAGES_DELIVERED, "Frames written to client sockets.");
    describe_counter!(MESSAGES_STORED, "Messages committed to history.");
    describe_counter!(
        MESSAGES_DEDUPLICATED,
        "Resent messages answered from an earlier send (same clientMsgId)."
    );
    describe_histogram!(
        DELIVERY_SECONDS,
        Unit::Seconds,
        "Time from a frame entering the server to its batch being written to a client socket (oldest frame per batch)."
    );
    describe_histogram!(
        OUTBOX_QUEUED_BYTES,
        Unit::Bytes,
        "Bytes queued in an outbox when its writer took a batch."
    );
    describe_histogram!(WRITE_BATCH_FRAMES, "Frames written per socket write.");
    describe_counter!(
        SLOW_CONSUMERS,
        "Connections closed with 1013 because their outbox overflowed."
    );
    describe_gauge!(SHARD_QUEUE_DEPTH, "Commands waiting in a shard's queue.");
    describe_gauge!(ROOMS, "Rooms with at least one member, per shard.");
    describe_histogram!(
        STORE_WRITE_SECONDS,
        Unit::Seconds,
        "History group-commit latency, including retries."
    );
    describe_histogram!(STORE_BATCH_SIZE, "Records per history group commit.");
    describe_counter!(STORE_ERRORS, "Failed history commits (each retry counts).");
    describe_histogram!(
        STORE_READ_SECONDS,
        Unit::Seconds,
        "History page read latency."
    );
    describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by limit.");
    describe_counter!(MODERATION_ACTIONS, "Moderation actions, by action.");
    describe_counter!(CLIENT_ERRORS, "Error frames sent to clients, by code.");
    describe_counter!(
        TYPING_DROPPED,
        "Typing signals dropped by the per-user typing limit."
    );
    describe_counter!(
        RECOVERIES,
        "Joins with `since` that replayed history, by outcome."
    );
    describe_counter!(RECOVERED_MESSAGES, "Messages replayed by recovery.");
    describe_counter!(
        RECOVERY_READS,
        "Store reads for recovery: one per batch of members recovering the same room together."
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by route and status class.");
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "HTTP request latency by route (the matched path template)."
    );
    describe_counter!(API_ERRORS, "HTTP error responses, by stable error code.");
    describe_counter!(
        CHAT_EVENTS,
        "Conversation events sent (read receipts, deletions, reactions, closures, ...), by type."
    );
    describe_counter!(
        PUSH_JOBS,
        "Push notification jobs, by outcome (queued, dropped when the queue is full, delivered, retried, failed after the last attempt)."
    );
    describe_counter!(CALLS_STARTED, "Calls that started ringing, by type.");
    describe_counter!(
        CALLS_FINISHED,
        "Calls that finished, by outcome (completed, declined, cancelled, missed)."
    );
    describe_counter!(VIDEO_TOKENS, "Video provider access tokens issued.");
    describe_counter!(
        PREKEYS_TAKEN,
        "One-time pre-key requests, by outcome (handed out, or none left)."
    );
    describe_counter!(KEYS_UPLOADED, "Key uploads, by kind.");
    describe_histogram!(
        PUSH_SECONDS,
        Unit::Seconds,
        "Time from a push job being queued to the webhook accepting it."
    );
}

/// Puts the counters an alert or a dashboard panel watches at zero for their usual
/// labels, so a query over a healthy node returns 0 rather than nothing (a rate over
/// an absent series is no data, and `absent` would be the only way to alert on it).
pub fn register_zeros(cluster: bool, store_backend: &'static str) {
    use metrics::counter;
    for op in crate::store::measured::OPS {
        for kind in ["timeout", "error"] {
            counter!(STORE_OPERATION_ERRORS, "backend" => store_backend, "op" => *op, "kind" => kind)
                .absolute(0);
        }
    }
    for reason in crate::disconnect::Disconnect::LABELS {
        counter!(DISCONNECTS, "reason" => *reason).absolute(0);
    }
    for c in [
        SLOW_CONSUMERS,
        STORE_ERRORS,
        MESSAGES_PUBLISHED,
        MESSAGES_DELIVERED,
        MESSAGES_STORED,
        CONNECTS,
        RECOVERED_MESSAGES,
        TYPING_DROPPED,
    ] {
        counter!(c).absolute(0);
    }
    for reason in [
        "draining",
        "cut_off",
        "connect_rate",
        "bad_request",
        "not_upgrade",
        "too_many_connections",
        "bad_handshake",
    ] {
        counter!(CONNECT_REJECTED, "reason" => reason).absolute(0);
    }
    for limit in ["messages", "connects"] {
        counter!(RATE_LIMITED, "limit" => limit).absolute(0);
    }
    for action in ["masked", "rejected"] {
        counter!(MODERATION_ACTIONS, "action" => action).absolute(0);
    }
    if cluster {
        for c in [
            BUS_GAPS,
            BUS_GAP_FILLED,
            BUS_FILL_FAILED,
            BUS_DUPLICATES,
            BUS_INBOUND_DROPPED,
            BUS_FENCED,
        ] {
            counter!(c).absolute(0);
        }
        counter!(BUS_PUBLISH_DROPPED, "reason" => "queue_full").absolute(0);
        for change in ["acquired", "released", "lost"] {
            counter!(CLUSTER_SLOT_MOVES, "change" => change).absolute(0);
        }
        for outcome in ["ok", "failed"] {
            counter!(CLUSTER_LEASE_ROUNDS, "outcome" => outcome).absolute(0);
        }
        counter!(BUS_REDIS_RECONNECTS, "reason" => "connection closed").absolute(0);
    }
}
