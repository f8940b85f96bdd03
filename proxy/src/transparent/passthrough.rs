//! Opaque TCP passthrough: a redirected connection to an unknown
//! destination is forwarded to its original address byte for byte. Each
//! direction's end of stream is passed on as a half-close (`shutdown` of
//! the write side), so protocols that half-close keep working; the pair is
//! closed when both directions ended, either side fails, nothing moved for
//! the idle timeout, or the proxy's grace period ends. Each connection is
//! counted in the `levee_tcp_*` metrics ([`TcpMetrics`]): its outcome, its
//! bytes each way as they move, its lifetime when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::own_ports::{OwnPorts, PortGuard};
use crate::loops::OwnListeners;
use crate::metrics::{TcpMetrics, TcpOutcome};
use crate::splice::{SpliceEnd, splice};

/// Forwards redirected connections: the timeouts of a connection the proxy
/// cannot route, and the ports of its own upstream connections (loops).
#[derive(Clone, Debug)]
pub struct Passthrough {
    /// Connecting to the original destination gives up after this long.
    connect_timeout: Duration,
    /// A connection with no byte in either direction for this long is closed.
    idle_timeout: Duration,
    own: OwnPorts,
    /// Listeners a forward must never reach (the outbound and admin ones:
    /// a peer's connection to the pod's port 4140 is redirected to the
    /// inbound listener and must not reach the outbound one through it).
    own_listeners: Arc<OwnListeners>,
    metrics: TcpMetrics,
}

impl Passthrough {
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        metrics: TcpMetrics,
    ) -> Passthrough {
        Passthrough {
            connect_timeout,
            idle_timeout,
            own: OwnPorts::default(),
            own_listeners: Arc::default(),
            metrics,
        }
    }

    /// Closes, instead of forwarding, connections whose target is one of
    /// `own` (counted as `outcome="loop-detected"`).
    pub fn with_own_listeners(mut self, own: Arc<OwnListeners>) -> Self {
        self.own_listeners = own;
        self
    }

    /// Forwards `downstream` to `target` until both directions end (see the
    /// module docs); `hard` ends it at once. A connection that comes from
    /// one of this proxy's own passthrough connections (a loop) is closed.
    pub async fn forward(
        &self,
        downstream: TcpStream,
        target: SocketAddr,
        hard: &CancellationToken,
    ) {
        if !self.refuses(&downstream, target) {
            self.forward_checked(downstream, target, hard).await;
        }
    }

    /// [`Passthrough::forward`] once the loop checks are done.
    pub(super) async fn forward_checked(
        &self,
        downstream: TcpStream,
        target: SocketAddr,
        hard: &CancellationToken,
    ) {
        let Some((upstream, _own_port)) = self.connect(target).await else {
            return;
        };
        self.splice(downstream, upstream, target, hard).await;
    }

    /// Whether `downstream` to `target` is a loop (the proxy's own
    /// passthrough connection came back, or the target is one of its own
    /// listeners): then it is counted and logged, and must be closed.
    pub(super) fn refuses(&self, downstream: &TcpStream, target: SocketAddr) -> bool {
        if let Ok(peer) = downstream.peer_addr()
            && self.own.contains(peer)
        {
            tracing::warn!(
                %target,
                "passthrough loop: the proxy's own connection was redirected back to it; \
                 run the proxy as init-iptables' --proxy-uid"
            );
            self.metrics.connection(TcpOutcome::LoopDetected);
            return true;
        }
        if let Some(listener) = self.own_listeners.reached_by(target) {
            tracing::warn!(%target, %listener, "passthrough refused: the target is one of the proxy's own listeners");
            self.metrics.connection(TcpOutcome::LoopDetected);
            return true;
        }
        false
    }

    /// Connects to `target` within the connect timeout, from a port
    /// remembered as the proxy's own while the guard lives. A failure is
    /// counted (`connect-error`) and `None`.
    pub(super) async fn connect(&self, target: SocketAddr) -> Option<(TcpStream, PortGuard)> {
        let connect = async {
            let (socket, guard) = self.own.bind_for(target)?;
            Ok::<_, std::io::Error>((socket.connect(target).await?, guard))
        };
        let error = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok((upstream, guard))) => {
                if let Err(error) = upstream.set_nodelay(true) {
                    tracing::debug!(%target, %error, "passthrough: set_nodelay failed");
                }
                return Some((upstream, guard));
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("timed out after {:?}", self.connect_timeout),
        };
        tracing::debug!(%target, %error, "passthrough: connecting to the original destination failed");
        self.connect_failed();
        None
    }

    /// Counts a connection whose upstream could not be opened.
    pub(super) fn connect_failed(&self) {
        self.metrics.connection(TcpOutcome::ConnectError);
    }

    /// The connect timeout (the mTLS handshake of a forward gets as long).
    pub(super) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Copies between `downstream` and `upstream` (either may be TLS)
    /// until the forward ends; counted as `connected`, with its bytes and
    /// lifetime.
    pub(super) async fn splice<D, U>(
        &self,
        downstream: D,
        upstream: U,
        target: SocketAddr,
        hard: &CancellationToken,
    ) where
        D: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        self.metrics.connection(TcpOutcome::Connected);
        let _lifetime = Lifetime {
            start: Instant::now(),
            metrics: &self.metrics,
        };
        let counted = Some((
            self.metrics.to_target.clone(),
            self.metrics.to_client.clone(),
        ));
        match splice(downstream, upstream, self.idle_timeout, hard, counted).await {
            SpliceEnd::Idle => tracing::debug!(%target, "passthrough: closed idle connection"),
            SpliceEnd::Shutdown => tracing::debug!(%target, "passthrough: cut at shutdown"),
            SpliceEnd::Closed => {}
        }
    }
}

