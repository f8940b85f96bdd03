//! The bulkhead's response future: wait in the queue (if queued), then run
//! the call holding the slot until the response head arrives.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tower::{BoxError, Service};

use super::{Acquire, Bulkhead, QueueSlot};
use crate::errors::ProxyError;

pin_project! {
    /// See the module docs.
    pub struct ResponseFuture<S: Service<Req>, Req> {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Req>, Req> {
        Waiting {
            acquire: Acquire,
            slot: Option<QueueSlot>,
            call: Option<(S, Req)>,
            bulkhead: Arc<Bulkhead>,
        },
        Calling {
            #[pin]
            future: S::Future,
            permit: Option<OwnedSemaphorePermit>,
        },
        Rejected {
            error: Option<ProxyError>,
        },
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(super) fn calling(future: S::Future, permit: OwnedSemaphorePermit) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(super) fn waiting(
        acquire: Acquire,
        slot: QueueSlot,
        service: S,
        req: Req,
        bulkhead: Arc<Bulkhead>,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                acquire,
                slot: Some(slot),
                call: Some((service, req)),
                bulkhead,
            },
        }
    }

    pub(super) fn rejected(error: ProxyError) -> Self {
        ResponseFuture {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Waiting {
                    acquire,
                    slot,
                    call,
                    bulkhead,
                } => {
                    let acquired = ready!(acquire.as_mut().poll(cx));
                    drop(slot.take());
                    let permit = match acquired {
                        Ok(permit) => permit,
                        Err(_) => return Poll::Ready(Err(Box::new(bulkhead.closed()))),
                    };
                    let Some((mut service, req)) = call.take() else {
                        return Poll::Ready(Err("bulkhead future polled after completion".into()));
                    };
                    let future = service.call(req);
                    state.set(State::Calling {
                        future,
                        permit: Some(permit),
                    });
                }
                StateProj::Calling { future, permit } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    drop(permit.take());
                    return Poll::Ready(result);
                }
                StateProj::Rejected { error } => {
                    let error = error.take().map_or_else(
                        || BoxError::from("bulkhead future polled after completion"),
                        |e| Box::new(e) as BoxError,
                    );
                    return Poll::Ready(Err(error));
                }
            }
        }
    }
}
