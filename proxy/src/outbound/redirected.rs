//! The destination of a request on a connection iptables redirected here
//! (transparent mode): the service its authority names when the proxy
//! knows it, else the service that owns the original destination address,
//! else the original destination itself (passthrough).

use std::sync::Arc;

use levee_proto::policy::ServiceKey;

use super::{Outbound, destinations};

impl Outbound {
    /// The destination of a request on a redirected connection: the
    /// service its authority names when the proxy knows it (a policy or
    /// endpoints for it; in control-plane mode it is subscribed first),
    /// else the service discovery maps the original destination address
    /// to ([`Outbound::by_address`]), else the connection's original
    /// destination (passthrough), never a DNS lookup of a name the app
    /// already resolved itself.
    pub(super) async fn transparent_entry(
        &self,
        authority: &str,
        original: std::net::SocketAddr,
    ) -> Arc<destinations::Entry> {
        let known = |key: &ServiceKey| {
            let snapshot = self.shared.snapshot.load();
            snapshot.policy_for(key).is_some() || snapshot.endpoints.contains_key(key)
        };
        // A spelling met before: no parsing.
        if let Some(entry) = self.destinations.spelled(authority)
            && known(&entry.key)
        {
            return entry;
        }
        let Ok(key) = ServiceKey::from_authority(authority, &self.shared.namespace, 80) else {
            return self.by_address(original).await;
        };
        if !known(&key) {
            self.shared.discovered(&key).await;
        }
        if known(&key)
            && let Ok(entry) = self.destinations.get(authority)
        {
            return entry;
        }
        self.by_address(original).await
    }

    /// The entry of the service port that owns the original destination
    /// `original` (a virtual IP or an endpoint of it, as the control plane
    /// answers; a first lookup waits at most the detect timeout), else the
    /// passthrough entry of the address itself.
    pub(super) async fn by_address(
        &self,
        original: std::net::SocketAddr,
    ) -> Arc<destinations::Entry> {
        let wait = self
            .transparent
            .as_ref()
            .map_or(crate::transparent::DEFAULT_DETECT_TIMEOUT, |t| {
                t.detect_timeout
            });
        match self
            .shared
            .subscriptions
            .address_owner(original, wait)
            .await
        {
            Some(owner) => self.destinations.service(&owner),
            None => self.destinations.original(original),
        }
    }
}
