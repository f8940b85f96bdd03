//! [`ServiceState`]: the resilience state of one target service — retry
//! budgets, breaker, endpoint health and load — and its compiled policy.
//!
//! The compiled policy ([`Compiled`]) is swapped atomically when the policy
//! changes; requests in flight keep the one they loaded. State survives a
//! swap unless its own config changed: a route's retry budget is kept while
//! its budget settings are equal, the breaker while its config is equal
//! (the breaker decides that itself), the balancer's load always.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, ArcSwapOption};
use levee_proto::policy::{OutboundPolicy, ResiliencePolicy, Route, RouteRequest};

use super::balance::{Balancer, EndpointGate, Pass};
use super::breaker::ServiceBreaker;
use super::classify::Outcome;
use super::concurrency::Bulkhead;
use super::health::EndpointHealth;
use super::ratelimit::{RateLimitLayer, RateLimiter};
use super::retry::RetryBudget;
use super::route::{RouteConfig, budget_settings};
use crate::metrics::{Direction, Metrics};

/// One compiled policy of a service.
#[derive(Debug)]
pub struct Compiled {
    /// The policy document it came from (`None`: no policy, defaults).
    source: Option<Arc<ResiliencePolicy>>,
    /// Its outbound section, to match routes and to compare with the next one.
    outbound: OutboundPolicy,
    /// One per `outbound.routes` entry, same order.
    routes: Vec<Arc<RouteConfig>>,
    /// Requests no route matches.
    default: Arc<RouteConfig>,
}

impl Compiled {
    /// The route config for a request.
    pub fn route(&self, req: &RouteRequest<'_>) -> Arc<RouteConfig> {
        match self.outbound.find_route(req) {
            Some((index, _)) => self.routes.get(index).unwrap_or(&self.default).clone(),
            None => self.default.clone(),
        }
    }
}

/// Everything resilience keeps per target service.
pub struct ServiceState {
    /// The `service` label (`name.namespace:port`).
    pub label: Arc<str>,
    metrics: Metrics,
    compiled: ArcSwap<Compiled>,
    pub balancer: Arc<Balancer>,
    breaker: ArcSwapOption<ServiceBreaker>,
    /// Endpoint breakers (outlier ejection); the balancer consults them.
    health: Arc<EndpointHealth>,
    /// The outbound rate limit (limiter state and resolved metric handles).
    rate_limit: ArcSwapOption<(Arc<RateLimiter>, RateLimitLayer)>,
    /// The bulkhead, if the policy has a concurrency limit.
    bulkhead: ArcSwapOption<Bulkhead>,
    /// Retry budgets by route name.
    budgets: Mutex<HashMap<Arc<str>, Arc<RetryBudget>>>,
    /// Serialises recompiles; requests never wait for it on the fast path.
    recompiling: Mutex<()>,
}

impl std::fmt::Debug for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceState")
            .field("service", &self.label)
            .finish_non_exhaustive()
    }
}

impl ServiceState {
    /// State for `label` with `policy` (or defaults) compiled.
    pub fn new(label: &str, policy: Option<&Arc<ResiliencePolicy>>, metrics: &Metrics) -> Self {
        let label: Arc<str> = label.into();
        let budgets = Mutex::new(HashMap::new());
        let outbound = policy.map(|p| p.spec.outbound.clone()).unwrap_or_default();
        let compiled = compile(&label, metrics, &budgets, policy.cloned(), outbound);
        let health = Arc::new(EndpointHealth::new(
            &label,
            compiled.default.effective.circuit_breaker.as_ref(),
            metrics,
        ));
        let gate: Arc<dyn EndpointGate> = health.clone();
        let state = ServiceState {
            balancer: Arc::new(Balancer::new(label.clone(), gate)),
            health,
            rate_limit: ArcSwapOption::empty(),
            bulkhead: ArcSwapOption::empty(),
            label,
            metrics: metrics.clone(),
            compiled: ArcSwap::from_pointee(compiled),
            breaker: ArcSwapOption::empty(),
            budgets,
            recompiling: Mutex::new(()),
        };
        state.update_service_wide(&state.compiled.load().default);
        state
    }

    /// The compiled policy for `policy` (the snapshot's current one),
    /// recompiling first when it differs from the last one seen.
    pub fn compiled(&self, policy: Option<&Arc<ResiliencePolicy>>) -> Arc<Compiled> {
        let current = self.compiled.load_full();
        if same_source(current.source.as_ref(), policy) {
            return current;
        }
        self.recompile(policy);
        self.compiled.load_full()
    }

