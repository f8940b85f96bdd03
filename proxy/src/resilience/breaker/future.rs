//! The breaker's response future: takes the outcome of what the inner
//! service answered (the balancer's classification of the latest attempt,
//! from the call's record; the head itself when the record has none) and
//! reports it through the call's permit: at once for an error
//! or a failing head, at the end of the body otherwise (see [`OutcomeBody`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body as _;
use pin_project_lite::pin_project;
use tower::BoxError;

use super::BreakerPermit;
use super::body::OutcomeBody;
use crate::body::BoxBody;
use crate::errors::ProxyError;
use crate::resilience::call::CallAttempts;
use crate::resilience::classify::{Outcome, classify_error, classify_response};

pin_project! {
    /// Either the admitted call, or the rejection. Dropped before it
    /// completes, the permit records the call as cancelled.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<BreakerPermit>,
        // The call's record: the latest attempt's outcome, as the balancer
        // classified it (`None` when rejected).
        attempts: Option<CallAttempts>,
        rejected: Option<ProxyError>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn admitted(inner: F, permit: BreakerPermit, attempts: CallAttempts) -> Self {
        ResponseFuture {
            inner: Some(inner),
            permit: Some(permit),
            attempts: Some(attempts),
            rejected: None,
        }
    }

    pub(super) fn rejected(error: ProxyError) -> Self {
        ResponseFuture {
            inner: None,
            permit: None,
            attempts: None,
            rejected: Some(error),
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<BoxBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<BoxBody>, BoxError>;

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
        let Some(permit) = this.permit.take() else {
            return Poll::Ready(result);
        };
        let permit = permit.head_arrived();
        match result {
            // Any response here came back from the call's latest attempt:
            // its outcome is the balancer's, else the head is read.
            Ok(response) => match this
                .attempts
                .as_ref()
                .and_then(CallAttempts::outcome)
                .unwrap_or_else(|| classify_response(&response))
            {
                // A good head: the body may still fail (an upstream dying
                // mid-stream, a gRPC status in trailers).
                Outcome::Success if !response.body().is_end_stream() => Poll::Ready(Ok(
                    response.map(|body| BoxBody::new(OutcomeBody::new(body, permit)))
                )),
                outcome => {
                    permit.record(&outcome);
                    Poll::Ready(Ok(response))
                }
            },
            Err(error) => {
                permit.record(&classify_error(error.as_ref()));
                Poll::Ready(Err(error))
            }
        }
    }
}
