//! The resilience stack on real HTTP traffic through the in-process proxy,
//! against upstreams that fail on a fixed script: the request deadline over
//! all attempts, a retried POST's replayed body, and the no-policy default.
//! The retry budget, per-try timeouts and idempotency (issue 3's scenarios
//! 2, 4, 5) are tested on the real binary in `tests/tests/e2e`.

use std::time::{Duration, Instant};

use crate::support::upstream::{Behaviour, scripted};
use crate::support::{full, h1, header, start_proxy};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;

async fn send(
    client: &mut hyper::client::conn::http1::SendRequest<levee_proxy::body::BoxBody>,
    method: Method,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut req = Request::builder()
        .method(method)
        .uri("/")
        .header("host", "svc:8080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(full("payload")).expect("request");
    let r = client.send_request(req).await.expect("response");
    let status = r.status();
    let upstream = header(&r, "x-upstream");
    let body = r.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        upstream,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn the_request_timeout_bounds_all_attempts() {
    let a = scripted(Behaviour {
        delay: Duration::from_secs(5),
        ..Behaviour::default()
    })
    .await;
    let b = scripted(Behaviour {
        delay: Duration::from_secs(5),
        ..Behaviour::default()
    })
    .await;
    let outbound = "    timeouts: {request: 600ms, perTry: 250ms}\n    retry: {maxRetries: 5, on: [timeout], backoff: {base: 1ms, max: 5ms}}\n";
    let proxy = start_proxy(
        &crate::support::service("svc", Some(outbound), &[a.addr, b.addr]),
        &[],
    )
    .await;
    let mut client = h1(proxy.addrs.outbound).await;
    let start = Instant::now();
    let req = Request::get("/")
        .header("host", "svc:8080")
        .body(full(""))
        .expect("request");
    let r = client.send_request(req).await.expect("response");
    let elapsed = start.elapsed();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(header(&r, "x-levee-error"), "timeout");
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_millis(900),
        "{elapsed:?}"
    );
    assert!(a.hits() + b.hits() <= 3, "no attempt after the deadline");
    proxy.stop().await.expect("stop");
}

/// A POST with an idempotency key is retried with its body replayed. (That a
/// POST without a key is not retried is e2e scenario 5.)
#[tokio::test]
async fn a_post_with_an_idempotency_key_is_retried_with_its_body() {
    let outbound = "    retry: {maxRetries: 2, on: [\"503\"], backoff: {base: 1ms, max: 5ms}}\n";
    let with = scripted(Behaviour {
        fail_first: 1,
        ..Behaviour::default()
    })
    .await;
    let proxy = start_proxy(
        &crate::support::service("svc", Some(outbound), &[with.addr]),
        &[],
    )
    .await;
    let mut client = h1(proxy.addrs.outbound).await;
    let (status, _, body) =
        send(&mut client, Method::POST, &[("idempotency-key", "order-1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "payload");
    assert_eq!(with.hits(), 2);
    proxy.stop().await.expect("stop");
}

#[tokio::test]
async fn without_a_policy_only_connect_failures_are_retried() {
    // A port with nothing listening: connects are refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let live = scripted(Behaviour {
        fail_first: 1,
        ..Behaviour::default()
    })
    .await;
    let proxy = start_proxy(
        &crate::support::endpoints("svc", 8080, &[dead, live.addr]),
        &[],
    )
    .await;
    let mut client = h1(proxy.addrs.outbound).await;
    let (status, _, _) = send(&mut client, Method::GET, &[]).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a 503 is not retried by default"
    );
    for _ in 0..20 {
        let (status, from, _) = send(&mut client, Method::POST, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(from, live.addr.to_string());
    }
    proxy.stop().await.expect("stop");
}
