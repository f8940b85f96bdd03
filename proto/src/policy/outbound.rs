//! The policy sections as written by operators: outbound (timeouts,
//! circuit breaker, rate limit, concurrency, and the retry policy of
//! `retry.rs` and the routes of `route.rs`, which both sections name) and
//! inbound.
//!
//! Fields with a documented default are `Option`s here, so that a route
//! override can say "not set, inherit" and `/config` shows what was written;
//! [`crate::policy::effective`] resolves them into plain values.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::FailureCondition;
use super::duration::Duration;
use super::retry::RetryPolicy;
use super::route::{Route, RouteRequest};

/// What a caller's proxy does when it calls the target service.
///
/// `OutboundPolicy::default()` is "no policy at all": no request timeout,
/// retries only on connect failure / refused stream, no breaker, no limits.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundPolicy {
    /// Deadlines for the whole call, each attempt, connecting and idling.
    #[serde(default, skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
    /// Retries; `None` means the safe default (connect failure / refused stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Per-service breaker and per-endpoint ejection; `None` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Token bucket over all calls to the service from this proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Bulkhead: calls in flight to the service from this proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Per-route overrides; the first matching route wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// Service-level outbound timeouts. `0s` turns `request`/`perTry` off.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// The whole call, all attempts and backoff included (default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// Each attempt (default: off, i.e. bounded only by `request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try: Option<Duration>,
    /// Establishing a TCP connection to an endpoint (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    /// Stream idle: a response body with no frame from the upstream for this
    /// long ends with an error (default 60s; Envoy's route `idle_timeout`).
    /// Pooled connections' idle time is the proxy's `--upstream-idle-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}

impl Timeouts {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Timeouts::default()
    }
}

/// Circuit breaking: per-endpoint ejection after consecutive failures, and a
/// per-service CLOSED/OPEN/HALF_OPEN breaker on failure and slow-call rates.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Outcomes counted as failures (default `[5xx, connect-failure, timeout, reset]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_on: Option<Vec<FailureCondition>>,
    /// Consecutive failures that eject an endpoint (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Failure-rate trip of the service breaker (default 50% of ≥20 calls in 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRate>,
    /// Slow-call trip of the service breaker (default off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<SlowCall>,
    /// How long the breaker / an ejection stays open (default 5s growing to 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<OpenDuration>,
    /// Trial calls let through in HALF_OPEN (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
    /// Never eject more than this percent of endpoints (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<f64>,
}

/// The service breaker opens when at least `percent`% of at least
/// `minRequests` calls in the last `window` failed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailureRate {
    /// Threshold in percent (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Calls needed in the window before the rate counts (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// Sliding window (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// The service breaker opens when at least `percent`% of the calls in the
/// failure-rate window took longer than `duration`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlowCall {
    /// A call slower than this is slow (required).
    pub duration: Duration,
    /// Threshold in percent (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// Open time: `base` on the first trip, doubling on each consecutive trip, up to `max`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenDuration {
    /// First open time (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Duration>,
    /// Longest open time (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// Token bucket: `requestsPerSecond` sustained, `burst` at once.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate (required, > 0).
    pub requests_per_second: u32,
    /// Bucket size (default: `requestsPerSecond`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Inbound only: one bucket per client (source IP) instead of one in total (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<bool>,
}

/// Bulkhead: at most `maxInFlight` calls at once, `maxQueued` more waiting.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Concurrency {
    /// Calls in flight (required, > 0).
    pub max_in_flight: u32,
    /// Calls waiting for a slot; beyond that, 503 at once (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
}

/// What the service's own proxy does with calls that arrive.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPolicy {
    /// Admission rate limit (optionally per client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Calls handed to the local app at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Deadline for the local app's answer.
    #[serde(default, skip_serializing_if = "InboundTimeouts::is_empty")]
    pub timeouts: InboundTimeouts,
    /// mTLS mode and allowed client identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<super::mtls::InboundMtls>,
}

impl InboundPolicy {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == InboundPolicy::default()
    }
}

/// Inbound timeouts.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundTimeouts {
    /// The local app's whole answer (default off; `0s` is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
}

impl InboundTimeouts {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.request.is_none()
    }
}

impl OutboundPolicy {
    /// Whether nothing is set (the "no policy" default).
    pub fn is_empty(&self) -> bool {
        *self == OutboundPolicy::default()
    }

    /// The first route whose match accepts `req`, with its index.
    pub fn find_route(&self, req: &RouteRequest<'_>) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.r#match.matches(req))
    }
}
