//! [`OutcomeBody`]: a response body that carries its call's breaker permit
//! to the end of the stream. A response head that looks fine (2xx, or a
//! gRPC response whose status will come in trailers) is not yet a success:
//! the upstream may die mid-body, or a gRPC stream may end with a failing
//! `grpc-status`. The permit is recorded when the body ends: a body error is
//! an upstream error (a reset, or the typed [`ProxyError`] an inner layer
//! raised, e.g. an idle timeout), trailers give the gRPC status, a clean end
//! is a success. A body dropped before its end (the caller went away) drops
//! the permit unrecorded: cancelled, never a failure.
//!
//! [`ProxyError`]: crate::errors::ProxyError

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use levee_proto::policy::GrpcStatus;

use super::BreakerPermit;
use crate::body::{BoxBody, BoxError};
use crate::resilience::classify::{Outcome, classify_error};

pin_project_lite::pin_project! {
    /// Passes `inner` through and records `permit` when it ends.
    pub(super) struct OutcomeBody {
        #[pin]
        inner: BoxBody,
        permit: Option<BreakerPermit>,
    }
}

impl OutcomeBody {
    /// `permit` must have its head latency noted already.
    pub(super) fn new(inner: BoxBody, permit: BreakerPermit) -> Self {
        OutcomeBody {
            inner,
            permit: Some(permit),
        }
    }
}

impl Body for OutcomeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        let outcome = match &frame {
            // The last frame of a body of known length: hyper stops polling
            // once the body says it ended, so this is the end.
            Some(Ok(f)) if f.is_data() && inner.is_end_stream() => Some(Outcome::Success),
            Some(Ok(f)) => {
                f.trailers_ref()
                    .map(|trailers| match GrpcStatus::from_headers(trailers) {
                        None | Some(GrpcStatus::Ok) => Outcome::Success,
                        Some(status) => Outcome::Grpc(status),
                    })
            }
            Some(Err(error)) => Some(classify_error(error.as_ref())),
            None => Some(Outcome::Success),
        };
        if let Some(outcome) = outcome
            && let Some(permit) = this.permit.take()
        {
            permit.record(&outcome);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
