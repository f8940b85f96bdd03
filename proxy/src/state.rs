//! What every listener shares: the current policy snapshot, endpoint
//! resolution, metrics and readiness. Owned by the control side
//! (`policy_source`, `endpoints`, `metrics`, `admin`); the data path
//! (`server`, `outbound`, `inbound`, `forward`) only reads it.
//!
//! A [`Snapshot`] is immutable and replaced as a whole ([`Shared::install`]),
//! so a request that loaded one keeps a consistent view while a reload lands.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use levee_proto::policy::{
    AppProtocol, Document, PolicyErrors, PolicyIndex, ResiliencePolicy, ServiceKey, SpiffeId,
    check_batch,
};

use crate::discovery::{Subscription, Subscriptions};
use crate::endpoints::DnsCache;
use crate::errors::ProxyError;
use crate::metrics::Metrics;

/// One immutable view of everything policy-related, swapped as a whole.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Local version, bumped on every accepted update (0 = nothing loaded yet).
    pub version: u64,
    /// Policies by target; [`Snapshot::policy_for`] picks the one for a call.
    pub policies: PolicyIndex<Arc<ResiliencePolicy>>,
    /// Static endpoints by service (from `ServiceEndpoints` documents).
    pub endpoints: HashMap<ServiceKey, Arc<[SocketAddr]>>,
    /// Declared protocols by service port (`appProtocol`); a port without
    /// one has its upstream protocol learned.
    pub app_protocols: HashMap<ServiceKey, AppProtocol>,
    /// The SPIFFE ID expected at an endpoint address (`ServiceEndpoints`
    /// `identity`, Discovery `identities`): the forwarder speaks mTLS to
    /// it and checks the server is that workload. One per address: an
    /// address is one workload's listener whichever service lists it.
    pub identities: HashMap<SocketAddr, SpiffeId>,
    /// Every policy in source order, for `/config`.
    pub documents: Vec<Arc<ResiliencePolicy>>,
    /// Where the snapshot came from, e.g. `file:/etc/levee/policy.yaml`.
    pub source: String,
    /// When it was installed (`None` until the first install).
    pub loaded_at: Option<SystemTime>,
    /// For `levee_policy_version`: the control plane's policy revision
    /// (`None`: the local `version` is shown).
    pub policy_revision: Option<u64>,
}

impl Snapshot {
    /// Builds a snapshot from parsed documents. Namespaces default to
    /// `namespace`. A batch with two documents of a kind for one target (or
    /// one object twice) is refused, as [`check_batch`] reports it.
    pub fn from_documents(
        documents: Vec<Document>,
        namespace: &str,
        source: impl Into<String>,
    ) -> Result<Snapshot, PolicyErrors> {
        check_batch(&documents, namespace)?;
        let mut snapshot = Snapshot {
            source: source.into(),
            ..Snapshot::default()
        };
        for document in documents {
            match document {
                Document::Policy(policy) => {
                    let policy = Arc::new(policy);
                    snapshot
                        .policies
                        .insert(policy.target(namespace), policy.clone());
                    snapshot.documents.push(policy);
                }
                Document::Endpoints(endpoints) => {
                    let key = endpoints.service_key(namespace);
                    if let Some(app_protocol) = endpoints.spec.app_protocol {
                        snapshot.app_protocols.insert(key.clone(), app_protocol);
                    }
                    if let Some(id) = &endpoints.spec.identity {
                        for addr in &endpoints.spec.addresses {
                            snapshot.identities.insert(*addr, id.clone());
                        }
                    }
                    snapshot
                        .endpoints
                        .insert(key, endpoints.spec.addresses.into());
                }
            }
        }
        Ok(snapshot)
    }

    /// The policy for calls to `service`: one naming its port, else one for
    /// every port of the service, else none (defaults apply).
    pub fn policy_for(&self, service: &ServiceKey) -> Option<Arc<ResiliencePolicy>> {
        self.policies.get(service).cloned()
    }
}

