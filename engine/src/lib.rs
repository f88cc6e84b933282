//! roomcast's fan-out engine: rooms pinned to shard tasks, per-connection outboxes
//! bounded in bytes, durable history with group commit and ack-after-durable, a bus
//! seam between admitting a message and delivering it, sessions and presence, rate
//! limits and moderation. No HTTP, no sockets: the server crate drives it.
//!
//! Start with [`Engine::start`], open a [`Session`] per authenticated connection with
//! [`Session::open`], feed it text frames, and drain its [`Outbox`] to the socket.

pub mod bus;
pub mod calls;
pub mod chat;
pub mod clock;
pub mod cluster;
pub mod disconnect;
pub mod emoji;
pub mod engine;
pub mod error;
pub mod ids;
pub mod keys;
pub mod log_throttle;
pub mod message;
pub mod metrics;
pub mod moderation;
pub mod outbox;
pub mod presence;
pub mod protocol;
mod publish;
pub mod ratelimit;
pub mod session;
pub mod sessions;
pub mod shard;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tls;
pub mod user;

pub use disconnect::Disconnect;
pub use engine::{Engine, EngineConfig, EngineTasks, Page};
pub use error::{ClientError, ErrorCode};
pub use outbox::Outbox;
pub use publish::{MAX_ENCRYPTED_BYTES, SendRequest};
pub use session::Session;
pub use shard::{Publish, PushJob};
pub use store::embedded::EmbeddedStore;
pub use store::{HistoryStore, PageQuery, Stores};
pub use user::UserInfo;
