//! Delivery: any node's half. An envelope from the bus is encoded once (a message) or
//! arrives encoded (an event), then the same bytes go to every member's outbox and to
//! the sessions of a conversation's audience that have not joined the room. Also here:
//! membership (join, leave) and the room-presence and typing frames members see.
//!
//! Delivery keeps the room's `seq` order without gaps (the bus is at most once): each
//! room remembers the last message delivered here; a repeat is dropped, a jump parks the
//! room's envelopes and reads the missing messages from the store (after the bus's
//! subscriptions are in place and this node's writer is flushed), then goes on. In a
//! cluster a room that gets its first member here reads the store's newest message as
//! a floor once subscribed: the first message heard must follow it (else the gap is
//! filled), so a loss right after subscribing is a gap like any other; a message at or
//! below the floor heard live was published after the subscription and is delivered.
//! A periodic position check from the bus catches a loss no later message reveals.
//!
//! A fill may skip a `seq` the store lacks (a write that failed for good) only up to the
//! highest `seq` known published (`Room::fill_bound`): the writer stores a batch's
//! messages concurrently and publishes them once all are stored, so a read that races
//! a batch can see message N+1 before N. Above the bound the page is delivered only
//! while contiguous; the rest comes on the bus. (Skipping there lost a message under
//! load: a member dropped N as a repeat once the page had moved it past N.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::audience::deliver_to_audience;
use super::room::{Member, Position, Room, deliver_at, deliver_tagged};
use super::{Fill, Filled, Join, Leave, Shard, ShardCmd, Typing};
use crate::bus::{Envelope, RoomEvent, RoomMessage};
use crate::ids::MessageId;
use crate::metrics as m;
use crate::protocol;
use crate::store::PageQuery;

/// Whether a `seq` jump starts a gap fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strict {
    Yes,
    No,
}

/// Envelopes a room holds while a gap fill is retried (a store outage); beyond it they
/// are let go, and the fill reads the messages among them from the store.
const HELD_DURING_FILL: usize = 10_000;

/// The `room_joined` frame: where the room stands as far as this node knows (its
/// sequencer's position here, or what was delivered here when another node orders it).
/// `cluster_count` is the roster's member count in a cluster (never below the members
/// this node holds).
fn room_joined(room_id: &str, room: &Room, cluster_count: Option<usize>) -> bytes::Bytes {
    let shown = match room.delivered.or(room.floor) {
        Some(d) if d.seq > room.position.seq => d,
        _ => room.position,
    };
    let count = room.users.len().max(cluster_count.unwrap_or(0));
    protocol::encode_room_joined(room_id, count, shown.last_id, shown.seq)
}

impl Shard {
    pub(super) fn deliver(&mut self, env: Envelope) {
        if let Envelope::User(u) = env {
            self.sessions
                .push_to_user(&u.user_id, &u.frame, Instant::now());
            return;
        }
        if let Envelope::Position { room_id, seq } = env {
            return self.position_check(&room_id, seq);
        }
        // While a gap of the room is being filled, everything of it waits, in order.
        if let Some(room_id) = env.room_id()
            && let Some(room) = self.rooms.get_mut(room_id)
            && let Some(waiting) = room.filling.as_mut()
        {
            if let Envelope::Message(m) = &env {
                room.fill_bound = room.fill_bound.max(Some(m.msg.seq));
            }
            waiting.push(env);
            return;
        }
        self.deliver_now(env, Strict::Yes);
    }

    /// Delivers one room envelope whose room is not filling a gap.
    fn deliver_now(&mut self, env: Envelope, strict: Strict) {
        match env {
            Envelope::Message(m) => self.deliver_message(*m, strict),
            Envelope::RoomEvent(e) => self.deliver_event(*e),
            Envelope::User(_) | Envelope::Position { .. } => self.deliver(env),
        }
    }

