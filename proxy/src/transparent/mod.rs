//! Transparent interception: connections that `init-iptables` redirected
//! to a listener still know where the app (or the caller) meant to go:
//! conntrack keeps their original destination (`SO_ORIGINAL_DST`,
//! `IP6T_SO_ORIGINAL_DST`).
//!
//! A redirected connection's first bytes decide its path (the listener's
//! detection, [`crate::server`]): HTTP/1.x or the HTTP/2 preface is served
//! as HTTP, each request carrying the [`OriginalDst`] extension; anything
//! else, including a client that sends nothing within the detect timeout
//! (server-speaks-first protocols), and every connection to one of the
//! [`Transparent::opaque_ports`], is forwarded byte for byte (opaque
//! passthrough, half-close respected, connect and idle timeouts, counted
//! in the `levee_tcp_*` metrics). A connection made to the listener itself
//! (explicit mode, `HTTP_PROXY`) has no other original destination and is
//! served as HTTP, as before.
//!
//! Between two sidecars with workload certificates, an opaque forward
//! goes inside mTLS (`mesh`): the caller's proxy originates it to a
//! destination with an expected identity, the callee's proxy terminates it
//! and forwards the bytes to the workload; a port's `spec.inbound.mtls`
//! applies to opaque connections too. A peer proxy's mTLS carrying HTTP
//! to a redirected port (a caller's sidecar dialling the pod's app port)
//! is terminated too and handed back to the listener as HTTP.
//!
//! Layout: `original_dst` reads the socket option; `passthrough` forwards;
//! `own_ports` tells the proxy's own connections coming back (a loop);
//! `mesh` wraps opaque forwards between sidecars in mTLS; `client_hello`
//! tells a peer proxy's ClientHello from anything else.

mod client_hello;
mod mesh;
mod original_dst;
mod own_ports;
mod passthrough;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use mesh::{MeshOrigination, MeshTermination};
pub use original_dst::redirected_destination;
pub use passthrough::Passthrough;

use crate::tls::{Accepted, ClientIdentity, Termination};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Default `--detect-timeout`: how long a redirected connection may stay
/// silent before it is taken for a server-speaks-first protocol. HTTP
/// clients send their request at once (well within a millisecond on a pod's
/// loopback path); a server-speaks-first client waits for the server's
/// greeting, so this delay is added to its connection setup: short, but
/// long enough for a loaded client to get its first write out.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Default `--opaque-ports`, Linkerd's default opaque ports: well-known
/// ports of server-speaks-first or never-HTTP protocols, where detection
/// would only add the detect timeout (or misread a binary handshake): SMTP
/// (25, 587), MySQL (3306), Galera (4444), PostgreSQL (5432), Redis (6379),
/// Elasticsearch transport (9300), Memcached (11211).
pub const DEFAULT_OPAQUE_PORTS: &[u16] = &[25, 587, 3306, 4444, 5432, 6379, 9300, 11211];

/// How long the inbound side looks for a peer proxy's ClientHello on a
/// connection detection already looked at: the bytes are there, or the
/// client is silent and has waited the detect timeout once already.
const AFTER_DETECTION: Duration = Duration::from_millis(10);

/// The original destination of the connection a request arrived on, when
/// iptables redirected it (a request extension set by the listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDst(pub SocketAddr);

/// How a listener treats connections iptables redirected to it.
#[derive(Clone, Debug)]
pub struct Transparent {
    /// Forwards the opaque ones.
    pub passthrough: Passthrough,
    /// A redirected connection's first bytes must arrive within this for
    /// detection; silence means opaque.
    pub detect_timeout: Duration,
    /// Original ports forwarded as opaque TCP without detection.
    opaque_ports: Arc<[u16]>,
    /// Inbound: the workload listens on the original port on loopback, not
    /// on the original (pod) address.
    local_workload: bool,
    /// Opaque forwards between sidecars in mTLS.
    mesh: Mesh,
}

/// This listener's side of opaque mTLS.
#[derive(Clone, Debug, Default)]
enum Mesh {
    /// Plaintext only.
    #[default]
    None,
    /// Outbound: originates to destinations with an expected identity.
    Originate(Arc<MeshOrigination>),
    /// Inbound: terminates a peer proxy's opaque mTLS.
    Terminate(Arc<MeshTermination>),
}

