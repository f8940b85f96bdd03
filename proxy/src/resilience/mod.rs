//! The resilience engine: the policy layers of DESIGN.md §2 as tower
//! middleware, one folder per mechanism, assembled once per route by
//! [`stack`] in this order (outermost first):
//!
//! rate limit → service breaker → request timeout → retry → concurrency →
//! balancer → the endpoint service (connection pool).
//!
//! The service breaker judges logical calls (the outcome after retries, a
//! request timeout included); endpoint health judges each attempt.
//!
//! - `timeout`: the whole-call deadline (and `grpc-timeout` parsing/encoding).
//! - `retry`: conditions, budget, backoff, replayable bodies, per-try timeouts.
//! - `balance`: power of two choices over peak-EWMA, respecting ejection.
//! - `call`: the one request extension of a call (its attempt record, request and
//!   attempt deadlines, connect timeout).
//! - `classify`: what one attempt's outcome was (success, status, error, cancelled).
//! - `breaker`: the service circuit breaker (CLOSED / OPEN / HALF_OPEN) and its layer.
//! - `health`: per-endpoint breakers (outlier ejection) the balancer respects.
//! - `ratelimit`: GCRA rate limits (outbound per service, inbound total or per client).
//! - `concurrency`: the bulkhead (in-flight cap plus a bounded queue).
//! - `route`: a route's compiled config; `stack`: its ready-built stack.
//! - `destination`: one target service's state and its compiled route table.
//! - `reuse`: state kept across policy updates while its config is equal.
//!
//! One [`Destination`] per target service (the outbound side keeps the
//! table), so budgets, breakers and load estimates outlive requests and
//! policy updates.

pub mod balance;
pub mod breaker;
pub mod call;
pub mod classify;
pub mod concurrency;
pub mod destination;
pub mod health;
pub mod ratelimit;
pub mod retry;
pub mod reuse;
pub mod route;
pub mod stack;
pub mod timeout;

use std::future::Future;
use std::pin::Pin;

use http::Response;

use crate::body::{BoxBody, BoxError};
pub use destination::{Destination, RouteTable};
pub use route::RouteConfig;
pub use stack::RouteStack;

/// The stack's response future.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send + 'static>>;

#[cfg(test)]
mod tests;
