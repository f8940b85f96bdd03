//! The address index: which service port owns a destination `ip:port`, for
//! proxies that met the address on a redirected connection (Discovery's
//! subscriptions by address).
//!
//! A service claims addresses through whatever fills the service model:
//! its virtual IPs with the service port, and its endpoints (static
//! `ServiceEndpoints` addresses; a live proxy's pod IP with its service
//! port, and its inbound address). Claims are kept per service, so a change
//! to one service re-indexes only that service's addresses. When two
//! services claim one address, a virtual IP beats an endpoint, then the
//! smaller service key wins: every control plane answers the same.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use levee_proto::policy::ServiceKey;

/// How a service claims an address; the smaller kind wins a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Claim {
    /// `virtualIP:port` of the service port.
    VirtualIp,
    /// One of its endpoints.
    Endpoint,
}

/// One address claimed by a service port.
pub type Claimed = (SocketAddr, Claim, ServiceKey);

/// Addresses by owner, and owners by address.
#[derive(Debug, Default)]
pub struct AddressIndex<N> {
    /// What each service (all its ports) claims now.
    by_service: HashMap<N, Vec<Claimed>>,
    /// Every claim of each address, best first.
    by_address: HashMap<SocketAddr, BTreeSet<(Claim, ServiceKey)>>,
}

impl<N: std::hash::Hash + Eq> AddressIndex<N> {
    /// Replaces what `service` claims; returns the addresses whose claims
    /// changed (their owner may have).
    pub fn set(&mut self, service: N, claims: Vec<Claimed>) -> Vec<SocketAddr> {
        let old = self.by_service.remove(&service).unwrap_or_default();
        if old == claims {
            if !claims.is_empty() {
                self.by_service.insert(service, claims);
            }
            return Vec::new();
        }
        let mut changed = Vec::with_capacity(old.len() + claims.len());
        for (addr, claim, key) in old {
            if let Some(owners) = self.by_address.get_mut(&addr) {
                owners.remove(&(claim, key));
                if owners.is_empty() {
                    self.by_address.remove(&addr);
                }
            }
            changed.push(addr);
        }
        for (addr, claim, key) in &claims {
            self.by_address
                .entry(*addr)
                .or_default()
                .insert((*claim, key.clone()));
            changed.push(*addr);
        }
        if !claims.is_empty() {
            self.by_service.insert(service, claims);
        }
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// The service port that owns `addr`, if any.
    pub fn owner(&self, addr: &SocketAddr) -> Option<&ServiceKey> {
        self.by_address.get(addr)?.first().map(|(_, key)| key)
    }
}
