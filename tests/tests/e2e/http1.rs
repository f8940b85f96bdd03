//! HTTP/1.1 through the proxy: outbound by `Host` to static endpoints,
//! inbound to `--app-port`, keep-alive and upstream connection reuse, with a
//! hyper client and with `curl`.

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Http1Conn, Proxy, curl, full, get_http1, yaml},
};

async fn proxy_for(up: &FlakyUpstream) -> Proxy {
    Proxy::builder().fronting(up.addr()).start().await
}

#[tokio::test]
async fn outbound_routes_by_host_to_static_endpoints() {
    let up = FlakyUpstream::start("web-1").await.unwrap();
    let proxy = proxy_for(&up).await;
    for host in [
        "web:80",
        "web.default:80",
        "web.default.svc.cluster.local:80",
    ] {
        let r = get_http1(proxy.outbound(), host, "/").await.unwrap();
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
        assert_eq!(r.header("x-flaky-instance"), "web-1", "Host {host}");
        assert_eq!(r.text(), "flaky web-1\n");
    }
    assert_eq!(up.requests(), 3);
}

#[tokio::test]
async fn keep_alive_requests_reuse_one_upstream_connection() {
    let up = FlakyUpstream::start("web-1").await.unwrap();
    let proxy = proxy_for(&up).await;
    let mut conn = Http1Conn::connect(proxy.outbound()).await.unwrap();
    for i in 0..5 {
        let req = Request::post("/echo")
            .header("host", "web:80")
            .body(full(format!("body {i}")))
            .unwrap();
        let r = conn.send(req).await.unwrap();
        assert_eq!(r.status, 200);
        let echo = r.json().unwrap();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["body"], format!("body {i}"));
    }
    assert_eq!(up.requests(), 5);
    assert_eq!(
        up.stats().connections,
        1,
        "the proxy pools upstream connections"
    );
}

#[tokio::test]
async fn inbound_forwards_to_the_app_port() {
    let app = FlakyUpstream::start("app").await.unwrap();
    let proxy = proxy_for(&app).await;
    let r = get_http1(proxy.inbound(), "test-svc.default:4143", "/echo?x=1")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-flaky-instance"), "app");
    let echo = r.json().unwrap();
    assert_eq!(echo["uri"], "/echo?x=1");
    assert_eq!(
        echo["authority"], "test-svc.default:4143",
        "Host is preserved inbound"
    );
}

#[tokio::test]
async fn curl_http1_outbound_and_inbound() {
    let up = FlakyUpstream::start("web-1").await.unwrap();
    let proxy = proxy_for(&up).await;
    let url = format!("http://{}/echo", proxy.outbound());
    let out = curl(&["-H", "Host: web:80", "-d", "payload", &url])
        .await
        .unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.http_version, "1.1");
    assert_eq!(out.header("x-flaky-instance"), Some("web-1"));
    let echo: serde_json::Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["authority"], "web:80");

    let out = curl(&[&format!("http://{}/", proxy.inbound())])
        .await
        .unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.body, "flaky web-1\n");
}

#[tokio::test]
async fn services_missing_from_the_file_resolve_by_ip_literal_and_dns() {
    let up = FlakyUpstream::start("dns-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("other", 80, &[]))
        .start()
        .await;
    let port = up.addr().port();
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let r = get_http1(proxy.outbound(), &host, "/echo").await.unwrap();
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
        assert_eq!(r.header("x-flaky-instance"), "dns-1");
        assert_eq!(
            r.json().unwrap()["authority"],
            host.as_str(),
            "Host is preserved"
        );
    }
}

#[tokio::test]
async fn large_bodies_pass_both_ways() {
    let up = FlakyUpstream::start("big-1").await.unwrap();
    let proxy = proxy_for(&up).await;
    let upload = vec![b'u'; 1024 * 1024];
    let req = Request::post("/")
        .header("host", "web:80")
        .header("x-flaky-body-bytes", "2097152")
        .body(full(upload))
        .unwrap();
    let r = levee_tests::harness::send_http1(proxy.outbound(), req)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-flaky-received-bytes"),
        "1048576",
        "the whole upload arrived"
    );
    assert_eq!(r.body.len(), 2 * 1024 * 1024, "the whole download arrived");
    assert!(r.body.iter().all(|b| *b == b'x'));
}

#[tokio::test]
async fn response_bodies_stream_without_buffering() {
    use http_body_util::BodyExt;
    let up = FlakyUpstream::start("slow-1").await.unwrap();
    let proxy = proxy_for(&up).await;
    let req = Request::get("/")
        .header("host", "web:80")
        .header("x-flaky-body-bytes", "500")
        .header("x-flaky-slow-body", "5x300ms")
        .body(levee_tests::harness::empty())
        .unwrap();
    let start = std::time::Instant::now();
    let mut conn = Http1Conn::connect(proxy.outbound()).await.unwrap();
    let mut body = conn.send_raw(req).await.unwrap().into_body();
    let first = body.frame().await.expect("a first frame").unwrap();
    let first_at = start.elapsed();
    let mut total = first.data_ref().map_or(0, |d| d.len());
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    let done_at = start.elapsed();
    assert_eq!(total, 500);
    assert!(
        done_at >= std::time::Duration::from_millis(1200),
        "{done_at:?}"
    );
    assert!(
        first_at + std::time::Duration::from_millis(900) <= done_at,
        "the first chunk arrived at {first_at:?}, the last at {done_at:?}: the proxy buffered"
    );
}
