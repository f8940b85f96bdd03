//! The workload identity families: seconds left on the certificate the
//! proxy presents (from `Identity.Certify` or from identity files; computed
//! when scraped, so it falls between renewals) and renewals by result. Both
//! exist from the start; the expiry reads -1 until the first certificate
//! (and always without identity flags).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// No certificate yet.
const NONE: i64 = i64::MIN;

/// `levee_identity_cert_expiry_seconds`: notAfter minus now, at scrape time.
#[derive(Clone, Debug)]
struct ExpiryGauge(Arc<AtomicI64>);

impl EncodeMetric for ExpiryGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let not_after = self.0.load(Ordering::Relaxed);
        let left = if not_after == NONE {
            -1
        } else {
            not_after.saturating_sub(unix_now())
        };
        encoder.encode_gauge(&left)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    result: &'static str,
}

/// Handles of the identity families.
#[derive(Clone, Debug)]
pub struct IdentityMetrics {
    not_after: Arc<AtomicI64>,
    renewals: Family<RenewalLabels, Counter>,
}

impl IdentityMetrics {
    /// Registers both families in `registry`.
    pub(super) fn register(registry: &mut Registry) -> IdentityMetrics {
        let not_after = Arc::new(AtomicI64::new(NONE));
        registry.register(
            "levee_identity_cert_expiry_seconds",
            "Seconds until the proxy's workload certificate expires (-1: none yet)",
            ExpiryGauge(not_after.clone()),
        );
        let renewals = Family::<RenewalLabels, Counter>::default();
        for result in ["ok", "error"] {
            drop(renewals.get_or_create(&RenewalLabels { result }));
        }
        registry.register(
            "levee_identity_renewals",
            "Certificate requests to the control plane (the first one included), by result",
            renewals.clone(),
        );
        IdentityMetrics {
            not_after,
            renewals,
        }
    }

    /// A certificate valid until `not_after_unix` is in use.
    pub fn certified(&self, not_after_unix: i64) {
        self.not_after.store(not_after_unix, Ordering::Relaxed);
        self.renewals
            .get_or_create(&RenewalLabels { result: "ok" })
            .inc();
    }

    /// A certificate valid until `not_after_unix` is presented (mesh mTLS
    /// installed it; no renewal counted).
    pub fn in_use(&self, not_after_unix: i64) {
        self.not_after.store(not_after_unix, Ordering::Relaxed);
    }

    /// A certificate request failed.
    pub fn renewal_failed(&self) {
        self.renewals
            .get_or_create(&RenewalLabels { result: "error" })
            .inc();
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
