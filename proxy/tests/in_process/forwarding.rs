//! The proxy forwarding real traffic in-process: HTTP/1.1 (origin- and
//! absolute-form), HTTP/2, trailers, streaming both ways, upgrades, CONNECT,
//! and the proxy-made errors of DESIGN.md §2.

use std::net::SocketAddr;

use crate::support::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use levee_proxy::body::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_to(upstream: SocketAddr) -> Proxy {
    start_proxy(&endpoints("echo", 8080, &[upstream]), &[]).await
}

#[tokio::test]
async fn http1_by_host_header_strips_hop_by_hop_and_keeps_host() {
    let upstream = upstream::echo().await;
    let proxy = proxy_to(upstream).await;
    let mut client = h1(proxy.addrs.outbound).await;
    for i in 0..3 {
        // Several requests on one downstream connection (keep-alive, pooled upstream).
        let req = Request::post("/hello?x=1")
            .header("host", "echo:8080")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic eA==")
            .header("x-end-to-end", "kept")
            .body(full("ping"))
            .expect("request");
        let r = client.send_request(req).await.expect("response");
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
        assert_eq!(header(&r, "x-seen-host"), "echo:8080");
        assert_eq!(header(&r, "x-seen-uri"), "/hello?x=1");
        assert_eq!(header(&r, "x-seen-version"), "HTTP/1.1");
        let seen = header(&r, "x-seen-headers");
        assert!(seen.contains("x-end-to-end"), "{seen}");
        for hop in ["x-hop", "keep-alive", "proxy-authorization", "connection"] {
            assert!(!seen.split(',').any(|h| h == hop), "{hop} leaked: {seen}");
        }
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, "ping");
    }
    let metrics = admin_get(proxy.addrs.admin, "/metrics").await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("levee_requests_total{")
                && l.contains("service=\"echo.test:8080\"")
                && l.contains("code=\"200\"")
        })
        .unwrap_or_else(|| panic!("no requests_total line in:\n{metrics}"));
    assert!(
        line.contains("direction=\"outbound\"") && line.contains("route=\"default\""),
        "{line}"
    );
    assert!(line.ends_with(" 3"), "{line}");
    proxy.stop().await.expect("clean stop");
}

#[tokio::test]
async fn absolute_form_authority_wins_over_host() {
    let upstream = upstream::echo().await;
    let proxy = proxy_to(upstream).await;
    let response = raw(
        proxy.addrs.outbound,
        b"GET http://echo:8080/abs?q=2 HTTP/1.1\r\nHost: elsewhere:1\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("x-seen-host: echo:8080\r\n"),
        "{response}"
    );
    assert!(response.contains("x-seen-uri: /abs?q=2\r\n"), "{response}");
}

#[tokio::test]
async fn http2_prior_knowledge_keeps_authority_and_trailers() {
    let upstream = upstream::echo().await;
    let proxy = proxy_to(upstream).await;
    let mut client = h2(proxy.addrs.outbound).await;
    let req = Request::post("http://echo:8080/trailers")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full("grpc-frame"))
        .expect("request");
    let r = client.send_request(req).await.expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(header(&r, "x-seen-version"), "HTTP/2.0");
    assert_eq!(header(&r, "x-seen-host"), "echo:8080");
    let collected = r.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-trailer"], "yes");
    assert_eq!(collected.to_bytes(), "grpc-frame");
    let metrics = admin_get(proxy.addrs.admin, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("levee_requests_total{")
                && l.contains("code=\"0\"")
                && l.contains("outcome=\"success\"")),
        "grpc-status from trailers recorded:\n{metrics}"
    );
}

#[tokio::test]
async fn http2_streams_both_ways_without_buffering() {
    let upstream = upstream::echo().await;
    let proxy = proxy_to(upstream).await;
    let mut client = h2(proxy.addrs.outbound).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    let req = Request::post("http://echo:8080/stream")
        .body(body)
        .expect("request");
    let r = client
        .send_request(req)
        .await
        .expect("response head before the request ends");
    let mut body = r.into_body();
    for chunk in ["one", "two", "three"] {
        tx.send(Ok(Frame::data(Bytes::from(chunk))))
            .await
            .expect("send chunk");
        // The echo of each chunk arrives while the request is still open.
        let frame = tokio::time::timeout(DEADLINE, body.frame())
            .await
            .expect("echo in time");
        let data = frame
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        assert_eq!(data, chunk);
    }
    drop(tx);
    // Ending the request ends the echo, with nothing left over.
    let rest = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .expect("end in time");
    let rest = rest.map_err(|e| e.to_string()).expect("clean end");
    assert!(rest.to_bytes().is_empty());
}

fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn http1_upgrade_is_tunnelled() {
    let upstream = upstream::echo().await;
    let proxy = proxy_to(upstream).await;
    let mut stream = TcpStream::connect(proxy.addrs.outbound)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /upgrade HTTP/1.1\r\nHost: echo:8080\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let head = read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    stream
        .write_all(b"hello through the tunnel")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
        .await
        .expect("echo")
        .expect("read");
    assert_eq!(&buf[..n], b"hello through the tunnel");
}

#[tokio::test]
async fn connect_is_tunnelled_to_the_endpoint() {
    let upstream = upstream::echo().await;
    let proxy = proxy_to(upstream).await;
    let mut stream = TcpStream::connect(proxy.addrs.outbound)
        .await
        .expect("connect");
    stream
        .write_all(b"CONNECT echo:8080 HTTP/1.1\r\nHost: echo:8080\r\n\r\n")
        .await
        .expect("write");
    let head = read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Now speak HTTP/1.1 to the upstream directly through the tunnel.
    stream
        .write_all(b"GET /tunnelled HTTP/1.1\r\nHost: inner\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let inner = read_until(&mut stream, "").await;
    assert!(inner.starts_with("HTTP/1.1 200"), "{inner}");
    assert!(inner.contains("x-seen-host: inner"), "{inner}");
}

#[tokio::test]
async fn inbound_forwards_to_the_app_port() {
    let upstream = upstream::echo().await;
    let port = upstream.port().to_string();
    let proxy = start_proxy("", &["--app-port", &port, "--service", "echo"]).await;
    let mut client = h1(proxy.addrs.inbound).await;
    let req = Request::get("/in")
        .header("host", "echo.test:8080")
        .body(full(""))
        .expect("request");
    let r = client.send_request(req).await.expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-seen-host"), "echo.test:8080");
    let metrics = admin_get(proxy.addrs.admin, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("levee_requests_total{")
                && l.contains("direction=\"inbound\"")
                && l.contains("service=\"echo\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn proxy_made_errors_in_http_and_grpc_form() {
    // A port that refuses connections.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    };
    let policy = yaml::documents(&[
        endpoints("dead", 80, &[closed]),
        endpoints("empty", 80, &[]),
    ]);
    let proxy = start_proxy(&policy, &[]).await;

    let mut client = h1(proxy.addrs.outbound).await;
    let req = Request::get("/")
        .header("host", "dead")
        .body(full(""))
        .expect("request");
    let r = client.send_request(req).await.expect("response");
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header(&r, "x-levee-error"), "upstream-connect");
    let json: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.expect("body").to_bytes())
            .expect("json");
    assert_eq!(json["service"], "dead.test:80");

    let req = Request::get("/")
        .header("host", "empty")
        .body(full(""))
        .expect("request");
    let r = client.send_request(req).await.expect("response");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "x-levee-error"), "no-endpoints");

    let mut grpc = h2(proxy.addrs.outbound).await;
    let req = Request::post("http://dead:80/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .body(full(""))
        .expect("request");
    let r = grpc.send_request(req).await.expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "grpc-status"), "14");
    assert_eq!(header(&r, "x-levee-error"), "upstream-connect");

    let bad = raw(proxy.addrs.outbound, b"GET / HTTP/1.0\r\n\r\n", "").await;
    assert!(
        bad.starts_with("HTTP/1.0 400") || bad.starts_with("HTTP/1.1 400"),
        "{bad}"
    );
    assert!(bad.contains("x-levee-error: bad-request"), "{bad}");
}

#[tokio::test]
async fn upstream_reset_is_a_502() {
    // Accepts, reads the request, then closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        }
    });
    let proxy = proxy_to(addr).await;
    let mut client = h1(proxy.addrs.outbound).await;
    let req = Request::builder()
        .method(Method::GET)
        .uri("/")
        .header("host", "echo:8080")
        .body(full(""))
        .expect("request");
    let r = client.send_request(req).await.expect("response");
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header(&r, "x-levee-error"), "upstream-reset");
}
