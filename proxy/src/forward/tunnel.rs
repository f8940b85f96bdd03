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
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Forwarder;
use super::pool::SendError;
use crate::body::{self, BoxBody, BoxError};
use crate::errors::ProxyError;
use crate::server::ConnectionSlot;
use crate::splice::{SpliceEnd, splice};

/// The default of `--tunnel-idle-timeout`: Envoy's stream idle timeout,
/// which also bounds its upgraded (WebSocket, `CONNECT`) streams.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

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
                Ok::<_, BoxError>(splice(a, b, idle, &stop, None).await)
            };
            let ended = tokio::select! {
                ended = tunnel => ended,
                () = stop.cancelled() => Ok(SpliceEnd::Shutdown),
            };
            match ended {
                Ok(SpliceEnd::Closed) => {}
                Ok(SpliceEnd::Idle) => tracing::debug!(%addr, ?idle, "tunnel closed: idle"),
                Ok(SpliceEnd::Shutdown) => tracing::debug!(%addr, "tunnel cut at shutdown"),
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
