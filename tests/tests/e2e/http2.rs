//! HTTP/2 with prior knowledge through the proxy: hyper and
//! `curl --http2-prior-knowledge`, outbound and inbound, multiplexed.

use std::time::Duration;

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Http2Conn, Proxy, curl, empty, get_http2},
};

async fn proxy_for(up: &FlakyUpstream) -> Proxy {
    Proxy::builder().fronting(up.addr()).start().await
}

#[tokio::test]
async fn outbound_and_inbound_with_prior_knowledge() {
    let up = FlakyUpstream::start("web-1").await.unwrap();
    let proxy = proxy_for(&up).await;
    let r = get_http2(proxy.outbound(), "web:80", "/echo")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.header("x-flaky-instance"), "web-1");
    assert_eq!(r.json().unwrap()["authority"], "web:80");

    let r = get_http2(proxy.inbound(), "test-svc:4143", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "flaky web-1\n");
    assert_eq!(up.requests(), 2);
}

#[tokio::test]
async fn concurrent_streams_on_one_connection() {
    let up = FlakyUpstream::start("web-1").await.unwrap();
    let proxy = proxy_for(&up).await;
    let conn = Http2Conn::connect(proxy.outbound()).await.unwrap();
    let calls = (0..8).map(|_| {
        let mut conn = conn.clone();
        async move {
            let req = Request::get("http://web:80/")
                .header("x-flaky-delay", "300ms")
                .body(empty())
                .unwrap();
            conn.send(req).await
        }
    });
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("8 multiplexed requests finish");
    for r in results {
        assert_eq!(r.unwrap().status, 200);
    }
    assert_eq!(up.requests(), 8);
    assert!(
        up.stats().max_in_flight >= 2,
        "streams are forwarded concurrently, not one after another: {:?}",
        up.stats()
    );
}

#[tokio::test]
async fn curl_http2_prior_knowledge() {
    let up = FlakyUpstream::start("web-1").await.unwrap();
    let proxy = proxy_for(&up).await;
    let url = format!("http://{}/echo", proxy.outbound());
    let out = curl(&["--http2-prior-knowledge", "-H", "Host: web:80", &url])
        .await
        .unwrap();
    assert_eq!(
        (out.status, out.http_version.as_str()),
        (200, "2"),
        "{out:?}"
    );
    assert_eq!(out.header("x-flaky-instance"), Some("web-1"));
    let echo: serde_json::Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(echo["authority"], "web:80");
}