/// Observes a forwarded connection's lifetime when it ends, however it ends.
struct Lifetime<'a> {
    start: Instant,
    metrics: &'a TcpMetrics,
}

impl Drop for Lifetime<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream that reads to the end, then answers with what it read
    /// reversed and closes: only a real half-close gets an answer.
    async fn reversing_upstream() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.expect("read");
            got.reverse();
            conn.write_all(&got).await.expect("write");
        });
        addr
    }

    /// A client's connection and the proxy's end of it (`downstream`).
    async fn accepted() -> (TcpStream, TcpStream) {
        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(front.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (downstream, _) = front.accept().await.expect("accept");
        (client, downstream)
    }

    fn tcp_metrics() -> TcpMetrics {
        crate::metrics::Metrics::new().tcp(
            crate::metrics::Direction::Outbound,
            crate::metrics::tcp_target::PASSTHROUGH,
        )
    }

    /// A 1 s connect timeout and `idle`.
    fn settings(idle: Duration, metrics: &TcpMetrics) -> Passthrough {
        Passthrough::new(Duration::from_secs(1), idle, metrics.clone())
    }

    /// Asserts that the client's connection was closed without an answer.
    async fn assert_closed(client: &mut TcpStream) {
        let mut rest = Vec::new();
        let read = client.read_to_end(&mut rest).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "the client's connection ends"
        );
    }

    #[tokio::test]
    async fn bytes_and_half_close_pass_through() {
        let target = reversing_upstream().await;
        let (mut client, downstream) = accepted().await;
        let registry = crate::metrics::Metrics::new();
        let metrics = registry.tcp(
            crate::metrics::Direction::Outbound,
            crate::metrics::tcp_target::PASSTHROUGH,
        );
        let settings = settings(Duration::from_secs(5), &metrics);
        let hard = CancellationToken::new();
        let forward =
            tokio::spawn(async move { settings.forward(downstream, target, &hard).await });

        let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.expect("send");
        client.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
            .await
            .expect("the answer in time")
            .expect("read");
        let mut expected = sent;
        expected.reverse();
        assert!(
            got == expected,
            "{} bytes back, {} expected",
            got.len(),
            expected.len()
        );
        tokio::time::timeout(Duration::from_secs(5), forward)
            .await
            .expect("the passthrough ends when both sides ended")
            .expect("task");
        assert_eq!(metrics.connections(TcpOutcome::Connected), 1);
        assert_eq!(metrics.to_target.get(), 1_000_000);
        assert_eq!(metrics.to_client.get(), 1_000_000);
        let text = registry.encode();
        assert!(
            text.contains(
                "levee_tcp_duration_seconds_count{direction=\"outbound\",target=\"passthrough\"} 1\n"
            ),
            "one lifetime observed: {text}"
        );
    }

    #[tokio::test]
    async fn a_target_on_an_own_listener_is_closed_and_counted() {
        let own = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = own.local_addr().expect("addr");
        let (mut client, downstream) = accepted().await;
        let metrics = tcp_metrics();
        let settings = settings(Duration::from_secs(5), &metrics)
            .with_own_listeners(Arc::new(OwnListeners::new([target])));
        settings
            .forward(downstream, target, &CancellationToken::new())
            .await;
        assert_eq!(metrics.connections(TcpOutcome::LoopDetected), 1);
        assert!(
            futures_util::FutureExt::now_or_never(own.accept()).is_none(),
            "the own listener was reached"
        );
        assert_closed(&mut client).await;
    }

    #[tokio::test]
    async fn a_refused_connect_is_counted_and_closes_the_client() {
        // A port nothing listens on: bind, note it, close.
        let target = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        let (mut client, downstream) = accepted().await;
        let metrics = tcp_metrics();
        settings(Duration::from_secs(5), &metrics)
            .forward(downstream, target, &CancellationToken::new())
            .await;
        assert_eq!(metrics.connections(TcpOutcome::ConnectError), 1);
        assert_eq!(metrics.connections(TcpOutcome::Connected), 0);
        assert_closed(&mut client).await;
    }

    #[tokio::test]
    async fn an_idle_pair_is_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("addr");
        let (mut client, downstream) = accepted().await;
        let settings = settings(Duration::from_millis(300), &tcp_metrics());
        let hard = CancellationToken::new();
        let forward =
            tokio::spawn(async move { settings.forward(downstream, target, &hard).await });
        let (_upstream, _) = listener.accept().await.expect("accept");
        // Nothing moves: after the idle timeout the pair is closed and the
        // client reads the end of the stream.
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), forward)
            .await
            .expect("closed after the idle timeout")
            .expect("task");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read");
        assert!(rest.is_empty());
    }
}
