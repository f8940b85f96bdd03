//! [`Destination`]: everything resilience keeps for one target service —
//! retry budgets, service breaker, endpoint health, balancer, limits — and
//! its compiled policy, a [`RouteTable`] whose routes carry their
//! ready-built stacks.
//!
//! The table is compiled when the policy changes (never per request) and
//! swapped atomically; requests in flight keep the one they loaded. State
//! survives a swap unless its own config changed: a route's retry budget is
//! kept while its budget settings are equal, the breaker while its config is
//! equal (the breaker decides that itself, in place), the bulkhead and the
//! rate limit while theirs are, the balancer's load always.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use levee_proto::policy::{
    EffectiveConcurrency, EffectiveRateLimit, OutboundPolicy, ResiliencePolicy, Route, RouteRequest,
};

use super::balance::{Balancer, EndpointGate, EndpointRef, Pass};
use super::breaker::ServiceBreaker;
use super::classify::Outcome;
use super::concurrency::Bulkhead;
use super::health::EndpointHealth;
use super::ratelimit::{RateLimitLayer, RateLimiter};
use super::retry::RetryBudget;
use super::reuse::Reuse;
use super::route::{RouteConfig, budget_settings};
use super::stack::{RouteStack, ServiceLayers, StackBuilder};
use crate::body::ProxyService;
use crate::metrics::{Direction, Metrics};

/// One compiled policy of a destination: its routes, each with its stack.
#[derive(Debug)]
pub struct RouteTable {
    /// The policy document it came from (`None`: no policy, defaults).
    source: Option<Arc<ResiliencePolicy>>,
    /// Its outbound section, to match routes and to compare with the next one.
    outbound: OutboundPolicy,
    /// One per `outbound.routes` entry, same order.
    routes: Vec<RouteStack>,
    /// Requests no route matches.
    default: RouteStack,
}

impl RouteTable {
    /// The route (config and stack) for a request.
    pub fn route(&self, req: &RouteRequest<'_>) -> &RouteStack {
        match self.outbound.find_route(req) {
            Some((index, _)) => self.routes.get(index).unwrap_or(&self.default),
            None => &self.default,
        }
    }

    /// Whether a policy document applies (else defaults do).
    pub fn has_policy(&self) -> bool {
        self.source.is_some()
    }
}

/// The service-wide parts of a destination (routes cannot override them).
/// Behind the lock that also serialises recompiles.
#[derive(Debug, Default)]
struct ServiceWide {
    breaker: Option<Arc<ServiceBreaker>>,
    /// The outbound rate limit: limiter state and its layer (resolved metric handles).
    rate_limit: Reuse<EffectiveRateLimit, (Arc<RateLimiter>, RateLimitLayer)>,
    bulkhead: Reuse<EffectiveConcurrency, Bulkhead>,
}

