//! A room as its shard holds it: members and their outboxes, room presence (connections
//! per user), the dedupe window, and the room's position (last `seq` and id).

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
    /// While recovering: live frames held back until the replay is written.
    pub(super) held: Option<Vec<Bytes>>,
}

/// Recently published `(user, clientMsgId)` -> id, bounded, so a quick resend (lost ack)
/// is answered without storing or delivering it twice.
#[derive(Default)]
pub(super) struct Dedupe {
    pub(super) ids: HashMap<(Arc<str>, String), MessageId>,
    order: VecDeque<(Arc<str>, String)>,
}

impl Dedupe {
    /// Remembers `key -> id`, forgetting the oldest beyond `window`.
    pub(super) fn remember(&mut self, key: (Arc<str>, String), id: MessageId, window: usize) {
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
}

impl Room {
    pub(super) fn new(position: Option<Position>) -> Self {
        Self {
            members: HashMap::new(),
            users: HashMap::new(),
            dedupe: None,
            sequence: if position.is_some() {
                Sequence::Known
            } else {
                Sequence::Unknown
            },
            position: position.unwrap_or_default(),
            audience: None,
        }
    }

    /// Nothing keeps the room in memory: no member, no publish waiting for its position.
    pub(super) fn is_idle(&self) -> bool {
        self.members.is_empty() && !matches!(self.sequence, Sequence::Loading(_))
    }
}

/// Live frames held for one recovering member before it counts as a slow consumer.
const HELD_MAX: usize = 10_000;

/// Hands one shared frame to one member: held back while it recovers, else queued.
pub(super) fn deliver_at(member: &mut Member, frame: &Bytes, entered: Instant) {
    if let Some(held) = &mut member.held {
        if held.len() < HELD_MAX {
            held.push(frame.clone());
        } else if member.outbox.close(Disconnect::SLOW_CONSUMER) {
            metrics::counter!(m::SLOW_CONSUMERS).increment(1);
        }
        return;
    }
    if member.outbox.push(frame.clone(), entered) == Push::Overflow {
        metrics::counter!(m::SLOW_CONSUMERS).increment(1);
    }
}
