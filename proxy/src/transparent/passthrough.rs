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

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::own_ports::OwnPorts;
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
        if let Ok(peer) = downstream.peer_addr()
            && self.own.contains(peer)
        {
            tracing::warn!(
                %target,
                "passthrough loop: the proxy's own connection was redirected back to it; \
                 run the proxy as init-iptables' --proxy-uid"
            );
            self.metrics.connection(TcpOutcome::LoopDetected);
            return;
        }
        if let Some(listener) = self.own_listeners.reached_by(target) {
            tracing::warn!(%target, %listener, "passthrough refused: the target is one of the proxy's own listeners");
            self.metrics.connection(TcpOutcome::LoopDetected);
            return;
        }
        let connect = async {
            let (socket, guard) = self.own.bind_for(target)?;
            Ok::<_, std::io::Error>((socket.connect(target).await?, guard))
        };
        let (upstream, _own_port) = match tokio::time::timeout(self.connect_timeout, connect).await
        {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => {
                tracing::debug!(%target, %error, "passthrough: connecting to the original destination failed");
                self.metrics.connection(TcpOutcome::ConnectError);
                return;
            }
            Err(_) => {
                tracing::debug!(%target, timeout = ?self.connect_timeout, "passthrough: connect timed out");
                self.metrics.connection(TcpOutcome::ConnectError);
                return;
            }
        };
        self.metrics.connection(TcpOutcome::Connected);
        if let Err(error) = upstream.set_nodelay(true) {
            tracing::debug!(%target, %error, "passthrough: set_nodelay failed");
        }
        let start = Instant::now();
        let _lifetime = Lifetime {
            start,
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

    #[tokio::test]
    async fn bytes_and_half_close_pass_through() {
        let target = reversing_upstream().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (downstream, _) = listener.accept().await.expect("accept");
        let registry = crate::metrics::Metrics::new();
        let metrics = registry.tcp(
            crate::metrics::Direction::Outbound,
            crate::metrics::tcp_target::PASSTHROUGH,
        );
        let settings = Passthrough::new(
            Duration::from_secs(1),
            Duration::from_secs(5),
            metrics.clone(),
        );
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

    fn tcp_metrics() -> TcpMetrics {
        crate::metrics::Metrics::new().tcp(
            crate::metrics::Direction::Outbound,
            crate::metrics::tcp_target::PASSTHROUGH,
        )
    }

    #[tokio::test]
    async fn a_target_on_an_own_listener_is_closed_and_counted() {
        let own = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = own.local_addr().expect("addr");
        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = TcpStream::connect(front.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (downstream, _) = front.accept().await.expect("accept");
        let metrics = tcp_metrics();
        let settings = Passthrough::new(
            Duration::from_secs(1),
            Duration::from_secs(5),
            metrics.clone(),
        )
        .with_own_listeners(Arc::new(OwnListeners::new([target])));
        settings
            .forward(downstream, target, &CancellationToken::new())
            .await;
        assert_eq!(metrics.connections(TcpOutcome::LoopDetected), 1);
        assert!(
            futures_util::FutureExt::now_or_never(own.accept()).is_none(),
            "the own listener was reached"
        );
        let mut rest = Vec::new();
        let read = client.read_to_end(&mut rest).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "the client's connection ends"
        );
    }

    #[tokio::test]
    async fn a_refused_connect_is_counted_and_closes_the_client() {
        // A port nothing listens on: bind, note it, close.
        let target = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = TcpStream::connect(front.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (downstream, _) = front.accept().await.expect("accept");
        let metrics = tcp_metrics();
        let settings = Passthrough::new(
            Duration::from_secs(1),
            Duration::from_secs(5),
            metrics.clone(),
        );
        settings
            .forward(downstream, target, &CancellationToken::new())
            .await;
        assert_eq!(metrics.connections(TcpOutcome::ConnectError), 1);
        assert_eq!(metrics.connections(TcpOutcome::Connected), 0);
        let mut rest = Vec::new();
        let read = client.read_to_end(&mut rest).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "the client's connection ends"
        );
    }

    #[tokio::test]
    async fn an_idle_pair_is_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("addr");
        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = TcpStream::connect(front.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (downstream, _) = front.accept().await.expect("accept");
        let settings = Passthrough::new(
            Duration::from_secs(1),
            Duration::from_millis(300),
            tcp_metrics(),
        );
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
