//! The webhooks' HTTPS server on `--webhook-addr`: TLS (rustls), HTTP/1.1,
//! `POST /mutate-pods`, `POST /mutate-pods-opt-in` and
//! `POST /validate-resiliencepolicy`.
//!
//! Bounded against a hostile client: at most [`MAX_CONNECTIONS`] open
//! connections (one more is closed at once), a TLS handshake or a request
//! head not done within [`HANDSHAKE_TIMEOUT`] closes the connection, a body
//! larger than `--webhook-max-body-bytes` gets 413 without being buffered,
//! and a request is answered within its `timeout` query parameter (the API
//! server's own deadline, e.g. `?timeout=5s`; default and cap
//! [`MAX_REQUEST_TIME`]). Every error is answered here, once, as a plain-text
//! status ([`WebhookError`]); the API server then applies the webhook's
//! failurePolicy.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::inject::{Injector, Scope};
use super::review::{self, Review, ReviewError};
use super::validate;
use crate::listener::{accept_capped, reply};

/// Open connections at most (the API server keeps a few alive per replica).
pub const MAX_CONNECTIONS: usize = 64;
/// TLS handshake, and then the request head, each within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a request may take; also the deadline without `?timeout=`
/// (the API server's own maximum webhook timeout is 30 s).
pub const MAX_REQUEST_TIME: Duration = Duration::from_secs(30);

/// What the handlers need.
#[derive(Clone, Debug)]
pub struct WebhookState {
    /// The sidecar injector's settings.
    pub injector: Arc<Injector>,
    /// `--webhook-max-body-bytes`.
    pub max_body: usize,
}

/// Every way a request fails, answered once by [`WebhookError::response`].
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "not found: the webhooks are POST /mutate-pods, /mutate-pods-opt-in and /validate-resiliencepolicy"
    )]
    NotFound,
    #[error("method not allowed: use POST")]
    Method,
    #[error("content-type must be application/json")]
    ContentType,
    #[error("the ?timeout= parameter {0:?} is not a duration such as 5s")]
    Timeout(String),
    #[error("the body is larger than --webhook-max-body-bytes ({0} bytes)")]
    TooLarge(usize),
    #[error("the body could not be read: {0}")]
    Body(String),
    #[error("the request's deadline ({0:?}) passed before it was answered")]
    Deadline(Duration),
    #[error(transparent)]
    Review(#[from] ReviewError),
}

impl WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            WebhookError::NotFound => StatusCode::NOT_FOUND,
            WebhookError::Method => StatusCode::METHOD_NOT_ALLOWED,
            WebhookError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebhookError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
            WebhookError::Timeout(_) | WebhookError::Body(_) | WebhookError::Review(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// The one place an error becomes a response.
    fn response(&self) -> Response<Full<Bytes>> {
        tracing::debug!(error = %self, "webhook request refused");
        reply(
            self.status(),
            "text/plain; charset=utf-8",
            format!("{self}\n"),
        )
    }
}

/// Serve until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    state: WebhookState,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    accept_capped(
        "webhook",
        listener,
        MAX_CONNECTIONS,
        shutdown,
        |_| {},
        |stream, peer| {
            let tls = tls.clone();
            let state = state.clone();
            let builder = builder.clone();
            async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "webhook TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "webhook TLS handshake timed out");
                        return;
                    }
                };
                let conn = builder.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| handle(state.clone(), req)),
                );
                if let Err(error) = conn.await {
                    tracing::debug!(%peer, %error, "webhook connection ended with an error");
                }
            }
        },
    )
    .await
}

async fn handle(
    state: WebhookState,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match answer(state, req).await {
        Ok(review) => reply(StatusCode::OK, "application/json", review.to_json()),
        Err(error) => error.response(),
    })
}

/// Which webhook a path names.
#[derive(Clone, Copy, Debug)]
enum Hook {
    Inject(Scope),
    ValidatePolicy,
}

async fn answer(state: WebhookState, req: Request<Incoming>) -> Result<Review, WebhookError> {
    let hook = match req.uri().path() {
        "/mutate-pods" => Hook::Inject(Scope::Namespace),
        "/mutate-pods-opt-in" => Hook::Inject(Scope::OptIn),
        "/validate-resiliencepolicy" => Hook::ValidatePolicy,
        _ => return Err(WebhookError::NotFound),
    };
    if req.method() != Method::POST {
        return Err(WebhookError::Method);
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(WebhookError::ContentType);
    }
    let deadline = deadline(req.uri().query())?;
    let work = async {
        let body = Limited::new(req.into_body(), state.max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    WebhookError::TooLarge(state.max_body)
                } else {
                    WebhookError::Body(e.to_string())
                }
            })?
            .to_bytes();
        let response = match hook {
            Hook::Inject(scope) => {
                let request = review::parse::<Pod>(&body)?;
                let response = state.injector.review(&request, scope);
                tracing::info!(
                    uid = %request.uid, namespace = request.namespace.as_deref().unwrap_or(""),
                    name = %request.name, dry_run = request.dry_run,
                    injected = response.patch.is_some(), warnings = ?response.warnings,
                    "pod admission"
                );
                response
            }
            Hook::ValidatePolicy => {
                let request = review::parse::<DynamicObject>(&body)?;
                let response = validate::review(&request);
                tracing::info!(
                    uid = %request.uid, namespace = request.namespace.as_deref().unwrap_or(""),
                    name = %request.name, operation = ?request.operation,
                    allowed = response.allowed, "policy admission"
                );
                response
            }
        };
        Ok(Review::from_response(response))
    };
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or(Err(WebhookError::Deadline(deadline)))
}

/// The `timeout` query parameter (the API server sends its own, e.g. `5s`),
/// capped at [`MAX_REQUEST_TIME`].
fn deadline(query: Option<&str>) -> Result<Duration, WebhookError> {
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout="));
    match value {
        None => Ok(MAX_REQUEST_TIME),
        Some(text) => text
            .parse::<levee_proto::policy::Duration>()
            .ok()
            .filter(|d| !d.is_zero())
            .map(|d| d.get().min(MAX_REQUEST_TIME))
            .ok_or_else(|| WebhookError::Timeout(text.chars().take(32).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_query_is_honoured_and_capped() {
        assert_eq!(
            deadline(Some("timeout=5s")).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            deadline(Some("a=b&timeout=1m30s")).unwrap(),
            MAX_REQUEST_TIME
        );
        assert_eq!(deadline(None).unwrap(), MAX_REQUEST_TIME);
        assert!(matches!(
            deadline(Some("timeout=soon")),
            Err(WebhookError::Timeout(_))
        ));
        assert!(matches!(
            deadline(Some("timeout=0s")),
            Err(WebhookError::Timeout(_))
        ));
    }
}
