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
//! balancer and skip the retry and timeout layers (only the default
//! response-head timeout bounds the upstream's answer). Calls no policy
//! bounds get the proxy's [`TimeoutDefaults`].
//!
//! A request on a connection iptables redirected here (transparent mode,
//! [`OriginalDst`]) goes to the service its authority names when the proxy
//! knows that service, else to the service the control plane says owns the
//! original destination address (its virtual IP or an endpoint:
//! [`crate::subscriptions::addresses`]), else to the connection's original
//! destination: a passthrough destination, labelled
//! `service="passthrough:<ip:port>"`, with the default timeouts.
//!
//! Before any of that a request is refused when its authority is ambiguous
//! (400 `ambiguous-authority`) or it has passed too many proxies (508
//! `loop-detected`, [`crate::loops`]); it leaves with one more hop counted.
//!
//! This module owns the [`Outbound`] handler: its settings, the order of
//! those steps and the answers to refused requests. Choosing the
//! destination of a redirected request is in `redirected`, sending the
//! request through its stack (or a tunnel) in `send`.

mod destinations;
mod redirected;
mod send;

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use levee_proto::policy::RouteRequest;

use crate::body::{self, BoxBody};
use crate::errors::{self, ErrorKind, ProxyError};
use crate::forward::{DeclaredProtocol, Forwarder, uri};
use crate::loops::{self, hops};
use crate::metrics::Direction;
use crate::observe::Observation;
use crate::observe::access_log::AccessLog;
use crate::resilience::call::CallContext;
use crate::resilience::timeout::TimeoutDefaults;
use crate::server::Handler;
use crate::state::Shared;
use crate::subscriptions::addresses::Lookup;
use crate::trace::Tracing;
use crate::transparent::{OriginalDst, Transparent};
use destinations::Destinations;
use send::request;

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
    /// `--max-hops`: requests that passed more proxies are loops.
    max_hops: u32,
    /// Timeouts for calls no policy bounds.
    timeout_defaults: TimeoutDefaults,
    /// Connections redirected here by iptables (`None`: explicit mode only).
    transparent: Option<Transparent>,
}

impl Outbound {
    pub fn new(
        shared: Arc<Shared>,
        forwarder: Arc<Forwarder>,
        access_log: Option<AccessLog>,
    ) -> Self {
        let destinations = Destinations::new(
            shared.clone(),
            forwarder.clone(),
            destinations::MAX_DESTINATIONS,
        );
        Outbound {
            shared,
            forwarder,
            access_log,
            destinations,
            tracing: None,
            max_hops: loops::DEFAULT_MAX_HOPS,
            timeout_defaults: TimeoutDefaults::default(),
            transparent: None,
        }
    }

    /// Refuses requests that passed more than `max` proxies (`--max-hops`).
    pub fn with_max_hops(mut self, max: u32) -> Self {
        self.max_hops = max;
        self
    }

    /// Keeps at most `max` destinations (least recently used evicted).
    pub fn with_max_destinations(mut self, max: usize) -> Self {
        self.destinations = Destinations::new(self.shared.clone(), self.forwarder.clone(), max);
        self
    }

    /// Bounds calls no policy bounds with `defaults` (the proxy's flags).
    pub fn with_timeout_defaults(mut self, defaults: TimeoutDefaults) -> Self {
        self.timeout_defaults = defaults;
        self
    }

    /// Serves connections that iptables redirected to this listener: HTTP
    /// ones here, others forwarded to their original destination (see
    /// [`crate::transparent`]).
    pub fn with_transparent(mut self, transparent: Transparent) -> Self {
        self.transparent = Some(transparent);
        self
    }

    /// Traces each call (a span per call and per attempt) with `tracing`.
    pub fn with_tracing(mut self, tracing: Option<Tracing>) -> Self {
        self.tracing = tracing;
        self
    }
}

