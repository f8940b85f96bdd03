//! The rate limit's response future: the inner call, or the rejection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;

use crate::errors::ProxyError;

pin_project! {
    /// Resolves to the inner service's answer, or at once to the rejection.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        rejected: Option<ProxyError>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(inner: F) -> Self {
        ResponseFuture {
            inner: Some(inner),
            rejected: None,
        }
    }

    pub(crate) fn rejected(error: ProxyError) -> Self {
        ResponseFuture {
            inner: None,
            rejected: Some(error),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(this.rejected.take().map_or_else(
                || BoxError::from("rate limit response future polled after completion"),
                |e| Box::new(e) as BoxError,
            ))),
        }
    }
}
