//! [`AppService`]: the innermost service of the inbound stack, forwarding
//! each request to the local app on `127.0.0.1:<app-port>`, or, for a
//! connection iptables redirected to the inbound listener, on the port the
//! caller meant ([`OriginalDst`]).
//!
//! Errors are [`ProxyError`](crate::errors::ProxyError)s boxed into
//! [`BoxError`], as every layer of the stack returns them; the inbound
//! handler converts them back once, at the edge.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use crate::body::{BoxBody, BoxError};
use crate::forward::Forwarder;
use crate::resilience::call::CallAttempts;
use crate::transparent::OriginalDst;

/// Forwards requests to the local app. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppService {
    forwarder: Arc<Forwarder>,
    app: SocketAddr,
    /// The `service` label errors carry (`--service`).
    service: Arc<str>,
}

impl std::fmt::Debug for AppService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppService")
            .field("app", &self.app)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl AppService {
    pub(crate) fn new(forwarder: Arc<Forwarder>, app: SocketAddr, service: Arc<str>) -> Self {
        AppService {
            forwarder,
            app,
            service,
        }
    }

    /// The forwarder requests to the app go through.
    pub(crate) fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }
}

impl Service<Request<BoxBody>> for AppService {
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send>>;

    /// Always ready: the pool dials on demand and bounds the dial itself.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BoxBody>) -> Self::Future {
        let app = match req.extensions().get::<OriginalDst>() {
            Some(OriginalDst(original)) => SocketAddr::new(self.app.ip(), original.port()),
            None => self.app,
        };
        let (forwarder, service) = (self.forwarder.clone(), self.service.clone());
        Box::pin(async move {
            // Only a request that passed the limits reaches the app: the
            // access log counts an attempt for it, none for a rejected one.
            CallAttempts::record_in(&req, app);
            forwarder
                .forward(req, app, &service)
                .await
                .map_err(BoxError::from)
        })
    }
}
