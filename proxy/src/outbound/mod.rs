//! The outbound data path: calls the local app makes to other services.
//!
//! The destination is the request's authority (absolute-form URI when the app
//! uses the proxy as `HTTP_PROXY`, else `Host` / `:authority`), normalised to a
//! [`ServiceKey`](levee_proto::policy::ServiceKey) with this proxy's namespace
//! and port 80 as defaults. [`destinations`] keeps one entry per destination
//! with everything a request needs (policy, compiled routes and their
//! stacks, metric handles, endpoints, resilience state), rebuilt only when
//! the snapshot or the endpoint answer changes.
//!
//! Each request goes through its route's ready-built resilience stack
//! ([`crate::resilience`]: rate limit, service breaker, request timeout,
//! retries, bulkhead, P2C balancer), ending in the connection pool
//! ([`EndpointService`](crate::forward::EndpointService)). `CONNECT` and
//! HTTP/1 upgrades are tunnels, not requests: they take an endpoint from the
//! balancer and skip the retry and timeout layers.

mod destinations;

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use levee_proto::policy::RouteRequest;

use crate::body::{self, BoxBody};
use crate::errors::{self, ErrorKind, ProxyError};
use crate::forward::headers::is_upgrade;
use crate::forward::{ConnectTimeout, Forwarder, uri};
use crate::metrics::Direction;
use crate::observe::Observation;
use crate::observe::access_log::AccessLog;
use crate::resilience::attempt::CallAttempts;
use crate::resilience::timeout::idle::IdleTimeoutBody;
use crate::resilience::{Destination, RouteStack};
use crate::server::Handler;
use crate::state::Shared;
use crate::trace::Tracing;
use crate::transparent::Passthrough;
use destinations::Destinations;

/// The `route` label when no policy route matches.
const DEFAULT_ROUTE: &str = "default";
/// The `service` label of requests that name no valid service.
const UNKNOWN_SERVICE: &str = "unknown";

/// Handles requests arriving on the outbound listener.
pub struct Outbound {
    shared: Arc<Shared>,
    forwarder: Arc<Forwarder>,
    access_log: Option<AccessLog>,
    /// One entry per destination: its state, routes and stacks, across requests.
    destinations: Destinations,
    /// Spans of the logical calls (`None`: tracing off).
    tracing: Option<Tracing>,
    /// Connections redirected here by iptables (`None`: explicit mode only).
    passthrough: Option<Passthrough>,
}

impl Outbound {
    pub fn new(
        shared: Arc<Shared>,
        forwarder: Arc<Forwarder>,
        access_log: Option<AccessLog>,
    ) -> Self {
        let destinations = Destinations::new(shared.clone(), forwarder.clone());
        Outbound {
            shared,
            forwarder,
            access_log,
            destinations,
            tracing: None,
            passthrough: None,
        }
    }

    /// Forwards connections that iptables redirected to this listener to
    /// their original destination (see [`crate::transparent`]).
    pub fn with_passthrough(mut self, passthrough: Passthrough) -> Self {
        self.passthrough = Some(passthrough);
        self
    }

    /// Traces each call (a span per call and per attempt) with `tracing`.
    pub fn with_tracing(mut self, tracing: Option<Tracing>) -> Self {
        self.tracing = tracing;
        self
    }

    /// Sends a tunnel (`CONNECT` or upgrade) to a balanced endpoint, outside
    /// the retry and timeout layers.
    async fn tunnel(
        &self,
        destination: &Destination,
        req: Request<BoxBody>,
    ) -> Result<Response<BoxBody>, ProxyError> {
        let addr = destination.balancer.pick(None)?.addr;
        CallAttempts::record_in(&req, addr);
        if req.method() == Method::CONNECT {
            self.forwarder.connect(req, addr, &destination.label).await
        } else {
            self.forwarder.forward(req, addr, &destination.label).await
        }
    }
}

/// Sends a request through its route's stack.
async fn request(
    route: &RouteStack,
    service: &str,
    explicit_policy: bool,
    mut req: Request<BoxBody>,
) -> Result<Response<BoxBody>, ProxyError> {
    let config = &route.config;
    if explicit_policy {
        req.extensions_mut()
            .insert(ConnectTimeout(config.connect_timeout));
    }
    let response = route
        .call(req)
        .await
        .map_err(|e| ProxyError::from_stack(e, service))?;
    if !explicit_policy {
        return Ok(response);
    }
    let (idle, fired) = (
        config.stream_idle_timeout,
        config.stream_idle_timeouts.clone(),
    );
    Ok(response.map(|b| BoxBody::new(IdleTimeoutBody::new(b, idle, fired))))
}

impl Handler for Outbound {
    fn passthrough(&self) -> Option<&Passthrough> {
        self.passthrough.as_ref()
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        let start = Instant::now();
        let grpc = errors::is_grpc(req.headers());
        let entry = match uri::request_authority(&req) {
            Some(authority) => self.destinations.get(authority),
            None => Err("the request names no destination (no Host or :authority)".to_owned()),
        };
        let entry = match entry {
            Ok(entry) => entry,
            Err(detail) => {
                let err = ProxyError::new(ErrorKind::BadRequest, UNKNOWN_SERVICE, detail);
                let metrics = self.shared.metrics.requests(
                    Direction::Outbound,
                    UNKNOWN_SERVICE,
                    DEFAULT_ROUTE,
                );
                let mut observation = Observation::new(metrics, start, grpc);
                if let Some(log) = &self.access_log {
                    observation.access =
                        Some(log.entry("outbound", UNKNOWN_SERVICE, DEFAULT_ROUTE, &req));
                }
                return observation.error(&err);
            }
        };
        // Control-plane mode: the first call to a destination subscribes it.
        entry.discovered(&self.shared).await;
        let view = entry.view(&self.shared).await;
        let destination = &entry.destination;
        let route = {
            let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let request =
                RouteRequest::new(req.method().as_str(), path).with_headers(req.headers());
            view.routes.route(&request)
        };
        let mut observation = Observation::new(route.requests.clone(), start, grpc);
        let mut req = req;
        // The call's one attempt record: the balancer writes it; retries,
        // spans and the access log read it.
        req.extensions_mut().insert(CallAttempts::default());
        if let Some(log) = &self.access_log {
            let mut entry = log.entry("outbound", &destination.label, &route.config.name, &req);
            entry.track(&mut req);
            observation.access = Some(entry);
        }
        let span = Tracing::outbound(self.tracing.as_ref(), &mut req, &destination.label);
        if let (Some(entry), Some(_)) = (observation.access.as_mut(), &self.tracing) {
            entry.trace_from(req.headers());
        }
        if let Err(err) = &view.endpoints {
            span.error(err);
            return observation.error(err);
        }
        let tunnel = req.method() == Method::CONNECT
            || (req.version() <= http::Version::HTTP_11 && is_upgrade(req.headers()));
        let req = req.map(body::incoming);
        let result = if tunnel {
            self.tunnel(destination, req).await
        } else {
            request(route, &destination.label, view.routes.has_policy(), req).await
        };
        span.finish(&result);
        match result {
            Ok(response) => observation.response(response),
            Err(err) => observation.error(&err),
        }
    }
}
