//! Records each request's result in `levee_requests_total` and
//! `levee_request_duration_seconds` (DESIGN.md §5).
//!
//! Latency is time to the response head. The code is the HTTP status, or for
//! gRPC calls the `grpc-status`, which usually arrives in the trailers: those
//! responses are recorded when the trailers pass by (or when the body ends or
//! is dropped without any). Other responses are recorded at once, so plain
//! HTTP pays no body wrapper.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::access_log::AccessEntry;
use crate::body::{BoxBody, BoxError};
use crate::errors::{self, ProxyError};
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
        let code = if self.grpc {
            err.kind.grpc_status()
        } else {
            status.as_str()
        };
        tracing::debug!(error = %err, "proxy error");
        let elapsed = self.start.elapsed();
        let cause = err.kind.as_str();
        self.recorder(elapsed, status)
            .with_error(cause)
            .record(code, cause);
        response
    }

    /// Records (now or when the gRPC status shows up) an upstream response.
    pub fn response(self, response: Response<BoxBody>) -> Response<BoxBody> {
        let elapsed = self.start.elapsed();
        let status = response.status();
        if self.grpc {
            if let Some(code) = grpc_status(response.headers()) {
                self.recorder(elapsed, status)
                    .record(code, grpc_outcome(code));
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
    /// The `x-levee-error` cause, when the proxy answered itself.
    error: Option<&'static str>,
}

impl Recorder {
    fn with_error(mut self, cause: &'static str) -> Self {
        self.error = Some(cause);
        self
    }

    fn record(self, code: &str, outcome: &'static str) {
        self.metrics.record(code, outcome, self.elapsed);
        if let Some(entry) = self.access {
            let status = self.status.as_u16();
            entry.write(status, code, outcome, self.error, self.elapsed);
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<&str> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok())
}

/// Server-side gRPC failures; the other codes are answers (client errors included).
fn grpc_outcome(code: &str) -> &'static str {
    match code {
        "2" | "4" | "13" | "14" | "15" => outcome::FAILURE,
        _ => outcome::SUCCESS,
    }
}

struct Pending {
    recorder: Recorder,
    http_status: StatusCode,
}

impl Pending {
    fn record_from(self, trailers: Option<&HeaderMap>) {
        match trailers.and_then(grpc_status) {
            Some(code) => self.recorder.record(code, grpc_outcome(code)),
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
