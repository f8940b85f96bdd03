//! Listeners: the accept loop, the connection limit, per-connection HTTP
//! serving (HTTP/1.1 and HTTP/2 prior knowledge, detected per connection) and
//! graceful shutdown. A connection iptables redirected to a transparent
//! listener ([`Handler::transparent`]) is first classified by its first
//! bytes (`detect`): HTTP is served as any other connection, its requests
//! carrying [`OriginalDst`]; anything else is forwarded opaquely — except
//! a peer proxy's mTLS carrying HTTP, which the forward terminates and
//! hands back to be served as HTTP like the plaintext kind
//! ([`crate::transparent`]). A listener whose handler terminates mTLS
//! ([`Handler::tls`]) serves TLS and plaintext on one port (`conn`).
//!
//! Limits, all with defaults from [`crate::config`]:
//! - request head size (HTTP/1 buffer, HTTP/2 header list): larger → 431;
//! - header read timeout: a request head must arrive in time (slowloris);
//!   on a fresh connection it also bounds protocol detection;
//! - idle timeout: a connection without requests for this long is closed
//!   gracefully (HTTP/1 keep-alive connections are also bounded by hyper's
//!   header read timeout while they wait for the next request);
//! - stall timeout: a connection with work pending (a request being
//!   handled, or a response write the client does not take) on which no
//!   byte moves either way for this long is closed at once: a client that
//!   stopped reading its response or sending its body;
//! - connection limit: over it a connection is answered `503 overloaded` and
//!   closed, never left hanging. A connection that becomes a tunnel
//!   (WebSocket upgrade, `CONNECT`) keeps its slot until the tunnel closes:
//!   every request carries the slot as a [`ConnectionSlot`] extension and
//!   the tunnel holds a clone.
//! - HTTP/2: streams per connection, fixed flow-control windows, reset-flood
//!   guards ([`crate::h2_settings`]).

mod conn;
mod detect;
mod overload;
mod progress;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::BoxBody;
use crate::h2_settings::H2Settings;
use crate::transparent::{OriginalDst, Transparent, redirected_destination};

/// Answers one request. Errors are already responses (see [`crate::errors`]).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<BoxBody>> + Send;

    /// How connections that iptables redirected to this listener are
    /// detected and forwarded (see [`crate::transparent`]); `None`: this
    /// listener serves every connection as HTTP.
    fn transparent(&self) -> Option<&Transparent> {
        None
    }

    /// Whether this listener's requests carry the downstream peer's
    /// address ([`ClientAddr`], for per-client limits). One allocation per
    /// request, so a listener that never reads it says no.
    fn wants_client_addr(&self) -> bool {
        true
    }

    /// Whether discovery already says a redirected connection to
    /// `original` is for a port declared opaque (`appProtocol: tcp` or
    /// `opaque`): then it is forwarded without detection. Only answers
    /// already cached count (no wait at accept).
    fn declared_opaque(&self, _original: std::net::SocketAddr) -> bool {
        false
    }

    /// Whether an opaque connection redirected to `original` may reach
    /// it, from `client` (the verified identity of a peer proxy's mTLS, or
    /// none); a refusal is counted and logged here.
    fn admit_opaque(
        &self,
        _original: std::net::SocketAddr,
        _client: Option<&crate::tls::ClientIdentity>,
    ) -> bool {
        true
    }

    /// How this listener terminates mTLS on its port (a connection that
    /// opens with a TLS ClientHello); `None`: plaintext only.
    fn tls(&self) -> Option<&crate::tls::Termination> {
        None
    }
}

