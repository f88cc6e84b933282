//! Shared pieces of roomcast's load tools: the WebSocket client (`client`) and the
//! measurement helpers (`stats`). The binaries are `roomcast-load` (the fan-out driver,
//! `main.rs`) and `roomcast-goose` (the goose suite, `goose_main.rs`).

pub mod client;
pub mod stats;
