//! The outbound data path: calls the local app makes to other services.
//!
//! The destination is the request's authority (absolute-form URI when the app
//! uses the proxy as `HTTP_PROXY`, else `Host` / `:authority`), normalised to a
//! [`ServiceKey`] with this proxy's namespace and port 80 as defaults. Its
//! endpoints come from [`Shared::resolve`] and feed the service's balancer.
//!
//! Each request goes through the service's resilience stack
//! ([`crate::resilience`]: rate limit, request timeout, retries, breaker,
//! bulkhead, P2C balancer) with the config of the policy route it matches,
//! ending in the connection pool ([`EndpointService`]). `CONNECT` and HTTP/1
//! upgrades are tunnels, not requests: they take an endpoint from the
//! balancer and skip the retry and timeout layers.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use levee_proto::policy::{RouteRequest, ServiceKey};

use crate::body::{self, BoxBody, BoxError};
use crate::errors::{self, ErrorKind, ProxyError};
use crate::forward::headers::is_upgrade;
use crate::forward::{ConnectTimeout, EndpointService, Forwarder, uri};
use crate::metrics::Direction;
use crate::observe::Observation;
use crate::observe::access_log::{AccessLog, Attempts};
use crate::resilience::timeout::idle::IdleTimeoutBody;
use crate::resilience::{Resilience, RouteConfig, ServiceState};
use crate::server::Handler;
use crate::state::Shared;
use crate::trace::Tracing;

/// The `route` label when no policy route matches.
const DEFAULT_ROUTE: &str = "default";
/// The `service` label of requests that name no valid service.
const UNKNOWN_SERVICE: &str = "unknown";

/// Handles requests arriving on the outbound listener.
pub struct Outbound {
    shared: Arc<Shared>,
    forwarder: Arc<Forwarder>,
    access_log: Option<AccessLog>,
    /// Per-service budgets, breakers, limits and load, across requests.
    resilience: Resilience,
    /// Spans of the logical calls (`None`: tracing off).
    tracing: Option<Tracing>,
}

impl Outbound {
    pub fn new(
        shared: Arc<Shared>,
        forwarder: Arc<Forwarder>,
        access_log: Option<AccessLog>,
    ) -> Self {
        let resilience = Resilience::new(shared.metrics.clone());
        Outbound {
            shared,
            forwarder,
            access_log,
            resilience,
            tracing: None,
        }
    }

    /// Traces each call (a span per call and per attempt) with `tracing`.
    pub fn with_tracing(mut self, tracing: Option<Tracing>) -> Self {
        self.tracing = tracing;
        self
    }

    fn observation(
        &self,
        service: &str,
        route: &str,
        req: &Request<Incoming>,
        start: Instant,
        grpc: bool,
    ) -> Observation {
        let metrics = self
            .shared
            .metrics
            .requests(Direction::Outbound, service, route);
        let mut observation = Observation::new(metrics, start, grpc);
        if let Some(log) = &self.access_log {
            observation.access = Some(log.entry("outbound", service, route, req));
        }
        observation
    }

    /// Sends a tunnel (`CONNECT` or upgrade) to a balanced endpoint, outside
    /// the retry and timeout layers.
    async fn tunnel(
        &self,
        state: &ServiceState,
        req: Request<BoxBody>,
    ) -> Result<Response<BoxBody>, ProxyError> {
        let addr = state.balancer.pick(None)?.addr;
        Attempts::record_in(&req, addr);
        if req.method() == Method::CONNECT {
            self.forwarder.connect(req, addr, &state.label).await
        } else {
            self.forwarder.forward(req, addr, &state.label).await
        }
    }

    /// Sends a request through the service's resilience stack.
    async fn request(
        &self,
        state: &ServiceState,
        route: &RouteConfig,
        explicit_policy: bool,
        mut req: Request<BoxBody>,
    ) -> Result<Response<BoxBody>, ProxyError> {
        if explicit_policy {
            req.extensions_mut()
                .insert(ConnectTimeout(route.connect_timeout));
        }
        let connect_timeouts = route.connect_timeouts.clone();
        let endpoint = tower::ServiceExt::map_err(
            EndpointService::new(self.forwarder.clone(), state.label.clone()),
            move |e: BoxError| {
                if is_connect_timeout(&e) {
                    connect_timeouts.inc();
                }
                e
            },
        );
        let response = state
            .call(route, endpoint, req)
            .await
            .map_err(|e| into_proxy_error(e, &state.label))?;
        if !explicit_policy {
            return Ok(response);
        }
        let (idle, fired) = (
            route.stream_idle_timeout,
            route.stream_idle_timeouts.clone(),
        );
        Ok(response.map(|b| BoxBody::new(IdleTimeoutBody::new(b, idle, fired))))
    }
}

impl Handler for Outbound {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        let start = Instant::now();
        let grpc = errors::is_grpc(req.headers());
        let parsed = match uri::request_authority(&req) {
            Some(authority) => ServiceKey::from_authority(authority, &self.shared.namespace, 80),
            None => Err("the request names no destination (no Host or :authority)".to_owned()),
        };
        let key = match parsed {
            Ok(key) => key,
            Err(detail) => {
                let err = ProxyError::new(ErrorKind::BadRequest, UNKNOWN_SERVICE, detail);
                return self
                    .observation(UNKNOWN_SERVICE, DEFAULT_ROUTE, &req, start, grpc)
                    .error(&err);
            }
        };
        // Control-plane mode: the first call to a destination subscribes it.
        self.shared.discovered(&key).await;
        let policy = self.shared.policy_for(&key);
        let state = self.resilience.service(&key, policy.as_ref());
        let route = {
            let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let request =
                RouteRequest::new(req.method().as_str(), path).with_headers(req.headers());
            state.compiled(policy.as_ref()).route(&request)
        };
        let mut observation = self.observation(&state.label, &route.name, &req, start, grpc);
        let mut req = req;
        if let Some(entry) = &observation.access {
            entry.track(&mut req);
        }
        let span = Tracing::outbound(self.tracing.as_ref(), &mut req, &state.label);
        if let (Some(entry), Some(_)) = (observation.access.as_mut(), &self.tracing) {
            entry.trace_from(req.headers());
        }

        match self.shared.resolve(&key).await {
            Ok(endpoints) => state.balancer.set_endpoints(&endpoints),
            Err(err) => {
                span.error(&err);
                return observation.error(&err);
            }
        }
        let tunnel = req.method() == Method::CONNECT
            || (req.version() <= http::Version::HTTP_11 && is_upgrade(req.headers()));
        let req = req.map(body::incoming);
        let result = if tunnel {
            self.tunnel(&state, req).await
        } else {
            self.request(&state, &route, policy.is_some(), req).await
        };
        span.finish(&result);
        match result {
            Ok(response) => observation.response(response),
            Err(err) => observation.error(&err),
        }
    }
}

/// The stack's error as the [`ProxyError`] the caller sees.
fn into_proxy_error(error: BoxError, service: &str) -> ProxyError {
    match error.downcast::<ProxyError>() {
        Ok(err) => *err,
        Err(other) => ProxyError::new(ErrorKind::UpstreamReset, service, other.to_string()),
    }
}

/// A connect that timed out (as opposed to one refused).
fn is_connect_timeout(error: &BoxError) -> bool {
    error
        .downcast_ref::<ProxyError>()
        .is_some_and(|e| e.kind == ErrorKind::UpstreamConnect && e.detail.contains("timed out"))
}
