//! Delivery: any node's half. An envelope from the bus is encoded once (a message) or
//! arrives encoded (an event), then the same bytes go to every member's outbox and to
//! the sessions of a conversation's audience that have not joined the room. Also here:
//! membership (join, leave) and the room-presence and typing frames members see.

use std::sync::Arc;
use std::time::Instant;

use super::audience::deliver_to_audience;
use super::room::{Member, deliver_at};
use super::{Join, Leave, Shard, Typing};
use crate::bus::{Envelope, RoomEvent, RoomMessage};
use crate::metrics as m;
use crate::protocol;

impl Shard {
    pub(super) fn deliver(&mut self, env: Envelope) {
        match env {
            Envelope::Message(m) => self.deliver_message(*m),
            Envelope::RoomEvent(e) => self.deliver_event(*e),
            Envelope::User(u) => {
                self.sessions
                    .push_to_user(&u.user_id, &u.frame, Instant::now());
            }
        }
    }

    fn deliver_message(&mut self, m: RoomMessage) {
        let RoomMessage {
            msg,
            audience,
            received_at,
        } = m;
        let frame = protocol::encode_message(&msg, false);
        let room = self.rooms.get_mut(&msg.room_id);
        if let Some(room) = room {
            // On the sequencer this is already where admit left it; on another node it
            // is how far this node has delivered.
            if msg.seq > room.position.seq {
                room.position.seq = msg.seq;
                room.position.last_id = Some(msg.message_id);
            }
            for member in room.members.values_mut() {
                deliver_at(member, &frame, received_at);
            }
        }
        if let Some(audience) = &audience {
            let room = self.rooms.get(&msg.room_id);
            deliver_to_audience(&self.sessions, room, audience, &frame, received_at, None);
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
            if first_of_user {
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
        outbox.push(
            protocol::encode_room_joined(
                &room_id,
                room.users.len(),
                room.position.last_id,
                room.position.seq,
            ),
            now,
        );
        if first_member {
            self.bus.subscribe_room(&room_id);
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
        if last_of_user && !room.members.is_empty() {
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
