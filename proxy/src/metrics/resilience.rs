//! Handles of the resilience families whose series carry a `service`
//! label: retries, the retry budget, circuit breakers, the proxy's own
//! refusals and timeouts. Each handle records its series under its service
//! ([`super::series`]), so forgetting a destination removes them.

use prometheus_client::metrics::counter::Counter;

use super::labels::{
    CircuitLabels, Direction, RejectedLabels, RetryLabels, ServiceRouteLabels, TimeoutLabels,
    TransitionLabels,
};
use super::registry::Metrics;
use super::series::Series;

/// Circuit breaker states as `levee_circuit_state` encodes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl Metrics {
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
}
