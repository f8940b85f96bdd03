//! The registry and every family in it: [`Metrics`] builds them once
//! ([`Metrics::new`]), keeps their handles in one shared [`Inner`], hands out
//! the handles of the families other files define (requests, TCP, TLS,
//! identity) and encodes the whole registry for `/metrics`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::family::registered;
use super::identity::IdentityMetrics;
use super::labels::{
    CircuitLabels, Direction, EndpointLabels, RejectedLabels, RequestLabels, RetryLabels,
    RouteLabels, ServiceRouteLabels, StateLabels, StateTable, TimeoutLabels, TransitionLabels,
    UpdateLabels,
};
use super::request::{DurationFamily, RequestMetrics, RouteCache};
use super::series::SeriesByService;
use super::tcp::{TcpFamilies, TcpMetrics};
use super::tls::TlsMetrics;

/// Latency buckets of `levee_request_duration_seconds`: 0.5 ms to 30 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Every metric family of the proxy. Cheap to clone (shared inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub(super) inner: Arc<Inner>,
}

/// The families' handles, shared by every clone of [`Metrics`]; the files
/// that hand out a family's series read its field here.
#[derive(Debug)]
pub(super) struct Inner {
    /// Holds a clone of every family below; only read by `encode`.
    pub(super) registry: Registry,
    pub(super) requests_total: Family<RequestLabels, Counter>,
    pub(super) request_duration: DurationFamily,
    pub(super) retries_total: Family<RetryLabels, Counter>,
    pub(super) retry_budget_exhausted_total: Family<ServiceRouteLabels, Counter>,
    pub(super) circuit_state: Family<CircuitLabels, Gauge>,
    pub(super) circuit_transitions_total: Family<TransitionLabels, Counter>,
    pub(super) rejected_total: Family<RejectedLabels, Counter>,
    pub(super) timeouts_total: Family<TimeoutLabels, Counter>,
    pub(super) endpoints: Family<EndpointLabels, Gauge>,
    pub(super) policy_version: Gauge,
    pub(super) policy_updates_total: Family<UpdateLabels, Counter>,
    pub(super) control_plane_connected: Gauge,
    /// Finished spans not exported (queue full or export failed).
    pub(super) trace_spans_dropped: Counter,
    pub(super) state_evictions_total: Family<StateLabels, Counter>,
    /// `levee_tcp_*`: opaque TCP forwarding.
    pub(super) tcp: TcpFamilies,
    /// `levee_identity_*`: the workload certificate.
    pub(super) identity: IdentityMetrics,

    /// `levee_tls_*`, `levee_authz_denied_total`: mTLS and authorization.
    pub(super) tls: TlsMetrics,
    /// Per-route handles handed out by `requests`.
    pub(super) routes: RouteCache,
    /// The other series with a `service` label, by service.
    pub(super) series: SeriesByService,
    /// Services whose `levee_endpoints` endpoint health publishes (a breaker
    /// is configured); discovery's counts for them are ignored.
    pub(super) endpoint_health_owned: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered. The encoder leaves a
    /// labelled family out until its first series exists; the unlabelled
    /// gauges and both `levee_policy_updates_total` results start at 0.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let r = &mut registry;
        // Counter names are registered without `_total`: the encoder adds it.
        let requests_total = registered(
            r,
            "levee_requests",
            "Requests that finished, by direction, service, route, status code and outcome",
            Default::default(),
        );
        let request_duration = registered(
            r,
            "levee_request_duration_seconds",
            "Duration of requests through the proxy (all attempts), in seconds",
            DurationFamily::new_with_constructor(duration_histogram as fn() -> Histogram),
        );
        let retries_total = registered(
            r,
            "levee_retries",
            "Retry attempts sent, by reason",
            Default::default(),
        );
        let retry_budget_exhausted_total = registered(
            r,
            "levee_retry_budget_exhausted",
            "Retries not sent because the retry budget was exhausted",
            Default::default(),
        );
        let circuit_state = registered(
            r,
            "levee_circuit_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open (endpoint \"\" is the service breaker)",
            Default::default(),
        );
        let circuit_transitions_total = registered(
            r,
            "levee_circuit_transitions",
            "Circuit breaker state changes, by the state entered",
            Default::default(),
        );
        let rejected_total = registered(
            r,
            "levee_rejected",
            "Requests the proxy refused itself, by reason",
            Default::default(),
        );
        let timeouts_total = registered(
            r,
            "levee_timeouts",
            "Timeouts that fired, by kind",
            Default::default(),
        );
        let endpoints = registered(
            r,
            "levee_endpoints",
            "Endpoints per service, by state",
            Default::default(),
        );
        let policy_version = registered(
            r,
            "levee_policy_version",
            "Version of the policy in use",
            Default::default(),
        );
        let policy_updates_total: Family<UpdateLabels, Counter> = registered(
            r,
            "levee_policy_updates",
            "Policy updates accepted (ack) or refused (nack)",
            Default::default(),
        );
        let control_plane_connected = registered(
            r,
            "levee_control_plane_connected",
            "1 while the proxy's stream to the control plane is up, else 0",
            Default::default(),
        );
        let trace_spans_dropped = registered(
            r,
            "levee_trace_spans_dropped",
            "Finished trace spans dropped instead of exported (queue full, collector slow or down)",
            Default::default(),
        );
        let state_evictions_total: Family<StateLabels, Counter> = registered(
            r,
            "levee_state_evictions",
            "Entries evicted from a bounded table keyed by what callers send (least recently used or idle first)",
            Default::default(),
        );

