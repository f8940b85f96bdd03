//! The HTTP/2 side of an endpoint's connections: the one shared
//! multiplexed connection, dialled (one dial at a time) when there is none
//! or it closed, and used only once the server's first frame proved it
//! speaks HTTP/2 ([`super::probe`]); otherwise the request comes back
//! unsent as [`SendError::NotHttp2`].

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::probe::{Probed, Verdict};
use super::{EndpointConns, SendError};
use crate::body::BoxBody;
use crate::tls::Alpn;

impl EndpointConns {
    pub(super) async fn send_h2(
        self: &Arc<Self>,
        req: Request<BoxBody>,
        connect_timeout: Duration,
    ) -> Result<Response<BoxBody>, SendError> {
        let mut sender = match self.h2_sender(connect_timeout).await? {
            Ok(sender) => sender,
            Err(proven) => return Err(not_http2(req, proven)),
        };
        match sender.try_send_request(req).await {
            Ok(response) => Ok(response.map(crate::body::incoming)),
            Err(mut e) => match e.take_message() {
                // Never sent (connection went away): once more on a new connection.
                Some(back) => {
                    self.forget_closed_h2();
                    let mut sender = match self.h2_sender(connect_timeout).await? {
                        Ok(sender) => sender,
                        Err(proven) => return Err(not_http2(back, proven)),
                    };
                    let response = sender.send_request(back).await.map_err(SendError::Reset)?;
                    Ok(response.map(crate::body::incoming))
                }
                None => Err(SendError::Reset(e.into_error())),
            },
        }
    }

    /// The endpoint's HTTP/2 connection, dialled if needed; `Err(proven)`
    /// when the endpoint does not speak HTTP/2 (see [`SendError::NotHttp2`]).
    async fn h2_sender(
        &self,
        connect_timeout: Duration,
    ) -> Result<Result<http2::SendRequest<BoxBody>, bool>, SendError> {
        if let Some(open) = self.cached_h2() {
            return Ok(Ok(open));
        }
        // Boxed: the dial and handshake are a large future the cached
        // path should not carry.
        Box::pin(self.dial_h2(connect_timeout)).await
    }

    /// [`EndpointConns::h2_sender`] without a usable cached connection.
    async fn dial_h2(
        &self,
        connect_timeout: Duration,
    ) -> Result<Result<http2::SendRequest<BoxBody>, bool>, SendError> {
        let _dialing = self.h2_dial.lock().await;
        // Another request may have dialled (or learned) while we waited.
        if let Some(open) = self.cached_h2() {
            return Ok(Ok(open));
        }
        if self.http1_only.http1_only(Instant::now()) {
            return Ok(Err(true));
        }
        let stream = self.dial(connect_timeout, Alpn::H2).await?.into_inner();
        let (io, verdict) = Probed::new(stream);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        self.h2_settings.apply_to_client(&mut builder);
        let (sender, conn) = builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "upstream http/2 connection ended");
            }
        });
        // No request goes out before the server's first frame is SETTINGS.
        match tokio::time::timeout(connect_timeout, verdict).await {
            Ok(Ok(Verdict::Http2)) => {}
            Ok(Ok(Verdict::Http1Only)) => {
                tracing::debug!(addr = %self.addr, "upstream speaks HTTP/1.x only");
                self.http1_only.learn(Instant::now());
                return Ok(Err(true));
            }
            Ok(Ok(Verdict::Closed)) => {
                tracing::debug!(addr = %self.addr, "upstream closed on the HTTP/2 preface");
                return Ok(Err(false));
            }
            Ok(Err(_)) => {
                let detail = "the connection ended before the server's SETTINGS";
                return Err(SendError::Preface(detail.to_owned()));
            }
            Err(_) => {
                let detail =
                    format!("no HTTP/2 SETTINGS from the server within {connect_timeout:?}");
                return Err(SendError::Preface(detail));
            }
        }
        *self.h2.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(Ok(sender))
    }

    fn cached_h2(&self) -> Option<http2::SendRequest<BoxBody>> {
        let cached = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        cached.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    fn forget_closed_h2(&self) {
        let mut cached = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.as_ref().is_some_and(http2::SendRequest::is_closed) {
            *cached = None;
        }
    }
}

fn not_http2(req: Request<BoxBody>, proven: bool) -> SendError {
    SendError::NotHttp2 {
        req: Box::new(req),
        proven,
    }
}