/// Shared by every listener and the admin server.
pub struct Shared {
    /// The current snapshot; readers `load()` it once per request.
    pub snapshot: ArcSwap<Snapshot>,
    /// Every metric family of the proxy.
    pub metrics: Metrics,
    /// True once a first config is in place; `/ready` answers 503 before.
    pub ready: AtomicBool,
    /// The proxy's own namespace: the default for authorities without one.
    pub namespace: String,
    /// Cached DNS answers for services without static endpoints.
    pub dns: DnsCache,
    /// Destinations met on the outbound path, for the control-plane watch
    /// (inert in static mode).
    pub subscriptions: Subscriptions,
    /// Clients a per-client inbound rate limit keeps buckets for
    /// (`--max-rate-limit-clients`).
    pub rate_limit_clients: usize,
    /// The workload certificate, when the proxy has identity flags (for
    /// `/config`; set once at start).
    pub identity: std::sync::OnceLock<crate::identity::CertifiedWatch>,
    /// The mTLS credentials the listeners use (from identity files or the
    /// workload certificate), for `/config`.
    pub tls: Arc<crate::tls::TlsConfigs>,
    /// Serialises [`Shared::install`] so versions never repeat.
    install_lock: Mutex<()>,
}

impl Shared {
    /// Empty snapshot (version 0), not ready.
    pub fn new(namespace: String, metrics: Metrics) -> Shared {
        Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            metrics,
            ready: AtomicBool::new(false),
            namespace,
            dns: DnsCache::default(),
            subscriptions: Subscriptions::default(),
            rate_limit_clients: crate::resilience::ratelimit::MAX_CLIENTS,
            identity: std::sync::OnceLock::new(),
            tls: Arc::default(),
            install_lock: Mutex::new(()),
        }
    }

    /// The endpoints of `service`: static ones first, else DNS for the
    /// service's host name. `Err` is a `ProxyError` of kind no-endpoints.
    pub async fn resolve(&self, service: &ServiceKey) -> Result<Arc<[SocketAddr]>, ProxyError> {
        crate::endpoints::resolve(self, service).await
    }

    /// In control-plane mode, subscribes `service` the first time it is met
    /// and waits briefly for its first update (also while disconnected if
    /// the proxy has no config yet); at once otherwise. The subscription
    /// returned tells when it was dropped.
    pub async fn discovered(&self, service: &ServiceKey) -> Arc<Subscription> {
        self.subscriptions
            .discovered_while(service, !self.is_ready())
            .await
    }

    /// The policy for calls to `service` in the current snapshot.
    pub fn policy_for(&self, service: &ServiceKey) -> Option<Arc<ResiliencePolicy>> {
        self.snapshot.load().policy_for(service)
    }

    /// Whether a first config is in place.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the proxy ready (or not) for `/ready`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Swaps `snapshot` in as the next version and returns that version.
    /// Updates `levee_policy_version` (the snapshot's `policy_revision`, else
    /// the version) and the static `levee_endpoints` series.
    pub fn install(&self, mut snapshot: Snapshot) -> u64 {
        let _serialised = self
            .install_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let previous = self.snapshot.load_full();
        snapshot.version = previous.version + 1;
        snapshot.loaded_at = Some(SystemTime::now());
        for service in previous
            .endpoints
            .keys()
            .filter(|k| !snapshot.endpoints.contains_key(*k))
        {
            self.metrics.remove_endpoints(&service.to_string());
        }
        for (service, addresses) in &snapshot.endpoints {
            self.metrics
                .set_endpoints(&service.to_string(), "ready", addresses.len());
        }
        let version = snapshot.version;
        self.metrics
            .set_policy_version(snapshot.policy_revision.unwrap_or(version));
        self.snapshot.store(Arc::new(snapshot));
        version
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("version", &self.snapshot.load().version)
            .field("ready", &self.is_ready())
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use levee_proto::policy::parse_documents;

    use super::*;

    fn policy(name: &str, target: &str) -> Vec<Document> {
        let yaml = format!(
            "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec: {{target: {target}, outbound: {{timeouts: {{request: 2s}}}}}}\n"
        );
        parse_documents(&yaml).expect("valid policy")
    }

    fn key(name: &str, namespace: &str, port: u16) -> ServiceKey {
        ServiceKey {
            name: name.into(),
            namespace: namespace.into(),
            port,
        }
    }

    #[test]
    fn a_policy_naming_the_port_beats_one_for_every_port() {
        let mut documents = policy("any", "{service: payments}");
        documents.extend(policy("exact", "{service: payments, port: 8080}"));
        let snapshot = Snapshot::from_documents(documents, "default", "test").expect("snapshot");

        let exact = snapshot
            .policy_for(&key("payments", "shop", 8080))
            .expect("exact");
        assert_eq!(exact.spec.target.port, Some(8080));
        let any = snapshot
            .policy_for(&key("payments", "shop", 9090))
            .expect("every port");
        assert_eq!(any.spec.target.port, None);
        assert!(
            snapshot
                .policy_for(&key("payments", "default", 8080))
                .is_none()
        );
        assert!(snapshot.policy_for(&key("orders", "shop", 8080)).is_none());
        assert_eq!(snapshot.documents.len(), 2);
    }

    #[test]
    fn documents_that_bypass_parsing_are_still_checked_for_duplicates() {
        // Each file alone is valid; together they hold two policies for one port.
        let mut documents = policy("first", "{service: payments, port: 8080}");
        documents.extend(policy("second", "{service: payments, port: 8080}"));
        let errors = Snapshot::from_documents(documents, "default", "test").expect_err("duplicate");
        let message = errors.to_string();
        assert!(
            message.contains(
                "document 2 (ResiliencePolicy shop/second): spec.target: document 1 \
                 (ResiliencePolicy shop/first) already is the ResiliencePolicy of \
                 payments.shop:8080"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_target_without_a_namespace_is_in_the_proxys_namespace() {
        // One file: no namespace, then `namespace: default`, same service
        // port but other names. In a proxy of namespace `default` that is
        // one target twice; in a proxy of namespace `shop`, two services.
        let yaml = "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
                    metadata: {name: a}\nspec: {target: {service: payments, port: 8080}}\n\
                    ---\n\
                    apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
                    metadata: {name: b, namespace: default}\n\
                    spec: {target: {service: payments, port: 8080}}\n";
        let documents = parse_documents(yaml).expect("each document is valid");
        let errors = Snapshot::from_documents(documents.clone(), "default", "test")
            .expect_err("one target twice");
        assert!(
            errors.to_string().contains(
                "document 2 (ResiliencePolicy default/b): spec.target: document 1 \
                 (ResiliencePolicy a) already is the ResiliencePolicy of \
                 payments.default:8080"
            ),
            "{errors}"
        );
        let snapshot = Snapshot::from_documents(documents, "shop", "test").expect("two services");
        let in_shop = snapshot.policy_for(&key("payments", "shop", 8080));
        assert_eq!(in_shop.map(|p| p.metadata.name.clone()), Some("a".into()));
        let in_default = snapshot.policy_for(&key("payments", "default", 8080));
        assert_eq!(
            in_default.map(|p| p.metadata.name.clone()),
            Some("b".into())
        );
    }

    #[test]
    fn install_bumps_the_version_and_updates_endpoint_gauges() {
        let shared = Shared::new("default".into(), Metrics::new());
        let service = key("payments", "shop", 8080);
        let mut first = Snapshot::default();
        first.endpoints.insert(
            service.clone(),
            Arc::from([SocketAddr::from(([127, 0, 0, 1], 9001))]),
        );
        assert_eq!(shared.install(first), 1);
        let text = shared.metrics.encode();
        assert!(
            text.contains(r#"levee_endpoints{service="payments.shop:8080",state="ready"} 1"#),
            "{text}"
        );

        assert_eq!(shared.install(Snapshot::default()), 2);
        let text = shared.metrics.encode();
        assert!(!text.contains("payments.shop:8080"), "{text}");
        assert!(text.contains("levee_policy_version 2\n"), "{text}");
        assert_eq!(shared.snapshot.load().version, 2);
    }
}
