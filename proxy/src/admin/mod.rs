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
//! Plain HTTP/1.1; only `GET` and `HEAD`. `/config` and `/endpoints` reveal
//! the topology: by default only loopback callers get them ([`guard`]);
//! connections are capped and must send their head in time.

mod guard;
mod render;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::state::Shared;
pub use guard::AdminLimits;

/// Open admin requests get this long to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Serves the admin endpoints on `listener` until `shutdown`, then lets open
/// connections finish (up to a short grace period).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: AdminLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let rejecting = Arc::new(Semaphore::new(guard::MAX_REJECTING));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "admin: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, limit = limits.max_connections, "admin: connection limit reached");
            if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    guard::reject(stream, limits.header_read_timeout).await;
                    drop(permit);
                });
            }
            continue;
        };
        let shared = shared.clone();
        let topology = limits.shows_topology_to(peer);
        let service = service_fn(move |request| {
            let response = respond(&shared, &request, topology);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin: connection ended with an error");
            }
            drop(slot);
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

/// The answer to one admin request; `topology`: the caller may read
/// `/config` and `/endpoints`.
fn respond<B>(shared: &Shared, request: &Request<B>, topology: bool) -> Response<Full<Bytes>> {
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
        "/config" | "/endpoints" if !topology => reply(
            StatusCode::FORBIDDEN,
            TEXT,
            "only loopback callers may read the topology (see --admin-topology)\n",
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
