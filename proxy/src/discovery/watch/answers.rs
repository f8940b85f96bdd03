//! Address answers: which service port owns a destination address the
//! proxy subscribed by address (not acknowledged; recorded in the
//! [`crate::subscriptions::addresses::AddressBook`], where waiting connections
//! pick them up).

use std::net::SocketAddr;

use levee_proto::policy::ServiceKey;
use levee_proto::v1 as pb;

use super::Watcher;

impl Watcher {
    /// Records which service owns an address. An answer that names an
    /// unreadable service, or no readable address, counts as unknown
    /// (passthrough) rather than ending the stream.
    pub(super) fn on_address(&self, answer: &pb::AddressUpdate) {
        let Ok(addr) = answer.address.parse::<SocketAddr>() else {
            tracing::warn!(address = %answer.address, "ignoring an address answer for no ip:port");
            return;
        };
        let owner = answer.service.as_ref().and_then(|service| {
            ServiceKey::try_from(service)
                .inspect_err(|reason| tracing::warn!(%addr, %reason, "address answer names no valid service"))
                .ok()
        });
        tracing::debug!(%addr, owner = ?owner.as_ref().map(ToString::to_string), "address answered");
        self.shared.subscriptions.addresses.answer(&addr, owner);
    }
}
