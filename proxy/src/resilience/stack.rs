//! [`RouteStack`]: one route's whole tower stack, built once when the policy
//! is compiled (never per request), in this order (outermost first):
//!
//! rate limit → service breaker → request timeout → retry → concurrency →
//! balancer → the endpoint service (connection pool).
//!
//! The service breaker sits outside the request timeout and the retry
//! layer, so it judges logical calls: the outcome after retries, a request
//! timeout included. Endpoint health (inside the balancer) judges attempts.
//!
//! The stack's type is erased once, into a [`RouteCall`]: a request clones
//! the ready stack (reference counts only; every layer keeps its state
//! behind an `Arc`) and boxes its response future.

use std::sync::Arc;

use http::Request;
use prometheus_client::metrics::counter::Counter;
use tower::{ServiceBuilder, ServiceExt};

use super::ResponseFuture;
use super::balance::{BalanceLayer, Balancer};
use super::breaker::{ServiceBreaker, ServiceBreakerLayer};
use super::concurrency::{Bulkhead, ConcurrencyLayer};
use super::ratelimit::RateLimitLayer;
use super::retry::RetryLayer;
use super::route::RouteConfig;
use super::timeout::RequestTimeoutLayer;
use crate::body::{BoxBody, BoxError, ProxyService};
use crate::errors::{ConnectCause, ErrorKind, ProxyError};
use crate::metrics::RequestMetrics;

/// A route's stack with its type erased: sends one logical call.
pub type RouteCall = Arc<dyn Fn(Request<BoxBody>) -> ResponseFuture + Send + Sync>;

/// One route of a destination, ready for requests.
#[derive(Clone)]
pub struct RouteStack {
    pub config: Arc<RouteConfig>,
    /// `levee_requests_total` / `levee_request_duration_seconds` of
    /// `direction="outbound"` for this service and route, resolved once.
    pub requests: RequestMetrics,
    call: RouteCall,
}

impl std::fmt::Debug for RouteStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStack")
            .field("route", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl RouteStack {
    /// Sends `req` through the whole stack.
    pub fn call(&self, req: Request<BoxBody>) -> ResponseFuture {
        (self.call)(req)
    }
}

/// The service-wide layers a route's stack is built with.
pub(super) struct ServiceLayers {
    pub label: Arc<str>,
    pub rate_limit: Option<RateLimitLayer>,
    pub breaker: Option<Arc<ServiceBreaker>>,
    pub bulkhead: Option<Arc<Bulkhead>>,
    pub balancer: Arc<Balancer>,
}

type Build = dyn Fn(Arc<RouteConfig>, RequestMetrics, &ServiceLayers) -> RouteStack + Send + Sync;

/// Builds route stacks around one endpoint service (whose type it hides).
pub(super) struct StackBuilder(Box<Build>);

impl StackBuilder {
    pub fn new<E>(endpoint: E) -> StackBuilder
    where
        E: ProxyService,
    {
        StackBuilder(Box::new(move |config, requests, layers| {
            let call = build(&config, layers, endpoint.clone());
            RouteStack {
                config,
                requests,
                call,
            }
        }))
    }

    pub fn route(
        &self,
        config: Arc<RouteConfig>,
        requests: RequestMetrics,
        layers: &ServiceLayers,
    ) -> RouteStack {
        (self.0)(config, requests, layers)
    }
}

fn build<E>(config: &RouteConfig, layers: &ServiceLayers, endpoint: E) -> RouteCall
where
    E: ProxyService,
{
    let connect_timeouts = config.connect_timeouts.clone();
    let endpoint = endpoint.map_err(move |e: BoxError| count_connect_timeout(e, &connect_timeouts));
    let stack = ServiceBuilder::new()
        .option_layer(layers.rate_limit.clone())
        .option_layer(layers.breaker.clone().map(ServiceBreakerLayer::new))
        .layer(RequestTimeoutLayer::new(
            config.request_timeout,
            layers.label.clone(),
            config.request_timeouts.clone(),
        ))
        .layer(RetryLayer::new(config.retry.clone()))
        .option_layer(layers.bulkhead.clone().map(ConcurrencyLayer::new))
        .layer(BalanceLayer::new(layers.balancer.clone()))
        .service(endpoint);
    Arc::new(move |req| Box::pin(stack.clone().oneshot(req)))
}

/// Counts a connect that timed out (as opposed to one refused).
fn count_connect_timeout(error: BoxError, counter: &Counter) -> BoxError {
    if error
        .downcast_ref::<ProxyError>()
        .is_some_and(|e| e.kind == ErrorKind::UpstreamConnect(ConnectCause::TimedOut))
    {
        counter.inc();
    }
    error
}
