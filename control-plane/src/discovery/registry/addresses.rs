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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use levee_proto::policy::{DEFAULT_NAMESPACE, ServiceKey};

use super::{ServiceName, State, service_of};

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

impl State {
    /// Re-indexes the addresses the `affected` services claim and sends
    /// each watched address whose owner changed.
    pub(super) fn reindex(&mut self, affected: &HashSet<ServiceName>) {
        let mut changed = Vec::new();
        for name in affected {
            let claims = self.claims(name);
            changed.extend(self.addresses.set(name.clone(), claims));
        }
        if changed.is_empty() {
            return;
        }
        self.address_channels
            .retain(|_, tx| tx.receiver_count() > 0);
        for addr in changed {
            if let Some(tx) = self.address_channels.get(&addr) {
                let owner = self.addresses.owner(&addr).cloned();
                tx.send_if_modified(|current| {
                    if *current == owner {
                        return false;
                    }
                    *current = owner;
                    true
                });
            }
        }
    }

    /// Every address the service `name` claims: its virtual IPs with each
    /// port, its static endpoints, and its live proxies' pod IP with their
    /// service port and their inbound address (a registration for every
    /// port names no service port, so it claims nothing).
    fn claims(&self, name: &ServiceName) -> Vec<Claimed> {
        let mut claims = Vec::new();
        for e in self.static_endpoints.values() {
            if service_of(e.target(DEFAULT_NAMESPACE)) != *name {
                continue;
            }
            let key = e.service_key(DEFAULT_NAMESPACE);
            for ip in &e.spec.virtual_ips {
                let addr = SocketAddr::new(*ip, e.spec.port);
                claims.push((addr, Claim::VirtualIp, key.clone()));
            }
            for addr in &e.spec.addresses {
                claims.push((*addr, Claim::Endpoint, key.clone()));
            }
        }
        for r in self
            .registrations
            .get(name)
            .into_iter()
            .flat_map(BTreeMap::values)
        {
            let Some(port) = r.port else { continue };
            let key = ServiceKey {
                name: name.1.clone(),
                namespace: name.0.clone(),
                port,
            };
            claims.push((
                SocketAddr::new(r.addr.ip(), port),
                Claim::Endpoint,
                key.clone(),
            ));
            claims.push((r.addr, Claim::Endpoint, key));
        }
        claims.sort();
        claims.dedup();
        claims
    }
}
