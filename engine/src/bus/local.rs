//! The single-node bus: every envelope is this node's to deliver, so `publish` hands it
//! straight to [`Inbound`] and subscriptions are no-ops (this node hears every room).

use super::{Bus, Envelope, Inbound};

/// See the module doc.
#[derive(Debug, Clone)]
pub struct LocalBus {
    inbound: Inbound,
}

impl LocalBus {
    pub fn new(inbound: Inbound) -> Self {
        Self { inbound }
    }
}

impl Bus for LocalBus {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn publish(&self, envelope: Envelope) {
        metrics::counter!(crate::metrics::BUS_PUBLISHED, "backend" => "local").increment(1);
        self.inbound.deliver(envelope);
    }

    fn subscribe_room(&self, _room_id: &str) {}
    fn unsubscribe_room(&self, _room_id: &str) {}
    fn subscribe_user(&self, _user_id: &str) {}
    fn unsubscribe_user(&self, _user_id: &str) {}
}
