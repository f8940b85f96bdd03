//! The resilience engine: the policy layers of DESIGN.md §2 as tower
//! middleware, one folder per mechanism.
//!
//! - `classify`: what one attempt's outcome was (success, status, error, cancelled).
//! - `breaker`: the service circuit breaker (CLOSED / OPEN / HALF_OPEN) and its layer.
//! - `health`: per-endpoint breakers (outlier ejection) the balancer respects.
//! - `ratelimit`: GCRA rate limits (outbound per service, inbound total or per client).
//! - `concurrency`: the bulkhead (in-flight cap plus a bounded queue).

pub mod breaker;
pub mod classify;
pub mod concurrency;
pub mod health;
pub mod ratelimit;
