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

mod addresses;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use levee_proto::policy::{
    AppProtocol, DEFAULT_NAMESPACE, Document, ResiliencePolicy, ServiceEndpoints, ServiceKey,
    SpiffeId, TargetKey, select_policy,
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
        let mut state = self.lock();
        let mut affected = HashSet::new();
        for (key, revision, doc) in docs {
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
        state.publish(&affected);
    }

    /// Forgets one document, then publishes.
    pub fn remove(&self, key: &DocKey) {
        let mut state = self.lock();
        let affected: HashSet<ServiceName> = state.forget(key).into_iter().collect();
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

    fn snapshot(&self, key: &ServiceKey) -> ServiceSnapshot {
        let selected = select_policy(
            self.policies.values().map(|(_, p)| p.as_ref()),
            key,
            DEFAULT_NAMESPACE,
        );
        let (policy_revision, policy) = selected
            .and_then(|chosen| {
                self.policies
                    .values()
                    .find(|(_, p)| std::ptr::eq(p.as_ref(), chosen))
                    .map(|(rev, p)| (*rev, Some(p.clone())))
            })
            .unwrap_or((0, None));
        let registered: Vec<&Registration> = self
            .registrations
            .get(&(key.namespace.clone(), key.name.clone()))
            .into_iter()
            .flat_map(BTreeMap::values)
            .filter(|r| r.port.is_none_or(|p| p == key.port))
            .collect();
        let mut endpoints: Vec<SocketAddr> = self
            .static_endpoints
            .values()
            .filter(|e| e.service_key(DEFAULT_NAMESPACE) == *key)
            .flat_map(|e| e.spec.addresses.iter().copied())
            .chain(registered.iter().map(|r| r.addr))
            .collect();
        endpoints.sort();
        endpoints.dedup();
        // One ServiceEndpoints document per service port (check_batch).
        let declared = self
            .static_endpoints
            .values()
            .find(|e| e.service_key(DEFAULT_NAMESPACE) == *key);
        let app_protocol = declared.and_then(|e| e.spec.app_protocol);
        let mut virtual_ips = declared
            .map(|e| e.spec.virtual_ips.clone())
            .unwrap_or_default();
        virtual_ips.sort();
        virtual_ips.dedup();
        let mut identities: BTreeMap<SocketAddr, SpiffeId> = declared
            .and_then(|e| {
                let id = e.spec.identity.as_ref()?;
                Some(e.spec.addresses.iter().map(|a| (*a, id.clone())).collect())
            })
            .unwrap_or_default();
        // A registered proxy proved its identity (the certificate TLS
        // verified): it wins over a static declaration of the same address.
        // Registrations are in stream order, so a later stream at the same
        // address wins over an earlier one still in its grace period.
        for r in &registered {
            if let Some(id) = &r.identity {
                identities.insert(r.addr, id.clone());
            }
        }
        let version = version(
            policy_revision,
            policy.as_deref(),
            &endpoints,
            (app_protocol, &virtual_ips, &identities),
        );
        ServiceSnapshot {
            key: key.clone(),
            version,
            policy_revision,
            policy,
            endpoints,
            app_protocol,
            virtual_ips,
            identities,
            changed_at: Instant::now(),
        }
    }
}

/// `<policy revision>-<hash of policy and endpoints>`; the hash is FNV-1a
/// (stable across builds and restarts, unlike `DefaultHasher`).
fn version(
    policy_revision: u64,
    policy: Option<&ResiliencePolicy>,
    endpoints: &[SocketAddr],
    (app_protocol, virtual_ips, identities): (
        Option<AppProtocol>,
        &[IpAddr],
        &BTreeMap<SocketAddr, SpiffeId>,
    ),
) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    if let Some(policy) = policy {
        feed(serde_json::to_string(policy).unwrap_or_default().as_bytes());
    }
    feed(b"\0");
    for e in endpoints {
        feed(e.to_string().as_bytes());
        feed(b",");
    }
    // Only when set: versions of services that declare neither stay as they were.
    if app_protocol.is_some() || !virtual_ips.is_empty() {
        feed(b"\0");
        feed(app_protocol.map_or("", AppProtocol::as_str).as_bytes());
        for ip in virtual_ips {
            feed(b",");
            feed(ip.to_string().as_bytes());
        }
    }
    if !identities.is_empty() {
        feed(b"\0");
        for (addr, id) in identities {
            feed(addr.to_string().as_bytes());
            feed(b"=");
            feed(id.as_str().as_bytes());
            feed(b",");
        }
    }
    format!("{policy_revision}-{:08x}", hash >> 32)
}

#[cfg(test)]
mod tests;
