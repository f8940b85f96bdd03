//! The inbound data path: calls from peers, forwarded to the local app on
//! `127.0.0.1:<app-port>` with their authority unchanged. The `service` label
//! is `--service` (or `unknown`).
//!
//! Before a request reaches the app, `limits` applies the local service's
//! `spec.inbound`: rate limit (429), concurrency (503 overloaded), request
//! timeout (504). Per-client rate limits key on the peer address the
//! listener records ([`crate::server::ClientAddr`]).

mod limits;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::body::{self, BoxBody};
use crate::errors::{self, ErrorKind, ProxyError};
use crate::forward::Forwarder;
use crate::metrics::{Direction, RequestMetrics};
use crate::observe::Observation;
use crate::observe::access_log::AccessLog;
use crate::server::{ClientAddr, Handler};
use crate::state::Shared;
use crate::trace::Tracing;

use self::limits::Admitted;

/// Handles requests arriving on the inbound listener.
pub struct Inbound {
    forwarder: Arc<Forwarder>,
    app: SocketAddr,
    service: String,
    /// Inbound has one service and (for now) one route: resolved once.
    metrics: RequestMetrics,
    access_log: Option<AccessLog>,
    /// `spec.inbound` of the local service; `None` until [`Inbound::with_policy`].
    limits: Option<limits::InboundLimits>,
    /// SERVER spans of inbound calls (`None`: tracing off).
    tracing: Option<Tracing>,
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
        Inbound {
            forwarder,
            app,
            service,
            metrics: handle,
            access_log,
            limits: None,
            tracing: None,
        }
    }

    /// Traces each inbound call (a SERVER span) with `tracing`.
    pub fn with_tracing(mut self, tracing: Option<Tracing>) -> Self {
        self.tracing = tracing;
        self
    }

    /// Enforces the local service's `spec.inbound` from `shared`'s policy:
    /// the policy of `service.namespace:service_port`, where `service_port`
    /// is the port callers use (`--service-port`, else `--app-port`).
    pub fn with_policy(mut self, shared: Arc<Shared>, service_port: u16) -> Self {
        self.limits = Some(limits::InboundLimits::new(
            shared,
            &self.service,
            service_port,
        ));
        self
    }
}

impl Handler for Inbound {
    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<BoxBody> {
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
        if req.method() == Method::CONNECT {
            let err = ProxyError::new(
                ErrorKind::BadRequest,
                &*self.service,
                "CONNECT is not accepted inbound",
            );
            span.error(&err);
            return observation.error(&err);
        }
        let admitted = match &self.limits {
            Some(limits) => {
                let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
                match limits.admit(client).await {
                    Ok(admitted) => Some(admitted),
                    Err(err) => {
                        span.error(&err);
                        return observation.error(&err);
                    }
                }
            }
            None => None,
        };
        if let Some(entry) = &observation.access {
            entry.attempt(self.app);
        }
        let forward = self
            .forwarder
            .forward(req.map(body::incoming), self.app, &self.service);
        let result = match (&self.limits, admitted.as_ref()) {
            (
                Some(limits),
                Some(Admitted {
                    deadline: Some(deadline),
                    timeout: Some(limit),
                    ..
                }),
            ) => match tokio::time::timeout_at(*deadline, forward).await {
                Ok(result) => result,
                Err(_) => Err(limits.timed_out(*limit)),
            },
            _ => forward.await,
        };
        // The bulkhead slot is held until the response head is back.
        drop(admitted);
        span.finish(&result);
        match result {
            Ok(response) => observation.response(response),
            Err(err) => observation.error(&err),
        }
    }
}
