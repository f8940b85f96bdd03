//! The original destination of a redirected connection, from conntrack.

use std::net::{IpAddr, SocketAddr};

use socket2::SockRef;
use tokio::net::TcpStream;

/// Where `stream`'s client was connecting before a `REDIRECT` sent it to
/// this listener; `None` when it was not redirected: it came to the
/// listener's own address, or the kernel has no NAT record of it (no
/// conntrack entry, no nf_conntrack at all).
pub fn redirected_destination(stream: &TcpStream) -> Option<SocketAddr> {
    // An IPv4 client of a dual-stack [::] listener is an IPv4 connection
    // (its local address is `::ffff:a.b.c.d`): IPv4 conntrack knows it, and
    // answers SOL_IP's option only (IPv6's returns a wrong address for it).
    let local = canonical(stream.local_addr().ok()?);
    let socket = SockRef::from(stream);
    let original = match local {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    };
    let original = canonical(original.ok()?.as_socket()?);
    (original != local).then_some(original)
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket
/// reports for an IPv4 peer) as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_direct_connection_was_not_redirected() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        // With or without nf_conntrack, a connection to the listener's own
        // address has no other destination.
        assert_eq!(redirected_destination(&server), None);
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().expect("addr");
        assert_eq!(canonical(mapped), "10.1.2.3:80".parse().expect("addr"));
        let v6: SocketAddr = "[fd00::1]:80".parse().expect("addr");
        assert_eq!(canonical(v6), v6);
    }
}
