//! The resilience engine: the policy layers of DESIGN.md §2 as tower
//! middleware, one folder per mechanism, assembled per request by
//! [`ServiceState::stack`] in this order (outermost first):
//!
//! rate limit → request timeout → retry → service breaker → concurrency →
//! balancer → the endpoint service (connection pool).
//!
//! - `timeout`: the whole-call deadline (and `grpc-timeout` parsing/encoding).
//! - `retry`: conditions, budget, backoff, replayable bodies, per-try timeouts.
//! - `balance`: power of two choices over peak-EWMA, respecting ejection.
//! - `attempt`: request extensions the retry layer hands to the layers inside.
//! - `classify`: what one attempt's outcome was (success, status, error, cancelled).
//! - `breaker`: the service circuit breaker (CLOSED / OPEN / HALF_OPEN) and its layer.
//! - `health`: per-endpoint breakers (outlier ejection) the balancer respects.
//! - `ratelimit`: GCRA rate limits (outbound per service, inbound total or per client).
//! - `concurrency`: the bulkhead (in-flight cap plus a bounded queue).
//! - `reuse`: state kept across policy updates while its config is equal.
//! - `route` / `service`: a route's compiled config; a service's state.
//!
//! [`Resilience`] keeps one [`ServiceState`] per target service, so budgets,
//! breakers and load estimates outlive requests and policy updates.

pub mod attempt;
pub mod balance;
pub mod breaker;
pub mod classify;
pub mod concurrency;
pub mod health;
pub mod ratelimit;
pub mod retry;
pub mod reuse;
pub mod route;
pub mod service;
pub mod timeout;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use http::{Request, Response};
use levee_proto::policy::{ResiliencePolicy, ServiceKey};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::body::{BoxBody, BoxError};
use crate::metrics::Metrics;
use balance::BalanceLayer;
use breaker::ServiceBreakerLayer;
use concurrency::ConcurrencyLayer;
use retry::RetryLayer;
pub use route::RouteConfig;
pub use service::ServiceState;
use timeout::RequestTimeoutLayer;

/// The stack's response future.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send + 'static>>;

/// Services whose state is kept. Past this (authorities come from the app's
/// requests), the table is cleared and state starts over: memory stays bounded.
const MAX_SERVICES: usize = 4096;

/// The per-service resilience state of the outbound side.
#[derive(Debug)]
pub struct Resilience {
    metrics: Metrics,
    services: RwLock<HashMap<ServiceKey, Arc<ServiceState>>>,
}

impl Resilience {
    pub fn new(metrics: Metrics) -> Self {
        Resilience {
            metrics,
            services: RwLock::new(HashMap::new()),
        }
    }

    /// The state of `key`, created on first use with `policy` compiled.
    pub fn service(
        &self,
        key: &ServiceKey,
        policy: Option<&Arc<ResiliencePolicy>>,
    ) -> Arc<ServiceState> {
        if let Some(found) = self
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return found.clone();
        }
        let mut services = self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if services.len() >= MAX_SERVICES && !services.contains_key(key) {
            services.clear();
        }
        services
            .entry(key.clone())
            .or_insert_with(|| Arc::new(ServiceState::new(&key.to_string(), policy, &self.metrics)))
            .clone()
    }
}

impl ServiceState {
    /// Sends `req` on `route` through the whole stack, ending in `endpoint`
    /// (which reads the chosen [`balance::Endpoint`] from the request).
    ///
    /// The future is boxed here, once, where its type is concrete: an
    /// `async fn` over the generic stack defeats rustc's `Send` proof in
    /// callers (rust-lang/rust#100013).
    pub fn call<S>(&self, route: &RouteConfig, endpoint: S, req: Request<BoxBody>) -> ResponseFuture
    where
        S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = BoxError>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let stack = ServiceBuilder::new()
            .option_layer(self.rate_limit())
            .layer(RequestTimeoutLayer::new(
                route.request_timeout,
                self.label.clone(),
                route.request_timeouts.clone(),
            ))
            .layer(RetryLayer::new(route.retry.clone()))
            .option_layer(self.breaker().map(ServiceBreakerLayer::new))
            .option_layer(self.bulkhead().map(ConcurrencyLayer::new))
            .layer(BalanceLayer::new(self.balancer.clone()))
            .service(endpoint);
        Box::pin(stack.oneshot(req))
    }
}

#[cfg(test)]
mod tests;
