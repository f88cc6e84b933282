//! Forwarding: a publish that reaches a node which does not sequence its room goes to
//! the room's owner over the owner's node channel (`rc:node:{n}`), and the owner's
//! answer (the ack, or the error) comes back over the sender's.
//!
//! The sender keeps the ack target in a pending table until the answer arrives or
//! `FORWARD_TIMEOUT` passes (then the client gets a retryable `unavailable`; its resend
//! with the same `clientMsgId` is deduplicated by the owner). An owner that is not
//! sequencing the room yet (the slot is moving) answers `unavailable` too, and the sender
//! sends again every `RETRY_EVERY` until the deadline, so a handover costs latency, not
//! an error, when it is quick. Admission checks (membership, rate limit, moderation)
//! ran on the sender's node before forwarding; the owner runs the sequencer's part.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::bus::RedisBus;
use crate::engine::{Engine, Inner};
use crate::error::{ClientError, ErrorCode};
use crate::message::{Attachment, ChatMessage, MessageType};
use crate::metrics as m;
use crate::shard::{Publish, ShardCmd};
use crate::store::writer::{AckTo, Acked};
use crate::user::UserInfo;

/// How long a forwarded publish waits for its owner's answer.
pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// A message between two nodes, on the addressee's node channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum NodeMsg {
    /// Sequence this publish (the sender is `from`, its request `req`).
    Publish {
        req: u64,
        from: u16,
        publish: Box<Forwarded>,
    },
    /// The answer to request `req`.
    Result {
        req: u64,
        result: Result<ForwardedAck, ClientError>,
    },
}

/// A [`Publish`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forwarded {
    room_id: String,
    user: UserInfo,
    content: String,
    client_msg_id: Option<String>,
    /// How long ago the publish entered the sender's node.
    age_ms: u64,
    audit: Option<(String, String)>,
    message_type: MessageType,
    attachments: Vec<Attachment>,
    audience: Option<Vec<String>>,
    notify_offline: bool,
    encrypted: bool,
}

/// An ack on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedAck {
    message: ChatMessage,
    duplicate: bool,
}

/// Moderation actions have static names (metric labels): map a received one back.
fn action(name: &str) -> &'static str {
    match name {
        "masked" => "masked",
        "rejected" => "rejected",
        _ => "moderated",
    }
}

impl Forwarded {
    fn from_publish(p: Publish) -> (Self, AckTo) {
        let f = Forwarded {
            room_id: p.room_id,
            user: (*p.user).clone(),
            content: p.content,
            client_msg_id: p.client_msg_id,
            age_ms: p.received_at.elapsed().as_millis() as u64,
            audit: p.audit.map(|(a, d)| (a.to_owned(), d)),
            message_type: p.message_type,
            attachments: p.attachments,
            audience: p.audience.map(|a| a.to_vec()),
            notify_offline: p.notify_offline,
            encrypted: p.encrypted,
        };
        (f, p.ack)
    }

    fn into_publish(self, ack: AckTo) -> Publish {
        let now = Instant::now();
        Publish {
            room_id: self.room_id,
            // Membership was checked on the sender's node.
            conn: None,
            user: Arc::new(self.user),
            content: self.content,
            client_msg_id: self.client_msg_id,
            received_at: now
                .checked_sub(Duration::from_millis(self.age_ms))
                .unwrap_or(now),
            ack,
            audit: self.audit.map(|(a, d)| (action(&a), d)),
            message_type: self.message_type,
            attachments: self.attachments,
            audience: self.audience.map(Arc::from),
            notify_offline: self.notify_offline,
            encrypted: self.encrypted,
        }
    }
}

struct Pending {
    ack: AckTo,
    publish: Box<Forwarded>,
    owner: u16,
    deadline: Instant,
}

/// The sender's side: requests waiting for their owner's answer.
pub(crate) struct Forwarder {
    pub(crate) bus: Arc<RedisBus>,
    pub(crate) node: u16,
    next: std::sync::atomic::AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
}

fn unavailable(room_id: &str, client_msg_id: Option<&str>) -> ClientError {
    ClientError::new(
        ErrorCode::Unavailable,
        "the node that orders this room did not answer; retry with the same clientMsgId",
    )
    .in_room(room_id)
    .for_client_msg(client_msg_id)
    .retry_after(500)
}

