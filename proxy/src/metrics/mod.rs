//! The proxy's Prometheus metrics: one [`Metrics`] owns a `prometheus-client`
//! registry (no global registry, so tests can build their own) and every
//! metric family of DESIGN.md §5. Names and labels are a contract; the catalog
//! is `docs/metrics.md`.
//!
//! Hot path: [`Metrics::requests`] hands out a [`RequestMetrics`] whose label
//! handles are resolved once per (direction, service, route) and cached.
//!
//! Bounded: every series with a `service` label is remembered under its
//! service ([`series`], and the route cache for the request families), so
//! [`Metrics::forget_destination`] removes all of a forgotten destination's
//! series; tables that forget entries count it in
//! `levee_state_evictions_total{table}`.

pub mod identity;
mod labels;
mod request;
mod series;
mod tcp;
mod tls;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

pub use labels::Direction;
pub use request::RequestMetrics;
pub use tcp::{TcpMetrics, TcpOutcome, target as tcp_target};
pub use tls::{MAX_CLIENT_LABELS, NO_IDENTITY, OTHER_CLIENTS, TlsMetrics, TlsResult};

use labels::{
    CircuitLabels, EndpointLabels, RejectedLabels, RequestLabels, RetryLabels, RouteLabels,
    ServiceRouteLabels, StateLabels, TimeoutLabels, TransitionLabels, UpdateLabels,
};
use request::{DurationFamily, RouteCache};
use series::{Series, SeriesByService};

/// The bounded tables keyed by what callers send, as the `table` label of
/// `levee_state_evictions_total` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateTable {
    /// Outbound destinations (by `Host` / `:authority`).
    Destinations,
    /// Cached DNS answers (by destination).
    Dns,
    /// Per-client rate-limit buckets (by client address).
    Clients,
    /// Control-plane subscriptions (by destination service), dropped when
    /// the set is full (evicted destinations are unsubscribed uncounted).
    Subscriptions,
    /// Destination addresses looked up by address (transparent mode): the
    /// least recently used are dropped (and unsubscribed) when full.
    Addresses,
}

impl StateTable {
    const ALL: [StateTable; 5] = [
        StateTable::Destinations,
        StateTable::Dns,
        StateTable::Clients,
        StateTable::Subscriptions,
        StateTable::Addresses,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StateTable::Destinations => "destinations",
            StateTable::Dns => "dns",
            StateTable::Clients => "clients",
            StateTable::Subscriptions => "subscriptions",
            StateTable::Addresses => "addresses",
        }
    }
}

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Suggested values of the `outcome` label of `levee_requests_total`. Proxy-made
/// errors use their `x-levee-error` name (`timeout`, `circuit-open`, ...).
pub mod outcome {
    /// The upstream answered and the answer is not a failure (HTTP < 500, gRPC OK or a client error).
    pub const SUCCESS: &str = "success";
    /// The upstream answered with a failure (HTTP 5xx, gRPC UNAVAILABLE, ...).
    pub const FAILURE: &str = "failure";
}

/// Latency buckets of `levee_request_duration_seconds`: 0.5 ms to 30 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Circuit breaker states as `levee_circuit_state` encodes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// Every metric family of the proxy. Cheap to clone (shared inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Holds a clone of every family below; only read by `encode`.
    registry: Registry,
    requests_total: Family<RequestLabels, Counter>,
    request_duration: DurationFamily,
    retries_total: Family<RetryLabels, Counter>,
    retry_budget_exhausted_total: Family<ServiceRouteLabels, Counter>,
    circuit_state: Family<CircuitLabels, Gauge>,
    circuit_transitions_total: Family<TransitionLabels, Counter>,
    rejected_total: Family<RejectedLabels, Counter>,
    timeouts_total: Family<TimeoutLabels, Counter>,
    endpoints: Family<EndpointLabels, Gauge>,
    policy_version: Gauge,
    policy_updates_total: Family<UpdateLabels, Counter>,
    control_plane_connected: Gauge,
    /// Finished spans not exported (queue full or export failed).
    trace_spans_dropped: Counter,
    state_evictions_total: Family<StateLabels, Counter>,
    /// `levee_tcp_*`: opaque TCP forwarding.
    tcp: tcp::TcpFamilies,
    /// `levee_identity_*`: the workload certificate.
    identity: identity::IdentityMetrics,

    /// `levee_tls_*`, `levee_authz_denied_total`: mTLS and authorization.
    tls: TlsMetrics,
    /// Per-route handles handed out by `requests`.
    routes: RouteCache,
    /// The other series with a `service` label, by service.
    series: SeriesByService,
    /// Services whose `levee_endpoints` endpoint health publishes (a breaker
    /// is configured); discovery's counts for them are ignored.
    endpoint_health_owned: Mutex<HashSet<String>>,
}

