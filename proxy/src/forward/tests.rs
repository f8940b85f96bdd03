//! Each way forwarding fails, against real sockets on 127.0.0.1, yields
//! the typed cause the classifier and the retry conditions read.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::body;
use crate::errors::Retry;

fn forwarder() -> Forwarder {
    Forwarder::new(
        PoolSettings::default(),
        TaskTracker::new(),
        CancellationToken::new(),
    )
}

fn request(version: Version) -> Request<BoxBody> {
    let mut req = Request::get("http://svc.ns:80/x")
        .body(body::empty())
        .expect("request");
    *req.version_mut() = version;
    req
}

async fn forward_err(req: Request<BoxBody>, addr: SocketAddr) -> ProxyError {
    let forwarded = tokio::time::timeout(
        Duration::from_secs(10),
        forwarder().forward(req, addr, "svc.ns:80"),
    )
    .await
    .expect("the forwarder answers within its own bounds");
    match forwarded {
        Ok(response) => panic!("expected an error, got {}", response.status()),
        Err(err) => err,
    }
}

#[tokio::test]
async fn a_refused_connect_is_connect_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener); // nothing listens there any more
    let err = forward_err(request(Version::HTTP_11), addr).await;
    assert_eq!(err.kind, ErrorKind::UpstreamConnect(ConnectCause::Refused));
    assert_eq!(err.kind.retry(), Retry::Safe);
}

/// A target that reaches one of the proxy's own listeners is refused
/// before any connect: nothing listens on the port any more, yet the answer
/// is `loop-detected`, not `connect-refused`. Both ways of forwarding (a
/// request, a `CONNECT` tunnel) and any spelling of the address.
#[tokio::test]
async fn an_own_listener_is_refused_without_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let own = listener.local_addr().expect("addr");
    drop(listener);
    let forwarder = forwarder().with_own_listeners(crate::loops::OwnListeners::new([own]));
    let port = own.port();
    for target in [
        own,
        SocketAddr::from(([0, 0, 0, 0], port)),
        format!("[::ffff:127.0.0.1]:{port}").parse().expect("addr"),
    ] {
        let err = forwarder
            .forward(request(Version::HTTP_11), target, "svc.ns:80")
            .await
            .expect_err("refused");
        assert_eq!(err.kind, ErrorKind::LoopDetected, "{target}: {err}");
        assert_eq!(err.kind.retry(), Retry::Never);
        let connect = Request::connect(format!("127.0.0.1:{port}"))
            .body(crate::body::empty())
            .expect("request");
        let err = forwarder
            .connect(connect, target, "svc.ns:80")
            .await
            .expect_err("refused");
        assert_eq!(err.kind, ErrorKind::LoopDetected, "CONNECT {target}: {err}");
    }
}

/// A listener whose accept queue is full (it never accepts) drops further
/// SYNs, so a connect to it never completes: the pool's connect timeout
/// fires.
#[tokio::test]
async fn a_connect_that_never_completes_is_connect_timeout() {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    let full = loop {
        assert!(fillers.len() < 64, "the accept queue never filled up");
        match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            Err(_) => break true,
        }
    };
    assert!(full);
    let mut req = request(Version::HTTP_11);
    CallContext::of(&mut req).connect_timeout = Some(Duration::from_millis(100));
    let err = forward_err(req, addr).await;
    assert_eq!(err.kind, ErrorKind::UpstreamConnect(ConnectCause::TimedOut));
    drop(listener);
}

/// An HTTP/2 server that answers every stream with RST_STREAM(`reason`).
async fn h2_resetting_server(reason: h2::Reason) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    respond.send_reset(reason);
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_h2_refused_stream_is_refused_stream_and_safe_to_retry() {
    let addr = h2_resetting_server(h2::Reason::REFUSED_STREAM).await;
    let err = forward_err(request(Version::HTTP_2), addr).await;
    assert_eq!(
        err.kind,
        ErrorKind::UpstreamReset(ResetCause::RefusedStream)
    );
    assert_eq!(err.kind.retry(), Retry::Safe);
}

#[tokio::test]
async fn another_h2_reset_carries_its_reason_and_may_have_been_processed() {
    let addr = h2_resetting_server(h2::Reason::INTERNAL_ERROR).await;
    let err = forward_err(request(Version::HTTP_2), addr).await;
    assert_eq!(
        err.kind,
        ErrorKind::UpstreamReset(ResetCause::H2(h2::Reason::INTERNAL_ERROR))
    );
    assert_eq!(err.kind.retry(), Retry::IfIdempotent);
}