impl Transparent {
    pub fn new(passthrough: Passthrough, detect_timeout: Duration, opaque_ports: &[u16]) -> Self {
        Transparent {
            passthrough,
            detect_timeout,
            opaque_ports: opaque_ports.into(),
            local_workload: false,
            mesh: Mesh::None,
        }
    }

    /// Outbound: opaque forwards to a destination with an expected
    /// identity go inside mTLS.
    pub fn with_origination(mut self, origination: MeshOrigination) -> Self {
        self.mesh = Mesh::Originate(Arc::new(origination));
        self
    }

    /// Inbound: a peer proxy's opaque mTLS is terminated.
    pub fn with_termination(mut self, termination: Termination) -> Self {
        self.mesh = Mesh::Terminate(Arc::new(MeshTermination(termination)));
        self
    }

    /// Forwards a redirected connection to `original` opaquely (to
    /// [`Transparent::target`]); `hard` ends it at once. A loop is closed;
    /// `admit` says whether the caller (its verified identity, or none)
    /// may reach the port. `detected`: protocol detection already looked
    /// at the connection (its first bytes are in the socket, or its client
    /// is silent), so a ClientHello is not waited for again. See [`mesh`]
    /// for mTLS. Returns a peer proxy's mTLS carrying HTTP, terminated:
    /// the listener serves it as HTTP (its requests carry the original
    /// destination and the verified caller).
    pub async fn forward(
        &self,
        stream: TcpStream,
        original: SocketAddr,
        detected: bool,
        admit: impl FnOnce(Option<&ClientIdentity>) -> bool,
        hard: &CancellationToken,
    ) -> Option<Accepted> {
        let target = self.target(original);
        if self.passthrough.refuses(&stream, target) {
            return None;
        }
        let passthrough = &self.passthrough;
        match &self.mesh {
            Mesh::Originate(mesh) => mesh.forward(passthrough, stream, target, hard).await,
            Mesh::Terminate(mesh) => {
                let wait = if detected {
                    AFTER_DETECTION
                } else {
                    self.detect_timeout
                };
                return mesh
                    .forward(passthrough, stream, target, wait, admit, hard)
                    .await;
            }
            Mesh::None if admit(None) => passthrough.forward_checked(stream, target, hard).await,
            Mesh::None => {}
        }
        None
    }

    /// For the inbound listener: a redirected connection is for the local
    /// workload, on `127.0.0.1` (or `::1`) and the original port.
    pub fn to_local_workload(mut self) -> Self {
        self.local_workload = true;
        self
    }

    /// Where a connection redirected from `original` goes.
    pub fn target(&self, original: SocketAddr) -> SocketAddr {
        if !self.local_workload {
            return original;
        }
        let loopback = match original {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        SocketAddr::new(loopback, original.port())
    }

    /// Whether connections to `target` skip detection.
    pub fn is_opaque(&self, target: SocketAddr) -> bool {
        self.opaque_ports.contains(&target.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_targets_the_original_port_on_loopback() {
        let settings = Transparent::new(
            Passthrough::new(
                Duration::from_secs(1),
                Duration::from_secs(1),
                crate::metrics::Metrics::new().tcp(
                    crate::metrics::Direction::Inbound,
                    crate::metrics::tcp_target::WORKLOAD,
                ),
            ),
            DEFAULT_DETECT_TIMEOUT,
            DEFAULT_OPAQUE_PORTS,
        );
        let v4: SocketAddr = "10.0.0.7:8080".parse().expect("addr");
        let v6: SocketAddr = "[fd00::7]:9090".parse().expect("addr");
        assert_eq!(settings.target(v4), v4);
        assert!(settings.is_opaque("10.0.0.7:3306".parse().expect("addr")));
        assert!(!settings.is_opaque(v4));
        let inbound = settings.to_local_workload();
        assert_eq!(inbound.target(v4), "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(inbound.target(v6), "[::1]:9090".parse().expect("addr"));
    }
}
