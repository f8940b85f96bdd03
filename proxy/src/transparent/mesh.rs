//! Opaque TCP over mTLS between sidecars (docs/identity.md, "Opaque TCP
//! over mTLS").
//!
//! Outbound ([`MeshOrigination`]): an opaque forward to an address whose
//! expected identity is known (Discovery's `identities`, a
//! `ServiceEndpoints` `identity`: the lookup HTTP origination uses) opens
//! TLS 1.3 to the original destination, presenting this proxy's
//! certificate, offering only the ALPN `levee.opaque/1` ([`Alpn::Opaque`])
//! and accepting only the expected SPIFFE ID; the client's bytes go inside
//! it. The peer pod's iptables redirect the connection to its proxy's
//! inbound listener, as any connection to the pod.
//!
//! Inbound ([`MeshTermination`]): a redirected connection whose first
//! bytes are a peer proxy's ClientHello (`client_hello`: its server name
//! is a mesh name, or it offers `levee.opaque/1`) is terminated with this
//! proxy's certificate (the ClientHello is read by peeking, so every byte
//! is still in the socket for the handshake). Opaque TCP inside is
//! forwarded to the workload's original port, the port's
//! `spec.inbound.mtls` deciding first (the caller's verified identity);
//! HTTP inside (ALPN `h2` or `http/1.1`: a caller's sidecar originating
//! mTLS to the pod's app port, as Kubernetes endpoints are) is handed back
//! to the listener and served as HTTP ([`crate::server`]), each request
//! with the original destination and the verified caller. Any other
//! ClientHello is the app's own TLS and passes through untouched (the
//! port's `spec.inbound.mtls` deciding with no caller identity).
//!
//! Both ends' TLS streams are [`crate::tls::Expiring`]: a tunnel is
//! closed once this proxy's certificate expired unrenewed.
//!
//! Why an ALPN value for opaque: it is in the ClientHello, so the callee's
//! proxy tells a peer proxy's opaque hop from the app's own TLS before any
//! handshake, and needs neither another port nor a header inside the
//! stream. The original port already says where the bytes go (the
//! connection was made to it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use levee_proto::policy::SpiffeId;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Passthrough;
use super::client_hello::{MeshHello, mesh_hello};
use crate::state::Shared;
use crate::tls::{Accepted, Alpn, ClientIdentity, Origination, Termination, TlsConfigs};

/// A peer proxy's handshake must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Outbound: originates mTLS for opaque forwards to meshed endpoints.
pub struct MeshOrigination {
    origination: Arc<Origination>,
    configs: Arc<TlsConfigs>,
    shared: Arc<Shared>,
    /// How long the discovery answer for a destination never met is
    /// awaited (`--detect-timeout`).
    wait: Duration,
}

impl std::fmt::Debug for MeshOrigination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshOrigination")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl MeshOrigination {
    pub fn new(
        origination: Arc<Origination>,
        configs: Arc<TlsConfigs>,
        shared: Arc<Shared>,
        wait: Duration,
    ) -> Self {
        MeshOrigination {
            origination,
            configs,
            shared,
            wait,
        }
    }

    /// The identity expected at `target`, if any. With a certificate, a
    /// destination not known yet is looked up in discovery first (its
    /// owner's update carries the identities), for at most `wait`; without
    /// one only what is known counts (no wait for a hop that could not be
    /// made anyway).
    async fn expected(&self, target: SocketAddr) -> Option<SpiffeId> {
        if let Some(id) = self.origination.expected(target) {
            return Some(id);
        }
        self.configs.identity()?;
        let owner = self
            .shared
            .subscriptions
            .address_owner(target, self.wait)
            .await;
        if let Some(owner) = owner {
            self.shared.discovered(&owner).await;
        }
        self.origination.expected(target)
    }

    /// Forwards `downstream` to `target`: inside mTLS when `target` has an
    /// expected identity, else in plaintext. A handshake that fails (the
    /// server proved another identity, no certificate of this proxy's own,
    /// an untrusted chain) closes the client's connection, logged with the
    /// reason and counted (`levee_tls_handshakes_total`, and
    /// `levee_tcp_connections_total{outcome="connect-error"}`).
    pub(super) async fn forward(
        &self,
        passthrough: &Passthrough,
        downstream: TcpStream,
        target: SocketAddr,
        hard: &CancellationToken,
    ) {
        let Some(expected) = self.expected(target).await else {
            passthrough.forward_checked(downstream, target, hard).await;
            return;
        };
        let Some((upstream, _own_port)) = passthrough.connect(target).await else {
            return;
        };
        let handshake = self
            .origination
            .connect(upstream, target, &expected, Alpn::Opaque);
        let error = match tokio::time::timeout(passthrough.connect_timeout(), handshake).await {
            Ok(Ok(tls)) => {
                passthrough.splice(downstream, tls, target, hard).await;
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!(
                "TLS handshake timed out after {:?}",
                passthrough.connect_timeout()
            ),
        };
        tracing::warn!(%target, %expected, %error, "opaque mTLS failed: closing the client's connection");
        passthrough.connect_failed();
    }
}

/// Inbound: terminates a peer proxy's opaque mTLS.
pub struct MeshTermination(pub Termination);

impl std::fmt::Debug for MeshTermination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTermination").finish_non_exhaustive()
    }
}

impl MeshTermination {
    /// Forwards a redirected `downstream` to the workload at `target`:
    /// terminated first when it opens with a peer proxy's ClientHello
    /// (looked for for at most `wait`, and only when this proxy has a
    /// certificate), then only if `admit` admits the verified caller (or
    /// none, for plaintext and the app's own TLS). A peer proxy's HTTP is
    /// returned terminated, for the listener to serve.
    pub(super) async fn forward(
        &self,
        passthrough: &Passthrough,
        downstream: TcpStream,
        target: SocketAddr,
        wait: Duration,
        admit: impl FnOnce(Option<&ClientIdentity>) -> bool,
        hard: &CancellationToken,
    ) -> Option<Accepted> {
        let meshed = if self.0.has_credentials() {
            mesh_hello(&downstream, wait).await
        } else {
            None
        };
        let Some(carries) = meshed else {
            if admit(None) {
                passthrough.forward_checked(downstream, target, hard).await;
            }
            return None;
        };
        let accepted = match carries {
            MeshHello::Opaque => bounded(target, self.0.accept_opaque(downstream)).await?,
            MeshHello::Http => bounded(target, self.0.accept(downstream)).await?,
        };
        if carries == MeshHello::Http {
            return Some(accepted);
        }
        if !admit(accepted.client.as_ref()) {
            return None;
        }
        let (upstream, _own_port) = passthrough.connect(target).await?;
        passthrough
            .splice(accepted.stream, upstream, target, hard)
            .await;
        None
    }
}

/// A peer's `handshake` within [`HANDSHAKE_TIMEOUT`]; a failure is logged.
async fn bounded(
    target: SocketAddr,
    handshake: impl Future<Output = std::io::Result<Accepted>>,
) -> Option<Accepted> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(error)) => {
            tracing::debug!(%target, %error, "mesh mTLS: the peer's handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%target, "mesh mTLS: the peer's handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests;