/// An HTTP/1 server that reads a request head, then writes `answer` and
/// closes the connection.
async fn h1_server(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = socket.write_all(answer).await;
            let _ = socket.shutdown().await;
        }
    });
    addr
}

#[tokio::test]
async fn an_h1_connection_closed_before_the_response_is_connection_closed() {
    let addr = h1_server(b"").await;
    let err = forward_err(request(Version::HTTP_11), addr).await;
    assert_eq!(err.kind, ErrorKind::UpstreamReset(ResetCause::Closed));
    assert_eq!(err.kind.retry(), Retry::IfIdempotent);
}

#[tokio::test]
async fn a_response_that_is_not_http_is_a_protocol_error() {
    let addr = h1_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let err = forward_err(request(Version::HTTP_11), addr).await;
    assert_eq!(err.kind, ErrorKind::UpstreamReset(ResetCause::Protocol));
}

/// A request body that sends one chunk and then fails, as a caller that
/// goes away mid-upload does.
fn failing_body() -> BoxBody {
    failing_body_with("the caller went away".into())
}

/// A body that fails the way hyper's HTTP/1 decoder fails on a malformed
/// chunked body: with an `io::Error` (`InvalidData`) in the error chain.
fn malformed_chunked_body() -> BoxBody {
    let decode = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "invalid chunk size: overflow",
    );
    failing_body_with(Box::new(decode))
}

fn failing_body_with(error: crate::body::BoxError) -> BoxBody {
    use http_body::Frame;
    let frames: Vec<Result<Frame<bytes::Bytes>, crate::body::BoxError>> = vec![
        Ok(Frame::data(bytes::Bytes::from_static(b"part"))),
        Err(error),
    ];
    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )))
}

/// A server that takes connections and reads them without ever answering.
async fn silent_server(h2: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if h2 {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    let mut held = Vec::new();
                    while let Some(Ok(stream)) = conn.accept().await {
                        held.push(stream);
                    }
                } else {
                    let mut buf = [0u8; 1024];
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_failing_request_body_is_the_downstreams_not_the_upstreams() {
    let cases = [
        (Version::HTTP_11, false, failing_body as fn() -> BoxBody),
        (Version::HTTP_2, true, failing_body),
        // An io::Error in the chain is still the downstream's, not a closed
        // upstream connection (which breakers would count and retries repeat).
        (Version::HTTP_11, false, malformed_chunked_body),
        (Version::HTTP_2, true, malformed_chunked_body),
    ];
    for (version, h2, body) in cases {
        let addr = silent_server(h2).await;
        let mut req = Request::post("http://svc.ns:80/upload")
            .body(body())
            .expect("request");
        *req.version_mut() = version;
        let err = forward_err(req, addr).await;
        assert_eq!(
            err.kind,
            ErrorKind::UpstreamReset(ResetCause::RequestBody),
            "{version:?}: {err}"
        );
        assert_eq!(err.kind.origin(), crate::errors::Origin::Downstream);
        assert_eq!(err.kind.retry(), Retry::Never);
    }
}

#[test]
fn an_http2_request_is_translated_for_an_http1_upstream() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
    let mut req = Request::post("http://payments:8080/pay?x=1")
        .header("te", "trailers")
        .header("content-type", "application/json")
        .body(body::empty())
        .expect("request");
    *req.version_mut() = Version::HTTP_2;
    to_http1(&mut req, addr, "svc.ns:80").expect("translated");
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.uri(), "/pay?x=1");
    assert_eq!(req.headers()["host"], "payments:8080");
    assert_eq!(req.headers()["te"], "trailers");
    assert_eq!(req.headers()["connection"], "te");

    let mut grpc = Request::post("http://payments:8080/pkg.Svc/Call")
        .header("content-type", "application/grpc+proto")
        .body(body::empty())
        .expect("request");
    *grpc.version_mut() = Version::HTTP_2;
    let err = to_http1(&mut grpc, addr, "svc.ns:80").expect_err("gRPC stays HTTP/2");
    assert_eq!(
        err.kind,
        ErrorKind::UpstreamConnect(ConnectCause::Handshake)
    );
    assert!(err.detail.contains("gRPC needs HTTP/2"), "{}", err.detail);
    assert_eq!(grpc.version(), Version::HTTP_2, "left as it was");
}
