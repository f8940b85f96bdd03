//! The breaker's response future: classifies what the inner service
//! answered and reports it through the call's permit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tower::BoxError;

use super::BreakerPermit;
use crate::errors::ProxyError;
use crate::resilience::classify::{classify_error, classify_response};

pin_project! {
    /// Either the admitted call, or the rejection. Dropped before it
    /// completes, the permit records the call as cancelled.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<BreakerPermit>,
        rejected: Option<ProxyError>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn admitted(inner: F, permit: BreakerPermit) -> Self {
        ResponseFuture {
            inner: Some(inner),
            permit: Some(permit),
            rejected: None,
        }
    }

    pub(super) fn rejected(error: ProxyError) -> Self {
        ResponseFuture {
            inner: None,
            permit: None,
            rejected: Some(error),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let error = this.rejected.take().map_or_else(
                || BoxError::from("breaker response future polled after completion"),
                |e| Box::new(e) as BoxError,
            );
            return Poll::Ready(Err(error));
        };
        let result = ready!(inner.poll(cx)).map_err(Into::into);
        if let Some(permit) = this.permit.take() {
            let outcome = match &result {
                Ok(response) => classify_response(response),
                Err(error) => classify_error(error.as_ref()),
            };
            permit.record(&outcome);
        }
        Poll::Ready(result)
    }
}
