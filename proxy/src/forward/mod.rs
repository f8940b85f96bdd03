//! Sending a request to one chosen upstream address and returning its
//! response: protocol choice, URI form, hop-by-hop headers, connection
//! pooling ([`pool`]) and HTTP/1.1 upgrades (tunnelled with
//! `copy_bidirectional` once both sides have switched protocols).
//!
//! The upstream is spoken to in the protocol its port declares
//! ([`DeclaredProtocol`], a port's `appProtocol`), else in the downstream's
//! HTTP version, except that an HTTP/2 request to an endpoint that speaks
//! HTTP/1.x only (learned by the pool from its answer to the HTTP/2
//! preface, [`pool::probe`]) is translated to HTTP/1.1 — origin-form
//! target, `Host` from `:authority`.
//! gRPC needs HTTP/2 and is never translated: it gets a 502
//! `upstream-connect` (gRPC `UNAVAILABLE`) saying so.
//!
//! Bodies stream in both directions; trailers pass through untouched.
//!
//! The forwarder never connects to one of this proxy's own listeners
//! ([`OwnListeners`]): such a target is refused with 508 `loop-detected`
//! before any connection is made, whichever path chose it.

pub mod headers;
pub mod pool;
mod service;

pub use service::EndpointService;
pub mod tunnel;
pub mod upgrade;
pub mod uri;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use levee_proto::policy::AppProtocol;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::BoxBody;
use crate::errors::{ConnectCause, ErrorKind, ProxyError, ResetCause};
use crate::loops::OwnListeners;
use crate::resilience::call::CallContext;
use crate::server::ConnectionSlot;
use headers::{is_upgrade, strip_hop_by_hop};
use pool::{Pool, PoolSettings, Protocol, SendError};
use upgrade::{AllowedUpgrades, Screened};

/// Request extension: the protocol the destination's port declares
/// (`appProtocol` from discovery or a `ServiceEndpoints` file), used
/// instead of learning: an HTTP/1.1 app (`http`, `kubernetes.io/ws`) gets
/// HTTP/1.1 (HTTP/2 requests translated, gRPC refused), an HTTP/2 one
/// (`kubernetes.io/h2c`, `grpc`) gets HTTP/2 (HTTP/1.1 requests other than
/// upgrades sent as HTTP/2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeclaredProtocol(pub AppProtocol);

/// Forwards requests to upstream addresses. Shared by both listeners.
pub struct Forwarder {
    pool: Pool,
    /// Upgraded (tunnelled) connections outlive their HTTP exchange; they are
    /// tracked so shutdown waits for them, and cut when the grace period ends.
    tunnels: TaskTracker,
    hard_stop: CancellationToken,
    /// This proxy's listeners: targets never connected to (loops).
    own_listeners: OwnListeners,
    /// A tunnel with no byte either way for this long is closed.
    tunnel_idle_timeout: Duration,
    /// The protocols an HTTP/1.1 `Upgrade` may switch to.
    upgrades: AllowedUpgrades,
}

impl Forwarder {
    pub fn new(settings: PoolSettings, tunnels: TaskTracker, hard_stop: CancellationToken) -> Self {
        Forwarder {
            pool: Pool::new(settings),
            tunnels,
            hard_stop,
            own_listeners: OwnListeners::default(),
            tunnel_idle_timeout: tunnel::DEFAULT_TUNNEL_IDLE_TIMEOUT,
            upgrades: AllowedUpgrades::default(),
        }
    }

    /// Speaks mTLS to endpoints with an expected identity ([`crate::tls`]).
    pub fn with_origination(mut self, origination: Arc<crate::tls::Origination>) -> Self {
        self.pool = self.pool.with_origination(origination);
        self
    }

    /// Refuses targets that reach one of `own` (this proxy's listeners).
    pub fn with_own_listeners(mut self, own: OwnListeners) -> Self {
        self.own_listeners = own;
        self
    }

    /// `Err` (508 `loop-detected`) when connecting to `addr` would reach
    /// one of this proxy's own listeners.
    fn refuse_own(&self, addr: SocketAddr, service: &str) -> Result<(), ProxyError> {
        match self.own_listeners.reached_by(addr) {
            None => Ok(()),
            Some(listener) => Err(ProxyError::new(
                ErrorKind::LoopDetected,
                service,
                format!(
                    "{addr} is this proxy's own listener {listener}: forwarding there would loop"
                ),
            )),
        }
    }

    /// Lets HTTP/1.1 upgrades switch to `upgrades` only (`--allowed-upgrades`).
    pub fn with_allowed_upgrades(mut self, upgrades: AllowedUpgrades) -> Self {
        self.upgrades = upgrades;
        self
    }

    /// Screens an HTTP/1.1 request's `Upgrade` offer ([`upgrade`]): whether
    /// it is (still) an upgrade, or the refusal (400) of a protocol not on
    /// the allow-list. Call it before deciding whether `req` is a tunnel.
    pub fn screen_upgrade<B>(
        &self,
        req: &mut Request<B>,
        service: &str,
    ) -> Result<bool, ProxyError> {
        if req.version() > Version::HTTP_11 {
            return Ok(false);
        }
        match self.upgrades.screen(req.headers_mut()) {
            Ok(screened) => Ok(screened == Screened::Upgrade),
            Err(detail) => Err(ProxyError::new(ErrorKind::BadRequest, service, detail)),
        }
    }

    /// Closes tunnels (upgrades, `CONNECT`) after `idle` without a byte
    /// either way (`--tunnel-idle-timeout`).
    pub fn with_tunnel_idle_timeout(mut self, idle: Duration) -> Self {
        self.tunnel_idle_timeout = idle;
        self
    }

