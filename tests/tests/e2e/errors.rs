//! Errors the proxy makes itself (DESIGN.md §2): no endpoints → 503, a dead
//! upstream → 502 `upstream-connect` at once, a reset → 502
//! `upstream-reset`; and for gRPC callers the trailers-only form (HTTP 200,
//! `grpc-status`); a request without a `Host` → 400 `bad-request`. Never a
//! hang, never a bare reset.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{
        Http2Conn, HttpResponse, Proxy, empty, full, get_http1, grpc_channel, send_http1, yaml,
    },
    pb::{EchoRequest, flaky_client::FlakyClient},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;

/// A loopback address nothing listens on: bound, then closed.
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn setup(up: &FlakyUpstream) -> Proxy {
    let dead = dead_addr().await;
    Proxy::builder()
        .policy(yaml::documents(&[
            yaml::endpoints("web", 80, &[up.addr()]),
            yaml::endpoints("empty", 80, &[]),
            yaml::endpoints("dead", 80, &[dead]),
        ]))
        .start()
        .await
}

fn assert_json_error(r: &HttpResponse, status: u16, error: &str, service: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.header("x-levee-error"), error, "{r:?}");
    assert!(
        r.header("content-type").starts_with("application/json"),
        "{r:?}"
    );
    let body = r.json().unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["service"], service, "{body}");
    assert!(body["detail"].is_string(), "{body}");
}

#[tokio::test]
async fn no_endpoints_is_503_json() {
    let up = FlakyUpstream::start("e-1").await.unwrap();
    let proxy = setup(&up).await;
    let r = get_http1(proxy.outbound(), "empty:80", "/").await.unwrap();
    assert_json_error(&r, 503, "no-endpoints", "empty.default:80");
}

#[tokio::test]
async fn dead_upstream_is_502_upstream_connect_quickly() {
    let up = FlakyUpstream::start("e-1").await.unwrap();
    let proxy = setup(&up).await;
    let start = Instant::now();
    let r = get_http1(proxy.outbound(), "dead:80", "/").await.unwrap();
    assert_json_error(&r, 502, "upstream-connect", "dead.default:80");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    // The proxy still serves other services.
    assert_eq!(
        get_http1(proxy.outbound(), "web:80", "/")
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn upstream_reset_is_502_upstream_reset() {
    let up = FlakyUpstream::start("e-1").await.unwrap();
    let proxy = setup(&up).await;
    let req = Request::post("/")
        .header("host", "web:80")
        .header("x-flaky-reset", "true")
        .body(full("x"))
        .unwrap();
    let r = send_http1(proxy.outbound(), req).await.unwrap();
    assert_json_error(&r, 502, "upstream-reset", "web.default:80");
    assert!(up.stats().resets >= 1);
}

async fn raw_grpc(proxy: &Proxy, authority: &str) -> HttpResponse {
    let req = Request::post(format!("http://{authority}/levee.testing.v1.Flaky/Echo"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    Http2Conn::connect(proxy.outbound())
        .await
        .unwrap()
        .send(req)
        .await
        .unwrap()
}

#[tokio::test]
async fn grpc_callers_get_trailers_only_unavailable() {
    let up = FlakyUpstream::start("e-1").await.unwrap();
    let proxy = setup(&up).await;
    for (authority, error) in [
        ("empty:80", "no-endpoints"),
        ("dead:80", "upstream-connect"),
    ] {
        let r = raw_grpc(&proxy, authority).await;
        assert_eq!(r.status, 200, "{authority}: {r:?}");
        assert_eq!(
            r.header("grpc-status"),
            "14",
            "{authority}: status in the headers: {r:?}"
        );
        assert_eq!(r.header("x-levee-error"), error, "{authority}: {r:?}");
        assert!(
            r.header("content-type").starts_with("application/grpc"),
            "{r:?}"
        );
        assert!(r.body.is_empty(), "trailers-only has no body: {r:?}");
        assert!(
            r.trailers.is_none(),
            "trailers-only has no trailer frame: {r:?}"
        );

        let channel = grpc_channel(proxy.outbound(), authority).await.unwrap();
        let status = FlakyClient::new(channel)
            .echo(EchoRequest {
                message: "x".into(),
            })
            .await
            .expect_err("UNAVAILABLE");
        assert_eq!(status.code(), Code::Unavailable, "{authority}: {status:?}");
        assert!(
            !status.message().is_empty(),
            "grpc-message explains: {status:?}"
        );
    }
}

#[tokio::test]
async fn a_request_without_a_host_is_400_bad_request() {
    let up = FlakyUpstream::start("e-5").await.unwrap();
    let proxy = setup(&up).await;
    let mut tcp = TcpStream::connect(proxy.outbound()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("an answer and a close, not a hang")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.0 400") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    assert!(text.contains("x-levee-error: bad-request"), "{text}");
    assert_eq!(up.requests(), 0, "nothing was forwarded");
}
