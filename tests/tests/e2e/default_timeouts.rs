//! The proxy's own timeouts for calls no policy bounds
//! (`--default-request-timeout`, `--default-stream-idle-timeout`): a
//! service without a policy, or a policy without `timeouts.request`, still
//! gets a 504 when no response head comes, and a stalled body is ended;
//! a policy's own `timeouts.request` (even `0s`, off) wins.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{HttpResponse, Proxy, empty, send_http1, yaml},
};

async fn get(
    addr: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let mut req = Request::get("/").header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send_http1(addr, req.body(empty()).unwrap())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn without_a_policy_a_missing_response_head_gets_504_after_the_default() {
    let up = FlakyUpstream::start("slow-head").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .app_port(up.addr().port())
        .arg("--default-request-timeout")
        .arg("400ms")
        .start()
        .await;
    for (addr, host) in [
        (proxy.outbound(), "web:80"),
        (proxy.inbound(), "test-svc:4143"),
    ] {
        let start = Instant::now();
        let r = get(addr, host, &[("x-flaky-delay", "5s")]).await.unwrap();
        let elapsed = start.elapsed();
        assert_eq!(r.status, 504, "{addr}: {r:?}");
        assert_eq!(r.header("x-levee-error"), "timeout", "{addr}");
        assert!(elapsed >= Duration::from_millis(350), "{addr}: {elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{addr}: {elapsed:?}");
        // A prompt answer is untouched.
        assert_eq!(get(addr, host, &[]).await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn a_policy_timeout_wins_over_the_default_and_a_policy_without_one_gets_it() {
    let up = FlakyUpstream::start("policy-head").await.unwrap();
    let policy = yaml::documents(&[
        yaml::endpoints("off", 80, &[up.addr()]),
        yaml::policy("off", 80, "  outbound:\n    timeouts: {request: 0s}\n"),
        yaml::endpoints("unset", 80, &[up.addr()]),
        yaml::policy("unset", 80, "  outbound:\n    retry: {maxRetries: 0}\n"),
    ]);
    let proxy = Proxy::builder()
        .policy(policy)
        .arg("--default-request-timeout")
        .arg("300ms")
        .start()
        .await;
    let r = get(proxy.outbound(), "off:80", &[("x-flaky-delay", "900ms")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "timeouts.request 0s is off: {r:?}");
    let r = get(proxy.outbound(), "unset:80", &[("x-flaky-delay", "5s")])
        .await
        .unwrap();
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.header("x-levee-error"), "timeout");
}

#[tokio::test]
async fn without_a_policy_a_stalled_response_body_is_ended_after_the_default() {
    let up = FlakyUpstream::start("slow-body").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .app_port(up.addr().port())
        .arg("--default-stream-idle-timeout")
        .arg("400ms")
        .start()
        .await;
    // Two chunks 3 s apart: the gap is far longer than the idle timeout.
    let slow = [("x-flaky-body-bytes", "64"), ("x-flaky-slow-body", "2x3s")];
    for (addr, host) in [
        (proxy.outbound(), "web:80"),
        (proxy.inbound(), "test-svc:4143"),
    ] {
        let start = Instant::now();
        let outcome = get(addr, host, &slow).await;
        let elapsed = start.elapsed();
        assert!(outcome.is_err(), "{addr}: the body completed: {outcome:?}");
        assert!(elapsed < Duration::from_millis(2500), "{addr}: {elapsed:?}");
        // A body that keeps flowing is not cut.
        let flowing = [
            ("x-flaky-body-bytes", "64"),
            ("x-flaky-slow-body", "4x150ms"),
        ];
        let r = get(addr, host, &flowing).await.unwrap();
        assert_eq!(r.status, 200, "{addr}");
        assert_eq!(r.body.len(), 64, "{addr}");
    }
}
