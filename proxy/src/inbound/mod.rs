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
//! listener records ([`crate::server::ClientAddr`]). Each port of the
//! workload has a stack and a `service` label of its own (`ports`): in
//! transparent mode a request gets those of the port its caller dialled.
//!
//! mTLS ([`crate::tls`]): a caller's own `x-levee-client-id` is always
//! removed; the verified identity of an mTLS connection is written there
//! instead, and the port's `spec.inbound.mtls` decides who may call
//! ([`authz`]): others get 403 `unauthorized`.
//!
//! First of all a request is refused when its authority is ambiguous (400
//! `ambiguous-authority`) or it has passed too many proxies (508
//! `loop-detected`, [`crate::loops`]); it reaches the app with one more hop
//! counted.

mod app;
pub mod authz;
mod limits;
mod ports;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::body::{self, BoxBody};
use crate::errors::{self, ErrorKind, ProxyError};
use crate::forward::{Forwarder, uri};
use crate::loops::hops;
use crate::metrics::TlsMetrics;
use crate::observe::Observation;
use crate::observe::access_log::AccessLog;
use crate::resilience::timeout::TimeoutDefaults;
use crate::resilience::timeout::idle::IdleTimeoutBody;
use crate::server::Handler;
use crate::state::Shared;
use crate::tls::{ClientIdentity, Termination};
use crate::trace::Tracing;
use crate::transparent::{OriginalDst, Transparent};

use self::app::AppService;
use self::ports::{InboundPorts, PortInbound};

pub use self::ports::MAX_OTHER_PORTS;

/// Handles requests arriving on the inbound listener.
pub struct Inbound {
    /// Forwards to the local app: the end of every request's path.
    app: AppService,
    /// Per port of the workload: labels, counters and `spec.inbound` (no
    /// limits until [`Inbound::with_policy`]). One route per port.
    ports: InboundPorts,
    access_log: Option<AccessLog>,
    /// SERVER spans of inbound calls (`None`: tracing off).
    tracing: Option<Tracing>,
    /// `--max-hops`: requests that passed more proxies are loops.
    max_hops: u32,
    /// The app's response body ends with an error after this long without
    /// a frame (`--default-stream-idle-timeout`).
    stream_idle: Option<Duration>,
    /// Connections redirected here by iptables (`None`: not transparent).
    transparent: Option<Transparent>,
    /// mTLS on the inbound port (`None`: plaintext only).
    tls: Option<Termination>,
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
        let service: Arc<str> = service.into();
        let app_service = AppService::new(forwarder, app, service.clone());
        Inbound {
            ports: InboundPorts::new(service, app.port(), metrics.clone(), app_service.clone()),
            app: app_service,
            access_log,
            tracing: None,
            max_hops: crate::loops::DEFAULT_MAX_HOPS,
            stream_idle: None,
            transparent: None,
            tls: None,
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
    /// on the main port the policy of `service.namespace:service_port`,
    /// where `service_port` is the port callers use (`--service-port`, else
    /// `--app-port`); on another port a redirected connection was meant
    /// for, that port's (see `ports`).
    /// `defaults` bound what the policy does not: the app's answer (without
    /// `spec.inbound.timeouts.request`) and its response body's stream idle.
    pub fn with_policy(
        mut self,
        shared: Arc<Shared>,
        service_port: u16,
        defaults: TimeoutDefaults,
    ) -> Self {
        self.ports = self.ports.with_policy(shared, service_port, defaults);
        self.stream_idle = defaults.stream_idle;
        self
    }
}

/// Counts a loop refusal in `levee_rejected_total`.
fn count_loop(port: &PortInbound, err: &ProxyError) {
    if err.kind == ErrorKind::LoopDetected {
        port.loops_refused.inc();
    }
}

impl Inbound {
    /// Ends the app's response body after the stream idle timeout.
    fn idle_bounded(&self, port: &PortInbound, response: Response<BoxBody>) -> Response<BoxBody> {
        let Some(idle) = self.stream_idle else {
            return response;
        };
        let fired = port.idle_timeouts.clone();
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

    fn admit_opaque(&self, original: SocketAddr, client: Option<&ClientIdentity>) -> bool {
        let port = self.ports.for_request(Some(&OriginalDst(original)));
        match port.authorize(client, &self.tls_metrics) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(port = original.port(), service = %port.label, reason = %err.detail, "opaque connection refused");
                false
            }
        }
    }

    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<BoxBody> {
        // Before anything reads the headers: the caller never speaks for itself.
        let client = req.extensions().get::<ClientIdentity>().cloned();
        authz::set_client_header(req.headers_mut(), client.as_ref());
        let port = self.ports.for_request(req.extensions().get());
        let service = &port.label;
        let mut observation = Observation::new(
            port.metrics.clone(),
            Instant::now(),
            errors::is_grpc(req.headers()),
        );
        if let Some(log) = &self.access_log {
            observation.access = Some(log.entry("inbound", service, "default", &req));
        }
        let span = Tracing::inbound(self.tracing.as_ref(), &mut req, service);
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
            let err = ProxyError::new(kind, &**service, detail);
            count_loop(&port, &err);
            span.error(&err);
            return observation.error(&err);
        }
        if let Err(err) = port.authorize(client.as_ref(), &self.tls_metrics) {
            span.error(&err);
            return observation.error(&err);
        }
        if let Err(err) = self.app.forwarder().screen_upgrade(&mut req, service) {
            span.error(&err);
            return observation.error(&err);
        }
        if let Some(entry) = observation.access.as_mut() {
            entry.track(&mut req);
        }
        let req = req.map(body::incoming);
        let result = port
            .send(req)
            .await
            .map_err(|e| ProxyError::from_stack(e, service));
        span.finish(&result);
        match result {
            Ok(response) => observation.response(self.idle_bounded(&port, response)),
            Err(err) => {
                count_loop(&port, &err);
                observation.error(&err)
            }
        }
    }
}
