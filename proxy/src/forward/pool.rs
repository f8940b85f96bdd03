//! Upstream connections, pooled per endpoint address.
//!
//! HTTP/1.1: idle keep-alive connections are kept per endpoint and reused; a
//! connection goes back to the pool once its response body has been read to
//! the end. HTTP/2: one multiplexed connection per endpoint, re-dialled when
//! it closes. Connects are bounded by `connect_timeout`, so a dead upstream
//! fails fast instead of hanging the caller.
//!
//! A fresh HTTP/2 connection carries no request until the server's first
//! frame proved it speaks HTTP/2 ([`probe`]); an endpoint that answered
//! otherwise is remembered as HTTP/1.x-only and the request comes back
//! unsent ([`SendError::NotHttp2`]) for the caller to send over HTTP/1.1.
//!
//! The pool is ours rather than hyper-util's legacy client because that client
//! derives both the dialled address and the HTTP/2 `:authority` from the URI:
//! a proxy must dial the chosen endpoint yet keep the caller's authority.
//!
//! This module owns the pool's settings and errors, the map of endpoints
//! (keyed by address and expected identity, bounded by `MAX_ENDPOINTS`)
//! and each endpoint's connection state. Sending over HTTP/1.1 is in `h1`,
//! over HTTP/2 in `h2`, dialling in `connect`, the idle HTTP/1.1
//! connections and their reaping in `idle`, the HTTP/2 check in [`probe`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::BoxBody;
use crate::h2_settings::H2Settings;
use crate::tls::{Alpn, OriginateError, Origination, ServerIdentity, Stream};
use connect::dial;
use idle::IdleConns;
use levee_proto::policy::SpiffeId;
use probe::Http1Memory;

mod connect;
mod h1;
mod h2;
mod idle;
mod pooled_body;
pub mod probe;

/// Endpoints remembered before unused ones are forgotten.
const MAX_ENDPOINTS: usize = 4096;

/// Which HTTP version to speak to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Pool tuning.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Bound on TCP connect to an endpoint.
    pub connect_timeout: Duration,
    /// Idle HTTP/1 connections are closed after this long.
    pub idle_timeout: Duration,
    /// Idle HTTP/1 connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// Windows, header list size and reset guards of HTTP/2 connections.
    pub h2: H2Settings,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            max_idle_per_endpoint: 128,
            h2: H2Settings::default(),
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No TCP connection could be made (refused, timed out as
    /// [`io::ErrorKind::TimedOut`], ...); the request was not sent.
    Connect(io::Error),
    /// The HTTP handshake on a new connection failed; the request was not sent.
    Handshake(hyper::Error),
    /// The exchange failed after the request was handed to a connection.
    Reset(hyper::Error),
    /// The server did not answer the HTTP/2 preface with SETTINGS within
    /// the connect timeout; the request was not sent.
    Preface(String),
    /// The endpoint does not speak HTTP/2: the request, never sent, is
    /// handed back. `proven`: it said so (or did before), and is remembered
    /// as HTTP/1.x-only; else it closed the connection on the preface, and
    /// [`Pool::learn_http1_only`] remembers it once HTTP/1.1 worked.
    NotHttp2 {
        req: Box<Request<BoxBody>>,
        proven: bool,
    },
    /// The endpoint has an expected identity and no mTLS connection to it
    /// could be made (another identity answered, no certificate, a failed
    /// handshake); the request was not sent.
    Tls(OriginateError),
}

/// Pool entries are per address and expected identity: a connection
/// verified for one identity is never used for another.
type EndpointKey = (SocketAddr, Option<SpiffeId>);

/// Connections to every endpoint the proxy has talked to.
pub struct Pool {
    settings: PoolSettings,
    /// Read on every request without locking; replaced (copy-on-write) when a
    /// new endpoint appears.
    endpoints: ArcSwap<HashMap<EndpointKey, Arc<EndpointConns>>>,
    /// mTLS to endpoints with an expected identity (`None`: plaintext only).
    origination: Option<Arc<Origination>>,
}

/// One upstream address's connections: idle HTTP/1.1 senders and the shared
/// HTTP/2 one.
struct EndpointConns {
    addr: SocketAddr,
    /// mTLS to this identity, or plaintext.
    tls: Option<(Arc<Origination>, SpiffeId)>,
    h2_settings: H2Settings,
    idle_h1: Arc<IdleConns>,
    h2: Mutex<Option<http2::SendRequest<BoxBody>>>,
    /// Serialises HTTP/2 dials so a burst of requests shares one connection.
    h2_dial: tokio::sync::Mutex<()>,
    /// Whether the endpoint answered the HTTP/2 preface as HTTP/1.x.
    http1_only: Http1Memory,
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Self {
        Pool {
            settings,
            endpoints: ArcSwap::from_pointee(HashMap::new()),
            origination: None,
        }
    }

