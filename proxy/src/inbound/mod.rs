//! The inbound data path: calls from peers, forwarded to the local app on
//! `127.0.0.1:<app-port>` with their authority unchanged. The `service` label
//! is `--service` (or `unknown`). Connections iptables redirected here go
//! to the workload's original port instead ([`crate::transparent`]): HTTP
//! ones through this handler, others as opaque TCP.
//!
//! Before a request reaches the app, `limits` applies the local service's
//! `spec.inbound` with the outbound side's tower layers: rate limit (429),
//! request timeout (504), concurrency (503 overloaded), ending in
//! [`app::AppService`]. Per-client rate limits key on the peer address the
//! listener records ([`crate::server::ClientAddr`]).
//!
//! mTLS ([`crate::tls`]): a caller's own `x-levee-client-id` is always
//! removed; the verified identity of an mTLS connection is written there
//! instead, and `spec.inbound.mtls` decides who may call ([`authz`]):
//! others get 403 `unauthorized`.
//!
//! First of all a request is refused when its authority is ambiguous (400
//! `ambiguous-authority`) or it has passed too many proxies (508
//! `loop-detected`, [`crate::loops`]); it reaches the app with one more hop
//! counted.

mod app;
pub mod authz;
mod limits;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;

use levee_proto::policy::{ServiceKey, SpiffeId};
use prometheus_client::metrics::counter::Counter;
use tower::ServiceExt;

use crate::body::{self, BoxBody};
use crate::errors::{self, ErrorKind, ProxyError};
use crate::forward::{Forwarder, uri};
use crate::loops::{self, hops};
use crate::metrics::{Direction, RequestMetrics, TlsMetrics};
use crate::observe::Observation;
use crate::observe::access_log::AccessLog;
use crate::resilience::timeout::TimeoutDefaults;
use crate::resilience::timeout::idle::IdleTimeoutBody;
use crate::server::Handler;
use crate::state::Shared;
use crate::tls::{ClientIdentity, Termination};
use crate::trace::Tracing;
use crate::transparent::Transparent;

use self::app::AppService;
use self::limits::InboundLimits;

/// Handles requests arriving on the inbound listener.
pub struct Inbound {
    /// Forwards to the local app: the end of every request's path.
    app: AppService,
    service: Arc<str>,
    /// Inbound has one service and (for now) one route: resolved once.
    metrics: RequestMetrics,
    access_log: Option<AccessLog>,
    /// `spec.inbound` of the local service in front of the app; `None`
    /// until [`Inbound::with_policy`].
    limits: Option<InboundLimits<AppService>>,
    /// SERVER spans of inbound calls (`None`: tracing off).
    tracing: Option<Tracing>,
    /// `--max-hops`: requests that passed more proxies are loops.
    max_hops: u32,
    /// `levee_rejected_total{direction="inbound",reason="loop-detected"}`.
    loops_refused: Counter,
    /// The app's response body ends with an error after this long without
    /// a frame (`--default-stream-idle-timeout`).
    stream_idle: Option<Duration>,
    /// `levee_timeouts_total{kind="idle"}` of the inbound service.
    idle_timeouts: Counter,
    /// Connections redirected here by iptables (`None`: not transparent).
    transparent: Option<Transparent>,
    /// mTLS on the inbound port (`None`: plaintext only).
    tls: Option<Termination>,
    /// The local service's policy, for `spec.inbound.mtls` (`None` until
    /// [`Inbound::with_policy`]).
    policy: Option<(Arc<Shared>, ServiceKey)>,
    /// `levee_rejected_total{direction="inbound",reason="unauthorized"}`.
    unauthorized: Counter,
    /// `levee_authz_denied_total`, by caller identity.
    tls_metrics: TlsMetrics,
}

impl Inbound {
    pub fn new(
        forwarder: Arc<Forwarder>,
        app: SocketAddr,
        service: String,
        metrics: &crate::metrics::Metrics,
        access_log: Option<AccessLog>,
    ) -> Self {
        let handle = metrics.requests(Direction::Inbound, &service, "default");
        let loops_refused = metrics.rejected(Direction::Inbound, &service, loops::REJECTED_REASON);
        let idle_timeouts = metrics.timeouts(&service, "default", "idle");
        let unauthorized = metrics.rejected(
            Direction::Inbound,
            &service,
            ErrorKind::Unauthorized.as_str(),
        );
        let service: Arc<str> = service.into();
        Inbound {
            app: AppService::new(forwarder, app, service.clone()),
            service,
            metrics: handle,
            access_log,
            limits: None,
            tracing: None,
            max_hops: loops::DEFAULT_MAX_HOPS,
            loops_refused,
            stream_idle: None,
            idle_timeouts,
            transparent: None,
            tls: None,
            policy: None,
            unauthorized,
            tls_metrics: metrics.tls(),
        }
    }

    /// Accepts mTLS on the inbound port besides plaintext.
    pub fn with_tls(mut self, tls: Termination) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serves connections iptables redirected here: to the workload's
    /// original port on loopback (see [`crate::transparent`]).
    pub fn with_transparent(mut self, transparent: Transparent) -> Self {
        self.transparent = Some(transparent.to_local_workload());
        self
    }