impl Outbound {
    /// Answers a request refused before it reached a route: recorded under
    /// `err.service` and the default route.
    fn refuse(
        &self,
        err: &ProxyError,
        req: &Request<Incoming>,
        start: Instant,
        grpc: bool,
    ) -> Response<BoxBody> {
        self.count_loop(err);
        let metrics =
            self.shared
                .metrics
                .requests(Direction::Outbound, &err.service, DEFAULT_ROUTE);
        let mut observation = Observation::new(metrics, start, grpc);
        if let Some(log) = &self.access_log {
            observation.access = Some(log.entry("outbound", &err.service, DEFAULT_ROUTE, req));
        }
        observation.error(err)
    }

    /// Counts a loop refusal in `levee_rejected_total`.
    fn count_loop(&self, err: &ProxyError) {
        if err.kind == ErrorKind::LoopDetected {
            self.shared
                .metrics
                .rejected(Direction::Outbound, &err.service, loops::REJECTED_REASON)
                .inc();
        }
    }
}

impl Handler for Outbound {
    fn transparent(&self) -> Option<&Transparent> {
        self.transparent.as_ref()
    }

    /// The outbound rate limit is per service, never per client.
    fn wants_client_addr(&self) -> bool {
        false
    }

    fn declared_opaque(&self, original: std::net::SocketAddr) -> bool {
        let Lookup::Answered(Some(owner)) = self.shared.subscriptions.addresses.lookup(&original)
        else {
            return false;
        };
        self.shared
            .snapshot
            .load()
            .app_protocols
            .get(&owner)
            .is_some_and(|p| p.is_opaque())
    }

    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<BoxBody> {
        let start = Instant::now();
        let grpc = errors::is_grpc(req.headers());
        if let Err(detail) = uri::check_authority(&req) {
            let err = ProxyError::new(ErrorKind::AmbiguousAuthority, UNKNOWN_SERVICE, detail);
            return self.refuse(&err, &req, start, grpc);
        }
        let original = req.extensions().get::<OriginalDst>().copied();
        // The transparent paths and tunnels are boxed: their futures are
        // large, and the explicit request path should not carry them.
        let entry = match (uri::request_authority(&req), original) {
            (Some(authority), Some(OriginalDst(original))) => {
                Ok(Box::pin(self.transparent_entry(authority, original)).await)
            }
            (Some(authority), None) => self.destinations.get(authority),
            (None, Some(OriginalDst(original))) => Ok(Box::pin(self.by_address(original)).await),
            (None, None) => {
                Err("the request names no destination (no Host or :authority)".to_owned())
            }
        };
        let entry = match entry {
            Ok(entry) => entry,
            Err(detail) => {
                let err = ProxyError::new(ErrorKind::BadRequest, UNKNOWN_SERVICE, detail);
                return self.refuse(&err, &req, start, grpc);
            }
        };
        if let Err(detail) = hops::pass(req.headers_mut(), self.max_hops) {
            let err = ProxyError::new(ErrorKind::LoopDetected, &*entry.destination.label, detail);
            return self.refuse(&err, &req, start, grpc);
        }
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
        // The call's one attempt record: the balancer writes it; retries,
        // spans and the access log read it.
        CallContext::of(&mut req).attempts();
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
        if let Some(declared) = view.app_protocol {
            req.extensions_mut().insert(DeclaredProtocol(declared));
        }
        let upgrade = match self.forwarder.screen_upgrade(&mut req, &destination.label) {
            Ok(upgrade) => upgrade,
            Err(err) => {
                span.error(&err);
                return observation.error(&err);
            }
        };
        let tunnel = req.method() == Method::CONNECT || upgrade;
        let req = req.map(body::incoming);
        let result = if tunnel {
            Box::pin(self.tunnel(destination, req)).await
        } else {
            request(
                route,
                &destination.label,
                view.routes.has_policy(),
                self.timeout_defaults,
                req,
            )
            .await
        };
        span.finish(&result);
        match result {
            Ok(response) => observation.response(response),
            Err(err) => {
                self.count_loop(&err);
                observation.error(&err)
            }
        }
    }
}
