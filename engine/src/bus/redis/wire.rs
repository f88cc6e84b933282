//! The bus's wire format: how an [`Envelope`] travels through a Redis channel, and which
//! channels it goes to.
//!
//! A payload is one JSON object. `id` is the envelope's identity (publishing node's
//! random instance number and a counter): an envelope published to several channels
//! (a room and its audience's user channels) reaches a node once per channel it is
//! subscribed to, and the subscriber drops the copies by `id`. `t` is the publisher's
//! wall clock in milliseconds, so the receiver can measure delivery latency from the
//! moment the message entered the origin node.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::bus::{Envelope, RoomEvent, RoomMessage, UserFrame};
use crate::message::ChatMessage;

/// The channel of a room's envelopes.
pub(crate) fn room_channel(room_id: &str) -> String {
    format!("rc:room:{room_id}")
}

/// The channel of a user's frames (and of messages and events for conversations the
/// user takes part in).
pub(crate) fn user_channel(user_id: &str) -> String {
    format!("rc:user:{user_id}")
}

/// The room a room channel is for.
pub(crate) fn room_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("rc:room:")
}

/// A cluster node's own channel (publishes forwarded to it, their results).
pub(crate) fn node_channel(node: u16) -> String {
    format!("rc:node:{node}")
}

/// The lease of a slot (see `crate::cluster`).
pub(crate) fn lease_key(slot: u16) -> String {
    format!("rc:lease:{{{slot}}}")
}

/// A room's published high-water mark: hash `s` (seq), `id`.
pub(crate) fn hwm_key(room_id: &str) -> String {
    format!("rc:hwm:{room_id}")
}

/// An envelope's identity: the publishing node's instance number and a counter.
pub(crate) type EnvelopeId = (u64, u64);

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    id: EnvelopeId,
    t: u64,
    #[serde(borrow)]
    body: Body<'a>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Body<'a> {
    Message {
        msg: ChatMessage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<Vec<String>>,
    },
    Event {
        room: String,
        #[serde(borrow)]
        frame: std::borrow::Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<String>,
    },
    User {
        user: String,
        #[serde(borrow)]
        frame: std::borrow::Cow<'a, str>,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The instant `age_ms` before now (a remote envelope's entry time on this clock).
fn entered(t: u64) -> Instant {
    let age = Duration::from_millis(now_ms().saturating_sub(t));
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

/// The channels an envelope goes to and its payload. Frames are the protocol's JSON
/// text; one that is not UTF-8 cannot be sent (`None`, counted by the caller).
pub(crate) fn encode(id: EnvelopeId, env: &Envelope) -> Option<(Vec<String>, Bytes)> {
    let audience_channels = |a: &Option<Arc<[String]>>| {
        a.iter()
            .flat_map(|a| a.iter().map(|u| user_channel(u)))
            .collect::<Vec<_>>()
    };
    let (mut channels, body, t) = match env {
        Envelope::Message(m) => {
            let age = m.received_at.elapsed().as_millis() as u64;
            (
                audience_channels(&m.audience),
                Body::Message {
                    msg: m.msg.clone(),
                    audience: m.audience.as_ref().map(|a| a.to_vec()),
                },
                now_ms().saturating_sub(age),
            )
        }
        Envelope::RoomEvent(e) => {
            let age = e.entered.elapsed().as_millis() as u64;
            (
                audience_channels(&e.audience),
                Body::Event {
                    room: e.room_id.clone(),
                    frame: std::str::from_utf8(&e.frame).ok()?.into(),
                    audience: e.audience.as_ref().map(|a| a.to_vec()),
                    except: e.except_user.clone(),
                },
                now_ms().saturating_sub(age),
            )
        }
        Envelope::Position { .. } => return None,
        Envelope::User(u) => (
            vec![user_channel(&u.user_id)],
            Body::User {
                user: u.user_id.clone(),
                frame: std::str::from_utf8(&u.frame).ok()?.into(),
            },
            now_ms(),
        ),
    };
    if let Some(room) = env.room_id() {
        channels.insert(0, room_channel(room));
    }
    let payload = serde_json::to_vec(&Wire { id, t, body }).ok()?;
    Some((channels, Bytes::from(payload)))
}

/// An envelope from a payload, with its identity; `None` for a payload this build does
/// not understand (counted by the caller).
pub(crate) fn decode(payload: &[u8]) -> Option<(EnvelopeId, Envelope)> {
    let w: Wire<'_> = serde_json::from_slice(payload).ok()?;
    let env = match w.body {
        Body::Message { msg, audience } => Envelope::Message(Box::new(RoomMessage {
            msg,
            audience: audience.map(Arc::from),
            received_at: entered(w.t),
        })),
        Body::Event {
            room,
            frame,
            audience,
            except,
        } => Envelope::RoomEvent(Box::new(RoomEvent {
            room_id: room,
            frame: Bytes::from(frame.into_owned()),
            audience: audience.map(Arc::from),
            except_user: except,
            entered: entered(w.t),
        })),
        Body::User { user, frame } => Envelope::User(UserFrame {
            user_id: user,
            frame: Bytes::from(frame.into_owned()),
        }),
    };
    Some((w.id, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_and_goes_to_its_room_and_audience() {
        let env = Envelope::RoomEvent(Box::new(RoomEvent {
            room_id: "conv-1".into(),
            frame: Bytes::from_static(br#"{"type":"typing","userId":"ann"}"#),
            audience: Some(Arc::from(vec!["ann".to_owned(), "bob".to_owned()])),
            except_user: Some("ann".into()),
            entered: Instant::now(),
        }));
        let (channels, payload) = encode((7, 9), &env).expect("encode");
        assert_eq!(channels, ["rc:room:conv-1", "rc:user:ann", "rc:user:bob"]);
        let (id, back) = decode(&payload).expect("decode");
        assert_eq!(id, (7, 9));
        let Envelope::RoomEvent(e) = back else {
            panic!("not an event")
        };
        assert_eq!(e.room_id, "conv-1");
        assert_eq!(&e.frame[..], br#"{"type":"typing","userId":"ann"}"#);
        assert_eq!(e.except_user.as_deref(), Some("ann"));
        assert_eq!(e.audience.as_deref().map(<[String]>::len), Some(2));
        assert!(decode(b"{\"id\":[1,2]}").is_none(), "no body");
        assert!(decode(b"garbage").is_none());
    }
}
