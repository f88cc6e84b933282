//! A cluster member's periodic chores beside the ownership rounds: close the sessions
//! of a node cut off from Redis for too long (see the `cluster` module doc), write back
//! the connection counts Redis did not take at a close (see `limits`), and sweep for
//! ring timeouts whose timer died with another node (see `calls::service`). One task
//! per node, ending with the engine.

use std::sync::Weak;
use std::time::Duration;

use crate::disconnect::Disconnect;
use crate::engine::{Engine, Inner};

/// How often the chores run.
const EVERY: Duration = Duration::from_secs(1);
/// Ring sweeps run every this many chores.
const SWEEP_EVERY: u32 = 2;
/// How far past its deadline a ringing call must be before the sweep fires it (the
/// starting node's own timer normally wins well before).
const SWEEP_GRACE: Duration = Duration::from_secs(1);

pub(crate) async fn upkeep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u32;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let engine = Engine { inner };
        let Some(cluster) = engine.cluster().cloned() else {
            return;
        };
        // First, before anything that waits on Redis. Sessions opened since the last
        // pass are closed too (the server refuses new ones while cut off, but one may
        // have been admitted just before).
        if cluster.cut_off_too_long() {
            let closed = engine.close_all(Disconnect::CUT_OFF);
            if closed > 0 {
                tracing::warn!(
                    closed,
                    cut_off_ms = cluster.cut_off_for().map_or(0, |d| d.as_millis() as u64),
                    "cut off from Redis too long: sessions closed with 1012 to reconnect elsewhere"
                );
            }
        }
        if cluster.connections_to_resync() {
            let sessions = engine.inner.sessions.clone();
            cluster
                .resync_connections(|user| sessions.sessions_of(user).len())
                .await;
        }
        n = n.wrapping_add(1);
        if n.is_multiple_of(SWEEP_EVERY) {
            engine
                .calls()
                .sweep_overdue(SWEEP_GRACE, |room| cluster.lease_of(room).is_some())
                .await;
        }
    }
}
