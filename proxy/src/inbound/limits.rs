//! Inbound admission: the local service's `spec.inbound` as a tower stack of
//! the same layers the outbound side uses, assembled once per policy
//! version (not per request) and type-erased once.
//!
//! Order, outermost first (DESIGN.md §2): rate limit, in total or per
//! client ([`RateLimitLayer`], 429) → request timeout
//! ([`RequestTimeoutLayer`], 504; the bulkhead's queued wait counts) →
//! bulkhead ([`ConcurrencyLayer`], 503 overloaded) → the app. Without a
//! policy `timeouts.request`, the proxy's default
//! ([`TimeoutDefaults`]) bounds the app's answer.
//!
//! A policy update rebuilds the stack, but the rate limiter and the bulkhead
//! are kept by [`Reuse`] while their config is unchanged: a used-up burst
//! stays used up and calls holding bulkhead slots keep counting.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::{Request, Response};
use levee_proto::policy::{
    DEFAULT_ROUTE, EffectiveConcurrency, EffectiveInbound, EffectiveRateLimit, ServiceKey,
};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::body::{BoxBody, BoxError, ProxyService};
use crate::metrics::Direction;
use crate::resilience::concurrency::{Bulkhead, ConcurrencyLayer};
use crate::resilience::ratelimit::{InboundRateLimit, RateLimitLayer};
use crate::resilience::reuse::Reuse;
use crate::resilience::timeout::{RequestTimeoutLayer, TimeoutDefaults};
use crate::state::Shared;

/// One policy version's inbound stack, its type erased.
pub(crate) type InboundStack = BoxCloneSyncService<Request<BoxBody>, Response<BoxBody>, BoxError>;

/// What [`InboundLimits::call`] returns.
pub(crate) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send>>;

/// The stack of one policy version.
struct Built {
    /// The snapshot version it was built from (0: nothing loaded yet).
    version: u64,
    stack: InboundStack,
}

/// The local service's inbound limits in front of `A` (the app), following
/// policy updates.
pub(crate) struct InboundLimits<A> {
    shared: Arc<Shared>,
    /// The local service as policies target it (`None`: no policy applies).
    key: Option<ServiceKey>,
    /// The `service` label of its port ([`super::ports`]).
    service: Arc<str>,
    /// Where every stack ends.
    app: A,
    rate: Reuse<EffectiveRateLimit, InboundRateLimit>,
    bulkhead: Reuse<EffectiveConcurrency, Bulkhead>,
    current: ArcSwap<Built>,
    /// Serialises rebuilds after a policy update.
    rebuild: Mutex<()>,
    /// The request timeout when the policy sets none.
    defaults: TimeoutDefaults,
}

impl<A> std::fmt::Debug for InboundLimits<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundLimits")
            .field("service", &self.service)
            .field("key", &self.key)
            .field("version", &self.current.load().version)
            .finish_non_exhaustive()
    }
}

impl<A> InboundLimits<A>
where
    A: ProxyService,
{
    /// `key` is the local service port whose policy applies (`None`: no
    /// policy does); `label` the `service` label of its metrics (see
    /// [`super::ports`]); `app` the service requests that pass end in.
    /// `defaults.request` bounds the app's answer when no policy
    /// `spec.inbound.timeouts.request` is set.
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: Option<ServiceKey>,
        label: Arc<str>,
        app: A,
        defaults: TimeoutDefaults,
    ) -> Self {
        let limits = InboundLimits {
            shared,
            key,
            service: label,
            current: ArcSwap::from_pointee(Built {
                version: 0,
                stack: BoxCloneSyncService::new(app.clone()),
            }),
            app,
            rate: Reuse::new(),
            bulkhead: Reuse::new(),
            rebuild: Mutex::new(()),
            defaults,
        };
        // Version 0 (nothing loaded yet) gets the defaults too.
        limits.current.store(Arc::new(Built {
            version: 0,
            stack: limits.build(None, false),
        }));
        limits
    }

    /// Sends `req` through the current policy's stack.
    ///
    /// The future is boxed here, in a plain `fn` where its type is concrete:
    /// awaiting the tower future directly in an `async fn` defeats rustc's
    /// `Send` proof (rust-lang/rust#100013).
    pub(crate) fn call(&self, req: Request<BoxBody>) -> ResponseFuture {
        Box::pin(self.stack().oneshot(req))
    }

    /// The stack for the current policy version, rebuilt when it moved on.
    pub(crate) fn stack(&self) -> InboundStack {
        let version = self.shared.snapshot.load().version;
        let current = self.current.load();
        if current.version == version {
            return current.stack.clone();
        }
        let _serialised = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = self.shared.snapshot.load_full();
        let current = self.current.load();
        if current.version == snapshot.version {
            return current.stack.clone();
        }
        let policy = self.key.as_ref().and_then(|key| snapshot.policy_for(key));
        let cfg = policy
            .as_ref()
            .map(|policy| policy.spec.inbound.effective());
        let timeout_set = policy.is_some_and(|p| p.spec.inbound.timeouts.request.is_some());
        let stack = self.build(cfg, timeout_set);
        self.current.store(Arc::new(Built {
            version: snapshot.version,
            stack: stack.clone(),
        }));
        stack
    }

    /// Assembles the layers `cfg` asks for around the app (`None`: no
    /// policy, no layers but the default request timeout, which also
    /// applies when the policy does not set one: `timeout_set`).
    fn build(&self, cfg: Option<EffectiveInbound>, timeout_set: bool) -> InboundStack {
        let metrics = &self.shared.metrics;
        let rate = self
            .rate
            .update(cfg.and_then(|c| c.rate_limit).as_ref(), |c| {
                InboundRateLimit::with_capacity(
                    c,
                    &self.service,
                    metrics,
                    self.shared.rate_limit_clients,
                )
            });
        let bulkhead = self
            .bulkhead
            .update(cfg.and_then(|c| c.concurrency).as_ref(), |c| {
                Bulkhead::new(c, Direction::Inbound, &self.service, metrics)
            });
        let limit = match cfg.and_then(|c| c.request_timeout) {
            Some(limit) => Some(limit.get()),
            None if timeout_set => None,
            None => self.defaults.request,
        };
        let timeout = limit.map(|limit| {
            let fired = metrics.timeouts(&self.service, DEFAULT_ROUTE, "request");
            RequestTimeoutLayer::new(Some(limit), self.service.clone(), fired)
                .without_caller_deadline()
        });
        let stack = ServiceBuilder::new()
            .option_layer(rate.map(RateLimitLayer::inbound))
            .option_layer(timeout)
            .option_layer(bulkhead.map(ConcurrencyLayer::new))
            .service(self.app.clone());
        BoxCloneSyncService::new(stack)
    }
}

#[cfg(test)]
mod tests;
