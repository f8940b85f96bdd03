//! Resolution of a policy into the values the proxy enforces: the matching
//! route's overrides merged field by field over the service-level outbound
//! policy, then every unset field filled with its documented default.

use serde::{Deserialize, Serialize};

use super::conditions::FailureCondition;
use super::duration::Duration;
use super::grpc_status::GrpcStatus;
use super::outbound::{CircuitBreaker, Concurrency, InboundPolicy, OutboundPolicy, RateLimit};
use super::retry::{RetryBackoff, RetryPolicy};
use super::route::{Route, RouteRequest};

/// The route name used when no route matches.
pub const DEFAULT_ROUTE: &str = "default";

/// Documented defaults (see `docs/policy.md`).
pub mod defaults {
    use super::{Duration, FailureCondition};

    /// `timeouts.connect`
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// `timeouts.idle`
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `retry.maxRetries`
    pub const MAX_RETRIES: u32 = 2;
    /// `retry.on`
    pub const RETRY_ON: [FailureCondition; 2] = [
        FailureCondition::ConnectFailure,
        FailureCondition::RefusedStream,
    ];
    /// `retry.backoff.base`
    pub const BACKOFF_BASE: Duration = Duration::from_millis(25);
    /// `retry.backoff.max` is this many times `retry.backoff.base` (250ms by default).
    pub const BACKOFF_MAX_FACTOR: u32 = 10;
    /// `retry.budget.percent`
    pub const BUDGET_PERCENT: f64 = 20.0;
    /// `retry.budget.minPerSecond`
    pub const BUDGET_MIN_PER_SECOND: u32 = 10;
    /// `retry.budget.window`
    pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);
    /// `retry.maxReplayBytes`
    pub const MAX_REPLAY_BYTES: u64 = 64 * 1024;
    /// `circuitBreaker.failureOn`
    pub const FAILURE_ON: [FailureCondition; 4] = [
        FailureCondition::ServerError,
        FailureCondition::ConnectFailure,
        FailureCondition::Timeout,
        FailureCondition::Reset,
    ];
    /// `circuitBreaker.consecutiveFailures`
    pub const CONSECUTIVE_FAILURES: u32 = 5;
    /// `circuitBreaker.failureRate.percent`
    pub const FAILURE_RATE_PERCENT: f64 = 50.0;
    /// `circuitBreaker.failureRate.minRequests`
    pub const FAILURE_RATE_MIN_REQUESTS: u32 = 20;
    /// `circuitBreaker.failureRate.window`
    pub const FAILURE_RATE_WINDOW: Duration = Duration::from_secs(10);
    /// `circuitBreaker.slowCall.percent`
    pub const SLOW_CALL_PERCENT: f64 = 100.0;
    /// `circuitBreaker.open.base`
    pub const OPEN_BASE: Duration = Duration::from_secs(5);
    /// `circuitBreaker.open.max`
    pub const OPEN_MAX: Duration = Duration::from_secs(60);
    /// `circuitBreaker.halfOpenProbes`
    pub const HALF_OPEN_PROBES: u32 = 3;
    /// `circuitBreaker.maxEjectedPercent`
    pub const MAX_EJECTED_PERCENT: f64 = 50.0;
}

/// Everything the outbound stack needs for one request, defaults resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveOutbound {
    /// The matching route's name, or `"default"`.
    pub route: String,
    /// Resolved timeouts.
    pub timeouts: EffectiveTimeouts,
    /// Resolved retry policy.
    pub retry: EffectiveRetry,
    /// Resolved breaker, if the policy has one.
    pub circuit_breaker: Option<EffectiveCircuitBreaker>,
    /// Resolved rate limit, if any.
    pub rate_limit: Option<EffectiveRateLimit>,
    /// Resolved concurrency limit, if any.
    pub concurrency: Option<EffectiveConcurrency>,
}

/// Resolved timeouts; `None` means off.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveTimeouts {
    /// Whole-call deadline.
    pub request: Option<Duration>,
    /// Per-attempt deadline.
    pub per_try: Option<Duration>,
    /// TCP connect deadline.
    pub connect: Duration,
    /// Stream idle: the longest gap between response body frames.
    pub idle: Duration,
}

/// Resolved retry policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRetry {
    /// Retries after the first attempt (0 = none).
    pub max_retries: u32,
    /// HTTP-level retry conditions.
    pub on: Vec<FailureCondition>,
    /// gRPC retry codes.
    pub grpc_on: Vec<GrpcStatus>,
    /// First backoff ceiling.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
    /// Budget ratio in percent.
    pub budget_percent: f64,
    /// Retries always allowed per second.
    pub budget_min_per_second: u32,
    /// Budget window.
    pub budget_window: Duration,
    /// Retry non-idempotent methods without `Idempotency-Key`.
    pub retry_non_idempotent: bool,
    /// Largest request body that is kept for replay.
    pub max_replay_bytes: u64,
    /// Honour `Retry-After` on 429/503.
    pub honor_retry_after: bool,
}

