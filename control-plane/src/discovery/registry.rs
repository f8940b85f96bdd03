//! What every service looks like to its callers right now: the policy that
//! applies to it and its endpoints, published per service port on a
//! `tokio::sync::watch` channel.
//!
//! A watch channel holds only the latest value, so a burst of changes
//! reaches a slow stream as one update (coalescing), while a single change
//! is sent at once (no debounce timer). Channels are made on first
//! subscription and dropped once nobody listens.
//!
//! The same holds for destination addresses ([`Registry::subscribe_address`]):
//! each watched `ip:port` has a channel holding the service port that owns
//! it (`addresses`: virtual IPs and endpoints, taken from the same model
//! the snapshots are, so any source of virtual IPs or endpoints feeds it).
//!
//! The identity expected at each endpoint (`identities`) comes from, last
//! wins: a static document's `spec.identity`, the workload at the
//! endpoint's IP ([`Registry::apply`]; Kubernetes: a meshed pod's service
//! account), a registered proxy's verified certificate.

mod addresses;
mod snapshot;
mod version;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use levee_proto::policy::{
    AppProtocol, DEFAULT_NAMESPACE, Document, ResiliencePolicy, ServiceEndpoints, ServiceKey,
    SpiffeId, TargetKey,
};
use tokio::sync::watch;

use crate::store::DocKey;
use addresses::AddressIndex;

/// The state of one service port, as sent to proxies.
#[derive(Clone, Debug)]
pub struct ServiceSnapshot {
    /// Which service port.
    pub key: ServiceKey,
    /// `<policy revision>-<content hash>`: equal content, equal version.
    pub version: String,
    /// Store revision that last changed the selected policy (0: none).
    pub policy_revision: u64,
    /// The selected policy.
    pub policy: Option<Arc<ResiliencePolicy>>,
    /// Registered and static endpoints, sorted, no duplicates.
    pub endpoints: Vec<SocketAddr>,
    /// The port's declared protocol (its `ServiceEndpoints`' `appProtocol`).
    pub app_protocol: Option<AppProtocol>,
    /// The service's virtual IPs, sorted, no duplicates.
    pub virtual_ips: Vec<IpAddr>,
    /// The SPIFFE ID expected at each endpoint that has one: every address
    /// of a static document naming one (`spec.identity`), and each
    /// registered proxy's verified identity (its certificate). Callers'
    /// proxies speak mTLS to them.
    pub identities: BTreeMap<SocketAddr, SpiffeId>,
    /// When this content was computed (for the push-latency histogram).
    pub changed_at: Instant,
}

/// A live proxy's own inbound address, registered while its stream lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The proxy's service.
    pub service: String,
    /// The proxy's namespace.
    pub namespace: String,
    /// Service port callers use; `None`: every port.
    pub port: Option<u16>,
    /// Where its inbound listener is reached.
    pub addr: SocketAddr,
    /// The SPIFFE ID of the workload certificate its stream presented (TLS
    /// verified it): the identity callers expect at `addr`. `None` over
    /// plaintext (`--insecure-plaintext`): callers then speak plaintext.
    pub identity: Option<SpiffeId>,
}

/// Policies, endpoints and the per-service channels. Shared behind an `Arc`.
#[derive(Debug, Default)]
pub struct Registry {
    state: Mutex<State>,
}

/// `(namespace, service)`: what a change can affect. Only channels of that
/// service are recomputed, so one proxy connecting costs work proportional
/// to its own service, not to the whole mesh.
type ServiceName = (String, String);

/// The service (every port) a target belongs to.
fn service_of(target: TargetKey) -> ServiceName {
    (target.namespace, target.service)
}

#[derive(Debug, Default)]
struct State {
    policies: BTreeMap<DocKey, (u64, Arc<ResiliencePolicy>)>,
    static_endpoints: BTreeMap<DocKey, ServiceEndpoints>,
    /// Live proxies' endpoints by service, then by stream id.
    registrations: HashMap<ServiceName, BTreeMap<u64, Registration>>,
    /// Which service each registered stream belongs to.
    registered_by: HashMap<u64, ServiceName>,
    /// The identity expected at every endpoint on each IP (Kubernetes:
    /// meshed pods' service accounts).
    workload_identities: BTreeMap<IpAddr, SpiffeId>,
    channels: HashMap<ServiceKey, watch::Sender<Arc<ServiceSnapshot>>>,
    /// Which service port owns each claimed address.
    addresses: AddressIndex<ServiceName>,
    /// Watched addresses: their owner now (`None`: unknown).
    address_channels: HashMap<SocketAddr, watch::Sender<Option<ServiceKey>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters more than stopping discovery would.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets documents (key, revision that last changed it, document), then
    /// publishes every service whose state changed.
    pub fn upsert(&self, docs: impl IntoIterator<Item = (DocKey, u64, Document)>) {
        self.apply(&[], docs.into_iter().collect(), None);
    }

    /// Forgets one document, then publishes.
    pub fn remove(&self, key: &DocKey) {
        let mut state = self.lock();
        let affected: HashSet<ServiceName> = state.forget(key).into_iter().collect();
        state.publish(&affected);
    }

