//! One downstream connection: HTTP/1.1 (with upgrades) or HTTP/2 prior
//! knowledge, detected by peeking at the first bytes — or, on a listener
//! that accepts mTLS ([`super::Handler::tls`]), a TLS ClientHello, then
//! terminated with ALPN choosing the protocol and the verified client
//! identity on every request ([`crate::tls::ClientIdentity`]); an idle
//! watchdog; and graceful/hard shutdown. A redirected connection a peer
//! proxy's mTLS already opened (terminated by [`crate::transparent`]) is
//! served from [`serve_opened`], past detection.
//!
//! Graceful shutdown never drops a request the client already sent: HTTP/2
//! gets a GOAWAY (the client learns which streams were taken); an HTTP/1
//! connection cannot say so, so it is kept open while it is busy or was
//! active within [`DRAIN_IDLE`], every response from then on carries
//! `Connection: close`, and only a connection idle for [`DRAIN_IDLE`] is
//! closed (closing an idle keep-alive connection at once loses the request
//! a client may be sending on it at that moment). A connection that has
//! not sent its first bytes gets the same [`DRAIN_IDLE`].
//!
//! Detection peeks instead of reading (as hyper-util's `auto` server does):
//! bytes read ahead would have to be replayed to hyper, and a replayed
//! prefix makes hyper's HTTP/1 read buffer grow from 8 to 16 KiB on the first
//! request of every connection, which kept that memory for the connection's
//! whole life.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::detect::{Opening, opening};
use super::progress::{LastIo, Progress, Stall};
use super::{ClientAddr, ConnectionSlot, Handler, Limits, Shutdown};
use crate::deadline::deadline_after;
use crate::tls::{Accepted, ClientIdentity, Stream};
use crate::transparent::OriginalDst;

/// During graceful shutdown, how long an HTTP/1 connection may stay idle
/// (counted from the shutdown or its last request) before it is closed.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// The HTTP server settings shared by every connection of a listener.
pub(super) struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

pub(super) fn builders(limits: &Limits) -> Builders {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's floor is 8 KiB; a head larger than the buffer gets 431.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    limits.h2.apply_to_server(&mut http2);
    Builders { http1, http2 }
}

/// Completes [`DRAIN_IDLE`] after graceful shutdown began.
async fn drain_idle_over(shutdown: &Shutdown) {
    shutdown.graceful.cancelled().await;
    tokio::time::sleep(DRAIN_IDLE).await;
}

pin_project_lite::pin_project! {
    /// A served connection of either protocol.
    #[project = ConnProj]
    enum Conn<S: HttpService<Incoming>> {
        H1 { #[pin] conn: http1::UpgradeableConnection<TokioIo<Progress<Stream>>, S> },
        H2 { #[pin] conn: http2::Connection<TokioIo<Progress<Stream>>, S, TokioExecutor> },
    }
}

impl<S, B> Conn<S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ConnProj::H1 { conn } => conn.graceful_shutdown(),
            ConnProj::H2 { conn } => conn.graceful_shutdown(),
        }
    }
}

impl<S, B> Future for Conn<S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<(), hyper::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ConnProj::H1 { conn } => conn.poll(cx),
            ConnProj::H2 { conn } => conn.poll(cx),
        }
    }
}

/// When the connection last had work, for the idle watchdog.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `start` at which a request last began or ended.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection may be closed as idle, or `None` while busy.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        // Until a first request arrives, the header read timeout applies.
        let limit = if self.requests.load(Ordering::Relaxed) == 0 {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(last + limit)
    }
}

/// Decrements the in-flight count when a request's handling ends or is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// What a connection is served with, besides its bytes.
pub(super) struct Served<H> {
    pub handler: Arc<H>,
    pub slot: ConnectionSlot,
    /// Where iptables redirected it from, if it was.
    pub original: Option<OriginalDst>,
    /// Recorded on every request for per-client limits (inbound rate limit).
    pub peer: Option<ClientAddr>,
}

/// A connection whose protocol is known: plaintext, or TLS terminated.
pub(super) struct Opened {
    pub io: Stream,
    pub h2: bool,
    /// The verified client identity of an mTLS connection.
    pub client: Option<ClientIdentity>,
}

impl From<Accepted> for Opened {
    fn from(accepted: Accepted) -> Self {
        Opened {
            io: accepted.stream,
            h2: accepted.h2,
            client: accepted.client,
        }
    }
}

