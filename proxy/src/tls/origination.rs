//! Outbound mTLS: an endpoint with an expected identity (its
//! `ServiceEndpoints` `identity`, or Discovery's `identities`) is spoken to
//! over TLS 1.3, presenting this proxy's certificate and accepting only a
//! server whose SPIFFE ID is the expected one. Endpoints without one are
//! spoken to in plaintext, as before. The connection made is
//! [`ClientTls`]: it ends once this proxy's certificate expired unrenewed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use levee_proto::policy::SpiffeId;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::verify::IdentityMismatch;
use super::{ClientTls, Expiring, TlsConfigs, server_name};
use crate::metrics::{Direction, TlsMetrics, TlsResult};
use crate::state::Shared;

/// The application protocol offered in ALPN: the caller's, preserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// HTTP/2 (gRPC too).
    H2,
    /// HTTP/1.1 (upgrades too).
    Http1,
    /// Opaque TCP (transparent passthrough): the callee's proxy forwards
    /// the plain bytes to the port the connection was made to
    /// ([`crate::transparent`]).
    Opaque,
}

impl Alpn {
    /// The ALPN protocol id.
    pub fn id(self) -> &'static [u8] {
        match self {
            Alpn::H2 => b"h2",
            Alpn::Http1 => b"http/1.1",
            Alpn::Opaque => b"levee.opaque/1",
        }
    }

    /// What a client offers.
    pub(super) fn offered(self) -> Option<&'static [u8]> {
        Some(self.id())
    }
}

/// The identity the server proved on the mTLS connection a response came
/// over (a response extension the pool adds; absent for plaintext): the
/// outbound span (`levee.server.identity`) and access log (`server_id`)
/// read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentity(pub SpiffeId);

/// Why no mTLS connection was made. The request was never sent.
#[derive(Debug, thiserror::Error)]
pub enum OriginateError {
    /// The server proved another identity (`upstream-identity`).
    #[error("{0}")]
    Identity(String),
    /// This proxy has no workload certificate to present.
    #[error("this proxy has no workload certificate (mTLS to {0} expected)")]
    NoCredentials(SpiffeId),
    /// This proxy's certificate expired and was not renewed (the control
    /// plane unreachable): no new mTLS connection until it is.
    #[error(
        "this proxy's workload certificate expired {ago} s ago and was not renewed \
         (mTLS to {expected} refused until it is)"
    )]
    Expired { expected: SpiffeId, ago: u64 },
    /// The handshake failed otherwise (untrusted chain, alert, reset...).
    #[error("TLS handshake: {0}")]
    Handshake(String),
}

/// Originates mTLS to endpoints that have an expected identity.
pub struct Origination {
    configs: Arc<TlsConfigs>,
    /// Whose snapshot says which identity each endpoint address has.
    shared: Arc<Shared>,
    metrics: TlsMetrics,
}

impl Origination {
    pub fn new(configs: Arc<TlsConfigs>, shared: Arc<Shared>, metrics: TlsMetrics) -> Self {
        Origination {
            configs,
            shared,
            metrics,
        }
    }

    /// The identity expected at `addr`, if any (then mTLS is spoken there).
    pub fn expected(&self, addr: SocketAddr) -> Option<SpiffeId> {
        self.shared.snapshot.load().identities.get(&addr).cloned()
    }

    /// The TLS handshake over `tcp` to `addr`, which must be `expected`;
    /// the connection lasts while this proxy's certificate is valid.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        expected: &SpiffeId,
        alpn: Alpn,
    ) -> Result<ClientTls, OriginateError> {
        let result = self.handshake(tcp, expected, alpn).await;
        if let Err(error) = &result {
            tracing::debug!(%addr, %expected, %error, "mTLS origination failed");
        }
        self.metrics.handshake(
            Direction::Outbound,
            match &result {
                Ok(_) => TlsResult::Ok,
                Err(OriginateError::Identity(_)) => TlsResult::IdentityMismatch,
                Err(OriginateError::NoCredentials(_)) => TlsResult::NoCredentials,
                Err(OriginateError::Expired { .. }) => TlsResult::Expired,
                Err(OriginateError::Handshake(_)) => TlsResult::Error,
            },
        );
        let tls = result?;
        Ok(Expiring::new(
            tls,
            self.configs.clone(),
            self.metrics.clone(),
            Direction::Outbound,
        ))
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        expected: &SpiffeId,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, OriginateError> {
        let built = self
            .configs
            .current()
            .ok_or_else(|| OriginateError::NoCredentials(expected.clone()))?;
        // Fail closed: an expired certificate is never presented.
        if let Some(ago) = built.credentials.expired_for(SystemTime::now()) {
            return Err(OriginateError::Expired {
                expected: expected.clone(),
                ago: ago.as_secs(),
            });
        }
        let config = built
            .client(expected, alpn)
            .map_err(|e| OriginateError::Handshake(e.to_string()))?;
        // The SNI names the expected identity, so a callee reached through
        // its iptables tells this hello from its app's own TLS
        // (`server_name`); the verifier checks the SPIFFE ID, not the name.
        let name = server_name::for_identity(expected);
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| classify(&e))
    }
}

/// A failed handshake as [`OriginateError`]: the verifier's identity
/// mismatch is told apart by type, never by text.
fn classify(error: &std::io::Error) -> OriginateError {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error.and_then(IdentityMismatch::in_rustls) {
        Some(mismatch) => OriginateError::Identity(mismatch.to_string()),
        None => OriginateError::Handshake(error.to_string()),
    }
}
