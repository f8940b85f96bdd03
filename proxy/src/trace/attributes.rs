//! The attributes a span gets and how it ends: the stable HTTP semantic
//! conventions (`http.request.method`, `url.path`, `server.address`, ...),
//! `error.type`, `levee.outcome` and the span status.
//!
//! Two rules meet here, on purpose. `levee.outcome` is the proxy's one
//! rule, the same as the metrics' `outcome` label and the access log: HTTP
//! 5xx, or a gRPC status [`GrpcStatus::is_failure`] calls a failure. The
//! span *status* follows the OpenTelemetry semantic conventions instead,
//! because trace backends read it that way: a CLIENT span is an error for
//! any HTTP 4xx/5xx or non-OK gRPC status (the call did not do what the
//! caller wanted), a SERVER span only when the outcome is a failure.

use std::borrow::Cow;

use http::{Method, Request, Response, Version};
use levee_proto::policy::GrpcStatus;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, SpanRef, Status};

use crate::errors::ProxyError;

/// Ends a span whose future was dropped before the response head.
pub(super) fn end_cancelled(span: &SpanRef<'_>, cause: &'static str) {
    span.set_attributes([
        KeyValue::new("error.type", cause),
        KeyValue::new("levee.outcome", cause),
    ]);
    span.set_status(Status::error(cause));
    span.end();
}

/// Stable HTTP semantic-convention attributes of a request.
pub(super) fn request_attributes<B>(req: &Request<B>) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("http.request.method", method_name(req.method())),
        KeyValue::new("url.path", req.uri().path().to_owned()),
        KeyValue::new("network.protocol.version", protocol_version(req.version())),
    ];
    if let Some(authority) = crate::forward::uri::request_authority(req)
        && let Ok(authority) = authority.parse::<http::uri::Authority>()
    {
        attributes.push(KeyValue::new("server.address", authority.host().to_owned()));
        let port = authority.port_u16().unwrap_or(80);
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    attributes
}

/// Ends `span` with a response head: its HTTP status, and for a gRPC
/// trailers-only response (an immediate error) its `grpc-status`. A
/// `grpc-status` that comes in trailers is after the span has ended.
pub(super) fn end_with_response<B>(span: &SpanRef<'_>, response: &Response<B>, kind: SpanKind) {
    let status = response.status();
    let code = status.as_u16();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
    // Outbound over mTLS: who answered, as its verified certificate says.
    if let Some(crate::tls::ServerIdentity(id)) = response.extensions().get() {
        span.set_attribute(KeyValue::new("levee.server.identity", id.to_string()));
    }
    let grpc = GrpcStatus::trailers_only(response);
    let (failure, answered_ok, error_type) = match grpc {
        Some(grpc) => {
            span.set_attribute(KeyValue::new(
                "rpc.grpc.status_code",
                i64::from(grpc.code()),
            ));
            let ok = grpc == GrpcStatus::Ok;
            (grpc.is_failure(), ok, grpc.code().to_string())
        }
        None => (
            status.is_server_error(),
            !status.is_client_error() && !status.is_server_error(),
            code.to_string(),
        ),
    };
    let failed = failure || (kind == SpanKind::Client && !answered_ok);
    span.set_attribute(KeyValue::new(
        "levee.outcome",
        if failure { "failure" } else { "success" },
    ));
    if failed {
        span.set_attribute(KeyValue::new("error.type", error_type));
        span.set_status(Status::error(""));
    }
    span.end();
}

pub(super) fn end_with_error(span: &SpanRef<'_>, err: &ProxyError) {
    let kind = err.kind.as_str();
    span.set_attributes([
        KeyValue::new(
            "http.response.status_code",
            i64::from(err.kind.status().as_u16()),
        ),
        KeyValue::new("error.type", kind),
        KeyValue::new("levee.outcome", kind),
    ]);
    if let Some(cause) = err.kind.cause() {
        span.set_attribute(KeyValue::new("levee.error.cause", cause));
    }
    span.set_status(Status::error(err.detail.clone()));
    span.end();
}

/// The method as a span name and attribute value; `_OTHER` for extension
/// methods, as the semantic conventions ask.
pub(super) fn method_name(method: &Method) -> Cow<'static, str> {
    let name = match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "_OTHER",
    };
    Cow::Borrowed(name)
}

pub(super) fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

pub(super) fn version(policy_version: u64) -> i64 {
    i64::try_from(policy_version).unwrap_or(i64::MAX)
}
