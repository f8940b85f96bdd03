//! Listeners: the accept loop, the connection limit, per-connection HTTP
//! serving (HTTP/1.1 and HTTP/2 prior knowledge, detected per connection) and
//! graceful shutdown.
//!
//! Limits, all with defaults from [`crate::config`]:
//! - request head size (HTTP/1 buffer, HTTP/2 header list): larger → 431;
//! - header read timeout: a request head must arrive in time (slowloris);
//!   on a fresh connection it also bounds protocol detection;
//! - idle timeout: a connection without requests for this long is closed
//!   gracefully (HTTP/1 keep-alive connections are also bounded by hyper's
//!   header read timeout while they wait for the next request);
//! - connection limit: over it a connection is answered `503 overloaded` and
//!   closed, never left hanging.

mod conn;
mod overload;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::BoxBody;
use crate::transparent::{Passthrough, redirected_destination};

/// Answers one request. Errors are already responses (see [`crate::errors`]).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<BoxBody>> + Send;

    /// Where connections that iptables redirected to this listener go
    /// instead of HTTP serving (see [`crate::transparent`]); `None`: this
    /// listener serves every connection as HTTP.
    fn passthrough(&self) -> Option<&Passthrough> {
        None
    }
}

/// The downstream peer's address, a request extension set by the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Per-listener protective limits.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
        }
    }
}

/// How a listener learns it must stop.
#[derive(Clone, Debug)]
pub struct Shutdown {
    /// Stop accepting; let in-flight requests finish.
    pub graceful: CancellationToken,
    /// The grace period is over: drop whatever is left.
    pub hard: CancellationToken,
    /// Every connection task; shutdown waits on it.
    pub tasks: TaskTracker,
}

/// Connections refused over the limit are answered by at most this many
/// tasks at once; beyond that they are closed right away.
const MAX_REJECTING: usize = 256;

/// Accepts connections on `listener` until `shutdown.graceful` fires,
/// serving each with `handler` on a task of `shutdown.tasks`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    shutdown: Shutdown,
) {
    let limits = Arc::new(limits);
    let builders = Arc::new(conn::builders(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.graceful.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(?local, %error, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = shutdown.graceful.cancelled() => break,
                }
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "set_nodelay failed");
        }
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (handler, builders, limits, shutdown2) = (
                    handler.clone(),
                    builders.clone(),
                    limits.clone(),
                    shutdown.clone(),
                );
                shutdown.tasks.spawn(async move {
                    let redirected = handler
                        .passthrough()
                        .and_then(|p| Some((p.clone(), redirected_destination(&stream)?)));
                    match redirected {
                        Some((passthrough, target)) => {
                            passthrough.forward(stream, target, &shutdown2.hard).await;
                        }
                        None => {
                            conn::serve_connection(stream, handler, &builders, &limits, &shutdown2)
                                .await;
                        }
                    }
                    drop(slot);
                });
            }
            Err(_) => match rejecting.clone().try_acquire_owned() {
                Ok(permit) => {
                    tracing::warn!(?local, %peer, limit = limits.max_connections, "connection limit reached");
                    let timeout = limits.header_read_timeout;
                    shutdown.tasks.spawn(async move {
                        overload::reject(stream, timeout).await;
                        drop(permit);
                    });
                }
                Err(_) => drop(stream),
            },
        }
    }
    tracing::debug!(?local, "listener stopped accepting");
}
