//! The proxy as `HTTP_PROXY`: absolute-form request targets (`curl -x`, and
//! hyper sending `GET http://web:80/...`) are routed by their authority and
//! forwarded in origin-form.

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, curl, empty, send_http1, yaml},
};

#[tokio::test]
async fn curl_with_the_proxy_as_http_proxy() {
    let up = FlakyUpstream::start("web-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 8080, &[up.addr()]))
        .start()
        .await;
    let proxy_url = format!("http://{}", proxy.outbound());
    let out = curl(&["-x", &proxy_url, "http://web:8080/echo?q=1"])
        .await
        .unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.header("x-flaky-instance"), Some("web-1"));
    let echo: serde_json::Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(echo["uri"], "/echo?q=1", "forwarded in origin-form");
    // A non-default port, so curl's Host keeps it.
    assert_eq!(echo["authority"], "web:8080");
    assert!(echo["headers"].get("proxy-connection").is_none(), "{echo}");
}

#[tokio::test]
async fn absolute_form_from_hyper() {
    let up = FlakyUpstream::start("web-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .start()
        .await;
    let req = Request::get("http://web.default:80/echo")
        .header("host", "web.default:80")
        .body(empty())
        .unwrap();
    let r = send_http1(proxy.outbound(), req).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-flaky-instance"), "web-1");
    assert_eq!(r.json().unwrap()["uri"], "/echo");
}
