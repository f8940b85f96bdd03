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
use levee_proto::policy::{Document, FieldError, PolicyErrors, ResiliencePolicy, ServiceKey};

use crate::discovery::Subscriptions;
use crate::endpoints::DnsCache;
use crate::errors::ProxyError;
use crate::metrics::Metrics;

/// One immutable view of everything policy-related, swapped as a whole.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Local version, bumped on every accepted update (0 = nothing loaded yet).
    pub version: u64,
    /// Policies that name a port, by target service.
    pub policies: HashMap<ServiceKey, Arc<ResiliencePolicy>>,
    /// Policies without a port (every port of the service): namespace → name → policy.
    /// [`Snapshot::policy_for`] prefers `policies`.
    pub all_ports: HashMap<String, HashMap<String, Arc<ResiliencePolicy>>>,
    /// Static endpoints by service (from `ServiceEndpoints` documents).
    pub endpoints: HashMap<ServiceKey, Arc<[SocketAddr]>>,
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
    /// `namespace`. Two policies (or two endpoint sets) for the same service
    /// port are refused, each reported like a validation error.
    pub fn from_documents(
        documents: Vec<Document>,
        namespace: &str,
        source: impl Into<String>,
    ) -> Result<Snapshot, PolicyErrors> {
        let mut snapshot = Snapshot {
            source: source.into(),
            ..Snapshot::default()
        };
        let mut errors = Vec::new();
        // Where each key was first seen, to name it in a duplicate error.
        let mut seen: HashMap<(&'static str, String), usize> = HashMap::new();
        for (index, document) in documents.into_iter().enumerate() {
            let number = index + 1;
            let object = format!(
                "{} {}",
                document.kind(),
                document.metadata().qualified_name()
            );
            let target = match &document {
                Document::Policy(policy) => match policy.service_key(namespace) {
                    Some(key) => key.to_string(),
                    None => format!(
                        "{}.{} (every port)",
                        policy.spec.target.service,
                        policy.metadata.namespace_or(namespace)
                    ),
                },
                Document::Endpoints(endpoints) => endpoints.service_key(namespace).to_string(),
            };
            if let Some(first) = seen.insert((document.kind(), target.clone()), number) {
                errors.push(FieldError {
                    document: number,
                    path: "spec".to_owned(),
                    message: format!(
                        "{target} already has a {} (document {first})",
                        document.kind()
                    ),
                    object: Some(object),
                });
                continue;
            }
            match document {
                Document::Policy(policy) => {
                    let policy = Arc::new(policy);
                    match policy.service_key(namespace) {
                        Some(key) => {
                            snapshot.policies.insert(key, policy.clone());
                        }
                        None => {
                            let ns = policy.metadata.namespace_or(namespace).to_owned();
                            let name = policy.spec.target.service.clone();
                            snapshot
                                .all_ports
                                .entry(ns)
                                .or_default()
                                .insert(name, policy.clone());
                        }
                    }
                    snapshot.documents.push(policy);
                }
                Document::Endpoints(endpoints) => {
                    let key = endpoints.service_key(namespace);
                    snapshot
                        .endpoints
                        .insert(key, endpoints.spec.addresses.into());
                }
            }
        }
        if errors.is_empty() {
            Ok(snapshot)
        } else {
            Err(PolicyErrors(errors))
        }
    }

    /// The policy for calls to `service`: one naming its port, else one for
    /// every port of the service, else none (defaults apply).
    pub fn policy_for(&self, service: &ServiceKey) -> Option<Arc<ResiliencePolicy>> {
        if let Some(policy) = self.policies.get(service) {
            return Some(policy.clone());
        }
        self.all_ports
            .get(&service.namespace)?
            .get(&service.name)
            .cloned()
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
            install_lock: Mutex::new(()),
        }
    }

    /// The endpoints of `service`: static ones first, else DNS for the
    /// service's host name. `Err` is a `ProxyError` of kind no-endpoints.
    pub async fn resolve(&self, service: &ServiceKey) -> Result<Arc<[SocketAddr]>, ProxyError> {
        crate::endpoints::resolve(self, service).await
    }

    /// In control-plane mode, subscribes `service` the first time it is met
    /// and waits briefly for its first update; at once otherwise.
    pub async fn discovered(&self, service: &ServiceKey) {
        self.subscriptions.discovered(service).await;
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

    fn policy(target: &str) -> Vec<Document> {
        let yaml = format!(
            "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: p, namespace: shop}}\n\
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
        let mut documents = policy("{service: payments}");
        documents.extend(policy("{service: payments, port: 8080}"));
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
        let mut documents = policy("{service: payments, port: 8080}");
        documents.extend(policy("{service: payments, port: 8080}"));
        let errors = Snapshot::from_documents(documents, "default", "test").expect_err("duplicate");
        let message = errors.to_string();
        assert!(message.contains("document 2"), "{message}");
        assert!(
            message.contains("payments.shop:8080 already has a ResiliencePolicy (document 1)"),
            "{message}"
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
