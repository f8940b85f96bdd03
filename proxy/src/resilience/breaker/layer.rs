//! [`ServiceBreakerLayer`] and the [`ServiceBreakerService`] it builds: the
//! gate in front of the request timeout, the retries, the concurrency limit
//! and the balancer; it sees each logical call once.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{BoxError, Layer, Service};

use super::ServiceBreaker;
use super::future::ResponseFuture;
use crate::body::BoxBody;
use crate::resilience::call::CallContext;
use crate::trace::{self, SpanEvent};

/// Wraps a service with the breaker of its target service.
#[derive(Clone, Debug)]
pub struct ServiceBreakerLayer {
    breaker: Arc<ServiceBreaker>,
}

impl ServiceBreakerLayer {
    pub fn new(breaker: Arc<ServiceBreaker>) -> Self {
        ServiceBreakerLayer { breaker }
    }
}

impl<S> Layer<S> for ServiceBreakerLayer {
    type Service = ServiceBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceBreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// Fails calls fast while the breaker is open; reports every outcome.
#[derive(Clone, Debug)]
pub struct ServiceBreakerService<S> {
    inner: S,
    breaker: Arc<ServiceBreaker>,
}

impl<S, ReqBody> Service<Request<ReqBody>> for ServiceBreakerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<BoxBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The gate is checked per call, so a rejected call costs nothing downstream.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => {
                let call = CallContext::of(&mut req);
                // An outer deadline (none in the outbound stack, where the
                // timeout layer is inside and answers with its own error).
                let permit = permit.with_deadline(call.deadline);
                // The call's record, created here for the layers inside
                // (the balancer would otherwise): the latest attempt's
                // outcome is read from it, classified once.
                let attempts = call.attempts().clone();
                ResponseFuture::admitted(self.inner.call(req), permit, attempts)
            }
            Err(rejected) => {
                trace::event(req.extensions(), SpanEvent::CircuitOpen);
                ResponseFuture::rejected(rejected)
            }
        }
    }
}