impl Forwarder {
    pub(crate) fn new(bus: Arc<RedisBus>, node: u16) -> Self {
        Self {
            bus,
            node,
            next: std::sync::atomic::AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `p` to `owner`; its ack target is answered when the owner answers.
    pub(crate) fn forward(&self, owner: u16, p: Publish) {
        let req = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (publish, ack) = Forwarded::from_publish(p);
        let publish = Box::new(publish);
        self.send(owner, req, &publish);
        self.pending.lock().insert(
            req,
            Pending {
                ack,
                publish,
                owner,
                deadline: Instant::now() + FORWARD_TIMEOUT,
            },
        );
    }

    fn send(&self, owner: u16, req: u64, publish: &Forwarded) {
        // A clone per send: the pending entry keeps the original for a retry.
        let msg = NodeMsg::Publish {
            req,
            from: self.node,
            publish: Box::new(publish.clone()),
        };
        self.bus.send_node(owner, &msg);
    }

    /// The owner answered `req`. An `unavailable` (the slot is moving) is sent again
    /// after a pause, to the node that owns the room by then, until the deadline.
    fn answered(
        self: &Arc<Self>,
        req: u64,
        result: Result<ForwardedAck, ClientError>,
        route: impl Fn(&str) -> u16,
    ) {
        let Some(mut p) = self.pending.lock().remove(&req) else {
            return; // timed out already
        };
        if let Err(e) = &result
            && e.code == ErrorCode::Unavailable
            && Instant::now() + RETRY_EVERY < p.deadline
        {
            p.owner = route(&p.publish.room_id);
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_EVERY).await;
                this.send(p.owner, req, &p.publish);
                this.pending.lock().insert(req, p);
            });
            return;
        }
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(m::CLUSTER_FORWARDED, "outcome" => outcome).increment(1);
        p.ack.send(result.map(|a| Acked {
            message: a.message,
            duplicate: a.duplicate,
        }));
    }

    /// Answers every request past its deadline with `unavailable`.
    fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<Pending> = {
            let mut pending = self.pending.lock();
            let late: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(r, _)| *r)
                .collect();
            late.iter().filter_map(|r| pending.remove(r)).collect()
        };
        for p in expired {
            metrics::counter!(m::CLUSTER_FORWARDED, "outcome" => "timeout").increment(1);
            let e = unavailable(&p.publish.room_id, p.publish.client_msg_id.as_deref());
            p.ack.send(Err(e));
        }
    }
}

/// Serves node messages until the engine stops: publishes forwarded to this node are
/// sequenced by the room's shard here and answered; answers complete this node's
/// forwarded publishes. Also expires forwarded publishes nobody answered.
pub(crate) async fn node_task(
    inner: std::sync::Weak<Inner>,
    forwarder: Arc<Forwarder>,
    rx: flume::Receiver<NodeMsg>,
) {
    let mut sweep = tokio::time::interval(Duration::from_millis(250));
    loop {
        let msg = tokio::select! {
            m = rx.recv_async() => match m {
                Ok(m) => m,
                Err(_) => return,
            },
            _ = sweep.tick() => {
                forwarder.expire();
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let engine = Engine { inner };
        match msg {
            NodeMsg::Publish { req, from, publish } => {
                metrics::counter!(m::CLUSTER_FORWARDED, "outcome" => "served").increment(1);
                let (tx, rx) = tokio::sync::oneshot::channel();
                let room_id = publish.room_id.clone();
                let cid = publish.client_msg_id.clone();
                let p = publish.into_publish(AckTo::Reply(tx));
                // Straight to the shard, never forwarded again (the shard answers
                // `unavailable` if this node does not sequence the room), and from this
                // task in arrival order: a sender's publishes keep the order it sent
                // them in (a task per publish would race them to the shard queue).
                let sent = engine
                    .shard(&room_id)
                    .send_async(ShardCmd::Publish(Box::new(p)))
                    .await;
                let forwarder = forwarder.clone();
                tokio::spawn(async move {
                    let result = match sent {
                        Ok(()) => rx
                            .await
                            .unwrap_or_else(|_| Err(unavailable(&room_id, cid.as_deref()))),
                        Err(_) => Err(unavailable(&room_id, cid.as_deref())),
                    };
                    let result = result.map(|a| ForwardedAck {
                        message: a.message,
                        duplicate: a.duplicate,
                    });
                    forwarder
                        .bus
                        .send_node(from, &NodeMsg::Result { req, result });
                });
            }
            NodeMsg::Result { req, result } => {
                let cluster = engine.inner.cluster.as_ref().map(|c| c.cluster.clone());
                forwarder.answered(req, result, |room| match &cluster {
                    Some(c) => match c.route(room) {
                        super::Route::Node(n) => n,
                        super::Route::Local => c.node,
                    },
                    None => 0,
                });
            }
        }
    }
}