    /// The gap rule (see [`crate::bus::Bus`]): a message already delivered here is
    /// dropped; one that skips `seq`s starts a fill from the store and waits for it
    /// (unless `strict` is off: right after a fill, what the store did not have is a
    /// `seq` that was never stored, and delivery goes on past it).
    fn deliver_message(&mut self, m: RoomMessage, strict: Strict) {
        let (seq, id) = (m.msg.seq, m.msg.message_id);
        let room = self.rooms.get_mut(&m.msg.room_id);
        if let Some(room) = room {
            if room.delivered.is_some_and(|at| seq <= at.seq) {
                metrics::counter!(m::BUS_DUPLICATES).increment(1);
                return;
            }
            // Before the first delivery here, the floor read from the store stands in:
            // a message at or below it that arrives live was published after this node
            // subscribed (it is not a repeat), one above it must follow it directly.
            match room.delivered.or(room.floor) {
                Some(at) if seq > at.seq + 1 && strict == Strict::Yes => {
                    metrics::counter!(m::BUS_GAPS).increment(1);
                    let room_id = m.msg.room_id.clone();
                    room.fill_bound = room.fill_bound.max(Some(seq));
                    room.filling = Some(vec![Envelope::Message(Box::new(m))]);
                    return self.start_fill(room_id, at.last_id.unwrap_or(0), Fill::Gap);
                }
                _ => {}
            }
            room.delivered = Some(Position {
                seq,
                last_id: Some(id),
            });
            let frame = protocol::encode_message(&m.msg, false);
            for member in room.members.values_mut() {
                deliver_tagged(member, &frame, m.received_at, Some((seq, id)));
            }
            if let Some(audience) = &m.audience {
                deliver_to_audience(
                    &self.sessions,
                    Some(room),
                    audience,
                    &frame,
                    m.received_at,
                    None,
                );
            }
        } else if let Some(audience) = &m.audience {
            // Nobody here joined the room: its participants' sessions hear it as they
            // arrive (no position is kept for a room without members).
            let frame = protocol::encode_message(&m.msg, false);
            deliver_to_audience(&self.sessions, None, audience, &frame, m.received_at, None);
        }
    }

    /// Reads the store for delivery once the bus's subscriptions are in place and this
    /// node's writer has made durable what it was given, and reports back.
    pub(super) fn start_fill(&mut self, room_id: String, after: MessageId, kind: Fill) {
        self.start_fill_again(room_id, after, kind, 0);
    }

    /// [`Shard::start_fill`] after `failures` failed reads of the same gap: waits
    /// 200 ms per failure (at most 2 s) before it reads.
    fn start_fill_again(&mut self, room_id: String, after: MessageId, kind: Fill, failures: u32) {
        let pause = Duration::from_millis(200 * u64::from(failures.min(10)));
        let limit = match kind {
            Fill::Gap => self.cfg.recovery_max_messages,
            Fill::Position => 1,
        };
        let bus = self.bus.clone();
        tracing::debug!(room_id, after, ?kind, "delivery read started");
        self.read_durable(move |store| async move {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            bus.synced().await;
            let query = match kind {
                Fill::Gap => PageQuery {
                    before: None,
                    after: Some(after),
                    limit,
                },
                Fill::Position => PageQuery {
                    before: None,
                    after: None,
                    limit,
                },
            };
            let result = store.page(&room_id, query).await;
            ShardCmd::Filled(Filled {
                room_id,
                kind,
                after,
                failures,
                result,
            })
        });
    }

