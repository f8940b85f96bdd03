//! The inbound data path: calls from peers, forwarded to the local app on
//! `127.0.0.1:<app-port>` with their authority unchanged. The `service` label
//! is `--service` (or `unknown`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::body::{self, BoxBody};
use crate::errors::{self, ErrorKind, ProxyError};
use crate::forward::Forwarder;
use crate::forward::access_log::AccessLog;
use crate::forward::telemetry::Observation;
use crate::metrics::{Direction, RequestMetrics};
use crate::server::Handler;

/// Handles requests arriving on the inbound listener.
pub struct Inbound {
    forwarder: Arc<Forwarder>,
    app: SocketAddr,
    service: String,
    /// Inbound has one service and (for now) one route: resolved once.
    metrics: RequestMetrics,
    access_log: Option<AccessLog>,
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
        }
    }
}

impl Handler for Inbound {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        let mut observation = Observation::new(
            self.metrics.clone(),
            Instant::now(),
            errors::is_grpc(req.headers()),
        );
        if let Some(log) = &self.access_log {
            observation.access = Some(log.entry("inbound", &self.service, "default", &req));
        }
        if req.method() == Method::CONNECT {
            let err = ProxyError::new(
                ErrorKind::BadRequest,
                &*self.service,
                "CONNECT is not accepted inbound",
            );
            return observation.error(&err);
        }
        match self
            .forwarder
            .forward(req.map(body::incoming), self.app, &self.service)
            .await
        {
            Ok(response) => observation.response(response),
            Err(err) => observation.error(&err),
        }
    }
}
