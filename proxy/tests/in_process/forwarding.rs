//! The proxy forwarding real traffic in-process: an absolute-form request
//! target (a conflicting `Host` is refused: e2e `ambiguous_authority`), HTTP/2 trailers (and the `grpc-status` metric
//! read from them), HTTP/2 streaming both ways, and CONNECT. Hop-by-hop
//! headers, keep-alive, inbound, upgrades and the proxy-made errors are
//! tested on the real binary in `tests/tests/e2e` (`headers`, `http1`,
//! `upgrade`, `errors`).

use std::net::SocketAddr;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use levee_proxy::body::BoxError;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn proxy_to(upstream: SocketAddr) -> Proxy {
    start_proxy(&endpoints("echo", 8080, &[upstream]), &[]).await
}

#[tokio::test]
async fn absolute_form_target_is_routed_and_sent_in_origin_form() {
    let upstream = upstream::echo().await;
    let proxy = proxy_to(upstream).await;
    let response = raw(
        proxy.addrs.outbound,
        b"GET http://echo:8080/abs?q=2 HTTP/1.1\r\nHost: echo:8080\r\nConnection: close\r\n\r\n",
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
