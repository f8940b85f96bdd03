//! Inbound mTLS on the plaintext port: the listener sees a TLS ClientHello
//! (`server::detect`), and [`Termination::accept`] completes the handshake
//! with this proxy's certificate, verifying a client certificate against
//! the trust roots when one is offered. The verified client identity goes
//! with every request of the connection as a [`ClientIdentity`] extension;
//! the inbound handler passes it to the app in [`CLIENT_ID_HEADER`].
//! [`Termination::accept`] also terminates a peer proxy's HTTP on a
//! redirected connection, and [`Termination::accept_opaque`] its opaque
//! TCP ([`Alpn::Opaque`]); see [`crate::transparent`]. Every terminated
//! connection is [`Expiring`]: it ends once this proxy's certificate
//! expired unrenewed, and an expired certificate is never presented.

use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderName;
use levee_proto::policy::SpiffeId;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::configs::Built;
use super::origination::Alpn;
use super::{Expiring, Stream, TlsConfigs, verify};
use crate::metrics::{Direction, TlsMetrics, TlsResult};

/// The request header that tells the app who called: the SPIFFE ID of the
/// caller's verified certificate. The inbound proxy removes it from every
/// request first, so the app never sees one the caller wrote.
pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("x-levee-client-id");

/// The verified identity of the client of an mTLS connection (a request
/// extension; absent for plaintext or a TLS client without certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity(pub SpiffeId);

/// A terminated inbound connection.
pub struct Accepted {
    pub stream: Stream,
    /// The client chose HTTP/2 in ALPN.
    pub h2: bool,
    pub client: Option<ClientIdentity>,
}

/// Accepts mTLS on the inbound listener.
pub struct Termination {
    configs: Arc<TlsConfigs>,
    metrics: TlsMetrics,
}

impl Termination {
    pub fn new(configs: Arc<TlsConfigs>, metrics: TlsMetrics) -> Self {
        Termination { configs, metrics }
    }

    /// Completes a TLS handshake a client opened on `tcp`.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Accepted> {
        self.terminate(tcp, false).await
    }

    /// Completes the handshake of a client that offered [`Alpn::Opaque`]
    /// (a redirected opaque TCP connection from a peer's proxy): the only
    /// protocol accepted. Counted in the same handshake metric.
    pub async fn accept_opaque(&self, tcp: TcpStream) -> io::Result<Accepted> {
        self.terminate(tcp, true).await
    }

    /// The handshake with the current certificate, counted in
    /// `levee_tls_handshakes_total`. An expired certificate (not renewed
    /// in time) is never presented: the client's handshake is refused
    /// (the connection closed), counted as `expired`.
    async fn terminate(&self, tcp: TcpStream, opaque: bool) -> io::Result<Accepted> {
        let Some(built) = self.configs.current() else {
            self.metrics.handshake(Direction::Inbound, TlsResult::Error);
            return Err(io::Error::other(
                "a TLS client, and this proxy has no workload certificate",
            ));
        };
        if let Some(ago) = built.credentials.expired_for(SystemTime::now()) {
            self.metrics
                .handshake(Direction::Inbound, TlsResult::Expired);
            return Err(io::Error::other(format!(
                "TLS handshake refused: this proxy's workload certificate expired {} s ago \
                 and was not renewed",
                ago.as_secs()
            )));
        }
        let result = self.handshake(tcp, &built, opaque).await;
        let outcome = if result.is_ok() {
            TlsResult::Ok
        } else {
            TlsResult::Error
        };
        self.metrics.handshake(Direction::Inbound, outcome);
        result
    }

    /// Whether this proxy has a workload certificate (it can terminate).
    pub fn has_credentials(&self) -> bool {
        self.configs.current().is_some()
    }

    /// `opaque`: with the configuration that accepts only [`Alpn::Opaque`].
    async fn handshake(&self, tcp: TcpStream, built: &Built, opaque: bool) -> io::Result<Accepted> {
        let config = if opaque {
            built.opaque_server.clone()
        } else {
            built.server.clone()
        };
        let tls = TlsAcceptor::from(config).accept(tcp).await?;
        let (_, conn) = tls.get_ref();
        let h2 = conn.alpn_protocol() == Some(Alpn::H2.id());
        // The verifier checked the chain; the identity is the leaf's SPIFFE ID.
        let client = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| verify::spiffe_id(leaf).ok())
            .map(ClientIdentity);
        let tls = Expiring::new(
            tls,
            self.configs.clone(),
            self.metrics.clone(),
            Direction::Inbound,
        );
        Ok(Accepted {
            stream: Stream::Server(Box::new(tls)),
            h2,
            client,
        })
    }
}