    /// Forwards `req` to `addr`, speaking the downstream's HTTP version.
    /// `service` labels errors. The request's [`CallContext`] connect timeout overrides the
    /// pool's connect timeout (policy `timeouts.connect`).
    pub async fn forward(
        &self,
        mut req: Request<BoxBody>,
        addr: SocketAddr,
        service: &str,
    ) -> Result<Response<BoxBody>, ProxyError> {
        self.refuse_own(addr, service)?;
        let mut protocol = if req.version() == Version::HTTP_2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        };
        let upgrade = protocol == Protocol::Http1 && is_upgrade(req.headers());
        let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));
        let slot = upgrade
            .then(|| req.extensions().get::<ConnectionSlot>().cloned())
            .flatten();
        strip_hop_by_hop(req.headers_mut(), upgrade);
        let declared = req.extensions().get::<DeclaredProtocol>().map(|d| d.0);
        if protocol == Protocol::Http2
            && (declared.is_some_and(AppProtocol::is_http1) || self.pool.known_http1_only(addr))
        {
            to_http1(&mut req, addr, service)?;
            protocol = Protocol::Http1;
        } else if protocol == Protocol::Http1
            && !upgrade
            && declared.is_some_and(AppProtocol::is_http2)
        {
            *req.version_mut() = Version::HTTP_2;
            protocol = Protocol::Http2;
        }
        uri::rewrite_for_upstream(&mut req, protocol)
            .map_err(|detail| ProxyError::new(ErrorKind::BadRequest, service, detail))?;

        let connect_timeout = CallContext::get(&req).and_then(|c| c.connect_timeout);
        let mut sent = self
            .pool
            .send(addr, protocol, req, upgrade, connect_timeout)
            .await;
        if let Err(SendError::NotHttp2 { req, proven }) = sent {
            // Never sent: the endpoint did not answer the preface as HTTP/2.
            let mut req = *req;
            if !proven && crate::errors::is_grpc(req.headers()) {
                let detail = "the connection closed on the HTTP/2 preface".to_owned();
                return Err(send_error(SendError::Preface(detail), addr, service));
            }
            to_http1(&mut req, addr, service)?;
            sent = self
                .pool
                .send(addr, Protocol::Http1, req, false, connect_timeout)
                .await;
            if !proven && sent.is_ok() {
                self.pool.learn_http1_only(addr);
            }
        }
        let mut response = sent.map_err(|e| send_error(e, addr, service))?;

        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (Some(downstream), true) = (downstream, switched) {
            let upstream = hyper::upgrade::on(&mut response);
            self.spawn_tunnel(addr, slot, async move {
                let (down, up) = tokio::try_join!(downstream, upstream)?;
                Ok((TokioIo::new(down), TokioIo::new(up)))
            });
        }
        strip_hop_by_hop(response.headers_mut(), upgrade && switched);
        Ok(response)
    }
}

/// Translates an HTTP/2 request for an HTTP/1.x-only upstream: HTTP/1.1,
/// origin-form target, `Host` from `:authority`, and `TE: trailers` (the
/// only `TE` HTTP/2 allows) named in `Connection` as HTTP/1.1 wants for a
/// hop-by-hop header; hyper writes the rest. gRPC is refused: it cannot
/// work over HTTP/1.1.
fn to_http1<B>(req: &mut Request<B>, addr: SocketAddr, service: &str) -> Result<(), ProxyError> {
    if crate::errors::is_grpc(req.headers()) {
        return Err(ProxyError::new(
            ErrorKind::UpstreamConnect(ConnectCause::Handshake),
            service,
            format!("{addr} speaks HTTP/1.x only, and gRPC needs HTTP/2"),
        ));
    }
    *req.version_mut() = Version::HTTP_11;
    if req.headers().contains_key(http::header::TE) {
        req.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("te"),
        );
    }
    uri::rewrite_for_upstream(req, Protocol::Http1)
        .map_err(|detail| ProxyError::new(ErrorKind::BadRequest, service, detail))
}

/// Maps a pool failure to the error the caller sees (502 either way), with
/// its typed cause; the detail text is for people only.
fn send_error(err: SendError, addr: SocketAddr, service: &str) -> ProxyError {
    match err {
        SendError::Connect(e) => ProxyError::new(
            ErrorKind::UpstreamConnect(ConnectCause::of_io(&e)),
            service,
            format!("connecting to {addr}: {e}"),
        ),
        SendError::Handshake(e) => ProxyError::new(
            ErrorKind::UpstreamConnect(ConnectCause::Handshake),
            service,
            format!("handshake with {addr}: {}", crate::errors::error_chain(&e)),
        ),
        SendError::Reset(e) => ProxyError::new(
            ErrorKind::UpstreamReset(ResetCause::of_hyper(&e)),
            service,
            format!("{addr}: {}", crate::errors::error_chain(&e)),
        ),
        SendError::Preface(detail) => ProxyError::new(
            ErrorKind::UpstreamConnect(ConnectCause::Handshake),
            service,
            format!("HTTP/2 handshake with {addr}: {detail}"),
        ),
        SendError::Tls(e) => {
            let cause = match e {
                crate::tls::OriginateError::Identity(_) => ConnectCause::Identity,
                _ => ConnectCause::Tls,
            };
            ProxyError::new(
                ErrorKind::UpstreamConnect(cause),
                service,
                format!("mTLS to {addr}: {e}"),
            )
        }
        SendError::NotHttp2 { .. } => ProxyError::new(
            ErrorKind::UpstreamConnect(ConnectCause::Handshake),
            service,
            format!("{addr} speaks HTTP/1.x only"),
        ),
    }
}

#[cfg(test)]
mod learning_tests;
#[cfg(test)]
mod tests;
