//! Protocol detection. Every connection: whether it opens with the HTTP/2
//! prior-knowledge preface ([`speaks_h2`]). Redirected connections: whether
//! the first bytes are HTTP (HTTP/1.x request line, or the HTTP/2 preface)
//! or opaque TCP ([`detect`]). Peeks, so every byte is still
//! in the socket for whichever path serves it.
//!
//! Anything else is opaque: a TLS ClientHello, a database handshake, and
//! a connection whose client sends nothing within the detect timeout (a
//! server-speaks-first protocol: SMTP, MySQL... the server waits for the
//! proxy to connect it, so the proxy must give up waiting and connect).

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// The HTTP/2 connection preface a prior-knowledge (h2c) client opens with.
pub(super) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait before looking again at a partial HTTP/2 preface: the
/// first wait, doubled each time up to the cap, so a client that stalls
/// mid-preface (a slowloris) costs a few wake-ups a second, not a thousand.
const PARTIAL_PREFACE_RETRY: Duration = Duration::from_millis(1);
const PARTIAL_PREFACE_RETRY_MAX: Duration = Duration::from_millis(100);

/// Bytes looked at, at most: an HTTP/1 request line longer than this is
/// forwarded as opaque TCP.
pub(super) const DETECT_BUFFER: usize = 8 * 1024;

/// What the bytes seen so far say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Detected {
    /// HTTP/1.x or HTTP/2: the HTTP path.
    Http,
    /// Not HTTP: the opaque forward.
    Opaque,
    /// A prefix of something HTTP: wait for more bytes.
    NeedMore,
}

/// Whether `buf` starts with the HTTP/2 preface: `Some(true)` complete,
/// `Some(false)` a part of it so far, `None` not it.
pub(super) fn h2_preface(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(H2_PREFACE.len());
    (buf[..n] == H2_PREFACE[..n]).then_some(n == H2_PREFACE.len())
}

/// Whether the client opened with the HTTP/2 preface. Peeks, so hyper reads
/// every byte itself. End of stream or any other first bytes: HTTP/1.
pub(super) async fn speaks_h2(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut wait = PARTIAL_PREFACE_RETRY;
    loop {
        let n = stream.peek(&mut buf).await?;
        match h2_preface(&buf[..n]) {
            Some(true) => return Ok(true),
            Some(false) if n > 0 => {}
            // The end of the stream, or other bytes.
            _ => return Ok(false),
        }
        // Part of the preface (clients normally send it in one write): the
        // socket stays readable, so wait a little rather than spin. The
        // caller bounds the whole detection by the header read timeout.
        tokio::time::sleep(wait).await;
        wait = next_preface_wait(wait);
    }
}

/// How a connection to a listener that accepts mTLS opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Opening {
    /// A TLS record (a ClientHello): terminate TLS, ALPN says the protocol.
    Tls,
    /// The HTTP/2 prior-knowledge preface.
    H2,
    /// Anything else: HTTP/1.
    H1,
}

/// The first byte of a TLS handshake record (RFC 8446 §5.1). No HTTP/1
/// method and not the HTTP/2 preface start with it.
const TLS_HANDSHAKE: u8 = 0x16;

/// Whether `first` opens a TLS connection.
pub(super) fn is_tls(first: &[u8]) -> bool {
    first.first() == Some(&TLS_HANDSHAKE)
}

/// How `stream` opens; `tls`: whether TLS is looked for at all. Peeks.
pub(super) async fn opening(stream: &TcpStream, tls: bool) -> io::Result<Opening> {
    if tls {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await?;
        if is_tls(&first[..n]) {
            return Ok(Opening::Tls);
        }
    }
    Ok(if speaks_h2(stream).await? {
        Opening::H2
    } else {
        Opening::H1
    })
}

/// The wait after `wait` while a partial preface stays partial.
fn next_preface_wait(wait: Duration) -> Duration {
    (wait * 2).min(PARTIAL_PREFACE_RETRY_MAX)
}

