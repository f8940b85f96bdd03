//! Whether a redirected connection opens with a peer proxy's ClientHello
//! (a mesh hello), and what it carries: one whose server name is a mesh
//! name ([`crate::tls::server_name`]: the caller's proxy names the
//! identity it expects), or one offering the ALPN `levee.opaque/1`
//! ([`Alpn::Opaque`]). The ALPN then says what is inside: opaque TCP, or
//! HTTP (`h2`, `http/1.1`). Any other ClientHello is the app's own TLS.
//! The first bytes are peeked, not read, and parsed by rustls'
//! [`Acceptor`] on a copy, so every byte is still in the socket for the
//! handshake (or for the app, when it is the app's own TLS).

use std::time::Duration;

use rustls::server::Acceptor;
use tokio::net::TcpStream;

use crate::tls::Alpn;
use crate::tls::server_name::is_mesh_name;

/// Bytes looked at for a ClientHello, at most: a TLS record (16 KiB) and
/// its header. A longer hello is not a peer proxy's.
const MAX_HELLO: usize = 16 * 1024 + 5;

/// The first wait before peeking again at a partial ClientHello, doubled up
/// to the cap (the socket stays readable with the same bytes).
const PEEK_RETRY: Duration = Duration::from_millis(1);
const PEEK_RETRY_MAX: Duration = Duration::from_millis(100);

/// What a peer proxy's ClientHello carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshHello {
    /// Opaque TCP ([`Alpn::Opaque`] offered).
    Opaque,
    /// HTTP: served as what the handshake's ALPN chooses (`h2`, else
    /// HTTP/1.1).
    Http,
}

/// What a connection's first bytes say about a ClientHello.
#[derive(Debug, PartialEq, Eq)]
enum Hello {
    /// A peer proxy's ClientHello.
    Mesh(MeshHello),
    /// Anything else (not TLS, or the app's own TLS).
    Other,
    /// Part of a ClientHello so far.
    Partial,
}

/// Classifies `bytes`, the start of a connection (read with rustls, on a
/// copy: nothing is consumed).
fn hello(bytes: &[u8]) -> Hello {
    if bytes.first() != Some(&0x16) {
        return Hello::Other;
    }
    let mut acceptor = Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Hello::Other,
        }
    }
    match acceptor.accept() {
        Ok(None) => Hello::Partial,
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let opaque = hello
                .alpn()
                .is_some_and(|mut ids| ids.any(|id| id == Alpn::Opaque.id()));
            let named = hello.server_name().is_some_and(is_mesh_name);
            match (opaque, named) {
                (true, _) => Hello::Mesh(MeshHello::Opaque),
                (false, true) => Hello::Mesh(MeshHello::Http),
                (false, false) => Hello::Other,
            }
        }
        Err(_) => Hello::Other,
    }
}

/// Whether `stream` opens with a peer proxy's ClientHello, and what it
/// carries, within `wait` (silence, other bytes, or a stall: `None`).
/// Peeks.
pub(super) async fn mesh_hello(stream: &TcpStream, wait: Duration) -> Option<MeshHello> {
    let mut buf = vec![0u8; MAX_HELLO];
    let look = async {
        let mut delay = PEEK_RETRY;
        let mut seen = 0;
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            match hello(&buf[..n]) {
                Hello::Mesh(carries) => return Some(carries),
                Hello::Partial if n > 0 && n < MAX_HELLO => {}
                _ => return None,
            }
            if n > seen {
                delay = PEEK_RETRY;
                seen = n;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(PEEK_RETRY_MAX);
        }
    };
    tokio::time::timeout(wait, look).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::net::TcpListener;

    use super::*;

    /// The first flight of a rustls client offering `alpn` to `name`.
    fn client_hello_to(name: ServerName<'static>, alpn: &[u8]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).expect("hello");
        hello
    }

    /// An app's own ClientHello: to `db.example`, offering `alpn`.
    fn client_hello(alpn: &[u8]) -> Vec<u8> {
        client_hello_to(ServerName::try_from("db.example").expect("name"), alpn)
    }

    /// What a peer proxy sends to an endpoint expected to be `id`.
    fn mesh_client_hello(id: &str, alpn: Alpn) -> Vec<u8> {
        let id = levee_proto::policy::SpiffeId::parse(id).expect("id");
        client_hello_to(crate::tls::server_name::for_identity(&id), alpn.id())
    }

    #[test]
    fn a_client_hello_offering_the_opaque_alpn_is_a_peer_proxys_opaque_hop() {
        let opaque = client_hello(Alpn::Opaque.id());
        assert_eq!(hello(&opaque), Hello::Mesh(MeshHello::Opaque));
        assert_eq!(hello(&opaque[..opaque.len() / 2]), Hello::Partial);
        assert_eq!(hello(&opaque[..1]), Hello::Partial);
        let named = mesh_client_hello("spiffe://td/ns/shop/sa/db", Alpn::Opaque);
        assert_eq!(hello(&named), Hello::Mesh(MeshHello::Opaque));
    }

    #[test]
    fn a_client_hello_to_a_mesh_name_is_a_peer_proxys_http() {
        for alpn in [Alpn::H2, Alpn::Http1] {
            let hello_bytes = mesh_client_hello("spiffe://td/ns/shop/sa/db", alpn);
            assert_eq!(
                hello(&hello_bytes),
                Hello::Mesh(MeshHello::Http),
                "{alpn:?}"
            );
            let odd = mesh_client_hello("spiffe://td/not/kubernetes", alpn);
            assert_eq!(hello(&odd), Hello::Mesh(MeshHello::Http), "{alpn:?}");
        }
    }

    #[test]
    fn the_apps_own_tls_and_other_bytes_are_not_a_peer_proxys() {
        // The same ALPNs a peer proxy offers for HTTP, to the app's name.
        assert_eq!(hello(&client_hello(b"h2")), Hello::Other);
        assert_eq!(hello(&client_hello(b"http/1.1")), Hello::Other);
        // No SNI at all (an IP address): not a mesh name.
        let by_ip = client_hello_to(
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            b"h2",
        );
        assert_eq!(hello(&by_ip), Hello::Other);
        assert_eq!(hello(b""), Hello::Other);
        assert_eq!(hello(b"GET / HTTP/1.1\r\n"), Hello::Other);
        assert_eq!(hello(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x99]), Hello::Other);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_not_a_peer_proxy_after_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let started = tokio::time::Instant::now();
        assert_eq!(mesh_hello(&server, Duration::from_secs(1)).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
