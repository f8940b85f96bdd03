//! Header handling (RFC 9110 §7.6.1): hop-by-hop headers are not forwarded
//! in either direction, end-to-end headers and `Host` are, and trailers
//! survive both ways.

use http::{HeaderMap, Request};
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Http1Conn, Http2Conn, Proxy, empty, send_http1, with_trailers, yaml},
};

async fn setup() -> (FlakyUpstream, Proxy) {
    let up = FlakyUpstream::start("h-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .start()
        .await;
    (up, proxy)
}

#[tokio::test]
async fn request_hop_by_hop_headers_are_stripped() {
    let (_up, proxy) = setup().await;
    let req = Request::get("/echo")
        .header("host", "web:80")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("upgrade", "h2c")
        .header("proxy-authorization", "Basic eA==")
        .header("x-end-to-end", "kept")
        .body(empty())
        .unwrap();
    let r = send_http1(proxy.outbound(), req).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json().unwrap();
    let headers = echo["headers"].as_object().unwrap();
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(!headers.contains_key(hop), "{hop} was forwarded: {echo}");
    }
    if let Some(conn) = headers.get("connection") {
        assert!(
            !conn.to_string().contains("x-hop"),
            "Connection options forwarded: {conn}"
        );
    }
    assert_eq!(echo["headers"]["x-end-to-end"][0], "kept");
    assert_eq!(echo["authority"], "web:80", "Host is preserved");
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_stripped() {
    let (_up, proxy) = setup().await;
    let req = Request::get("/echo")
        .header("host", "web:80")
        .header("x-flaky-set-header", "connection: x-resp-hop")
        .header("x-flaky-set-header", "x-resp-hop: dropped")
        .header("x-flaky-set-header", "keep-alive: timeout=5")
        .header("x-flaky-set-header", "x-resp-end: kept")
        .body(empty())
        .unwrap();
    let r = send_http1(proxy.outbound(), req).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.headers.get("x-resp-hop").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("keep-alive").is_none(), "{:?}", r.headers);
    assert_eq!(r.header("x-resp-end"), "kept");
}

#[tokio::test]
async fn http2_trailers_pass_both_ways() {
    let (_up, proxy) = setup().await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-request-trailer", "req-t".parse().unwrap());
    let req = Request::post("http://web:80/echo")
        .header("x-flaky-trailers", "true")
        .header("te", "trailers")
        .body(with_trailers("body", trailers))
        .unwrap();
    let mut conn = Http2Conn::connect(proxy.outbound()).await.unwrap();
    let r = conn.send(req).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json().unwrap();
    assert_eq!(echo["body"], "body");
    assert_eq!(echo["trailers"]["x-request-trailer"][0], "req-t", "{echo}");
    let got = r.trailers.as_ref().expect("response trailers arrive");
    assert_eq!(got.get("x-flaky-trailer").unwrap(), "h-1");
}

#[tokio::test]
async fn http1_chunked_response_trailers_with_te_trailers() {
    let (_up, proxy) = setup().await;
    let req = Request::get("/echo")
        .header("host", "web:80")
        .header("te", "trailers")
        .header("x-flaky-trailers", "true")
        .body(empty())
        .unwrap();
    let mut conn = Http1Conn::connect(proxy.outbound()).await.unwrap();
    let r = conn.send(req).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json().unwrap();
    assert_eq!(
        echo["headers"]["te"][0], "trailers",
        "TE: trailers is forwarded: {echo}"
    );
    let got = r
        .trailers
        .as_ref()
        .expect("response trailers arrive over HTTP/1.1");
    assert_eq!(got.get("x-flaky-trailer").unwrap(), "h-1");
}
