//! Storage: the four contracts every backend keeps ([`HistoryStore`], [`ChatStore`],
//! [`CallStore`], [`KeyStore`]), the one error they return ([`StoreError`]), the
//! group-commit [`writer`] in front of history, and the backends, one folder each
//! ([`embedded`]: redb, the default). The conformance suite every backend must pass is
//! built only for tests and for backends (`feature = "conformance"`), not shipped.
//!
//! The domain modules (`chat`, `calls`, `keys`) own the types; this module owns how they
//! are kept, and imports the domain, never the other way round.

mod calls;
mod chat;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod cql;
pub mod embedded;
mod history;
mod keys;
pub mod measured;
pub mod writer;

pub use calls::CallStore;
pub use chat::ChatStore;
pub use history::{AppendOutcome, AuditEntry, HistoryStore, PageQuery, WriteBatch};
pub use keys::KeyStore;

/// A storage failure. Never shown to clients beyond `store_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The backend did not answer in time (a client or coordinator timeout): the
    /// operation may still have been applied.
    #[error("storage backend timed out: {0}")]
    Timeout(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn backend(e: impl std::fmt::Display) -> Self {
        Self::Backend(e.to_string())
    }
}

/// Decodes a stored record: records are JSON in every backend (a record's schema is its
/// Rust type; fields only ever get added, with defaults).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Encodes a record for storage (see [`decode`]).
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The stores a node runs on, one per contract. Chosen once from configuration (the
/// server's `stores.rs`); one backend may serve all four (the embedded one does).
#[derive(Clone)]
pub struct Stores {
    pub history: std::sync::Arc<dyn HistoryStore>,
    pub chat: std::sync::Arc<dyn ChatStore>,
    pub calls: std::sync::Arc<dyn CallStore>,
    pub keys: std::sync::Arc<dyn KeyStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("history", &self.history.backend())
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Every contract served by one CQL keyspace.
    pub fn cql(store: cql::CqlStore) -> Self {
        let store = std::sync::Arc::new(store);
        Self {
            history: store.clone(),
            chat: store.clone(),
            calls: store.clone(),
            keys: store,
        }
    }

    /// Every contract served by one embedded database.
    pub fn embedded(store: embedded::EmbeddedStore) -> Self {
        let store = std::sync::Arc::new(store);
        Self {
            history: store.clone(),
            chat: store.clone(),
            calls: store.clone(),
            keys: store,
        }
    }
}
