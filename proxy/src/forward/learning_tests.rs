//! The upstream-protocol learning rule against real sockets on 127.0.0.1:
//! what is remembered, what is sent again over HTTP/1.1, and how often.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::body;

fn forwarder() -> Forwarder {
    Forwarder::new(
        PoolSettings::default(),
        TaskTracker::new(),
        CancellationToken::new(),
    )
}

fn h2_request(content_type: &'static str) -> Request<BoxBody> {
    let mut req = Request::get("http://svc.ns:80/x")
        .header("content-type", content_type)
        .body(body::empty())
        .expect("request");
    *req.version_mut() = Version::HTTP_2;
    req
}

/// What a raw server saw: connections that began with the HTTP/2
/// preface, and the others.
#[derive(Default)]
struct Seen {
    prefaces: AtomicUsize,
    others: AtomicUsize,
}

/// Reads a request head (to its blank line, or the connection's end).
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    head
}

/// A raw HTTP/1.1 server, one request per connection: the HTTP/2 preface
/// gets `preface_answer` (nothing: the connection is just closed), any
/// other request 200 `ok` when `serve` (else a close too).
async fn raw_server(preface_answer: &'static [u8], serve: bool) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let head = read_head(&mut stream).await;
            if head.starts_with(b"PRI * HTTP/2.0") {
                counts.prefaces.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(preface_answer).await;
            } else {
                counts.others.fetch_add(1, Ordering::SeqCst);
                if serve {
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = stream.write_all(ok).await;
                }
            }
        }
    });
    (addr, seen)
}

async fn forward(
    forwarder: &Forwarder,
    req: Request<BoxBody>,
    addr: SocketAddr,
) -> Result<Response<BoxBody>, ProxyError> {
    tokio::time::timeout(
        Duration::from_secs(10),
        forwarder.forward(req, addr, "svc.ns:80"),
    )
    .await
    .expect("the forwarder answers within its own bounds")
}

#[tokio::test]
async fn an_http1_answer_to_the_preface_is_remembered_and_the_request_sent_over_http1() {
    let (addr, seen) = raw_server(b"HTTP/1.1 505 HTTP Version Not Supported\r\n\r\n", true).await;
    let forwarder = forwarder();
    for round in 0..3 {
        let response = forward(&forwarder, h2_request("text/plain"), addr)
            .await
            .expect("answered over HTTP/1.1");
        assert_eq!(response.status(), 200, "round {round}");
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), "ok");
    }
    assert!(forwarder.pool.known_http1_only(addr));
    assert_eq!(seen.prefaces.load(Ordering::SeqCst), 1, "learned once");
    assert_eq!(seen.others.load(Ordering::SeqCst), 3);
    // gRPC to a known HTTP/1.x-only endpoint: refused without a connection.
    let err = forward(&forwarder, h2_request("application/grpc"), addr)
        .await
        .expect_err("gRPC needs HTTP/2");
    assert!(err.detail.contains("gRPC needs HTTP/2"), "{err}");
    assert_eq!(seen.prefaces.load(Ordering::SeqCst), 1);
    assert_eq!(seen.others.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_close_on_the_preface_is_remembered_only_once_http1_worked() {
    // Closes on the preface, and on HTTP/1.1 too (an HTTP/2 server
    // shedding load, say): tried once over HTTP/1.1, nothing remembered.
    let (addr, seen) = raw_server(b"", false).await;
    let forwarder = forwarder();
    let err = forward(&forwarder, h2_request("text/plain"), addr)
        .await
        .expect_err("nobody answers");
    assert!(matches!(err.kind, ErrorKind::UpstreamReset(_)), "{err}");
    assert!(!forwarder.pool.known_http1_only(addr));
    assert_eq!(seen.prefaces.load(Ordering::SeqCst), 1);
    assert_eq!(seen.others.load(Ordering::SeqCst), 1, "sent again once");

    // Closes on the preface, answers HTTP/1.1: remembered.
    let (addr, seen) = raw_server(b"", true).await;
    let response = forward(&forwarder, h2_request("text/plain"), addr)
        .await
        .expect("answered over HTTP/1.1");
    assert_eq!(response.status(), 200);
    assert!(forwarder.pool.known_http1_only(addr));
    // gRPC is not sent again over HTTP/1.1 after a close.
    let (addr, seen_grpc) = raw_server(b"", true).await;
    let err = forward(&forwarder, h2_request("application/grpc"), addr)
        .await
        .expect_err("gRPC needs HTTP/2");
    assert!(err.detail.contains("closed on the HTTP/2 preface"), "{err}");
    assert_eq!(seen_grpc.others.load(Ordering::SeqCst), 0);
    assert!(!forwarder.pool.known_http1_only(addr));
    assert_eq!(seen.prefaces.load(Ordering::SeqCst), 1);
}
