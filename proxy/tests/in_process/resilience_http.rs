//! The resilience stack on real HTTP traffic through the in-process proxy:
//! retries within the budget, per-try timeouts landing elsewhere, the
//! request deadline, idempotency, and the no-policy default.

use std::time::{Duration, Instant};

use crate::support::upstream::{Behaviour, scripted};
use crate::support::{admin_get, full, h1, header, start_proxy};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use levee_tests::harness::Metrics;

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
async fn random_503s_are_retried_to_at_least_99_percent_success_within_the_budget() {
    let upstream = scripted(Behaviour {
        fail_percent: 20,
        ..Behaviour::default()
    })
    .await;
    let outbound = "    retry:\n      maxRetries: 2\n      on: [gateway-error]\n      backoff: {base: 1ms, max: 5ms}\n      budget: {percent: 20, minPerSecond: 10, window: 10s}\n";
    let proxy = start_proxy(
        &crate::support::service("svc", Some(outbound), &[upstream.addr]),
        &[],
    )
    .await;
    let mut client = h1(proxy.addrs.outbound).await;
    let total = 1000;
    let mut ok = 0;
    for _ in 0..total {
        let (status, _, body) = send(&mut client, Method::GET, &[]).await;
        if status == StatusCode::OK {
            assert_eq!(
                body, "payload",
                "the body reached the upstream on the retry too"
            );
            ok += 1;
        }
    }
    let metrics =
        Metrics::parse(&admin_get(proxy.addrs.admin, "/metrics").await).expect("metrics parse");
    let svc = [("service", "svc.test:8080")];
    let retries = metrics.value("levee_retries_total", &svc);
    let exhausted = metrics.value("levee_retry_budget_exhausted_total", &svc);
    let success = ok as f64 / total as f64;
    let amplification = upstream.hits() as f64 / total as f64;
    eprintln!(
        "success {success:.4}, retries {retries}, amplification {amplification:.3}, budget exhausted {exhausted}"
    );
    assert!(success >= 0.99, "success rate {success}");
    assert!(retries > 0.0);
    // The budget: 20% of the requests plus 10/s over the 10 s window.
    assert!(retries <= 0.2 * total as f64 + 100.0, "{retries} retries");
    assert_eq!(upstream.hits() as f64, total as f64 + retries);
    proxy.stop().await.expect("stop");
}

#[tokio::test]
async fn a_slow_endpoint_hits_the_per_try_timeout_and_the_retry_lands_elsewhere() {
    let slow = scripted(Behaviour {
        delay: Duration::from_secs(5),
        ..Behaviour::default()
    })
    .await;
    let fast = scripted(Behaviour::default()).await;
    let outbound = "    timeouts: {request: 1s, perTry: 200ms}\n    retry: {maxRetries: 2, on: [timeout], backoff: {base: 1ms, max: 5ms}}\n";
    let proxy = start_proxy(
        &crate::support::service("svc", Some(outbound), &[slow.addr, fast.addr]),
        &[],
    )
    .await;
    let mut client = h1(proxy.addrs.outbound).await;
    let mut sent = 0;
    while slow.hits() == 0 && sent < 40 {
        let start = Instant::now();
        let (status, from, _) = send(&mut client, Method::GET, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(from, fast.addr.to_string(), "answered by the fast endpoint");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        sent += 1;
    }
    assert!(
        slow.hits() > 0,
        "the balancer never tried the slow endpoint"
    );
    let text = admin_get(proxy.addrs.admin, "/metrics").await;
    let per_try = Metrics::parse(&text).expect("metrics parse").value(
        "levee_timeouts_total",
        &[
            ("service", "svc.test:8080"),
            ("route", "default"),
            ("kind", "per-try"),
        ],
    );
    assert!(per_try >= 1.0, "{text}");
    proxy.stop().await.expect("stop");
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

#[tokio::test]
async fn post_is_retried_only_with_an_idempotency_key() {
    let outbound = "    retry: {maxRetries: 2, on: [\"503\"], backoff: {base: 1ms, max: 5ms}}\n";
    let without = scripted(Behaviour {
        fail_first: 1,
        ..Behaviour::default()
    })
    .await;
    let proxy = start_proxy(
        &crate::support::service("svc", Some(outbound), &[without.addr]),
        &[],
    )
    .await;
    let mut client = h1(proxy.addrs.outbound).await;
    let (status, _, _) = send(&mut client, Method::POST, &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(without.hits(), 1);
    proxy.stop().await.expect("stop");

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

#[tokio::test]
async fn without_retries_the_same_upstream_fails_a_fifth_of_the_calls() {
    // The control for the test above: same upstream and request sequence.
    let upstream = scripted(Behaviour {
        fail_percent: 20,
        ..Behaviour::default()
    })
    .await;
    let proxy = start_proxy(
        &crate::support::endpoints("svc", 8080, &[upstream.addr]),
        &[],
    )
    .await;
    let mut client = h1(proxy.addrs.outbound).await;
    let total = 1000;
    let mut ok = 0;
    for _ in 0..total {
        if send(&mut client, Method::GET, &[]).await.0 == StatusCode::OK {
            ok += 1;
        }
    }
    let success = ok as f64 / total as f64;
    eprintln!(
        "without policy: success {success:.4}, amplification {:.3}",
        upstream.hits() as f64 / total as f64
    );
    assert!((0.75..0.85).contains(&success), "{success}");
    assert_eq!(upstream.hits(), total, "no retries without a policy");
    proxy.stop().await.expect("stop");
}
