//! The admin HTTP server (default `0.0.0.0:4191`): liveness, readiness,
//! Prometheus metrics and JSON views of the policy and endpoints in force.
//!
//! | path | answer |
//! |---|---|
//! | `/live` | 200 `ok` while the process runs |
//! | `/ready` | 200 once a first config is in place, else 503 |
//! | `/metrics` | OpenMetrics text of every metric family |
//! | `/config` | the snapshot in force: version, source, policies (as written and effective) |
//! | `/endpoints` | per service: endpoints from the policy file (`static`), the control plane or its cache, or cached DNS answers |
//!
//! Plain HTTP/1.1; only `GET` and `HEAD`.

mod render;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::state::Shared;

/// A client that sends no complete request head within this is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Open admin requests get this long to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Serves the admin endpoints on `listener` until `shutdown`, then lets open
/// connections finish (up to a short grace period).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "admin: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let service = service_fn(move |request| {
            let response = respond(&shared, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin: connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("admin: connections still open after the grace period");
    }
    Ok(())
}

/// The answer to one admin request.
fn respond(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/live" => reply(StatusCode::OK, TEXT, "ok\n"),
        "/ready" if shared.is_ready() => reply(StatusCode::OK, TEXT, "ready\n"),
        "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n"),
        "/metrics" => reply(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            shared.metrics.encode(),
        ),
        "/config" => render::config(shared, |view| json(view)),
        "/endpoints" => json(&render::endpoints(shared)),
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found\n"),
    }
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            reply(StatusCode::OK, JSON, body)
        }
        Err(error) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            format!("cannot encode JSON: {error}\n"),
        ),
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests;