    /// Speaks mTLS to endpoints `origination` has an expected identity for.
    pub fn with_origination(mut self, origination: Arc<Origination>) -> Self {
        self.origination = Some(origination);
        self
    }

    fn key(&self, addr: SocketAddr) -> EndpointKey {
        let identity = self.origination.as_ref().and_then(|o| o.expected(addr));
        (addr, identity)
    }

    /// Sends `req` to `addr` over `protocol`. `req`'s URI must already be in
    /// the form the protocol wants (origin-form for HTTP/1, absolute for HTTP/2).
    /// Upgrade requests get a connection of their own that is never pooled.
    /// `connect_timeout` overrides the pool's for connections dialled now.
    pub async fn send(
        &self,
        addr: SocketAddr,
        protocol: Protocol,
        req: Request<BoxBody>,
        upgrade: bool,
        connect_timeout: Option<Duration>,
    ) -> Result<Response<BoxBody>, SendError> {
        let endpoint = self.endpoint(addr);
        let connect_timeout = connect_timeout.unwrap_or(self.settings.connect_timeout);
        let mut response = match protocol {
            Protocol::Http1 => endpoint.send_h1(req, upgrade, connect_timeout).await,
            Protocol::Http2 => endpoint.send_h2(req, connect_timeout).await,
        }?;
        // Every connection of an mTLS endpoint verified this identity.
        if let Some((_, identity)) = &endpoint.tls {
            response
                .extensions_mut()
                .insert(ServerIdentity(identity.clone()));
        }
        Ok(response)
    }

    /// Whether `addr` is known to speak HTTP/1.x only (it answered the
    /// HTTP/2 preface otherwise within the last [`probe::HTTP1_ONLY_TTL`]).
    pub fn known_http1_only(&self, addr: SocketAddr) -> bool {
        self.endpoints
            .load()
            .get(&self.key(addr))
            .is_some_and(|e| e.http1_only.http1_only(Instant::now()))
    }

    /// Remembers that `addr` speaks HTTP/1.x only (it closed the
    /// connection on the HTTP/2 preface, then answered HTTP/1.1).
    pub fn learn_http1_only(&self, addr: SocketAddr) {
        self.endpoint(addr).http1_only.learn(Instant::now());
    }

    /// A plain TCP connection to `addr` (for `CONNECT` tunnels), not pooled.
    pub async fn dial_raw(&self, addr: SocketAddr) -> Result<TcpStream, SendError> {
        dial(addr, self.settings.connect_timeout).await
    }

    fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointConns> {
        let key = self.key(addr);
        if let Some(found) = self.endpoints.load().get(&key) {
            return found.clone();
        }
        let tls = key
            .1
            .clone()
            .and_then(|id| Some((self.origination.clone()?, id)));
        let fresh = Arc::new(EndpointConns {
            addr,
            tls,
            h2_settings: self.settings.h2,
            idle_h1: IdleConns::new(
                self.settings.idle_timeout,
                self.settings.max_idle_per_endpoint,
            ),
            h2: Mutex::new(None),
            h2_dial: tokio::sync::Mutex::new(()),
            http1_only: Http1Memory::default(),
        });
        let mut chosen = fresh.clone();
        self.endpoints.rcu(|map| {
            let mut map = HashMap::clone(map);
            if map.len() >= MAX_ENDPOINTS {
                // Endpoints come and go (DNS, rollouts): forget unused ones.
                map.retain(|_, e| e.has_connections());
            }
            chosen = map
                .entry(key.clone())
                .or_insert_with(|| fresh.clone())
                .clone();
            map
        });
        chosen
    }
}

impl EndpointConns {
    /// Whether any connection to this endpoint is open (or being handed out).
    fn has_connections(&self) -> bool {
        let idle = self.idle_h1.any_open();
        let h2 = self
            .h2
            .try_lock()
            .map_or(true, |h2| h2.as_ref().is_some_and(|s| !s.is_closed()));
        idle || h2
    }

    /// A connection to the endpoint: TCP, then TLS when it has an
    /// expected identity, both within `timeout`.
    async fn dial(&self, timeout: Duration, alpn: Alpn) -> Result<TokioIo<Stream>, SendError> {
        let tls = self.tls.as_ref().map(|(o, id)| (o.as_ref(), id));
        connect::connect(self.addr, timeout, tls, alpn)
            .await
            .map(TokioIo::new)
    }
}