/// Everything resilience keeps per target service.
pub struct Destination {
    /// The `service` label (`name.namespace:port`).
    pub label: Arc<str>,
    metrics: Metrics,
    routes: ArcSwap<RouteTable>,
    pub balancer: Arc<Balancer>,
    /// Endpoint breakers (outlier ejection); the balancer consults them.
    health: Arc<EndpointHealth>,
    /// Breaker, rate limit, bulkhead; locking it serialises recompiles
    /// (requests never take it on the fast path).
    service_wide: Mutex<ServiceWide>,
    /// Retry budgets by route name.
    budgets: Mutex<HashMap<Arc<str>, Arc<RetryBudget>>>,
    /// Builds a route's stack around the destination's endpoint service.
    build: StackBuilder,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("service", &self.label)
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// The destination `label` with `policy` (or defaults) compiled; every
    /// route's stack ends in `endpoint`, which sends one attempt to the
    /// endpoint the balancer chose ([`CallContext::endpoint`](super::call::CallContext::endpoint)).
    pub fn new<E>(
        label: &str,
        policy: Option<&Arc<ResiliencePolicy>>,
        metrics: &Metrics,
        endpoint: E,
    ) -> Self
    where
        E: ProxyService,
    {
        let label: Arc<str> = label.into();
        let outbound = policy.map(|p| p.spec.outbound.clone()).unwrap_or_default();
        let default = outbound.effective_for(None);
        let health = Arc::new(EndpointHealth::new(
            &label,
            default.circuit_breaker.as_ref(),
            metrics,
        ));
        let gate: Arc<dyn EndpointGate> = health.clone();
        let balancer = Arc::new(Balancer::new(label.clone(), gate));
        let build = StackBuilder::new(endpoint);
        let mut service_wide = ServiceWide::default();
        let budgets = Mutex::new(HashMap::new());
        let routes = Compiler {
            label: &label,
            metrics,
            budgets: &budgets,
            build: &build,
            balancer: &balancer,
            health: &health,
        }
        .compile(&mut service_wide, policy.cloned(), outbound);
        Destination {
            label,
            metrics: metrics.clone(),
            routes: ArcSwap::from_pointee(routes),
            balancer,
            health,
            service_wide: Mutex::new(service_wide),
            budgets,
            build,
        }
    }

    /// The route table for `policy` (the snapshot's current one),
    /// recompiling first when it differs from the last one seen.
    pub fn routes_for(&self, policy: Option<&Arc<ResiliencePolicy>>) -> Arc<RouteTable> {
        let current = self.routes.load_full();
        if same_source(current.source.as_ref(), policy) {
            return current;
        }
        self.recompile(policy);
        self.routes.load_full()
    }

    /// The service breaker, if the policy has one.
    pub fn breaker(&self) -> Option<Arc<ServiceBreaker>> {
        self.service_wide().breaker.clone()
    }

    /// The bulkhead, if the policy has a concurrency limit.
    pub fn bulkhead(&self) -> Option<Arc<Bulkhead>> {
        self.service_wide().bulkhead.get()
    }

    /// The outbound rate limiter, if the policy has one.
    pub fn rate_limiter(&self) -> Option<Arc<RateLimiter>> {
        self.service_wide()
            .rate_limit
            .get()
            .map(|pair| pair.0.clone())
    }

    fn service_wide(&self) -> MutexGuard<'_, ServiceWide> {
        self.service_wide
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn recompile(&self, policy: Option<&Arc<ResiliencePolicy>>) {
        let mut service_wide = self.service_wide();
        let current = self.routes.load_full();
        if same_source(current.source.as_ref(), policy) {
            return;
        }
        let outbound = policy.map(|p| p.spec.outbound.clone()).unwrap_or_default();
        if outbound == current.outbound {
            // A new document with the same outbound section: keep everything.
            self.routes.store(Arc::new(RouteTable {
                source: policy.cloned(),
                outbound,
                routes: current.routes.clone(),
                default: current.default.clone(),
            }));
            return;
        }
        let routes = Compiler {
            label: &self.label,
            metrics: &self.metrics,
            budgets: &self.budgets,
            build: &self.build,
            balancer: &self.balancer,
            health: &self.health,
        }
        .compile(&mut service_wide, policy.cloned(), outbound);
        self.routes.store(Arc::new(routes));
    }
}

fn same_source(a: Option<&Arc<ResiliencePolicy>>, b: Option<&Arc<ResiliencePolicy>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// What compiling a destination's policy reads and keeps across compiles.
struct Compiler<'a> {
    label: &'a Arc<str>,
    metrics: &'a Metrics,
    budgets: &'a Mutex<HashMap<Arc<str>, Arc<RetryBudget>>>,
    build: &'a StackBuilder,
    balancer: &'a Arc<Balancer>,
    health: &'a EndpointHealth,
}

