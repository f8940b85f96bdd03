//! Byte tunnels: an upgraded HTTP/1.1 connection (WebSocket) or a `CONNECT`
//! once both ends are raw streams. Tunnels run on the shutdown tracker and
//! are cut when the grace period ends.

use std::future::Future;
use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Forwarder;
use super::pool::SendError;
use crate::body::{self, BoxBody, BoxError};
use crate::errors::ProxyError;

impl Forwarder {
    /// Copies bytes both ways between the two streams `ends` yields.
    pub(super) fn spawn_tunnel<F, A, B>(&self, addr: SocketAddr, ends: F)
    where
        F: Future<Output = Result<(A, B), BoxError>> + Send + 'static,
        A: AsyncRead + AsyncWrite + Unpin + Send,
        B: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let stop = self.hard_stop.clone();
        self.tunnels.spawn(async move {
            let tunnel = async {
                let (mut a, mut b) = ends.await?;
                tokio::io::copy_bidirectional(&mut a, &mut b).await?;
                Ok::<_, BoxError>(())
            };
            tokio::select! {
                result = tunnel => if let Err(error) = result {
                    tracing::debug!(%addr, %error, "tunnel ended with an error");
                },
                () = stop.cancelled() => tracing::debug!(%addr, "tunnel cut at shutdown"),
            }
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
        let downstream = hyper::upgrade::on(&mut req);
        self.spawn_tunnel(addr, async move {
            let down = downstream.await?;
            Ok((TokioIo::new(down), upstream))
        });
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::OK;
        Ok(response)
    }
}
