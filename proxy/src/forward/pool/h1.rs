//! The HTTP/1.1 side of an endpoint's connections: checking an idle
//! keep-alive connection out of the pool (or dialling a new one), sending
//! the request on it, and checking it back in once the response body has
//! been read to its end. Upgrade requests get a connection of their own
//! that is never pooled.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::pooled_body::PooledBody;
use super::{EndpointConns, SendError};
use crate::body::BoxBody;
use crate::tls::Alpn;

impl EndpointConns {
    pub(super) async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<BoxBody>,
        upgrade: bool,
        connect_timeout: Duration,
    ) -> Result<Response<BoxBody>, SendError> {
        if !upgrade {
            while let Some(mut sender) = self.idle_h1.checkout() {
                if sender.ready().await.is_err() {
                    continue;
                }
                match sender.try_send_request(req).await {
                    Ok(response) => return Ok(self.pooled_h1(response, sender)),
                    Err(mut e) => match e.take_message() {
                        // Not sent (the connection closed under us): try the next one.
                        Some(back) => req = back,
                        None => return Err(SendError::Reset(e.into_error())),
                    },
                }
            }
        }
        // Boxed: dialling (TCP, maybe TLS) and the handshake make a large
        // future, which the pooled path above should not carry around.
        let mut sender = Box::pin(self.new_h1(connect_timeout)).await?;
        let response = sender.send_request(req).await.map_err(SendError::Reset)?;
        if upgrade {
            Ok(response.map(crate::body::incoming))
        } else {
            Ok(self.pooled_h1(response, sender))
        }
    }

    /// A new HTTP/1.1 connection to the endpoint, its task spawned.
    async fn new_h1(
        &self,
        connect_timeout: Duration,
    ) -> Result<http1::SendRequest<BoxBody>, SendError> {
        let io = self.dial(connect_timeout, Alpn::Http1).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "upstream http/1 connection ended");
            }
        });
        Ok(sender)
    }

    /// Wraps the response body so the connection returns to the pool when the
    /// body has been read to its end (or immediately for an empty body).
    fn pooled_h1(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: http1::SendRequest<BoxBody>,
    ) -> Response<BoxBody> {
        if response.body().is_end_stream() {
            self.idle_h1.checkin(sender);
            return response.map(crate::body::incoming);
        }
        let checkin = Some((sender, self.clone()));
        response.map(|inner| PooledBody { inner, checkin }.boxed())
    }
}