    pub(super) fn filled(&mut self, f: Filled) {
        let Filled {
            room_id,
            kind,
            after,
            failures,
            result,
        } = f;
        let count = self.roster.as_ref().and_then(|r| r.count(&room_id));
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(waiting) = room.filling.take() else {
            return;
        };
        tracing::debug!(
            room_id,
            ?kind,
            read = result.as_ref().map_or(0, Vec::len),
            waiting = waiting.len(),
            "delivery read done"
        );
        let audience = room.audience.clone();
        let bound = room.fill_bound;
        let strict = match (kind, result) {
            (Fill::Position, Ok(page)) => {
                let newest = page.last().map_or(Position::default(), |m| Position {
                    seq: m.seq,
                    last_id: Some(m.message_id),
                });
                if room.delivered.is_none() {
                    room.floor = Some(newest);
                }
                let now = Instant::now();
                for outbox in room.positioning.take().unwrap_or_default() {
                    outbox.push(room_joined(&room_id, room, count), now);
                }
                Strict::Yes
            }
            (Fill::Gap, Ok(page)) => {
                metrics::counter!(m::BUS_GAP_FILLED).increment(page.len() as u64);
                // A full page may not reach the gap's end: read on from its last
                // message before anything that waited (the next read is strict).
                let mut more = (page.len() >= self.cfg.recovery_max_messages)
                    .then(|| page.last().map(|m| m.message_id))
                    .flatten();
                let now = Instant::now();
                for msg in page {
                    // Up to the bound a `seq` the store lacks was never stored and is
                    // skipped. Above it the read may have caught a batch half written
                    // (its messages are stored concurrently and published only once all
                    // are): deliver only while contiguous, and leave the rest to the
                    // bus, which brings them once published.
                    if bound.is_none_or(|b| msg.seq > b) {
                        let next = self
                            .rooms
                            .get(&room_id)
                            .and_then(|r| r.delivered.or(r.floor))
                            .map_or(0, |d| d.seq)
                            + 1;
                        if msg.seq > next {
                            more = None;
                            break;
                        }
                    }
                    let env = Envelope::Message(Box::new(RoomMessage {
                        msg,
                        audience: audience.clone(),
                        received_at: now,
                    }));
                    self.deliver_now(env, Strict::No);
                }
                if let Some(after) = more
                    && let Some(room) = self.rooms.get_mut(&room_id)
                {
                    room.filling = Some(waiting);
                    return self.start_fill(room_id, after, Fill::Gap);
                }
                if let Some(room) = self.rooms.get_mut(&room_id) {
                    room.fill_bound = None;
                }
                Strict::No
            }
            (Fill::Gap, Err(e)) => {
                // Going on without the gap would lose it for good here (later messages
                // move past it, and position checks compare with what was delivered):
                // hold what waits and read again, while the room has members.
                metrics::counter!(m::BUS_FILL_FAILED).increment(1);
                tracing::warn!(error = %e, room_id, failures, "gap fill failed; reading again");
                let mut waiting = waiting;
                if waiting.len() > HELD_DURING_FILL {
                    // Every held message is durable (published after its commit), so
                    // the fill reads it again; the rest is best-effort room events.
                    waiting.clear();
                }
                room.filling = Some(waiting);
                return self.start_fill_again(room_id, after, Fill::Gap, failures + 1);
            }
            (kind, Err(e)) => {
                let now = Instant::now();
                for outbox in room.positioning.take().unwrap_or_default() {
                    outbox.push(room_joined(&room_id, room, count), now);
                }
                metrics::counter!(m::BUS_FILL_FAILED).increment(1);
                tracing::warn!(error = %e, room_id, ?kind, "delivery read failed; going on without it");
                Strict::No
            }
        };
        // What waited goes out in order; right after a fill a skipped `seq` is one the
        // store does not have (never stored), so the first message may jump.
        let mut strict = strict;
        for env in waiting {
            if let Some(queue) = self
                .rooms
                .get_mut(&room_id)
                .and_then(|r| r.filling.as_mut())
            {
                queue.push(env);
                continue;
            }
            let was_message = matches!(env, Envelope::Message(_));
            self.deliver_now(env, strict);
            if was_message {
                strict = Strict::Yes;
            }
        }
        self.drop_if_idle(&room_id);
    }

