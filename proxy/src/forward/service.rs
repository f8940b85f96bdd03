//! The connection pool as a tower [`Service`], for the resilience stack: the
//! innermost layer, sending each request to the endpoint the balancer chose
//! ([`CallContext::endpoint`]).
//!
//! Errors are [`ProxyError`]s boxed into [`BoxError`], so layers outside can
//! downcast them (connect failure vs reset, for retries and breakers).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use super::Forwarder;
use crate::body::{BoxBody, BoxError};
use crate::errors::{ErrorKind, ProxyError};
use crate::resilience::call::CallContext;
use crate::trace::AttemptSpan;

/// Forwards requests to the address the balancer chose ([`CallContext::endpoint`]). Cheap to clone.
#[derive(Clone)]
pub struct EndpointService {
    forwarder: Arc<Forwarder>,
    /// The service label errors carry (`name.namespace:port`).
    service: Arc<str>,
}

impl EndpointService {
    pub fn new(forwarder: Arc<Forwarder>, service: Arc<str>) -> Self {
        EndpointService { forwarder, service }
    }
}

impl Service<Request<BoxBody>> for EndpointService {
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send>>;

    /// Always ready: the pool dials on demand and bounds the dial itself.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<BoxBody>) -> Self::Future {
        let (forwarder, service) = (self.forwarder.clone(), self.service.clone());
        Box::pin(async move {
            let Some(addr) = CallContext::endpoint(&req) else {
                let detail = "no endpoint chosen for the request";
                return Err(ProxyError::new(ErrorKind::NoEndpoints, &*service, detail).into());
            };
            // The balancer recorded the attempt; its span (when the call
            // is traced) becomes the upstream's parent.
            let span = AttemptSpan::start(&mut req, addr);
            let result = forwarder.forward(req, addr, &service).await;
            if let Some(span) = span {
                span.finish(&result);
            }
            result.map_err(BoxError::from)
        })
    }
}
