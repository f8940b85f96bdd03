//! Records each request's result in `levee_requests_total` and
//! `levee_request_duration_seconds` (DESIGN.md §5).
//!
//! Latency is time to the response head. The code is the HTTP status, or for
//! gRPC calls the `grpc-status`, which usually arrives in the trailers: those
//! responses are recorded when the trailers pass by (or when the body ends or
//! is dropped without any). Other responses are recorded at once, so plain
//! HTTP pays no body wrapper.
//!
//! The outcome label is the one rule: an HTTP 5xx, or a gRPC status that
//! [`GrpcStatus::is_failure`] calls a failure (garbage reads as UNKNOWN), or
//! a gRPC stream that ended without any `grpc-status` is `failure`; any other
//! answer is `success`; a proxy-made error is its `x-levee-error` cause.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use levee_proto::policy::GrpcStatus;

use super::access_log::AccessEntry;
use crate::body::{BoxBody, BoxError};
use crate::errors::{self, ErrorKind, ProxyError};
use crate::metrics::{RequestMetrics, outcome};

/// One request being observed.
pub struct Observation {
    pub metrics: RequestMetrics,
    pub start: Instant,
    /// The request was gRPC (by content-type).
    pub grpc: bool,
    /// Its access-log line, when `--access-log` is on.
    pub access: Option<Box<AccessEntry>>,
}

impl Observation {
    pub fn new(metrics: RequestMetrics, start: Instant, grpc: bool) -> Self {
        Observation {
            metrics,
            start,
            grpc,
            access: None,
        }
    }

    /// Records a proxy-made error and renders it.
    pub fn error(self, err: &ProxyError) -> Response<BoxBody> {
        let response = errors::to_response(err, self.grpc);
        let status = response.status();
        let grpc_code;
        let code = if self.grpc {
            grpc_code = err.kind.grpc_status().code().to_string();
            &grpc_code
        } else {
            status.as_str()
        };
        tracing::debug!(error = %err, cause = err.kind.cause(), "proxy error");
        let elapsed = self.start.elapsed();
        let cause = err.kind.as_str();
        self.recorder(elapsed, status)
            .with_error(err)
            .record(code, cause);
        response
    }

    /// Records (now or when the gRPC status shows up) an upstream response.
    pub fn response(mut self, response: Response<BoxBody>) -> Response<BoxBody> {
        let elapsed = self.start.elapsed();
        if let Some(entry) = self.access.as_mut() {
            entry.answered_by(&response);
        }
        let status = response.status();
        if self.grpc {
            if let Some(grpc) = GrpcStatus::trailers_only(&response) {
                self.recorder(elapsed, status).record_grpc(grpc);
                return response;
            }
            let pending = Pending {
                recorder: self.recorder(elapsed, status),
                http_status: status,
            };
            return response.map(|inner| {
                GrpcStatusBody {
                    inner,
                    pending: Some(pending),
                }
                .boxed()
            });
        }
        let outcome = if status.is_server_error() {
            outcome::FAILURE
        } else {
            outcome::SUCCESS
        };
        self.recorder(elapsed, status)
            .record(status.as_str(), outcome);
        response
    }

    fn recorder(self, elapsed: Duration, status: StatusCode) -> Recorder {
        Recorder {
            metrics: self.metrics,
            access: self.access,
            elapsed,
            status,
            error: None,
        }
    }
}

/// What to update once a request's code is known.
struct Recorder {
    metrics: RequestMetrics,
    access: Option<Box<AccessEntry>>,
    elapsed: Duration,
    /// The HTTP status sent to the caller.
    status: StatusCode,
    /// What went wrong, when the proxy answered itself.
    error: Option<ErrorKind>,
}

impl Recorder {
    fn with_error(mut self, err: &ProxyError) -> Self {
        self.error = Some(err.kind);
        self
    }

    fn record_grpc(self, status: GrpcStatus) {
        let outcome = if status.is_failure() {
            outcome::FAILURE
        } else {
            outcome::SUCCESS
        };
        self.record(&status.code().to_string(), outcome);
    }

    fn record(self, code: &str, outcome: &'static str) {
        self.metrics.record(code, outcome, self.elapsed);
        if let Some(entry) = self.access {
            let status = self.status.as_u16();
            entry.write(status, code, outcome, self.error, self.elapsed);
        }
    }
}

struct Pending {
    recorder: Recorder,
    http_status: StatusCode,
}

impl Pending {
    fn record_from(self, trailers: Option<&HeaderMap>) {
        match trailers.and_then(GrpcStatus::from_headers) {
            Some(status) => self.recorder.record_grpc(status),
            // No status: the stream broke or the server is not speaking gRPC.
            None => self
                .recorder
                .record(self.http_status.as_str(), outcome::FAILURE),
        }
    }
}

pin_project_lite::pin_project! {
    /// Passes a gRPC response body through, recording its `grpc-status`.
    struct GrpcStatusBody {
        #[pin]
        inner: BoxBody,
        pending: Option<Pending>,
    }

    impl PinnedDrop for GrpcStatusBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(pending) = this.project().pending.take() {
                pending.record_from(None);
            }
        }
    }
}

impl Body for GrpcStatusBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref()
                    && let Some(pending) = this.pending.take()
                {
                    pending.record_from(Some(trailers));
                }
            }
            Some(Err(_)) | None => {
                if let Some(pending) = this.pending.take() {
                    pending.record_from(None);
                }
            }
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

#[cfg(test)]
mod tests;
