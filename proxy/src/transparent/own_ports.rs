//! The local ports of the passthrough's own upstream connections. A proxy
//! that does not run as `init-iptables`' `--proxy-uid` has its passthrough
//! connections captured again and redirected back to itself, hop after hop,
//! until it runs out of file descriptors. Each upstream socket is bound to
//! an ephemeral port before it connects and the port is recorded, so a
//! redirected connection coming from one of them is known for a loop before
//! its first byte, without a race.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpSocket;

/// (IPv6?, port): a port bound on the unspecified address is this
/// process's alone in its family.
type Key = (bool, u16);

/// The ports of the upstream connections in flight.
#[derive(Clone, Debug, Default)]
pub struct OwnPorts(Arc<Mutex<HashSet<Key>>>);

/// Keeps a port recorded while its connection lives.
pub struct PortGuard {
    ports: OwnPorts,
    key: Key,
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        self.ports.lock().remove(&self.key);
    }
}

impl OwnPorts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `peer` (a redirected connection's client) is one of ours.
    pub fn contains(&self, peer: SocketAddr) -> bool {
        let v6 = match peer.ip() {
            IpAddr::V4(_) => false,
            IpAddr::V6(ip) => ip.to_ipv4_mapped().is_none(),
        };
        self.lock().contains(&(v6, peer.port()))
    }

    /// A socket for connecting to `target`, bound to an ephemeral port that
    /// stays recorded until the guard is dropped.
    pub fn bind_for(&self, target: SocketAddr) -> io::Result<(TcpSocket, PortGuard)> {
        let (socket, any) = match target {
            SocketAddr::V4(_) => (TcpSocket::new_v4()?, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            SocketAddr::V6(_) => (TcpSocket::new_v6()?, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        };
        socket.bind(SocketAddr::new(any, 0))?;
        let key = (target.is_ipv6(), socket.local_addr()?.port());
        self.lock().insert(key);
        Ok((
            socket,
            PortGuard {
                ports: self.clone(),
                key,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_port_is_ours_until_its_guard_drops() {
        let ports = OwnPorts::default();
        let target: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let (socket, guard) = ports.bind_for(target).expect("bind");
        let port = socket.local_addr().expect("addr").port();
        assert!(ports.contains(SocketAddr::from(([127, 0, 0, 1], port))));
        // A dual-stack listener reports an IPv4 peer as IPv4-mapped.
        let mapped: SocketAddr = format!("[::ffff:10.0.0.1]:{port}").parse().expect("addr");
        assert!(ports.contains(mapped));
        // The same port number in the other family is not ours.
        assert!(!ports.contains(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port))));
        drop(guard);
        assert!(!ports.contains(SocketAddr::from(([127, 0, 0, 1], port))));
    }
}
