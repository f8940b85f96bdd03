//! [`ConcurrencyLayer`] and its [`ConcurrencyService`].

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{BoxError, Layer, Service};

use super::future::ResponseFuture;
use super::{Admission, Bulkhead};

/// Applies a [`Bulkhead`] to every call.
#[derive(Clone, Debug)]
pub struct ConcurrencyLayer {
    bulkhead: Arc<Bulkhead>,
}

impl ConcurrencyLayer {
    pub fn new(bulkhead: Arc<Bulkhead>) -> Self {
        ConcurrencyLayer { bulkhead }
    }
}

impl<S> Layer<S> for ConcurrencyLayer {
    type Service = ConcurrencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// Runs a call when a slot is free, queues it while the queue has room,
/// rejects it otherwise.
#[derive(Clone, Debug)]
pub struct ConcurrencyService<S> {
    inner: S,
    bulkhead: Arc<Bulkhead>,
}

impl<S, Req> Service<Req> for ConcurrencyService<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.bulkhead.try_acquire() {
            Ok(Admission::Now(permit)) => ResponseFuture::calling(self.inner.call(req), permit),
            Ok(Admission::Queued(slot, acquire)) => {
                // The ready service goes with the queued call; a clone stays.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(acquire, slot, ready, req, self.bulkhead.clone())
            }
            Err(error) => ResponseFuture::rejected(error),
        }
    }
}
