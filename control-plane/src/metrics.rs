//! The control plane's Prometheus metrics (served on `/metrics`): connected
//! proxies, push latency, ACK/NACK counts, store operations, quarantined
//! records and what the limits refused.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `levee_cp_store_operations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    /// `apply`, `delete`, `get`, `list`.
    pub op: &'static str,
    /// `ok`, `invalid`, `conflict`, `not_found`, `error`.
    pub result: &'static str,
}

/// Labels of `levee_cp_updates_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpdateLabels {
    /// `ack` or `nack`.
    pub result: &'static str,
}

/// Labels of `levee_cp_admin_requests_rejected_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// `unauthenticated` or `not_loopback`.
    pub reason: &'static str,
}

/// Labels of `levee_cp_certificates_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertRefusedLabels {
    /// One of [`crate::identity::Refusal::REASONS`].
    pub reason: &'static str,
}

/// Labels of `levee_cp_watch_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchRefusedLabels {
    /// `streams_per_peer`, `subscriptions`, `message_too_large`, and with
    /// identities on: `no_certificate`, `identity_mismatch`, `address_mismatch`.
    pub reason: &'static str,
}

/// Handles to every metric; clone freely (all fields are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Proxies with an open `Discovery.Watch` stream.
    pub connected_proxies: Gauge,
    /// Time from a service's state changing to its update being handed to a stream.
    pub push_latency: Histogram,
    /// ServiceUpdates sent.
    pub updates_sent: Counter,
    /// AddressUpdates sent (answers to subscriptions by address).
    pub address_answers: Counter,
    /// ACKs and NACKs received.
    pub updates: Family<UpdateLabels, Counter>,
    /// Store calls by operation and result.
    pub store_ops: Family<StoreOpLabels, Counter>,
    /// The store's current revision.
    pub store_revision: Gauge,
    /// Store records in the quarantine table (set when the control plane starts).
    pub store_quarantined: Gauge,
    /// Admin calls refused by authentication.
    pub admin_rejected: Family<RejectLabels, Counter>,
    /// Watch streams refused or ended by a limit.
    pub watch_refused: Family<WatchRefusedLabels, Counter>,
    /// Workload certificates issued by Certify.
    pub certificates_issued: Counter,
    /// Certify calls refused, by reason.
    pub certificates_refused: Family<CertRefusedLabels, Counter>,
    /// HTTP connections closed at once because `--http-max-connections` were open.
    pub http_refused: Counter,
    registry: Arc<Registry>,
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connected_proxies = Gauge::default();
        registry.register(
            "levee_cp_connected_proxies",
            "Proxies with an open Discovery.Watch stream",
            connected_proxies.clone(),
        );
        // 100µs .. ~3.3s
        let push_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "levee_cp_push_latency_seconds",
            "Time from a service's change to its update being sent to a proxy",
            push_latency.clone(),
        );
        let updates_sent = Counter::default();
        registry.register(
            "levee_cp_updates_sent",
            "ServiceUpdates sent to proxies",
            updates_sent.clone(),
        );
        let address_answers = Counter::default();
        registry.register(
            "levee_cp_address_answers_sent",
            "AddressUpdates sent to proxies (which service owns a destination address)",
            address_answers.clone(),
        );
        let updates = Family::<UpdateLabels, Counter>::default();
        registry.register(
            "levee_cp_updates",
            "ACKs and NACKs received from proxies",
            updates.clone(),
        );
        let store_ops = Family::<StoreOpLabels, Counter>::default();
        registry.register(
            "levee_cp_store_operations",
            "Store operations by op and result",
            store_ops.clone(),
        );
        let store_revision = Gauge::default();
        registry.register(
            "levee_cp_store_revision",
            "Current revision of the policy store",
            store_revision.clone(),
        );
        let store_quarantined = Gauge::default();
        registry.register(
            "levee_cp_store_quarantined_records",
            "Store records moved aside because they could not be read or no longer validate",
            store_quarantined.clone(),
        );
        let admin_rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "levee_cp_admin_requests_rejected",
            "PolicyAdmin calls refused before reaching the API",
            admin_rejected.clone(),
        );
        let watch_refused = Family::<WatchRefusedLabels, Counter>::default();
        // Every reason is exposed from the start, at 0.
        for reason in [
            "streams_per_peer",
            "subscriptions",
            "message_too_large",
            "no_certificate",
            "identity_mismatch",
            "address_mismatch",
        ] {
            let _ = watch_refused.get_or_create(&WatchRefusedLabels { reason });
        }
        registry.register(
            "levee_cp_watch_refused",
            "Discovery.Watch streams refused or ended by a limit, by reason",
            watch_refused.clone(),
        );
        let certificates_issued = Counter::default();
        registry.register(
            "levee_cp_certificates_issued",
            "Workload certificates issued by Identity.Certify",
            certificates_issued.clone(),
        );
        let certificates_refused = Family::<CertRefusedLabels, Counter>::default();
        for reason in crate::identity::Refusal::REASONS {
            let _ = certificates_refused.get_or_create(&CertRefusedLabels { reason });
        }
        registry.register(
            "levee_cp_certificates_refused",
            "Identity.Certify calls refused, by reason",
            certificates_refused.clone(),
        );
        let http_refused = Counter::default();
        registry.register(
            "levee_cp_http_connections_refused",
            "HTTP connections closed at once because --http-max-connections were open",
            http_refused.clone(),
        );
        Metrics {
            connected_proxies,
            push_latency,
            updates_sent,
            address_answers,
            updates,
            store_ops,
            store_revision,
            store_quarantined,
            admin_rejected,
            watch_refused,
            certificates_issued,
            certificates_refused,
            http_refused,
            registry: Arc::new(registry),
        }
    }

    /// Counts one store operation.
    pub fn store_op(&self, op: &'static str, result: &'static str) {
        self.store_ops
            .get_or_create(&StoreOpLabels { op, result })
            .inc();
    }

    /// Counts one Watch refusal.
    pub fn watch_refused(&self, reason: &'static str) {
        self.watch_refused
            .get_or_create(&WatchRefusedLabels { reason })
            .inc();
    }

    /// Sets the revision gauge.
    pub fn set_revision(&self, revision: u64) {
        self.store_revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