/// Registers `metric` as `name` with `help` in `registry` and returns it: the
/// registry keeps a clone for `encode`, the returned handle shares its series.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
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

        let tcp = tcp::TcpFamilies::register(r);
        let identity = identity::IdentityMetrics::register(r);
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
    pub fn identity(&self) -> &identity::IdentityMetrics {
        &self.inner.identity
    }

    /// The opaque TCP handles of `direction` and `target` (a
    /// [`tcp_target`] value); their series exist from this call on.
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

    /// `levee_retries_total{service,route,reason}`.
    pub fn retries(&self, service: &str, route: &str, reason: &str) -> Counter {
        let labels = RetryLabels {
            service: service.into(),
            route: route.into(),
            reason: reason.into(),
        };
        let counter = self.inner.retries_total.get_or_create_owned(&labels);
        self.inner.series.record(service, Series::Retry(labels));
        counter
    }

    /// `levee_retry_budget_exhausted_total{service,route}`.
    pub fn retry_budget_exhausted(&self, service: &str, route: &str) -> Counter {
        let labels = ServiceRouteLabels {
            service: service.into(),
            route: route.into(),
        };
        let counter = self
            .inner
            .retry_budget_exhausted_total
            .get_or_create_owned(&labels);
        self.inner
            .series
            .record(service, Series::BudgetExhausted(labels));
        counter
    }

    /// Sets `levee_circuit_state{service,endpoint}`; `endpoint` is "" for the service breaker.
    pub fn set_circuit_state(&self, service: &str, endpoint: &str, state: CircuitState) {
        let labels = CircuitLabels {
            service: service.into(),
            endpoint: endpoint.into(),
        };
        self.inner
            .circuit_state
            .get_or_create(&labels)
            .set(state as i64);
        self.inner.series.record(service, Series::Circuit(labels));
    }

    /// `levee_circuit_transitions_total{service,endpoint,to}`.
    pub fn circuit_transitions(&self, service: &str, endpoint: &str, to: CircuitState) -> Counter {
        let to = match to {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        };
        let labels = TransitionLabels {
            service: service.into(),
            endpoint: endpoint.into(),
            to,
        };
        let counter = self
            .inner
            .circuit_transitions_total
            .get_or_create_owned(&labels);
        self.inner
            .series
            .record(service, Series::Transition(labels));
        counter
    }

    /// `levee_rejected_total{direction,service,reason}`; `reason` is the
    /// `x-levee-error` name (circuit-open, rate-limited, overloaded, no-endpoints).
    pub fn rejected(&self, direction: Direction, service: &str, reason: &'static str) -> Counter {
        let labels = RejectedLabels {
            direction,
            service: service.into(),
            reason,
        };
        let counter = self.inner.rejected_total.get_or_create_owned(&labels);
        self.inner.series.record(service, Series::Rejected(labels));
        counter
    }

    /// `levee_timeouts_total{service,route,kind}`; kind is request, per-try, connect or idle.
    pub fn timeouts(&self, service: &str, route: &str, kind: &'static str) -> Counter {
        let labels = TimeoutLabels {
            service: service.into(),
            route: route.into(),
            kind,
        };
        let counter = self.inner.timeouts_total.get_or_create_owned(&labels);
        self.inner.series.record(service, Series::Timeout(labels));
        counter
    }

    /// Removes every series of the outbound destination `service` (it was
    /// evicted): its request, retry, breaker, rejection and timeout series,
    /// and `levee_endpoints` when endpoint health owned it (then `ready`
    /// goes back to `static_endpoints` when the snapshot lists some, else
    /// both states go). Discovery's own `levee_endpoints` series stay: the
    /// snapshot and the DNS cache bound and remove those.
    pub fn forget_destination(&self, service: &str, static_endpoints: Option<usize>) {
        let inner = &self.inner;
        for route in inner.routes.remove_service(Direction::Outbound, service) {
            route.remove_series(&inner.request_duration);
        }
        for series in inner.series.take(service) {
            match series {
                Series::Retry(labels) => {
                    inner.retries_total.remove(&labels);
                }
                Series::BudgetExhausted(labels) => {
                    inner.retry_budget_exhausted_total.remove(&labels);
                }
                Series::Circuit(labels) => {
                    inner.circuit_state.remove(&labels);
                }
                Series::Transition(labels) => {
                    inner.circuit_transitions_total.remove(&labels);
                }
                Series::Rejected(labels) => {
                    inner.rejected_total.remove(&labels);
                }
                Series::Timeout(labels) => {
                    inner.timeouts_total.remove(&labels);
                }
            }
        }
        let mut owned = self.endpoint_health_owned();
        if owned.remove(service) {
            match static_endpoints {
                Some(count) => self.write_endpoints(service, "ready", count),
                None => {
                    inner.endpoints.remove(&EndpointLabels {
                        service: service.into(),
                        state: "ready",
                    });
                }
            }
            inner.endpoints.remove(&EndpointLabels {
                service: service.into(),
                state: "ejected",
            });
        }
    }

    /// `levee_state_evictions_total{table}`.
    pub fn state_evictions(&self, table: StateTable) -> Counter {
        self.inner
            .state_evictions_total
            .get_or_create_owned(&StateLabels {
                table: table.as_str(),
            })
    }

    /// Sets `levee_endpoints{service,state}` (state: ready or ejected) as
    /// discovery sees it (static lists, DNS). Ignored while endpoint health
    /// owns the service's series ([`Metrics::set_endpoint_health`]).
    pub fn set_endpoints(&self, service: &str, state: &'static str, count: usize) {
        let owned = self.endpoint_health_owned();
        if !owned.contains(service) {
            self.write_endpoints(service, state, count);
        }
    }

    /// Endpoint health's numbers for `levee_endpoints{service}`: from now on
    /// it owns the series and discovery's [`Metrics::set_endpoints`] is ignored.
    pub fn set_endpoint_health(&self, service: &str, ready: usize, ejected: usize) {
        let mut owned = self.endpoint_health_owned();
        if !owned.contains(service) {
            owned.insert(service.to_owned());
        }
        // Written under the lock, so a concurrent discovery write cannot land last.
        self.write_endpoints(service, "ready", ready);
        self.write_endpoints(service, "ejected", ejected);
    }

    /// Endpoint health stops owning `levee_endpoints{service}` (its breaker
    /// was removed): `ready` becomes `count`, `ejected` goes away, and
    /// discovery's counts apply again. Nothing happens when it did not own it.
    pub fn release_endpoint_health(&self, service: &str, count: usize) {
        let mut owned = self.endpoint_health_owned();
        if owned.remove(service) {
            self.write_endpoints(service, "ready", count);
            self.inner.endpoints.remove(&EndpointLabels {
                service: service.into(),
                state: "ejected",
            });
        }
    }

    fn endpoint_health_owned(&self) -> MutexGuard<'_, HashSet<String>> {
        self.inner
            .endpoint_health_owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_endpoints(&self, service: &str, state: &'static str, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.inner
            .endpoints
            .get_or_create(&EndpointLabels {
                service: service.into(),
                state,
            })
            .set(count);
    }

    /// Drops the `levee_endpoints` series of a service that is gone.
    pub fn remove_endpoints(&self, service: &str) {
        for state in ["ready", "ejected"] {
            self.inner.endpoints.remove(&EndpointLabels {
                service: service.into(),
                state,
            });
        }
    }

    /// Sets `levee_policy_version`.
    pub fn set_policy_version(&self, version: u64) {
        self.inner
            .policy_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// Counts a policy update: accepted (`ack`) or refused (`nack`).
    pub fn policy_update(&self, accepted: bool) {
        let result = if accepted { "ack" } else { "nack" };
        self.inner
            .policy_updates_total
            .get_or_create(&UpdateLabels { result })
            .inc();
    }

    /// The current count of `levee_policy_updates_total{result}` (for tests and logs).
    pub fn policy_updates(&self, accepted: bool) -> u64 {
        let result = if accepted { "ack" } else { "nack" };
        self.inner
            .policy_updates_total
            .get(&UpdateLabels { result })
            .map_or(0, |c| c.get())
    }

    /// Sets `levee_control_plane_connected`.
    pub fn set_control_plane_connected(&self, connected: bool) {
        self.inner.control_plane_connected.set(i64::from(connected));
    }

    /// `levee_trace_spans_dropped_total`, for the trace exporter.
    pub fn trace_spans_dropped(&self) -> Counter {
        self.inner.trace_spans_dropped.clone()
    }

    /// Everything in OpenMetrics text format (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(error) = encode(&mut out, &self.inner.registry) {
            // Writing to a String cannot fail; a label encoder could.
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests;
