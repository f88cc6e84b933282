//! roomcast's fan-out engine: rooms pinned to shard tasks, per-connection outboxes
//! bounded in bytes, durable history with group commit and ack-after-durable, presence,
//! rate limits and moderation. No HTTP, no sockets: the server crate drives it.
//!
//! Start with [`Engine::start`], open a [`Session`] per authenticated connection with
//! [`Engine::connect`], feed it text frames, and drain its [`Outbox`] to the socket.

pub mod calls;
pub mod chat;
pub mod clock;
pub mod disconnect;
pub mod engine;
pub mod error;
pub mod history;
pub mod ids;
pub mod keys;
pub mod metrics;
pub mod moderation;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod session;
pub mod shard;

pub use disconnect::Disconnect;
pub use engine::{Engine, EngineConfig, EngineTasks};
pub use error::{ClientError, ErrorCode};
pub use history::{HistoryStore, PageQuery, embedded::EmbeddedStore};
pub use outbox::Outbox;
pub use session::Session;
pub use shard::{Publish, UserInfo};
