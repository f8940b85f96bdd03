//! Errors the proxy itself produces, and the one place they become responses.
//!
//! A [`ProxyError`] says what went wrong ([`ErrorKind`], with the typed
//! [`ConnectCause`] / [`ResetCause`] of upstream failures), for which
//! service, where it came from ([`Origin`]) and whether another attempt may
//! be sent ([`Retry`]). [`to_response`] renders it as
//! DESIGN.md §2 specifies: an HTTP status with `x-levee-error` and a small JSON
//! body, or for gRPC callers a trailers-only response (HTTP 200) carrying
//! `grpc-status` / `grpc-message`. Callers never see a bare connection reset.

use std::fmt;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use levee_proto::policy::GrpcStatus;

use crate::body::{self, BoxBody};

mod cause;

pub use cause::{ConnectCause, Origin, ResetCause, Retry};

/// The response header naming a proxy-made error.
pub const X_LEVEE_ERROR: HeaderName = HeaderName::from_static("x-levee-error");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// What went wrong: the category of DESIGN.md §2 (one `x-levee-error`
/// value each), with the typed cause of upstream failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The service circuit breaker is open.
    CircuitOpen,
    /// The request (or an attempt) ran out of time.
    Timeout,
    /// A rate limit rejected the request.
    RateLimited,
    /// A concurrency limit (or the connection limit) rejected the request.
    Overloaded,
    /// The service has no endpoint to send to.
    NoEndpoints,
    /// No connection to the upstream could be made; nothing was sent.
    UpstreamConnect(ConnectCause),
    /// The exchange failed after the request was handed to a connection.
    UpstreamReset(ResetCause),
    /// The request cannot be routed (no or bad authority, unsupported method).
    BadRequest,
    /// The request names its destination ambiguously: several `Host`
    /// headers, or a `Host` that disagrees with the URI's authority (HTTP/2
    /// `:authority`, HTTP/1 absolute form).
    AmbiguousAuthority,
    /// Forwarding the request would loop: it passed too many proxies
    /// (`x-levee-hops`), or its destination is one of this proxy's own
    /// listeners ([`crate::loops`]).
    LoopDetected,
    /// Inbound: `spec.inbound.mtls` does not admit the caller (no verified
    /// identity on a strict port, or one not on the allow-list).
    Unauthorized,
}