impl Compiler<'_> {
    /// Compiles every route of `outbound` and builds its stack: first the
    /// service-wide parts (each kept while its config is equal), then the
    /// routes, reusing budgets whose settings are unchanged.
    fn compile(
        &self,
        service_wide: &mut ServiceWide,
        source: Option<Arc<ResiliencePolicy>>,
        outbound: OutboundPolicy,
    ) -> RouteTable {
        let Compiler {
            label,
            metrics,
            budgets,
            build,
            balancer,
            health,
        } = *self;
        let default = outbound.effective_for(None);
        update_service_wide(label, metrics, health, service_wide, &default);
        let layers = ServiceLayers {
            label: label.clone(),
            rate_limit: service_wide.rate_limit.get().map(|pair| pair.1.clone()),
            breaker: service_wide.breaker.clone(),
            bulkhead: service_wide.bulkhead.get(),
            balancer: balancer.clone(),
        };
        let route = |r: Option<&Route>| {
            let effective = outbound.effective_for(r);
            let settings = budget_settings(&effective);
            let name: Arc<str> = effective.route.as_str().into();
            let budget = {
                let mut budgets = budgets.lock().unwrap_or_else(PoisonError::into_inner);
                let entry = budgets
                    .entry(name)
                    .or_insert_with(|| Arc::new(RetryBudget::new(settings)));
                if entry.settings() != settings {
                    *entry = Arc::new(RetryBudget::new(settings));
                }
                entry.clone()
            };
            let request_timeout_set = r
                .and_then(|r| r.timeouts.request)
                .or(outbound.timeouts.request)
                .is_some();
            let config = Arc::new(RouteConfig::compile(
                label,
                effective,
                request_timeout_set,
                budget,
                metrics,
            ));
            let requests = metrics.requests(Direction::Outbound, label, &config.name);
            build.route(config, requests, &layers)
        };
        let routes = outbound.routes.iter().map(|r| route(Some(r))).collect();
        let default = route(None);
        RouteTable {
            source,
            outbound,
            routes,
            default,
        }
    }
}

/// Breaker, endpoint health, bulkhead and rate limit follow the service
/// policy; each keeps its state while its config is equal.
fn update_service_wide(
    label: &Arc<str>,
    metrics: &Metrics,
    health: &EndpointHealth,
    service_wide: &mut ServiceWide,
    effective: &levee_proto::policy::EffectiveOutbound,
) {
    health.update_config(effective.circuit_breaker.as_ref());
    service_wide
        .bulkhead
        .update(effective.concurrency.as_ref(), |cfg| {
            Bulkhead::new(cfg, Direction::Outbound, label, metrics)
        });
    service_wide
        .rate_limit
        .update(effective.rate_limit.as_ref(), |cfg| {
            let limiter = Arc::new(RateLimiter::new(cfg));
            let layer = RateLimitLayer::new(limiter.clone(), label, metrics);
            (limiter, layer)
        });
    service_wide.breaker = match (&effective.circuit_breaker, service_wide.breaker.take()) {
        (None, _) => None,
        (Some(cfg), Some(breaker)) => {
            breaker.update_config(cfg);
            Some(breaker)
        }
        (Some(cfg), None) => Some(Arc::new(ServiceBreaker::new(label, cfg, metrics))),
    };
}

impl EndpointGate for EndpointHealth {
    fn is_available(&self, endpoint: EndpointRef) -> bool {
        EndpointHealth::is_available(self, endpoint)
    }

    fn begin(&self, endpoint: EndpointRef) -> Option<Pass> {
        EndpointHealth::begin(self, endpoint)
    }

    fn record(
        &self,
        endpoint: EndpointRef,
        pass: Pass,
        outcome: &Outcome,
        latency: std::time::Duration,
        now: tokio::time::Instant,
    ) {
        EndpointHealth::record_at(self, endpoint, pass, outcome, latency, now);
    }

    fn set_endpoints(&self, addrs: &[std::net::SocketAddr]) {
        EndpointHealth::set_endpoints(self, addrs);
    }

    fn none_ejected(&self) -> bool {
        EndpointHealth::none_ejected(self)
    }
}