    /// A position check: the room's sequencer has published up to `seq`. A room still
    /// behind the mark of the previous check (not just a message in flight) is filled.
    fn position_check(&mut self, room_id: &str, seq: u64) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let previous = room.last_hwm.replace(seq);
        if room.filling.is_some() {
            return;
        }
        let Some(at) = room.delivered.or(room.floor) else {
            return;
        };
        if previous.is_some_and(|p| p > at.seq) && seq > at.seq {
            metrics::counter!(m::BUS_GAPS).increment(1);
            // The mark is what the sequencer published: settled up to there.
            room.fill_bound = room.fill_bound.max(Some(seq));
            room.filling = Some(Vec::new());
            self.start_fill(room_id.to_owned(), at.last_id.unwrap_or(0), Fill::Gap);
        }
    }

    fn deliver_event(&mut self, e: RoomEvent) {
        let except = e.except_user.as_deref();
        if let Some(room) = self.rooms.get_mut(&e.room_id) {
            for m in room.members.values_mut() {
                if except != Some(m.user.user_id.as_str()) {
                    deliver_at(m, &e.frame, e.entered);
                }
            }
        }
        if let Some(audience) = &e.audience {
            let room = self.rooms.get(&e.room_id);
            deliver_to_audience(&self.sessions, room, audience, &e.frame, e.entered, except);
        }
    }

    pub(super) fn join(&mut self, j: Join) {
        let Join {
            room_id,
            conn,
            user,
            outbox,
            since,
            audience,
        } = j;
        let first_member = self
            .rooms
            .get(&room_id)
            .is_none_or(|r| r.members.is_empty());
        let clustered = self.cluster.is_some();
        let roster = self.roster.clone();
        let count = roster.as_ref().and_then(|r| r.count(&room_id));
        let presence_max = self.cfg.room_presence_max_members;
        let room = self.room_entry(&room_id);
        if audience.is_some() {
            room.audience = audience;
        }
        let now = Instant::now();
        if !room.members.contains_key(&conn) {
            let first_of_user = {
                let n = room
                    .users
                    .entry(Arc::from(user.user_id.as_str()))
                    .or_insert(0);
                *n += 1;
                *n == 1
            };
            if first_of_user && let Some(r) = &roster {
                // Whether this is the user's first session anywhere, and the count,
                // are the roster's to say: it tells every node's members.
                r.joined(&room_id, &user.user_id, &user.username);
            } else if first_of_user
                && crate::presence::room_change_heard(room.users.len(), true, presence_max)
            {
                let frame = protocol::encode_presence(
                    &user.user_id,
                    &user.username,
                    &room_id,
                    true,
                    room.users.len(),
                );
                for m in room.members.values_mut() {
                    deliver_at(m, &frame, now);
                }
            }
            room.members.insert(
                conn,
                Member {
                    user,
                    outbox: outbox.clone(),
                    held: None,
                },
            );
        }
        // In a cluster this node hears the room only once subscribed: delivery starts
        // at the store's newest message read after that (the floor), so anything lost
        // from then on is a gap like any other, and `room_joined` waits for it.
        let read_position = first_member
            && clustered
            && room.delivered.or(room.floor).is_none()
            && room.filling.is_none();
        if read_position {
            room.filling = Some(Vec::new());
            room.positioning = Some(Vec::new());
        }
        if let Some(waiting) = &mut room.positioning {
            waiting.push(outbox.clone());
        } else {
            let frame = room_joined(&room_id, room, count);
            outbox.push(frame, now);
        }
        if first_member {
            self.bus.subscribe_room(&room_id);
        }
        if read_position {
            self.start_fill(room_id.clone(), 0, Fill::Position);
        }
        if let Some(since) = since {
            self.start_recovery(room_id, conn, since);
        }
    }

    pub(super) fn leave(&mut self, l: Leave) {
        let Leave {
            room_id,
            conn,
            notify,
        } = l;
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(member) = room.members.remove(&conn) else {
            return;
        };
        if notify {
            member
                .outbox
                .push(protocol::encode_room_left(&room_id), Instant::now());
        }
        let user_id = member.user.user_id.as_str();
        let last_of_user = match room.users.get_mut(user_id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                room.users.remove(user_id);
                true
            }
            None => false,
        };
        if last_of_user && let Some(r) = &self.roster {
            r.left(&room_id, user_id, &member.user.username);
        } else if last_of_user
            && !room.members.is_empty()
            && crate::presence::room_change_heard(
                room.users.len(),
                false,
                self.cfg.room_presence_max_members,
            )
        {
            let frame = protocol::encode_presence(
                user_id,
                &member.user.username,
                &room_id,
                false,
                room.users.len(),
            );
            let now = Instant::now();
            for m in room.members.values_mut() {
                deliver_at(m, &frame, now);
            }
        }
        self.drop_if_idle(&room_id);
    }

    /// A member's typing indicator: checked here (only members type), delivered through
    /// the bus like every other room event.
    pub(super) fn typing(&mut self, t: Typing) {
        let Some(room) = self.rooms.get(&t.room_id) else {
            return;
        };
        let Some(sender) = room.members.get(&t.conn) else {
            return;
        };
        let user = &sender.user;
        let frame = protocol::encode_typing(&user.user_id, &user.username, &t.room_id, t.is_typing);
        metrics::counter!(m::CHAT_EVENTS, "type" => "typing").increment(1);
        self.bus.publish(Envelope::RoomEvent(Box::new(RoomEvent {
            except_user: Some(user.user_id.clone()),
            audience: room.audience.clone(),
            room_id: t.room_id,
            frame,
            entered: Instant::now(),
        })));
    }
}