    /// One batch under one lock, published once (a proxy never sees half
    /// of it): documents `removed`, documents `upserted` (key, revision,
    /// document), and, when `Some`, the identities expected at workloads'
    /// IPs (every endpoint on such an IP: mTLS to it).
    pub fn apply(
        &self,
        removed: &[DocKey],
        upserted: Vec<(DocKey, u64, Document)>,
        workload_identities: Option<BTreeMap<IpAddr, SpiffeId>>,
    ) {
        let mut state = self.lock();
        let mut affected = HashSet::new();
        for key in removed {
            affected.extend(state.forget(key));
        }
        for (key, revision, doc) in upserted {
            // The document may have moved from one service to another.
            affected.extend(state.forget(&key));
            affected.insert(service_of(doc.target(DEFAULT_NAMESPACE)));
            match doc {
                Document::Policy(p) => {
                    state.policies.insert(key, (revision, Arc::new(p)));
                }
                Document::Endpoints(e) => {
                    state.static_endpoints.insert(key, e);
                }
            }
        }
        if let Some(identities) = workload_identities
            && identities != state.workload_identities
        {
            let old = std::mem::replace(&mut state.workload_identities, identities);
            let new = &state.workload_identities;
            let changed: HashSet<IpAddr> = (old.keys().chain(new.keys()))
                .filter(|ip| old.get(ip) != new.get(ip))
                .copied()
                .collect();
            affected.extend(state.services_at(&changed));
        }
        state.publish(&affected);
    }

    /// Adds a proxy's registration (keyed by its stream), then publishes.
    pub fn register(&self, stream_id: u64, registration: Registration) {
        let mut state = self.lock();
        let name = (registration.namespace.clone(), registration.service.clone());
        state
            .registrations
            .entry(name.clone())
            .or_default()
            .insert(stream_id, registration);
        state.registered_by.insert(stream_id, name.clone());
        state.publish(&HashSet::from([name]));
    }

    /// Removes a stream's registration, then publishes.
    pub fn deregister(&self, stream_id: u64) {
        let mut state = self.lock();
        let Some(name) = state.registered_by.remove(&stream_id) else {
            return;
        };
        if let Some(streams) = state.registrations.get_mut(&name) {
            streams.remove(&stream_id);
            if streams.is_empty() {
                state.registrations.remove(&name);
            }
        }
        state.publish(&HashSet::from([name]));
    }

    /// A receiver that always holds the service's latest snapshot.
    pub fn subscribe(&self, key: &ServiceKey) -> watch::Receiver<Arc<ServiceSnapshot>> {
        let mut state = self.lock();
        if let Some(tx) = state.channels.get(key) {
            return tx.subscribe();
        }
        let snapshot = Arc::new(state.snapshot(key));
        let (tx, rx) = watch::channel(snapshot);
        state.channels.insert(key.clone(), tx);
        rx
    }

    /// A receiver that always holds the service port owning `addr` (`None`:
    /// no service claims it).
    pub fn subscribe_address(&self, addr: SocketAddr) -> watch::Receiver<Option<ServiceKey>> {
        let mut state = self.lock();
        if let Some(tx) = state.address_channels.get(&addr) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(state.addresses.owner(&addr).cloned());
        state.address_channels.insert(addr, tx);
        rx
    }

    /// The service port owning `addr` now, if any.
    pub fn owner(&self, addr: &SocketAddr) -> Option<ServiceKey> {
        self.lock().addresses.owner(addr).cloned()
    }

    /// The current snapshot of a service (whether or not anyone watches it).
    pub fn current(&self, key: &ServiceKey) -> ServiceSnapshot {
        self.lock().snapshot(key)
    }

    /// The stored document of `kind` other than `except` that already
    /// claims `target`, if any: one document of a kind per target (see
    /// `levee_proto::policy::check_batch`).
    pub fn target_owner(&self, kind: &str, target: &TargetKey, except: &DocKey) -> Option<DocKey> {
        let state = self.lock();
        let policies = state
            .policies
            .iter()
            .map(|(k, (_, p))| (k, p.target(DEFAULT_NAMESPACE)));
        let endpoints = state
            .static_endpoints
            .iter()
            .map(|(k, e)| (k, e.target(DEFAULT_NAMESPACE)));
        policies
            .chain(endpoints)
            .find(|(k, t)| k.kind == kind && *k != except && t == target)
            .map(|(k, _)| k.clone())
    }

    /// Services someone is watching (for tests and status).
    pub fn watched(&self) -> usize {
        self.lock().channels.len()
    }
}

impl State {
    /// Removes a document; returns the service it was about.
    fn forget(&mut self, key: &DocKey) -> Option<ServiceName> {
        if let Some((_, p)) = self.policies.remove(key) {
            return Some(service_of(p.target(DEFAULT_NAMESPACE)));
        }
        let e = self.static_endpoints.remove(key)?;
        Some(service_of(e.target(DEFAULT_NAMESPACE)))
    }

    /// The services with an endpoint (static or registered) on one of `ips`.
    fn services_at(&self, ips: &HashSet<IpAddr>) -> Vec<ServiceName> {
        if ips.is_empty() {
            return Vec::new();
        }
        let documents = self
            .static_endpoints
            .values()
            .filter(|e| e.spec.addresses.iter().any(|a| ips.contains(&a.ip())))
            .map(|e| service_of(e.target(DEFAULT_NAMESPACE)));
        let registered = self
            .registrations
            .iter()
            .filter(|(_, streams)| streams.values().any(|r| ips.contains(&r.addr.ip())))
            .map(|(name, _)| name.clone());
        documents.chain(registered).collect()
    }

    /// Recomputes the watched ports of the `affected` services and sends
    /// those whose content changed.
    fn publish(&mut self, affected: &HashSet<ServiceName>) {
        self.reindex(affected);
        self.channels.retain(|_, tx| tx.receiver_count() > 0);
        let keys: Vec<ServiceKey> = self
            .channels
            .keys()
            .filter(|k| affected.contains(&(k.namespace.clone(), k.name.clone())))
            .cloned()
            .collect();
        for key in keys {
            let snapshot = self.snapshot(&key);
            if let Some(tx) = self.channels.get(&key) {
                tx.send_if_modified(|current| {
                    if current.version == snapshot.version {
                        return false;
                    }
                    *current = Arc::new(snapshot);
                    true
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
