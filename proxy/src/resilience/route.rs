//! [`RouteConfig`]: one route's effective policy compiled for the data path:
//! durations converted, retry settings and budget bundled, metric handles
//! resolved — once per policy change, never per request.

use std::sync::Arc;
use std::time::Duration;

use levee_proto::policy::EffectiveOutbound;
use prometheus_client::metrics::counter::Counter;

use super::retry::{Backoff, BudgetSettings, Conditions, RetryBudget, RetryConfig, RetryMetrics};
use crate::metrics::Metrics;

/// Everything the layers need for requests on one (service, route).
#[derive(Debug)]
pub struct RouteConfig {
    /// The `route` label.
    pub name: Arc<str>,
    /// The merged policy this was compiled from (to notice changes).
    pub effective: EffectiveOutbound,
    pub request_timeout: Option<Duration>,
    /// Whether the policy sets `timeouts.request` for this route (even to
    /// `0s`, off). When not, the proxy's default response-head timeout
    /// ([`super::timeout::TimeoutDefaults`]) bounds the call instead.
    pub request_timeout_set: bool,
    /// `levee_timeouts_total{kind="request"}`.
    pub request_timeouts: Counter,
    pub retry: Arc<RetryConfig>,
    /// TCP connect bound for this route's attempts.
    pub connect_timeout: Duration,
    /// `levee_timeouts_total{kind="connect"}`.
    pub connect_timeouts: Counter,
    /// `timeouts.idle`: a response body with no frame for this long ends
    /// with an error (stream idle; pooled connections have their own flag).
    pub stream_idle_timeout: Duration,
    /// `levee_timeouts_total{kind="idle"}`.
    pub stream_idle_timeouts: Counter,
}

impl RouteConfig {
    /// Compiles `effective` for `service`, taking the retry budget from
    /// `budget` (so the caller can keep one across updates).
    /// `request_timeout_set`: the policy names `timeouts.request` for the
    /// route (the effective value cannot tell `0s` from absent).
    pub fn compile(
        service: &Arc<str>,
        effective: EffectiveOutbound,
        request_timeout_set: bool,
        budget: Arc<RetryBudget>,
        metrics: &Metrics,
    ) -> RouteConfig {
        let name: Arc<str> = effective.route.as_str().into();
        let r = &effective.retry;
        let conditions = Conditions {
            on: r.on.clone(),
            grpc_on: r.grpc_on.clone(),
            retry_non_idempotent: r.retry_non_idempotent,
        };
        let retry = RetryConfig {
            service: service.clone(),
            max_retries: r.max_retries,
            metrics: RetryMetrics::new(metrics, service, &name, &conditions),
            conditions,
            backoff: Backoff {
                base: r.backoff_base.get(),
                max: r.backoff_max.get(),
            },
            per_try: effective.timeouts.per_try.map(|d| d.get()),
            max_replay_bytes: r.max_replay_bytes,
            honor_retry_after: r.honor_retry_after,
            budget,
        };
        RouteConfig {
            request_timeout: effective.timeouts.request.map(|d| d.get()),
            request_timeout_set,
            request_timeouts: metrics.timeouts(service, &name, "request"),
            retry: Arc::new(retry),
            connect_timeout: effective.timeouts.connect.get(),
            connect_timeouts: metrics.timeouts(service, &name, "connect"),
            stream_idle_timeout: effective.timeouts.idle.get(),
            stream_idle_timeouts: metrics.timeouts(service, &name, "idle"),
            name,
            effective,
        }
    }
}

/// The budget settings of an effective policy.
pub fn budget_settings(effective: &EffectiveOutbound) -> BudgetSettings {
    BudgetSettings {
        percent: effective.retry.budget_percent,
        min_per_second: effective.retry.budget_min_per_second,
        window: effective.retry.budget_window.get(),
    }
}