/// Classifies a connection's first bytes (`buf`, possibly partial).
pub(super) fn classify(buf: &[u8]) -> Detected {
    match h2_preface(buf) {
        Some(true) => return Detected::Http,
        Some(false) => return Detected::NeedMore,
        None => {}
    }
    // An HTTP/1 request line: METHOD SP request-target SP HTTP/1.x CRLF.
    let method_len = buf.iter().position(|&b| !is_token(b)).unwrap_or(buf.len());
    if method_len == buf.len() {
        // Only token bytes so far (or nothing): could be a method.
        return if method_len < 32 {
            Detected::NeedMore
        } else {
            Detected::Opaque
        };
    }
    if method_len == 0 || buf[method_len] != b' ' {
        return Detected::Opaque;
    }
    let rest = &buf[method_len + 1..];
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        // The target may be long; anything with control bytes is not HTTP.
        let control = rest.iter().any(|&b| b.is_ascii_control() && b != b'\r');
        return if control || buf.len() >= DETECT_BUFFER {
            Detected::Opaque
        } else {
            Detected::NeedMore
        };
    };
    let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Detected::Http
    } else {
        Detected::Opaque
    }
}

/// RFC 9110 token characters (what a method is made of).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Peeks at `stream` until its first bytes decide (see [`classify`]);
/// `timeout` bounds the wait. Nothing within it (or a stall mid-line):
/// opaque. The end of the stream before a decision: opaque too (the
/// forward passes the close on).
pub(super) async fn detect(stream: &TcpStream, timeout: Duration) -> io::Result<Detected> {
    let mut buf = vec![0u8; DETECT_BUFFER];
    let peek = async {
        let mut wait = PARTIAL_PREFACE_RETRY;
        let mut seen = 0;
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Ok(Detected::Opaque);
            }
            match classify(&buf[..n]) {
                Detected::NeedMore if n < DETECT_BUFFER => {}
                Detected::NeedMore => return Ok(Detected::Opaque),
                decided => return Ok(decided),
            }
            // The socket stays readable with the same bytes: wait a little
            // (longer while nothing new comes) rather than spin.
            if n > seen {
                wait = PARTIAL_PREFACE_RETRY;
                seen = n;
            }
            tokio::time::sleep(wait).await;
            wait = next_preface_wait(wait);
        }
    };
    match tokio::time::timeout(timeout, peek).await {
        Ok(decided) => decided,
        Err(_) => Ok(Detected::Opaque),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn http_request_lines_and_the_h2_preface_are_http() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Detected::Http
        );
        assert_eq!(classify(b"POST /x?y=1 HTTP/1.0\r\n"), Detected::Http);
        assert_eq!(classify(b"OPTIONS * HTTP/1.1\n"), Detected::Http);
        assert_eq!(classify(b"PURGE /cache HTTP/1.1\r\n"), Detected::Http);
        assert_eq!(classify(H2_PREFACE), Detected::Http);
    }

    #[test]
    fn prefixes_of_http_wait_for_more() {
        assert_eq!(classify(b""), Detected::NeedMore);
        assert_eq!(classify(b"GE"), Detected::NeedMore);
        assert_eq!(classify(b"GET /long/path"), Detected::NeedMore);
        assert_eq!(classify(b"GET / HTTP/1.1\r"), Detected::NeedMore);
        // Shares "PRI" with the preface.
        assert_eq!(classify(&H2_PREFACE[..10]), Detected::NeedMore);
    }

    #[test]
    fn everything_else_is_opaque() {
        // A TLS ClientHello record header.
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Detected::Opaque);
        // A PostgreSQL startup message (length first).
        assert_eq!(classify(&[0, 0, 0, 8, 4, 210, 22, 47]), Detected::Opaque);
        // Redis inline / RESP.
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Detected::Opaque);
        assert_eq!(classify(b"PING\r\n"), Detected::Opaque);
        // A line that is not HTTP/1.
        assert_eq!(classify(b"HELO client.example\r\n"), Detected::Opaque);
        assert_eq!(classify(b"GET / HTTP/2.0\r\n"), Detected::Opaque);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Detected::Opaque
        );
        // Control bytes in a would-be request target.
        assert_eq!(classify(b"GET /\x00"), Detected::Opaque);
        // A request line longer than the buffer.
        let mut long = b"GET /".to_vec();
        long.resize(DETECT_BUFFER, b'a');
        assert_eq!(classify(&long), Detected::Opaque);
        // An endless "method".
        assert_eq!(classify(&[b'A'; 40]), Detected::Opaque);
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn a_request_split_across_writes_is_http_and_stays_in_the_socket() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET /pa").await.expect("write");
        let detection =
            tokio::spawn(async move { (detect(&server, Duration::from_secs(5)).await, server) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client
            .write_all(b"th HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let (detected, server) = detection.await.expect("task");
        assert_eq!(detected.expect("detect"), Detected::Http);
        let mut buf = [0u8; 64];
        let n = server.peek(&mut buf).await.expect("peek");
        assert_eq!(&buf[..n], b"GET /path HTTP/1.1\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (_client, server) = pair().await;
        let started = tokio::time::Instant::now();
        let detected = detect(&server, Duration::from_secs(1))
            .await
            .expect("detect");
        assert_eq!(detected, Detected::Opaque);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[test]
    fn a_client_hello_is_tls_and_http_is_not() {
        assert!(is_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!is_tls(b"GET / HTTP/1.1\r\n"));
        assert!(!is_tls(H2_PREFACE));
        assert!(!is_tls(b""));
    }

    #[tokio::test]
    async fn a_listener_with_tls_tells_tls_from_h2_and_h1() {
        for (first, tls, expected) in [
            (&[0x16u8, 0x03, 0x01][..], true, Opening::Tls),
            (&H2_PREFACE[..], true, Opening::H2),
            (&b"GET / HTTP/1.1\r\n\r\n"[..], true, Opening::H1),
            // Without TLS on the listener, a ClientHello is not looked for.
            (&[0x16u8, 0x03, 0x01][..], false, Opening::H1),
        ] {
            let (mut client, server) = pair().await;
            client.write_all(first).await.expect("write");
            client.shutdown().await.expect("shutdown");
            assert_eq!(opening(&server, tls).await.expect("opening"), expected);
        }
    }

    #[tokio::test]
    async fn tls_is_opaque_at_once() {
        let (mut client, server) = pair().await;
        client
            .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01])
            .await
            .expect("write");
        let started = std::time::Instant::now();
        let detected = detect(&server, Duration::from_secs(5))
            .await
            .expect("detect");
        assert_eq!(detected, Detected::Opaque);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// What `speaks_h2` says when the client writes `first`, then `rest`.
    async fn detect_h2(first: &[u8], rest: &[u8]) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(first).await.unwrap();
        let detection = tokio::spawn(async move { speaks_h2(&server).await.unwrap() });
        if rest.is_empty() {
            client.shutdown().await.unwrap();
        } else {
            client.write_all(rest).await.unwrap();
        }
        let h2 = detection.await.unwrap();
        drop(client);
        h2
    }

    #[test]
    fn a_stalled_partial_preface_is_looked_at_a_few_times_a_second_at_most() {
        let mut wait = PARTIAL_PREFACE_RETRY;
        let mut looks = 0;
        let mut waited = Duration::ZERO;
        while waited < Duration::from_secs(10) {
            waited += wait;
            wait = next_preface_wait(wait);
            looks += 1;
        }
        assert_eq!(wait, PARTIAL_PREFACE_RETRY_MAX);
        // 10 s of a stalled client (the default header read timeout).
        assert!(looks < 110, "{looks} looks in 10 s");
    }

    #[tokio::test]
    async fn the_h2_preface_is_detected_without_consuming_it() {
        assert!(detect_h2(H2_PREFACE, b"").await);
        // Split across writes: detection waits for the rest.
        assert!(detect_h2(&H2_PREFACE[..8], &H2_PREFACE[8..]).await);
        assert!(!detect_h2(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"").await);
        // Shares the preface's first letter, then differs.
        assert!(!detect_h2(b"POST / HTTP/1.1\r\n", b"").await);
        // The end of the stream before any byte: HTTP/1 (hyper then closes it).
        assert!(!detect_h2(b"", b"").await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, H2_PREFACE)
            .await
            .unwrap();
        assert!(speaks_h2(&server).await.unwrap());
        let mut buf = [0u8; 24];
        assert_eq!(
            server.peek(&mut buf).await.unwrap(),
            24,
            "the preface stays in the socket"
        );
    }
}