    /// Refuses requests that passed more than `max` proxies (`--max-hops`).
    pub fn with_max_hops(mut self, max: u32) -> Self {
        self.max_hops = max;
        self
    }

    /// Traces each inbound call (a SERVER span) with `tracing`.
    pub fn with_tracing(mut self, tracing: Option<Tracing>) -> Self {
        self.tracing = tracing;
        self
    }

    /// Enforces the local service's `spec.inbound` from `shared`'s policy:
    /// the policy of `service.namespace:service_port`, where `service_port`
    /// is the port callers use (`--service-port`, else `--app-port`).
    /// `defaults` bound what the policy does not: the app's answer (without
    /// `spec.inbound.timeouts.request`) and its response body's stream idle.
    pub fn with_policy(
        mut self,
        shared: Arc<Shared>,
        service_port: u16,
        defaults: TimeoutDefaults,
    ) -> Self {
        self.policy = ServiceKey::from_authority(&self.service, &shared.namespace, service_port)
            .ok()
            .map(|key| (shared.clone(), key));
        self.limits = Some(InboundLimits::new(
            shared,
            &self.service,
            service_port,
            self.app.clone(),
            defaults,
        ));
        self.stream_idle = defaults.stream_idle;
        self
    }
}

impl Inbound {
    /// Sends `req` through the current policy's stack to the app (boxed
    /// in a plain `fn`, as [`InboundLimits::call`] explains).
    fn send(&self, req: Request<BoxBody>) -> limits::ResponseFuture {
        match &self.limits {
            Some(limits) => limits.call(req),
            None => Box::pin(self.app.clone().oneshot(req)),
        }
    }

    /// Whether `spec.inbound.mtls` admits `client`; a refusal is counted.
    fn authorize(&self, client: Option<&ClientIdentity>) -> Result<(), ProxyError> {
        let policy = self
            .policy
            .as_ref()
            .and_then(|(shared, key)| shared.policy_for(key));
        let mtls = policy.as_ref().and_then(|p| p.spec.inbound.mtls.as_ref());
        let id = client.map(|c| &c.0);
        authz::decide(mtls, id).map_err(|denied| {
            self.unauthorized.inc();
            self.tls_metrics
                .denied(&self.service, id.map(SpiffeId::as_str));
            ProxyError::new(ErrorKind::Unauthorized, &*self.service, denied.detail(id))
        })
    }

    /// Counts a loop refusal in `levee_rejected_total`.
    fn count_loop(&self, err: &ProxyError) {
        if err.kind == ErrorKind::LoopDetected {
            self.loops_refused.inc();
        }
    }
}

impl Inbound {
    /// Ends the app's response body after the stream idle timeout.
    fn idle_bounded(&self, response: Response<BoxBody>) -> Response<BoxBody> {
        let Some(idle) = self.stream_idle else {
            return response;
        };
        let fired = self.idle_timeouts.clone();
        response.map(|b| BoxBody::new(IdleTimeoutBody::new(b, idle, fired)))
    }
}

impl Handler for Inbound {
    fn transparent(&self) -> Option<&Transparent> {
        self.transparent.as_ref()
    }

    fn tls(&self) -> Option<&Termination> {
        self.tls.as_ref()
    }

    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<BoxBody> {
        // Before anything reads the headers: the caller never speaks for itself.
        let client = req.extensions().get::<ClientIdentity>().cloned();
        authz::set_client_header(req.headers_mut(), client.as_ref());
        let mut observation = Observation::new(
            self.metrics.clone(),
            Instant::now(),
            errors::is_grpc(req.headers()),
        );
        if let Some(log) = &self.access_log {
            observation.access = Some(log.entry("inbound", &self.service, "default", &req));
        }
        let span = Tracing::inbound(self.tracing.as_ref(), &mut req, &self.service);
        if let (Some(entry), Some(_)) = (observation.access.as_mut(), &self.tracing) {
            entry.trace_from(req.headers());
        }
        let refused = if let Err(detail) = uri::check_authority(&req) {
            Some((ErrorKind::AmbiguousAuthority, detail))
        } else if let Err(detail) = hops::pass(req.headers_mut(), self.max_hops) {
            Some((ErrorKind::LoopDetected, detail))
        } else if req.method() == Method::CONNECT {
            let detail = "CONNECT is not accepted inbound".to_owned();
            Some((ErrorKind::BadRequest, detail))
        } else {
            None
        };
        if let Some((kind, detail)) = refused {
            let err = ProxyError::new(kind, &*self.service, detail);
            self.count_loop(&err);
            span.error(&err);
            return observation.error(&err);
        }
        if let Err(err) = self.authorize(client.as_ref()) {
            span.error(&err);
            return observation.error(&err);
        }
        if let Err(err) = self.app.forwarder().screen_upgrade(&mut req, &self.service) {
            span.error(&err);
            return observation.error(&err);
        }
        if let Some(entry) = observation.access.as_mut() {
            entry.track(&mut req);
        }
        let req = req.map(body::incoming);
        let result = self
            .send(req)
            .await
            .map_err(|e| ProxyError::from_stack(e, &self.service));
        span.finish(&result);
        match result {
            Ok(response) => observation.response(self.idle_bounded(response)),
            Err(err) => {
                self.count_loop(&err);
                observation.error(&err)
            }
        }
    }
}