/// Serves `stream`, detecting its protocol (and terminating mTLS on a
/// listener that accepts it) within the header read timeout.
pub(super) async fn serve_connection<H: Handler>(
    stream: TcpStream,
    served: Served<H>,
    builders: &Builders,
    limits: &Limits,
    shutdown: &Shutdown,
) {
    let started = Instant::now();
    let tls = served.handler.tls();
    // Protocol detection, and the TLS handshake of an mTLS client, within
    // the header read timeout.
    let opened = async {
        match opening(&stream, tls.is_some()).await? {
            Opening::H2 => Ok((Stream::Plain(stream), true, None)),
            Opening::H1 => Ok((Stream::Plain(stream), false, None)),
            Opening::Tls => {
                let Some(tls) = tls else {
                    return Err(std::io::Error::other("TLS on a plaintext listener"));
                };
                let accepted = tls.accept(stream).await?;
                Ok((accepted.stream, accepted.h2, accepted.client))
            }
        }
    };
    let (io, h2, client): (Stream, bool, Option<ClientIdentity>) = tokio::select! {
        detected = tokio::time::timeout(limits.header_read_timeout, opened) => match detected {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                tracing::debug!(%error, "downstream connection failed before its first request");
                return;
            }
            Err(_) => {
                tracing::debug!("closing downstream connection: no request in time");
                return;
            }
        },
        () = drain_idle_over(shutdown) => return,
        () = shutdown.hard.cancelled() => return,
    };
    let opened = Opened { io, h2, client };
    serve_opened(opened, started, served, builders, limits, shutdown).await;
}

/// Serves a connection whose protocol is known, `started` when it was
/// accepted (the header read timeout counts from then).
pub(super) async fn serve_opened<H: Handler>(
    opened: Opened,
    started: Instant,
    served: Served<H>,
    builders: &Builders,
    limits: &Limits,
    shutdown: &Shutdown,
) {
    let Opened { io, h2, client } = opened;
    let Served {
        handler,
        slot,
        original,
        peer,
    } = served;
    let activity = Arc::new(Activity {
        start: started,
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        last_ms: AtomicU64::new(0),
    });
    let seen = activity.clone();
    let stopping = shutdown.graceful.clone();
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(peer) = peer {
            req.extensions_mut().insert(peer);
        }
        // Only a tunnel holds the slot past its exchange (each extension
        // is an allocation, so ordinary requests go without).
        if req.method() == http::Method::CONNECT
            || req.headers().contains_key(http::header::UPGRADE)
        {
            req.extensions_mut().insert(slot.clone());
        }
        if let Some(original) = original {
            req.extensions_mut().insert(original);
        }
        if let Some(client) = &client {
            req.extensions_mut().insert(client.clone());
        }
        seen.requests.fetch_add(1, Ordering::Relaxed);
        seen.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(seen.clone());
        let handler = handler.clone();
        let http1 = req.version() < http::Version::HTTP_2;
        let stopping = stopping.clone();
        async move {
            let mut response = handler.handle(req).await;
            drop(guard);
            // Shutting down: hyper closes an HTTP/1 connection after a
            // response that says so, and the client knows not to reuse it.
            if http1
                && stopping.is_cancelled()
                && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
            {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let last_io = Arc::new(LastIo::new());
    let io = TokioIo::new(Progress::new(io, last_io.clone()));
    let conn = if h2 {
        Conn::H2 {
            conn: builders.http2.serve_connection(io, service),
        }
    } else {
        Conn::H1 {
            conn: builders.http1.serve_connection(io, service).with_upgrades(),
        }
    };
    let mut conn = std::pin::pin!(conn);
    // `stopping`: the listener is shutting down; `draining`: hyper was told
    // to close the connection once its requests are done.
    let mut stopping = false;
    let mut draining = false;
    let drain_limits = Limits {
        header_read_timeout: DRAIN_IDLE.min(limits.header_read_timeout),
        idle_timeout: DRAIN_IDLE.min(limits.idle_timeout),
        ..limits.clone()
    };
    // The first look comes after whichever limit can fire first.
    let mut check_at = deadline_after(
        Instant::now(),
        limits.header_read_timeout.min(limits.idle_timeout),
    );
    if let Some(stall) = limits.stall_timeout {
        check_at = check_at.min(deadline_after(Instant::now(), stall));
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "downstream connection ended with an error");
                }
                return;
            }
            () = shutdown.graceful.cancelled(), if !stopping => {
                stopping = true;
                if h2 {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                } else {
                    // Idle time counts from now; look at it again soon.
                    activity.touch();
                    check_at = deadline_after(Instant::now(), DRAIN_IDLE);
                }
            }
            // Also while draining: a stalled response would hold the drain.
            () = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                let idle_limits = if stopping { &drain_limits } else { limits };
                let idle = activity.idle_deadline(idle_limits);
                match idle {
                    Some(deadline) if deadline <= now && !draining => {
                        tracing::debug!("closing idle downstream connection");
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                        check_at = deadline_after(now, idle_limits.idle_timeout);
                    }
                    Some(deadline) if deadline > now => check_at = deadline,
                    // Busy (or already draining): look again later.
                    _ => check_at = deadline_after(now, idle_limits.idle_timeout),
                }
                if let Some(stall) = limits.stall_timeout {
                    match last_io.stall(idle.is_none(), stall, now) {
                        Stall::Stalled => {
                            tracing::debug!(?stall, "closing a stalled downstream connection");
                            return;
                        }
                        Stall::LookAt(at) => check_at = check_at.min(at),
                    }
                }
            }
            () = shutdown.hard.cancelled() => {
                tracing::debug!("dropping downstream connection at the end of the grace period");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