    /// The service breaker, if the policy has one.
    pub fn breaker(&self) -> Option<Arc<ServiceBreaker>> {
        self.breaker.load_full()
    }

    fn recompile(&self, policy: Option<&Arc<ResiliencePolicy>>) {
        let _one_at_a_time = self
            .recompiling
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.compiled.load_full();
        if same_source(current.source.as_ref(), policy) {
            return;
        }
        let outbound = policy.map(|p| p.spec.outbound.clone()).unwrap_or_default();
        if outbound == current.outbound {
            // A new document with the same outbound section: keep everything.
            self.compiled.store(Arc::new(Compiled {
                source: policy.cloned(),
                outbound,
                routes: current.routes.clone(),
                default: current.default.clone(),
            }));
            return;
        }
        let compiled = compile(
            &self.label,
            &self.metrics,
            &self.budgets,
            policy.cloned(),
            outbound,
        );
        self.update_service_wide(&compiled.default);
        self.compiled.store(Arc::new(compiled));
    }

    /// The bulkhead, if the policy has a concurrency limit.
    pub fn bulkhead(&self) -> Option<Arc<Bulkhead>> {
        self.bulkhead.load_full()
    }

    /// The outbound rate limit, if the policy has one.
    pub fn rate_limit(&self) -> Option<RateLimitLayer> {
        self.rate_limit.load().as_ref().map(|pair| pair.1.clone())
    }

    /// Breaker, endpoint health, bulkhead and rate limit are service-wide (routes
    /// cannot override them); each keeps its state while its config is equal.
    fn update_service_wide(&self, default: &RouteConfig) {
        let effective = &default.effective;
        self.health
            .update_config(effective.circuit_breaker.as_ref());
        match (&effective.concurrency, self.bulkhead.load_full()) {
            (None, _) => self.bulkhead.store(None),
            (Some(cfg), Some(current)) if current.config() == cfg => {}
            (Some(cfg), _) => {
                let bulkhead = Bulkhead::new(cfg, Direction::Outbound, &self.label, &self.metrics);
                self.bulkhead.store(Some(Arc::new(bulkhead)));
            }
        }
        match (&effective.rate_limit, self.rate_limit.load_full()) {
            (None, _) => self.rate_limit.store(None),
            (Some(cfg), Some(current)) if current.0.config() == cfg => {}
            (Some(cfg), _) => {
                let limiter = Arc::new(RateLimiter::new(cfg));
                let layer = RateLimitLayer::new(limiter.clone(), &self.label, &self.metrics);
                self.rate_limit.store(Some(Arc::new((limiter, layer))));
            }
        }
        match (&default.effective.circuit_breaker, self.breaker.load_full()) {
            (None, _) => self.breaker.store(None),
            (Some(cfg), Some(breaker)) => breaker.update_config(cfg),
            (Some(cfg), None) => {
                let breaker = ServiceBreaker::new(&self.label, cfg, &self.metrics);
                self.breaker.store(Some(Arc::new(breaker)));
            }
        }
    }
}

fn same_source(a: Option<&Arc<ResiliencePolicy>>, b: Option<&Arc<ResiliencePolicy>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Compiles every route of `outbound`, reusing budgets whose settings are unchanged.
fn compile(
    label: &Arc<str>,
    metrics: &Metrics,
    budgets: &Mutex<HashMap<Arc<str>, Arc<RetryBudget>>>,
    source: Option<Arc<ResiliencePolicy>>,
    outbound: OutboundPolicy,
) -> Compiled {
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
        Arc::new(RouteConfig::compile(label, effective, budget, metrics))
    };
    let routes = outbound.routes.iter().map(|r| route(Some(r))).collect();
    let default = route(None);
    Compiled {
        source,
        outbound,
        routes,
        default,
    }
}

impl EndpointGate for EndpointHealth {
    fn is_available(&self, addr: std::net::SocketAddr) -> bool {
        EndpointHealth::is_available(self, addr)
    }

    fn begin(&self, addr: std::net::SocketAddr) -> Option<Pass> {
        EndpointHealth::begin(self, addr)
    }

    fn record(
        &self,
        addr: std::net::SocketAddr,
        pass: Pass,
        outcome: &Outcome,
        latency: std::time::Duration,
    ) {
        EndpointHealth::record(self, addr, pass, outcome, latency);
    }

    fn set_endpoints(&self, addrs: &[std::net::SocketAddr]) {
        EndpointHealth::set_endpoints(self, addrs);
    }
}
