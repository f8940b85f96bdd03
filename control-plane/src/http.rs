//! The control plane's HTTP side on `--http-addr`: `/live` (the process
//! answers), `/ready` (the store answers a read; in Kubernetes mode: the
//! watches have listed) and `/metrics` (Prometheus
//! text).
//!
//! Bounded against a hostile client: at most `--http-max-connections` open
//! connections (one more is closed at once and counted in
//! `levee_cp_http_connections_refused_total`), and a request head not read
//! within `--http-header-read-timeout` closes its connection. No handler
//! reads a request body, so bodies cost nothing to buffer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::listener::{accept_capped, reply};
use crate::metrics::Metrics;
use crate::store::PolicyStore;

/// What `/ready` checks.
#[derive(Clone, Debug)]
pub enum Readiness {
    /// redb mode: the store answers a read.
    Store(Arc<PolicyStore>),
    /// Kubernetes mode: every watch has listed once and discovery is fed.
    Synced(watch::Receiver<bool>),
}

/// What the HTTP handlers look at.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// What `/ready` checks.
    pub readiness: Readiness,
    /// Encoded on `/metrics`.
    pub metrics: Metrics,
}

/// `--http-max-connections` and `--http-header-read-timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// How long a client has to send a whole request head.
    pub header_read_timeout: Duration,
}

/// Serve until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    limits: HttpLimits,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let metrics = state.metrics.clone();
    accept_capped(
        "HTTP",
        listener,
        limits.max_connections,
        shutdown,
        |_| {
            metrics.http_refused.inc();
        },
        |stream, _| {
            let state = state.clone();
            let conn = builder.serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| route(state.clone(), req)),
            );
            async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
            }
        },
    )
    .await
}

async fn route(
    state: HttpState,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&Method::GET, "/ready") => match &state.readiness {
            Readiness::Synced(synced) if *synced.borrow() => (
                StatusCode::OK,
                "text/plain",
                "ok (Kubernetes state synced)\n".to_owned(),
            ),
            Readiness::Synced(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "Kubernetes state not listed yet\n".to_owned(),
            ),
            Readiness::Store(store) => {
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.revision()).await {
                    Ok(Ok(revision)) => (
                        StatusCode::OK,
                        "text/plain",
                        format!("ok (revision {revision})\n"),
                    ),
                    Ok(Err(e)) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("store: {e}\n"),
                    ),
                    Err(e) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("store: {e}\n"),
                    ),
                }
            }
        },
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    Ok(reply(status, content_type, body))
}
