//! What keeps the admin listener safe to expose to the pod network: the
//! connection cap (over it a connection gets `503` and is closed), and who
//! may read the topology views.
//!
//! Kubernetes needs only `/live`, `/ready` (kubelet probes, from the node's
//! address) and `/metrics` (Prometheus, from another pod): those answer to
//! anyone. `/config` and `/endpoints` show every policy, service and
//! endpoint address the proxy knows; by default they answer only callers on
//! loopback (`kubectl port-forward` and `kubectl exec` arrive there), others
//! get `403` (`--admin-topology any` lifts that).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::config::AdminTopology;

/// Connections refused over the cap are answered by at most this many
/// tasks at once; beyond that they are closed right away.
pub(super) const MAX_REJECTING: usize = 16;

/// The admin listener's limits (flags `--admin-max-connections`,
/// `--header-read-timeout`, `--admin-topology`).
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A request head must arrive within this (slowloris guard).
    pub header_read_timeout: Duration,
    /// Who may read `/config` and `/endpoints`.
    pub topology: AdminTopology,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            topology: AdminTopology::Loopback,
        }
    }
}

impl AdminLimits {
    /// Whether `peer` may read the topology views.
    pub fn shows_topology_to(&self, peer: SocketAddr) -> bool {
        match self.topology {
            AdminTopology::Any => true,
            AdminTopology::Loopback => is_loopback(peer),
        }
    }
}

/// Loopback, including IPv4 loopback written as an IPv4-mapped IPv6 address
/// (a dual-stack listener sees `::ffff:127.0.0.1`).
fn is_loopback(peer: SocketAddr) -> bool {
    match peer {
        SocketAddr::V4(v4) => v4.ip().is_loopback(),
        SocketAddr::V6(v6) => {
            v6.ip().is_loopback() || v6.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Answers one request on a connection over the cap with `503` and closes
/// it; the whole exchange is bounded by `timeout`.
pub(super) async fn reject(stream: TcpStream, timeout: Duration) {
    let service = service_fn(|_: Request<Incoming>| async {
        let mut response = Response::new(Full::new(Bytes::from_static(
            b"admin connection limit reached\n",
        )));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(response)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    if let Ok(Err(error)) = tokio::time::timeout(timeout, conn).await {
        tracing::debug!(%error, "admin: rejected connection ended with an error");
    }
}

#[cfg(test)]
mod tests;