        let tcp = TcpFamilies::register(r);
        let identity = IdentityMetrics::register(r);
        let tls = TlsMetrics::register(r, identity.clone());

        // Both results exist from the start, so `rate()` and alerts on nack see a 0 first.
        for result in ["ack", "nack"] {
            drop(policy_updates_total.get_or_create(&UpdateLabels { result }));
        }
        for table in StateTable::ALL {
            drop(state_evictions_total.get_or_create(&StateLabels {
                table: table.as_str(),
            }));
        }

        Metrics {
            inner: Arc::new(Inner {
                registry,
                requests_total,
                request_duration,
                retries_total,
                retry_budget_exhausted_total,
                circuit_state,
                circuit_transitions_total,
                rejected_total,
                timeouts_total,
                endpoints,
                policy_version,
                policy_updates_total,
                control_plane_connected,
                trace_spans_dropped,
                state_evictions_total,
                tcp,
                identity,
                tls,
                routes: RouteCache::default(),
                series: SeriesByService::default(),
                endpoint_health_owned: Mutex::default(),
            }),
        }
    }

    /// The workload certificate's metrics.
    pub fn identity(&self) -> &IdentityMetrics {
        &self.inner.identity
    }

    /// The opaque TCP handles of `direction` and `target` (a
    /// [`super::tcp_target`] value); their series exist from this call on.
    pub fn tcp(&self, direction: Direction, target: &'static str) -> TcpMetrics {
        self.inner.tcp.handles(direction, target)
    }

    /// The mTLS and authorization handles.
    pub fn tls(&self) -> TlsMetrics {
        self.inner.tls.clone()
    }

    /// The request metrics of one route. Handles are cached (up to a bound),
    /// so calling this per request costs a read lock and two map lookups.
    pub fn requests(&self, direction: Direction, service: &str, route: &str) -> RequestMetrics {
        let inner = &self.inner;
        if let Some(found) = inner.routes.get(direction, service, route) {
            return found;
        }
        inner.routes.get_or_insert(direction, service, route, || {
            let labels = RouteLabels {
                direction,
                service: service.into(),
                route: route.into(),
            };
            RequestMetrics::new(labels, &inner.request_duration, &inner.requests_total)
        })
    }

    /// `levee_state_evictions_total{table}`.
    pub fn state_evictions(&self, table: StateTable) -> Counter {
        self.inner
            .state_evictions_total
            .get_or_create_owned(&StateLabels {
                table: table.as_str(),
            })
    }

    /// `levee_trace_spans_dropped_total`, for the trace exporter.
    pub fn trace_spans_dropped(&self) -> Counter {
        self.inner.trace_spans_dropped.clone()
    }

    /// Everything in OpenMetrics text format (see [`super::CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(error) = encode(&mut out, &self.inner.registry) {
            // Writing to a String cannot fail; a label encoder could.
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}
