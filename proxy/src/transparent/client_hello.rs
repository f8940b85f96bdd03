//! Whether a redirected connection opens with a peer proxy's opaque
//! ClientHello: one offering the ALPN `levee.opaque/1` ([`Alpn::Opaque`]).
//! The first bytes are peeked, not read, and parsed by rustls' [`Acceptor`]
//! on a copy, so every byte is still in the socket for the handshake (or
//! for the app, when it is the app's own TLS).

use std::time::Duration;

use rustls::server::Acceptor;
use tokio::net::TcpStream;

use crate::tls::Alpn;

/// Bytes looked at for a ClientHello, at most: a TLS record (16 KiB) and
/// its header. A longer hello is not a peer proxy's.
const MAX_HELLO: usize = 16 * 1024 + 5;

/// The first wait before peeking again at a partial ClientHello, doubled up
/// to the cap (the socket stays readable with the same bytes).
const PEEK_RETRY: Duration = Duration::from_millis(1);
const PEEK_RETRY_MAX: Duration = Duration::from_millis(100);

/// What a connection's first bytes say about a ClientHello.
#[derive(Debug, PartialEq, Eq)]
enum Hello {
    /// A ClientHello offering [`Alpn::Opaque`]: a peer proxy's opaque hop.
    Opaque,
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
            let offered = accepted
                .client_hello()
                .alpn()
                .is_some_and(|mut ids| ids.any(|id| id == Alpn::Opaque.id()));
            if offered { Hello::Opaque } else { Hello::Other }
        }
        Err(_) => Hello::Other,
    }
}

/// Whether `stream` opens with a peer proxy's opaque ClientHello, within
/// `wait` (silence, other bytes, or a stall: no). Peeks.
pub(super) async fn offers_opaque(stream: &TcpStream, wait: Duration) -> bool {
    let mut buf = vec![0u8; MAX_HELLO];
    let look = async {
        let mut delay = PEEK_RETRY;
        let mut seen = 0;
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            match hello(&buf[..n]) {
                Hello::Opaque => return Some(true),
                Hello::Partial if n > 0 && n < MAX_HELLO => {}
                _ => return Some(false),
            }
            if n > seen {
                delay = PEEK_RETRY;
                seen = n;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(PEEK_RETRY_MAX);
        }
    };
    matches!(tokio::time::timeout(wait, look).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::net::TcpListener;

    use super::*;

    /// The first flight of a rustls client offering `alpn`.
    fn client_hello(alpn: &[u8]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let name = ServerName::try_from("db.example").expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).expect("hello");
        hello
    }

    #[test]
    fn only_a_client_hello_offering_the_opaque_alpn_is_a_peer_proxys() {
        let opaque = client_hello(Alpn::Opaque.id());
        assert_eq!(hello(&opaque), Hello::Opaque);
        assert_eq!(hello(&client_hello(b"h2")), Hello::Other);
        assert_eq!(hello(&opaque[..opaque.len() / 2]), Hello::Partial);
        assert_eq!(hello(&opaque[..1]), Hello::Partial);
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
        assert!(!offers_opaque(&server, Duration::from_secs(1)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