impl ErrorKind {
    /// The `x-levee-error` value, also the `outcome` metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::CircuitOpen => "circuit-open",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RateLimited => "rate-limited",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::NoEndpoints => "no-endpoints",
            ErrorKind::UpstreamConnect(ConnectCause::Identity) => "upstream-identity",
            ErrorKind::UpstreamConnect(_) => "upstream-connect",
            // The caller's body broke (malformed chunked encoding, a reset
            // stream): the caller's request was bad, whatever the upstream did.
            ErrorKind::UpstreamReset(ResetCause::RequestBody) | ErrorKind::BadRequest => {
                "bad-request"
            }
            ErrorKind::UpstreamReset(_) => "upstream-reset",
            ErrorKind::AmbiguousAuthority => "ambiguous-authority",
            ErrorKind::LoopDetected => "loop-detected",
            ErrorKind::Unauthorized => "unauthorized",
        }
    }

    /// The HTTP status of the error response.
    pub fn status(&self) -> StatusCode {
        match self {
            ErrorKind::CircuitOpen | ErrorKind::Overloaded | ErrorKind::NoEndpoints => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::UpstreamReset(ResetCause::RequestBody) | ErrorKind::BadRequest => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::UpstreamConnect(_) | ErrorKind::UpstreamReset(_) => StatusCode::BAD_GATEWAY,
            ErrorKind::AmbiguousAuthority => StatusCode::BAD_REQUEST,
            ErrorKind::LoopDetected => StatusCode::LOOP_DETECTED,
            ErrorKind::Unauthorized => StatusCode::FORBIDDEN,
        }
    }

    /// The gRPC status of the error response.
    pub fn grpc_status(&self) -> GrpcStatus {
        match self {
            // gRPC's mapping of HTTP 400.
            ErrorKind::UpstreamReset(ResetCause::RequestBody) | ErrorKind::BadRequest => {
                GrpcStatus::Internal
            }
            ErrorKind::CircuitOpen
            | ErrorKind::Overloaded
            | ErrorKind::NoEndpoints
            | ErrorKind::UpstreamConnect(_)
            | ErrorKind::UpstreamReset(_) => GrpcStatus::Unavailable,
            ErrorKind::Timeout => GrpcStatus::DeadlineExceeded,
            ErrorKind::RateLimited => GrpcStatus::ResourceExhausted,
            ErrorKind::AmbiguousAuthority => GrpcStatus::Internal,
            // Not UNAVAILABLE: clients retry that, and a retried loop loops
            // again. The call cannot succeed until the configuration changes.
            ErrorKind::LoopDetected => GrpcStatus::FailedPrecondition,
            ErrorKind::Unauthorized => GrpcStatus::PermissionDenied,
        }
    }

    /// The typed cause of an upstream failure (`connect-refused`,
    /// `refused-stream`, ...), for the access log and debug logs.
    pub fn cause(&self) -> Option<&'static str> {
        match self {
            ErrorKind::UpstreamConnect(cause) => Some(cause.as_str()),
            ErrorKind::UpstreamReset(cause) => Some(cause.as_str()),
            _ => None,
        }
    }

    /// Where the error came from. A timeout is the upstream's: it did not
    /// answer in time.
    pub fn origin(&self) -> Origin {
        match self {
            ErrorKind::UpstreamReset(ResetCause::RequestBody)
            | ErrorKind::BadRequest
            | ErrorKind::AmbiguousAuthority
            | ErrorKind::Unauthorized => Origin::Downstream,
            ErrorKind::UpstreamConnect(_) | ErrorKind::UpstreamReset(_) | ErrorKind::Timeout => {
                Origin::Upstream
            }
            ErrorKind::CircuitOpen
            | ErrorKind::RateLimited
            | ErrorKind::Overloaded
            | ErrorKind::NoEndpoints
            | ErrorKind::LoopDetected => Origin::Proxy,
        }
    }

    /// Whether another attempt may be sent, and for which requests: a
    /// connect failure or a refused stream never reached the application;
    /// a reset or a timeout may have; the proxy's own refusals, bad
    /// requests and broken request bodies are not retried.
    pub fn retry(&self) -> Retry {
        match self {
            ErrorKind::UpstreamConnect(_) | ErrorKind::UpstreamReset(ResetCause::RefusedStream) => {
                Retry::Safe
            }
            // The downstream's body broke: there is nothing whole to replay.
            ErrorKind::UpstreamReset(ResetCause::RequestBody) => Retry::Never,
            ErrorKind::UpstreamReset(_) | ErrorKind::Timeout => Retry::IfIdempotent,
            ErrorKind::CircuitOpen
            | ErrorKind::RateLimited
            | ErrorKind::Overloaded
            | ErrorKind::NoEndpoints
            | ErrorKind::BadRequest
            | ErrorKind::AmbiguousAuthority
            | ErrorKind::LoopDetected
            | ErrorKind::Unauthorized => Retry::Never,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error the proxy produced on behalf of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyError {
    pub kind: ErrorKind,
    /// The service label (`name.namespace:port`, or the inbound service).
    pub service: String,
    /// Human-readable cause, sent to the client.
    pub detail: String,
    /// When set, sent as `Retry-After` (seconds, rounded up).
    pub retry_after: Option<Duration>,
    /// When set (rate-limited responses), sent as the IETF draft
    /// `RateLimit-Policy` / `RateLimit` headers.
    pub quota: Option<Quota>,
}

/// A rate limit's policy and state, for the IETF draft `RateLimit-Policy`
/// and `RateLimit` response headers (draft-ietf-httpapi-ratelimit-headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed per `window` (the sustained rate).
    pub limit: u32,
    /// The window `limit` is counted over.
    pub window: Duration,
    /// Requests that could be sent right now.
    pub remaining: u32,
    /// When a request will be admitted again.
    pub reset: Duration,
}

/// Whole seconds, rounded up (what `Retry-After` and the quota headers carry).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl ProxyError {
    pub fn new(kind: ErrorKind, service: impl Into<String>, detail: impl Into<String>) -> Self {
        ProxyError {
            kind,
            service: service.into(),
            detail: detail.into(),
            retry_after: None,
            quota: None,
        }
    }

    /// A tower stack's error as the error the caller sees: every layer of
    /// Levee's stacks returns a boxed `ProxyError`; anything else is the
    /// upstream's connection failing in a way no layer named.
    pub fn from_stack(error: crate::body::BoxError, service: &str) -> ProxyError {
        match error.downcast::<ProxyError>() {
            Ok(err) => *err,
            Err(other) => ProxyError::new(
                ErrorKind::UpstreamReset(ResetCause::Other),
                service,
                other.to_string(),
            ),
        }
    }

    /// Adds a `Retry-After` hint.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Adds the rate limit's quota for the `RateLimit-Policy` / `RateLimit` headers.
    pub fn with_quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.kind, self.service, self.detail)
    }
}

impl std::error::Error for ProxyError {}

/// An error and its sources as one line (hyper's and tonic's errors say
/// little alone: the cause is in the chain).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether a request's `content-type` makes it a gRPC call.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Renders `err` for the client: gRPC form when `grpc`, else HTTP + JSON.
pub fn to_response(err: &ProxyError, grpc: bool) -> Response<BoxBody> {
    let mut response = if grpc {
        let mut r = Response::new(body::empty());
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(
            GRPC_STATUS,
            HeaderValue::from(err.kind.grpc_status().code()),
        );
        let message = format!("{}: {}", err.kind, err.detail);
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
            h.insert(GRPC_MESSAGE, v);
        }
        r
    } else {
        let json = serde_json::json!({
            "error": err.kind.as_str(),
            "service": err.service,
            "detail": err.detail,
        });
        let mut r = Response::new(body::full(json.to_string()));
        *r.status_mut() = err.kind.status();
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    let h = response.headers_mut();
    h.insert(X_LEVEE_ERROR, HeaderValue::from_static(err.kind.as_str()));
    if let Some(after) = err.retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(ceil_secs(after)));
    }
    if let Some(q) = err.quota {
        let policy = format!("\"levee\";q={};w={}", q.limit, ceil_secs(q.window).max(1));
        let state = format!("\"levee\";r={};t={}", q.remaining, ceil_secs(q.reset));
        for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    response
}

/// gRPC's `grpc-message` encoding: printable ASCII except `%` passes, the
/// rest is `%XX` per byte of UTF-8.
fn percent_encode(message: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
