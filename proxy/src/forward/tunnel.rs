//! Byte tunnels: an upgraded HTTP/1.1 connection (WebSocket) or a `CONNECT`
//! once both ends are raw streams.
//!
//! A tunnel is bounded like the connection it came from:
//! - it keeps the downstream connection's slot of the listener's connection
//!   limit ([`ConnectionSlot`]) until it closes;
//! - it closes both ends when no byte moved either way for the tunnel idle
//!   timeout (`--tunnel-idle-timeout`);
//! - it runs on the shutdown tracker (shutdown waits for it) and is cut when
//!   the grace period ends.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Forwarder;
use super::pool::SendError;
use crate::body::{self, BoxBody, BoxError};
use crate::deadline::deadline_after;
use crate::errors::ProxyError;
use crate::server::ConnectionSlot;

/// The default of `--tunnel-idle-timeout`: Envoy's stream idle timeout,
/// which also bounds its upgraded (WebSocket, `CONNECT`) streams.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TunnelEnd {
    /// Both sides finished (or one failed).
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// The grace period of a shutdown ended.
    Shutdown,
}

impl Forwarder {
    /// Copies bytes both ways between the two streams `ends` yields, holding
    /// `slot` (the downstream connection's) until the tunnel closes.
    pub(super) fn spawn_tunnel<F, A, B>(
        &self,
        addr: SocketAddr,
        slot: Option<ConnectionSlot>,
        ends: F,
    ) where
        F: Future<Output = Result<(A, B), BoxError>> + Send + 'static,
        A: AsyncRead + AsyncWrite + Unpin + Send,
        B: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let stop = self.hard_stop.clone();
        let idle = self.tunnel_idle_timeout;
        self.tunnels.spawn(async move {
            let tunnel = async {
                let (a, b) = ends.await?;
                Ok::<_, BoxError>(run_tunnel(a, b, idle, &stop).await)
            };
            let ended = tokio::select! {
                ended = tunnel => ended,
                () = stop.cancelled() => Ok(TunnelEnd::Shutdown),
            };
            match ended {
                Ok(TunnelEnd::Closed) => {}
                Ok(TunnelEnd::Idle) => tracing::debug!(%addr, ?idle, "tunnel closed: idle"),
                Ok(TunnelEnd::Shutdown) => tracing::debug!(%addr, "tunnel cut at shutdown"),
                Err(error) => tracing::debug!(%addr, %error, "tunnel ended with an error"),
            }
            drop(slot);
        });
    }

    /// Answers a `CONNECT` (the app using us as an HTTPS proxy): dials `addr`
    /// and, once connected, answers 200 and splices the two connections.
    pub async fn connect(
        &self,
        mut req: Request<BoxBody>,
        addr: SocketAddr,
        service: &str,
    ) -> Result<Response<BoxBody>, ProxyError> {
        debug_assert_eq!(req.method(), Method::CONNECT);
        self.refuse_own(addr, service)?;
        let upstream = self
            .pool
            .dial_raw(addr)
            .await
            .map_err(|e: SendError| super::send_error(e, addr, service))?;
        let slot = req.extensions().get::<ConnectionSlot>().cloned();
        let downstream = hyper::upgrade::on(&mut req);
        self.spawn_tunnel(addr, slot, async move {
            let down = downstream.await?;
            Ok((TokioIo::new(down), upstream))
        });
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::OK;
        Ok(response)
    }
}

/// Copies both ways until both sides are done, one fails, `idle` passes
/// without a byte either way, or `stop` fires. Dropping the streams on
/// return closes both sides.
pub(super) async fn run_tunnel<A, B>(
    a: A,
    b: B,
    idle: Duration,
    stop: &CancellationToken,
) -> TunnelEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut a = Watched {
        io: a,
        activity: activity.clone(),
    };
    let mut b = Watched {
        io: b,
        activity: activity.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let mut copy = std::pin::pin!(copy);
    let mut check_at = deadline_after(Instant::now(), idle);
    loop {
        tokio::select! {
            result = copy.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "tunnel copy ended with an error");
                }
                return TunnelEnd::Closed;
            }
            () = tokio::time::sleep_until(check_at) => {
                let idle_at = deadline_after(activity.last(), idle);
                if idle_at <= Instant::now() {
                    return TunnelEnd::Idle;
                }
                check_at = idle_at;
            }
            () = stop.cancelled() => return TunnelEnd::Shutdown,
        }
    }
}

/// When bytes last moved through a tunnel.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last read that returned bytes.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        deadline_after(
            self.start,
            Duration::from_millis(self.last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// One end of a tunnel; every read that returns bytes counts as activity
/// (whatever is read is written to the other end).
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_closes_after_the_idle_timeout_and_a_busy_one_does_not() {
        let (mut client, a) = tokio::io::duplex(1024);
        let (b, mut server) = tokio::io::duplex(1024);
        let stop = CancellationToken::new();
        let idle = Duration::from_secs(10);
        let started = Instant::now();
        let tunnel = tokio::spawn(async move { run_tunnel(a, b, idle, &stop).await });
        // Bytes every 6 s for 30 s: never 10 s of silence.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"ping").await.expect("write");
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"ping");
        }
        assert!(!tunnel.is_finished(), "a busy tunnel stays open");
        let end = tunnel.await.expect("tunnel task");
        assert_eq!(end, TunnelEnd::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        // Both ends see the close.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.expect("eof"), 0);
        assert_eq!(server.read_to_end(&mut rest).await.expect("eof"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_a_tunnel() {
        let (_client, a) = tokio::io::duplex(64);
        let (b, _server) = tokio::io::duplex(64);
        let stop = CancellationToken::new();
        stop.cancel();
        let end = run_tunnel(a, b, Duration::from_secs(300), &stop).await;
        assert_eq!(end, TunnelEnd::Shutdown);
    }
}