/// The downstream peer's address, a request extension set by the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The connection-limit slot of the connection a request arrived on (a
/// request extension on the requests that may become tunnels: `CONNECT`,
/// or one offering an `Upgrade`). The slot is free once every clone is
/// dropped: the connection's task holds one, and a tunnel made from one of
/// its requests (upgrade, `CONNECT`) holds another until the tunnel closes.
#[derive(Clone, Debug)]
pub struct ConnectionSlot {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// Per-listener protective limits.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// A connection with work pending on which no byte moves either way
    /// for this long is closed (`None`: never).
    pub stall_timeout: Option<Duration>,
    pub h2: H2Settings,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            stall_timeout: Some(Duration::from_secs(300)),
            h2: H2Settings::default(),
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

/// Logs refusals over the connection limit at most once a second (a flood
/// must not become a flood of log lines), with the count since the last line.
#[derive(Default)]
struct RefusalLog {
    last: Option<tokio::time::Instant>,
    since: u64,
}

impl RefusalLog {
    /// `Some(refusals since the last line)` when a line is due.
    fn tick(&mut self) -> Option<u64> {
        self.since += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// Whether a redirected connection to `original` is served as HTTP (its
/// first bytes are HTTP, its port is neither an opaque port nor declared
/// opaque by discovery); else it is forwarded.
async fn redirected_http(
    stream: &TcpStream,
    transparent: &Transparent,
    original: std::net::SocketAddr,
    declared_opaque: bool,
    shutdown: &Shutdown,
) -> bool {
    if declared_opaque || transparent.is_opaque(original) {
        return false;
    }
    tokio::select! {
        detected = detect::detect(stream, transparent.detect_timeout) => {
            matches!(detected, Ok(detect::Detected::Http))
        }
        // Shutting down before the first bytes: the forward ends at once.
        () = shutdown.hard.cancelled() => false,
    }
}

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
    let mut refusals = RefusalLog::default();
    // Serves one accepted connection, or refuses it over the limit.
    let mut admit = |stream: TcpStream, peer: std::net::SocketAddr| {
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
                let slot = ConnectionSlot {
                    _permit: Arc::new(slot),
                };
                shutdown.tasks.spawn(async move {
                    let served = |original| conn::Served {
                        handler: handler.clone(),
                        slot,
                        original,
                        // Recorded on every request for per-client limits
                        // (inbound rate limit), where the listener wants it
                        // (each extension is an allocation).
                        peer: handler.wants_client_addr().then_some(ClientAddr(peer)),
                    };
                    let redirected = handler
                        .transparent()
                        .and_then(|t| Some((t.clone(), redirected_destination(&stream)?)));
                    let Some((transparent, original)) = redirected else {
                        let served = served(None);
                        conn::serve_connection(stream, served, &builders, &limits, &shutdown2)
                            .await;
                        return;
                    };
                    let started = tokio::time::Instant::now();
                    let declared_opaque = handler.declared_opaque(original);
                    let http = redirected_http(
                        &stream,
                        &transparent,
                        original,
                        declared_opaque,
                        &shutdown2,
                    )
                    .await;
                    let served = served(Some(OriginalDst(original)));
                    if http {
                        conn::serve_connection(stream, served, &builders, &limits, &shutdown2)
                            .await;
                        return;
                    }
                    let admit = |client: Option<&crate::tls::ClientIdentity>| {
                        handler.admit_opaque(original, client)
                    };
                    let detected = !(declared_opaque || transparent.is_opaque(original));
                    // A peer proxy's mTLS carrying HTTP comes back terminated.
                    let meshed = transparent
                        .forward(stream, original, detected, admit, &shutdown2.hard)
                        .await;
                    if let Some(accepted) = meshed {
                        let opened = accepted.into();
                        conn::serve_opened(opened, started, served, &builders, &limits, &shutdown2)
                            .await;
                    }
                });
            }
            Err(_) => match rejecting.clone().try_acquire_owned() {
                Ok(permit) => {
                    if let Some(refused) = refusals.tick() {
                        tracing::warn!(?local, %peer, limit = limits.max_connections, refused, "connection limit reached");
                    }
                    let timeout = limits.header_read_timeout;
                    shutdown.tasks.spawn(async move {
                        overload::reject(stream, timeout).await;
                        drop(permit);
                    });
                }
                Err(_) => drop(stream),
            },
        }
    };
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
        admit(stream, peer);
    }
    // Connections the kernel already completed are the clients' (their
    // requests may be on the way): serve them (they drain like the others)
    // rather than let closing the listener reset them.
    match listener.into_std() {
        Ok(listener) => {
            while let Ok((stream, peer)) = listener.accept() {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                match stream {
                    Ok(stream) => admit(stream, peer),
                    Err(error) => tracing::debug!(%peer, %error, "cannot serve a last connection"),
                }
            }
        }
        Err(error) => tracing::debug!(?local, %error, "cannot take the last connections"),
    }
    tracing::debug!(?local, "listener stopped accepting");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refusals_are_logged_at_most_once_a_second_with_their_count() {
        let mut log = RefusalLog::default();
        assert_eq!(log.tick(), Some(1), "the first refusal is logged");
        let quiet: Vec<_> = (0..999).map(|_| log.tick()).collect();
        assert!(quiet.iter().all(Option::is_none), "a flood is not");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(log.tick(), Some(1000), "the next line counts them");
    }
}
