//! The outbound rate limit and service breaker through the real proxy over
//! real sockets. (Endpoint ejection is covered by unit tests: with P2C over
//! peak-EWMA a failing endpoint is mostly avoided before it can be ejected,
//! so an end-to-end ejection test is not deterministic.)

use std::net::SocketAddr;
use std::time::Instant;

use crate::support::*;
use http::{Request, StatusCode};
use tokio::net::TcpListener;

/// A policy for `echo.test:8080` with `outbound` as its outbound section,
/// plus the endpoints.
fn echo_policy(outbound: &str, endpoints_at: &[SocketAddr]) -> String {
    service("echo", Some(&format!("    {outbound}\n")), endpoints_at)
}

async fn get(addr: SocketAddr) -> http::Response<hyper::body::Incoming> {
    let mut client = h1(addr).await;
    let req = Request::get("/")
        .header("host", "echo.test:8080")
        .body(full(""))
        .expect("request");
    tokio::time::timeout(DEADLINE, client.send_request(req))
        .await
        .expect("answer in time")
        .expect("response")
}

/// An address on loopback where nothing listens (connections are refused).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn outbound_rate_limit_answers_429_with_ratelimit_headers() {
    let upstream = upstream::echo().await;
    let proxy = start_proxy(
        &echo_policy("{rateLimit: {requestsPerSecond: 4, burst: 2}}", &[upstream]),
        &[],
    )
    .await;
    let start = Instant::now();
    let mut admitted = 0u32;
    let mut rejected = None;
    for _ in 0..20 {
        let response = get(proxy.addrs.outbound).await;
        match response.status() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => rejected = Some(response),
            other => panic!("unexpected {other}"),
        }
    }
    let bound = 2 + (4.0 * start.elapsed().as_secs_f64()).ceil() as u32 + 1;
    assert!((2..=bound).contains(&admitted), "admitted {admitted}");
    let rejected = rejected.expect("some were rejected");
    assert_eq!(header(&rejected, "x-levee-error"), "rate-limited");
    assert_eq!(header(&rejected, "retry-after"), "1");
    assert_eq!(header(&rejected, "ratelimit-policy"), "\"levee\";q=4;w=1");
    proxy.stop().await.expect("stop");
}

#[tokio::test]
async fn the_service_breaker_opens_fails_fast_and_closes_when_the_upstream_returns() {
    let down = closed_port().await;
    let proxy = start_proxy(
        &echo_policy(
            "{retry: {maxRetries: 0}, circuitBreaker: {consecutiveFailures: 3, open: {base: 200ms, max: 1s}, \
             halfOpenProbes: 1, maxEjectedPercent: 0}}",
            &[down],
        ),
        &[],
    )
    .await;
    for _ in 0..3 {
        let response = get(proxy.addrs.outbound).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(header(&response, "x-levee-error"), "upstream-connect");
    }
    let response = get(proxy.addrs.outbound).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "x-levee-error"), "circuit-open");
    assert_eq!(header(&response, "retry-after"), "1");

    // The upstream comes back on the same address; within the open time
    // plus a probe the breaker closes.
    let listener = TcpListener::bind(down).await.expect("rebind the port");
    serve_upstream(listener);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let response = get(proxy.addrs.outbound).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(header(&response, "x-levee-error"), "circuit-open");
        assert!(Instant::now() < deadline, "the breaker never closed");
        tokio::task::yield_now().await;
    }
    let metrics = admin_get(proxy.addrs.admin, "/metrics").await;
    for expected in [
        r#"levee_circuit_state{service="echo.test:8080",endpoint=""} 0"#,
        r#"levee_circuit_transitions_total{service="echo.test:8080",endpoint="",to="half-open"} 1"#,
        r#"levee_circuit_transitions_total{service="echo.test:8080",endpoint="",to="closed"} 1"#,
        r#"levee_rejected_total{direction="outbound",service="echo.test:8080",reason="circuit-open"}"#,
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
    proxy.stop().await.expect("stop");
}

/// Answers `200 ok` to everything on `listener`.
fn serve_upstream(listener: TcpListener) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("ok")))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
