//! A room as its shard holds it: members and their outboxes, room presence (connections
//! per user), the dedupe window, the room's position as its sequencer (last `seq`
//! assigned) and as a deliverer (last `seq` delivered here, with the gap-fill state).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::admit::Publish;
use crate::disconnect::Disconnect;
use crate::ids::{ConnId, MessageId};
use crate::metrics as m;
use crate::outbox::{Outbox, Push};
use crate::user::UserInfo;

pub(super) struct Member {
    pub(super) user: Arc<UserInfo>,
    pub(super) outbox: Arc<Outbox>,
    /// While recovering: live frames held back until the replay is written, each with
    /// its message's `(seq, id)` when it is a message (so the copy the replay already
    /// wrote is dropped).
    pub(super) held: Option<Vec<HeldFrame>>,
}

/// A frame held for a recovering member, tagged with its message's `(seq, id)`.
pub(super) type HeldFrame = (Option<(u64, MessageId)>, Bytes);

/// Recently published `(user, clientMsgId)` -> `(id, seq)`, bounded, so a quick resend
/// (lost ack) is answered with the original without storing or delivering it twice.
#[derive(Default)]
pub(super) struct Dedupe {
    pub(super) ids: HashMap<(Arc<str>, String), (MessageId, u64)>,
    order: VecDeque<(Arc<str>, String)>,
}

impl Dedupe {
    /// Remembers `key -> id`, forgetting the oldest beyond `window`.
    pub(super) fn remember(
        &mut self,
        key: (Arc<str>, String),
        id: (MessageId, u64),
        window: usize,
    ) {
        if self.ids.insert(key.clone(), id).is_none() {
            self.order.push_back(key);
            if self.order.len() > window
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}

/// Where a room's sequence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Position {
    /// The last `seq` assigned (0: none yet).
    pub(crate) seq: u64,
    /// The id of the last message admitted or delivered.
    pub(crate) last_id: Option<MessageId>,
}

/// Whether the shard knows the room's last `seq`.
pub(super) enum Sequence {
    /// Not read from the store yet: the first publish starts a read.
    Unknown,
    /// A read is under way; publishes wait here, in arrival order.
    Loading(Vec<Publish>),
    Known,
}

pub(super) struct Room {
    pub(super) members: HashMap<ConnId, Member>,
    /// Connections per user in this room (room presence; `len()` is the member count).
    pub(super) users: HashMap<Arc<str>, u32>,
    pub(super) dedupe: Option<Box<Dedupe>>,
    pub(super) position: Position,
    pub(super) sequence: Sequence,
    /// For a conversation: its participants (see [`crate::bus::RoomMessage::audience`]).
    pub(super) audience: Option<Arc<[String]>>,
    /// In a cluster: the lease generation under which `position` was learnt; a room
    /// whose slot was acquired again since must read its position anew (another node
    /// may have sequenced it meanwhile). Always 0 on one node.
    pub(super) lease: u64,
    /// The last message delivered on this node (`None`: not known yet; the first
    /// delivery sets it on one node, a read from the store in a cluster).
    pub(super) delivered: Option<Position>,
    /// Before the first delivery (in a cluster): the store's newest message when this
    /// node subscribed, which the first message heard must follow.
    pub(super) floor: Option<Position>,
    /// While a gap is filled from the store: envelopes that arrived meanwhile, in order.
    pub(super) filling: Option<Vec<crate::bus::Envelope>>,
    /// While this node starts hearing the room (a cluster's floor read): the members
    /// whose `room_joined` waits for it, so that everything published after a member
    /// sees `room_joined` reaches it.
    pub(super) positioning: Option<Vec<Arc<Outbox>>>,
    /// The high-water mark the last position check reported (a gap is acted on when a
    /// check finds the room still behind the previous check's mark).
    pub(super) last_hwm: Option<u64>,
    /// While a gap is filled: the highest `seq` known to be published (a message heard,
    /// or a position mark). Everything at or below it is settled in the store (stored,
    /// or failed for good), so a fill may skip a `seq` the store lacks only up to here;
    /// above it a batch may still be landing write by write, and a hole there is a
    /// message in flight, not a missing one.
    pub(super) fill_bound: Option<u64>,
}

impl Room {
    /// A room, with its remembered sequencer position and the lease it was learnt under.
    pub(super) fn new(position: Option<(Position, u64)>) -> Self {
        Self {
            members: HashMap::new(),
            users: HashMap::new(),
            dedupe: None,
            sequence: if position.is_some() {
                Sequence::Known
            } else {
                Sequence::Unknown
            },
            position: position.map_or_else(Position::default, |p| p.0),
            audience: None,
            lease: position.map_or(0, |p| p.1),
            delivered: None,
            fill_bound: None,
            floor: None,
            filling: None,
            positioning: None,
            last_hwm: None,
        }
    }

    /// Nothing keeps the room in memory: no member, no publish waiting for its
    /// position, no gap being filled.
    pub(super) fn is_idle(&self) -> bool {
        self.members.is_empty()
            && !matches!(self.sequence, Sequence::Loading(_))
            && self.filling.is_none()
    }
}

/// Live frames held for one recovering member before it counts as a slow consumer.
const HELD_MAX: usize = 10_000;

/// Hands one shared frame to one member: held back while it recovers, else queued.
pub(super) fn deliver_at(member: &mut Member, frame: &Bytes, entered: Instant) {
    deliver_tagged(member, frame, entered, None);
}

/// [`deliver_at`] for a message frame, tagged with its `(seq, id)`.
pub(super) fn deliver_tagged(
    member: &mut Member,
    frame: &Bytes,
    entered: Instant,
    tag: Option<(u64, MessageId)>,
) {
    if let Some(held) = &mut member.held {
        if held.len() < HELD_MAX {
            held.push((tag, frame.clone()));
        } else if member.outbox.close(Disconnect::SLOW_CONSUMER) {
            metrics::counter!(m::SLOW_CONSUMERS).increment(1);
        }
        return;
    }
    if member.outbox.push(frame.clone(), entered) == Push::Overflow {
        metrics::counter!(m::SLOW_CONSUMERS).increment(1);
    }
}
