//! Criterion benches live in `benches/`: `store` (embedded store candidates, fjall vs
//! redb, on our append and page workload, plus the real `EmbeddedStore`) and
//! `hot_path` (frame parse and encode, fan-out into outboxes, room routing, the rate
//! limit check, JWT verification). Run with
//! `cargo bench -p roomcast-benches`; figures are recorded in docs/PERFORMANCE.md.