/// Resolved circuit breaker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveCircuitBreaker {
    /// Outcomes counted as failures.
    pub failure_on: Vec<FailureCondition>,
    /// Consecutive failures that eject an endpoint.
    pub consecutive_failures: u32,
    /// Failure-rate threshold in percent.
    pub failure_rate_percent: f64,
    /// Calls needed before the rate counts.
    pub failure_rate_min_requests: u32,
    /// Sliding window of the failure and slow-call rates.
    pub failure_rate_window: Duration,
    /// Slow-call trip, if configured.
    pub slow_call: Option<EffectiveSlowCall>,
    /// First open time.
    pub open_base: Duration,
    /// Longest open time.
    pub open_max: Duration,
    /// Trial calls in HALF_OPEN.
    pub half_open_probes: u32,
    /// Ejection cap in percent of endpoints.
    pub max_ejected_percent: f64,
}

/// Resolved slow-call trip.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSlowCall {
    /// A call slower than this is slow.
    pub duration: Duration,
    /// Threshold in percent of calls in the window.
    pub percent: f64,
}

/// Resolved token bucket.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRateLimit {
    /// Sustained rate.
    pub requests_per_second: u32,
    /// Bucket size.
    pub burst: u32,
    /// One bucket per client (inbound only).
    pub per_client: bool,
}

/// Resolved bulkhead.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveConcurrency {
    /// Calls in flight.
    pub max_in_flight: u32,
    /// Calls waiting.
    pub max_queued: u32,
}

/// Everything the inbound side needs, defaults resolved.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveInbound {
    /// Admission rate limit.
    pub rate_limit: Option<EffectiveRateLimit>,
    /// Calls handed to the app at once.
    pub concurrency: Option<EffectiveConcurrency>,
    /// Deadline for the app's answer (`None` = off).
    pub request_timeout: Option<Duration>,
}

/// `0s` means off.
fn nonzero(d: Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}

/// `over`'s set fields replace `base`'s; nested `backoff` merges field by field.
pub fn merge_retry(base: Option<&RetryPolicy>, over: Option<&RetryPolicy>) -> RetryPolicy {
    let base = base.cloned().unwrap_or_default();
    let Some(over) = over else { return base };
    let backoff = match (&base.backoff, &over.backoff) {
        (b, None) => b.clone(),
        (None, o) => o.clone(),
        (Some(b), Some(o)) => Some(RetryBackoff {
            base: o.base.or(b.base),
            max: o.max.or(b.max),
        }),
    };
    RetryPolicy {
        max_retries: over.max_retries.or(base.max_retries),
        on: over.on.clone().or(base.on),
        grpc_on: over.grpc_on.clone().or(base.grpc_on),
        backoff,
        budget: over.budget.clone().or(base.budget),
        retry_non_idempotent: over.retry_non_idempotent.or(base.retry_non_idempotent),
        max_replay_bytes: over.max_replay_bytes.or(base.max_replay_bytes),
        honor_retry_after: over.honor_retry_after.or(base.honor_retry_after),
    }
}

impl OutboundPolicy {
    /// The route matching `req` (first match wins) merged over the service policy.
    ///
    /// This allocates; on a hot path, resolve every route once per policy
    /// change with [`OutboundPolicy::effective_for`] and pick the result per
    /// request with [`OutboundPolicy::find_route`]'s index.
    pub fn effective(&self, req: &RouteRequest<'_>) -> EffectiveOutbound {
        self.effective_for(self.find_route(req).map(|(_, r)| r))
    }

    /// The service policy with `route`'s overrides (or none) merged in.
    pub fn effective_for(&self, route: Option<&Route>) -> EffectiveOutbound {
        let t = &self.timeouts;
        let rt = route.map(|r| &r.timeouts);
        let timeouts = EffectiveTimeouts {
            request: nonzero(rt.and_then(|r| r.request).or(t.request)),
            per_try: nonzero(rt.and_then(|r| r.per_try).or(t.per_try)),
            connect: t.connect.unwrap_or(defaults::CONNECT_TIMEOUT),
            idle: t.idle.unwrap_or(defaults::IDLE_TIMEOUT),
        };
        let merged = merge_retry(self.retry.as_ref(), route.and_then(|r| r.retry.as_ref()));
        EffectiveOutbound {
            route: route.map_or(DEFAULT_ROUTE, |r| r.name.as_str()).to_owned(),
            timeouts,
            retry: resolve_retry(&merged),
            circuit_breaker: self.circuit_breaker.as_ref().map(resolve_breaker),
            rate_limit: self.rate_limit.as_ref().map(resolve_rate_limit),
            concurrency: self.concurrency.as_ref().map(resolve_concurrency),
        }
    }
}

