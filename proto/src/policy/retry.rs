//! The retry policy as written (`spec.outbound.retry`, and a route's
//! field-by-field override of it): how many retries, on which outcomes,
//! the backoff between attempts and the retry budget. A leaf: both
//! `outbound.rs` (the service's policy) and `route.rs` (a route's override)
//! name it; [`crate::policy::effective`] resolves it into plain values.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::FailureCondition;
use super::duration::Duration;
use super::grpc_status::GrpcStatus;

/// Retry policy. Every field is optional; unset fields take the default (at
/// service level) or the service's value (in a route override).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 2; 0 disables retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// HTTP-level conditions that are retried (default `[connect-failure, refused-stream]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<FailureCondition>>,
    /// gRPC status codes that are retried (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_on: Option<Vec<GrpcStatus>>,
    /// Exponential backoff with full jitter between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<RetryBackoff>,
    /// Retry budget (service level only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    /// Retry POST/PATCH without an `Idempotency-Key` header (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_non_idempotent: Option<bool>,
    /// Request bodies larger than this are not retried (default 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replay_bytes: Option<u64>,
    /// Wait for a 429/503 `Retry-After` (within the deadline) before retrying (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_retry_after: Option<bool>,
}

/// `retry.backoff` as written: the n-th retry (from 1) waits a random time
/// in `[0, min(max, base × 2^(n-1))]` ("full jitter").
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBackoff {
    /// First backoff ceiling (default 25ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Duration>,
    /// Largest backoff ceiling (default 250ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// Retries may add at most `percent`% of the requests seen in `window`, plus
/// `minPerSecond` retries per second (Linkerd / tower `TpsBudget` semantics).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retry ratio in percent of requests (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed per second regardless of the ratio (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_second: Option<u32>,
    /// How long a request counts towards the budget (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}
