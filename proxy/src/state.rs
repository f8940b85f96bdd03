//! What every listener shares ([`Shared`]): the current policy snapshot,
//! endpoint resolution, subscriptions, metrics and readiness. Owned by the
//! control side (`policy_source`, `discovery`, `admin`); the data path
//! (`server`, `outbound`, `inbound`, `forward`) only reads it.
//!
//! A [`Snapshot`] (`snapshot.rs`) is immutable and replaced as a whole
//! ([`Shared::install`]), so a request that loaded one keeps a consistent
//! view while a reload lands.
//!
//! `Shared` sits above what it holds: `snapshot`, `subscriptions`,
//! `endpoints` (the DNS cache) and `metrics` never import it; `discovery`
//! and `policy_source`, which write it, do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use levee_proto::policy::{ResiliencePolicy, ServiceKey};

use crate::endpoints::{self, DnsCache};
use crate::errors::ProxyError;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::subscriptions::{Subscription, Subscriptions};

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
        if let Some(known) = endpoints::known(&self.snapshot.load(), service) {
            return known;
        }
        self.dns
            .resolve(service, &self.namespace, &self.metrics)
            .await
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
    use super::*;

    #[test]
    fn install_bumps_the_version_and_updates_endpoint_gauges() {
        let shared = Shared::new("default".into(), Metrics::new());
        let service = ServiceKey::new("payments", "shop", 8080);
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