impl InboundPolicy {
    /// Defaults resolved.
    pub fn effective(&self) -> EffectiveInbound {
        EffectiveInbound {
            rate_limit: self.rate_limit.as_ref().map(resolve_rate_limit),
            concurrency: self.concurrency.as_ref().map(resolve_concurrency),
            request_timeout: nonzero(self.timeouts.request),
        }
    }
}

fn resolve_retry(r: &RetryPolicy) -> EffectiveRetry {
    let backoff = r.backoff.clone().unwrap_or_default();
    let budget = r.budget.clone().unwrap_or_default();
    let backoff_base = backoff.base.unwrap_or(defaults::BACKOFF_BASE);
    EffectiveRetry {
        max_retries: r.max_retries.unwrap_or(defaults::MAX_RETRIES),
        on: r.on.clone().unwrap_or_else(|| defaults::RETRY_ON.to_vec()),
        grpc_on: r.grpc_on.clone().unwrap_or_default(),
        backoff_base,
        backoff_max: backoff
            .max
            .unwrap_or_else(|| default_backoff_max(backoff_base)),
        budget_percent: budget.percent.unwrap_or(defaults::BUDGET_PERCENT),
        budget_min_per_second: budget
            .min_per_second
            .unwrap_or(defaults::BUDGET_MIN_PER_SECOND),
        budget_window: budget.window.unwrap_or(defaults::BUDGET_WINDOW),
        retry_non_idempotent: r.retry_non_idempotent.unwrap_or(false),
        max_replay_bytes: r.max_replay_bytes.unwrap_or(defaults::MAX_REPLAY_BYTES),
        honor_retry_after: r.honor_retry_after.unwrap_or(true),
    }
}

/// `backoff.max` when unset: ten times the base, as Envoy, but no more than
/// the backoff cap (1m) unless the base itself is longer.
pub(crate) fn default_backoff_max(base: Duration) -> Duration {
    base.get()
        .checked_mul(defaults::BACKOFF_MAX_FACTOR)
        .map_or(base, Duration::from)
        .min(super::validate::caps::BACKOFF.max(base))
}

fn resolve_breaker(b: &CircuitBreaker) -> EffectiveCircuitBreaker {
    let rate = b.failure_rate.clone().unwrap_or_default();
    let open = b.open.clone().unwrap_or_default();
    EffectiveCircuitBreaker {
        failure_on: b
            .failure_on
            .clone()
            .unwrap_or_else(|| defaults::FAILURE_ON.to_vec()),
        consecutive_failures: b
            .consecutive_failures
            .unwrap_or(defaults::CONSECUTIVE_FAILURES),
        failure_rate_percent: rate.percent.unwrap_or(defaults::FAILURE_RATE_PERCENT),
        failure_rate_min_requests: rate
            .min_requests
            .unwrap_or(defaults::FAILURE_RATE_MIN_REQUESTS),
        failure_rate_window: rate.window.unwrap_or(defaults::FAILURE_RATE_WINDOW),
        slow_call: b.slow_call.as_ref().map(|s| EffectiveSlowCall {
            duration: s.duration,
            percent: s.percent.unwrap_or(defaults::SLOW_CALL_PERCENT),
        }),
        open_base: open.base.unwrap_or(defaults::OPEN_BASE),
        open_max: open.max.unwrap_or(defaults::OPEN_MAX),
        half_open_probes: b.half_open_probes.unwrap_or(defaults::HALF_OPEN_PROBES),
        max_ejected_percent: b
            .max_ejected_percent
            .unwrap_or(defaults::MAX_EJECTED_PERCENT),
    }
}

fn resolve_rate_limit(r: &RateLimit) -> EffectiveRateLimit {
    EffectiveRateLimit {
        requests_per_second: r.requests_per_second,
        burst: r.burst.unwrap_or(r.requests_per_second.max(1)),
        per_client: r.per_client.unwrap_or(false),
    }
}

fn resolve_concurrency(c: &Concurrency) -> EffectiveConcurrency {
    EffectiveConcurrency {
        max_in_flight: c.max_in_flight,
        max_queued: c.max_queued.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests;
