//! An HTTP/1 response body that gives its connection back to the pool.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::EndpointConns;
use crate::body::{BoxBody, BoxError};

pin_project_lite::pin_project! {
    /// An HTTP/1 response body that checks its connection back into the pool
    /// once fully read. Dropped early, the connection is dropped with it.
    pub(super) struct PooledBody {
        #[pin]
        pub(super) inner: Incoming,
        pub(super) checkin: Option<(http1::SendRequest<BoxBody>, Arc<EndpointConns>)>,
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            None => {
                if let Some((sender, endpoint)) = this.checkin.take() {
                    endpoint.idle_h1.checkin(sender);
                }
            }
            Some(Err(_)) => drop(this.checkin.take()),
            // A server writing a sized body stops polling after the last
            // byte, so check in as soon as the body reports its end.
            Some(Ok(_)) => {
                if this.inner.is_end_stream()
                    && let Some((sender, endpoint)) = this.checkin.take()
                {
                    endpoint.idle_h1.checkin(sender);
                }
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
