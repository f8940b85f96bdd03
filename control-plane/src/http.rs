//! The control plane's HTTP side on `--http-addr`: `/live` (the process
//! answers), `/ready` (the store answers a read) and `/metrics` (Prometheus
//! text).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::store::PolicyStore;

/// What the HTTP handlers look at.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// Readiness is "the store answers".
    pub store: Arc<PolicyStore>,
    /// Encoded on `/metrics`.
    pub metrics: Metrics,
}

/// Serve until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(state.clone(), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(error) = conn.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

async fn route(
    state: HttpState,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&Method::GET, "/ready") => {
            let store = state.store.clone();
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
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    Ok(response)
}
