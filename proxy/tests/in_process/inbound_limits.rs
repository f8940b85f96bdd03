//! The inbound side enforces the local service's `spec.inbound` over real
//! sockets: rate limit (429 + `Retry-After` + `RateLimit` headers),
//! concurrency (503 overloaded) and request timeout (504).

use std::net::SocketAddr;
use std::time::Instant;

use crate::support::*;
use http::{Request, StatusCode};

/// A policy for `echo.test` (every port) with `inbound` as its inbound section.
fn inbound_policy(inbound: &str) -> String {
    yaml::documents(&[policy("echo", None, &format!("  inbound: {inbound}\n"))])
}

/// The proxy fronting the test upstream as service `echo`.
async fn inbound_proxy(inbound: &str) -> Proxy {
    let upstream = upstream::echo().await;
    let port = upstream.port().to_string();
    start_proxy(
        &inbound_policy(inbound),
        &["--service", "echo", "--app-port", &port],
    )
    .await
}

async fn get(addr: SocketAddr, path: &'static str) -> http::Response<hyper::body::Incoming> {
    let mut client = h1(addr).await;
    let req = Request::get(path)
        .header("host", "echo.test:8080")
        .body(full(""))
        .expect("request");
    tokio::time::timeout(DEADLINE, client.send_request(req))
        .await
        .expect("answer in time")
        .expect("response")
}

#[tokio::test]
async fn rate_limit_admits_burst_plus_rate_and_answers_429_with_headers() {
    let proxy = inbound_proxy("{rateLimit: {requestsPerSecond: 5, burst: 3}}").await;
    let start = Instant::now();
    let mut admitted = 0u32;
    let mut rejected = None;
    for _ in 0..30 {
        let response = get(proxy.addrs.inbound, "/").await;
        match response.status() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => rejected = Some(response),
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // burst + rate × elapsed, +1 for the boundary.
    let bound = 3 + (5.0 * elapsed).ceil() as u32 + 1;
    assert!(
        (3..=bound).contains(&admitted),
        "admitted {admitted} in {elapsed:.2}s"
    );
    let rejected = rejected.expect("some requests were rejected");
    assert_eq!(header(&rejected, "x-levee-error"), "rate-limited");
    assert_eq!(header(&rejected, "retry-after"), "1");
    assert_eq!(header(&rejected, "ratelimit-policy"), "\"levee\";q=5;w=1");
    assert!(
        header(&rejected, "ratelimit").starts_with("\"levee\";r=0;t="),
        "{}",
        header(&rejected, "ratelimit")
    );
    let metrics = admin_get(proxy.addrs.admin, "/metrics").await;
    assert!(
        metrics.contains(
            r#"levee_rejected_total{direction="inbound",service="echo",reason="rate-limited"}"#
        ),
        "{metrics}"
    );
    proxy.stop().await.expect("stop");
}

#[tokio::test]
async fn concurrency_limit_rejects_beyond_in_flight_and_queue() {
    let proxy = inbound_proxy("{concurrency: {maxInFlight: 1, maxQueued: 1}}").await;
    // Four slow calls at once: one runs, one waits, the rest are refused.
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(get(proxy.addrs.inbound, "/slow")))
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        let response = call.await.expect("join");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(header(&response, "x-levee-error"), "overloaded");
        }
        statuses.push(response.status());
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let overloaded = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(ok + overloaded, 4, "{statuses:?}");
    assert!(ok >= 2, "in flight and queued both served: {statuses:?}");
    assert!(overloaded >= 1, "{statuses:?}");
    proxy.stop().await.expect("stop");
}

#[tokio::test]
async fn request_timeout_answers_504() {
    let proxy = inbound_proxy("{timeouts: {request: 100ms}}").await;
    let start = Instant::now();
    let response = get(proxy.addrs.inbound, "/slow").await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(header(&response, "x-levee-error"), "timeout");
    assert!(start.elapsed().as_millis() < 300, "{:?}", start.elapsed());
    let fast = get(proxy.addrs.inbound, "/").await;
    assert_eq!(fast.status(), StatusCode::OK);
    proxy.stop().await.expect("stop");
}

/// A request from the source address `from` (any 127.0.0.0/8 address).
async fn get_from(from: [u8; 4], addr: SocketAddr) -> StatusCode {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    let stream = socket.connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "echo.test:8080")
        .body(full(""))
        .expect("request");
    tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("response")
        .status()
}

#[tokio::test]
async fn per_client_rate_limit_keys_on_the_client_address() {
    let proxy =
        inbound_proxy("{rateLimit: {requestsPerSecond: 1, burst: 2, perClient: true}}").await;
    let start = Instant::now();
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(get_from([127, 0, 0, 2], proxy.addrs.inbound).await);
    }
    assert_eq!(first[..2], [StatusCode::OK, StatusCode::OK], "{first:?}");
    assert!(
        first.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{first:?} in {:?}",
        start.elapsed()
    );
    // Another client has its own bucket.
    let other = get_from([127, 0, 0, 3], proxy.addrs.inbound).await;
    assert_eq!(other, StatusCode::OK);
    assert_eq!(
        get_from([127, 0, 0, 3], proxy.addrs.inbound).await,
        StatusCode::OK
    );
    proxy.stop().await.expect("stop");
}

/// `levee_policy_version` as the admin endpoint shows it.
async fn policy_version(proxy: &Proxy) -> u64 {
    let metrics = admin_get(proxy.addrs.admin, "/metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("levee_policy_version "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Rewrites the proxy's policy file with `inbound` and waits until the
/// proxy has loaded it.
async fn update_policy(proxy: &Proxy, inbound: &str) {
    let before = policy_version(proxy).await;
    std::fs::write(proxy.policy_file(), inbound_policy(inbound)).expect("rewrite policy");
    let deadline = Instant::now() + DEADLINE;
    while policy_version(proxy).await <= before {
        assert!(Instant::now() < deadline, "the new policy was never loaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends requests until one is refused with 429; returns how many passed.
async fn use_up_the_burst(addr: SocketAddr) -> u32 {
    let mut admitted = 0;
    loop {
        match get(addr, "/").await.status() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => return admitted,
            other => panic!("unexpected status {other}"),
        }
        assert!(admitted < 1000, "the rate limit never refused");
    }
}

/// How many of `n` requests in a row pass.
async fn admitted_of(addr: SocketAddr, n: u32) -> u32 {
    let mut admitted = 0;
    for _ in 0..n {
        admitted += u32::from(get(addr, "/").await.status() == StatusCode::OK);
    }
    admitted
}

const BURST: u32 = 20;

#[tokio::test]
async fn a_policy_update_that_keeps_the_rate_limit_keeps_its_used_up_burst() {
    let limit = format!("rateLimit: {{requestsPerSecond: 1, burst: {BURST}}}");
    let proxy = inbound_proxy(&format!("{{{limit}}}")).await;
    let admitted = use_up_the_burst(proxy.addrs.inbound).await;
    assert!(admitted >= BURST, "admitted {admitted}");
    let used_up = Instant::now();

    // Only the request timeout changes.
    update_policy(&proxy, &format!("{{{limit}, timeouts: {{request: 5s}}}}")).await;
    let admitted = admitted_of(proxy.addrs.inbound, BURST).await;
    // The limiter kept its state: only what refilled since (1 per second)
    // passes, not a fresh burst.
    let refilled = used_up.elapsed().as_secs() as u32 + 1;
    assert!(
        admitted <= refilled && admitted < BURST,
        "admitted {admitted} of {BURST}, {refilled} refilled"
    );
    proxy.stop().await.expect("stop");
}

#[tokio::test]
async fn a_policy_update_that_changes_the_rate_limit_starts_a_fresh_burst() {
    let proxy = inbound_proxy(&format!(
        "{{rateLimit: {{requestsPerSecond: 1, burst: {BURST}}}}}"
    ))
    .await;
    let admitted = use_up_the_burst(proxy.addrs.inbound).await;
    assert!(admitted >= BURST, "admitted {admitted}");

    let burst = BURST + 1;
    update_policy(
        &proxy,
        &format!("{{rateLimit: {{requestsPerSecond: 1, burst: {burst}}}}}"),
    )
    .await;
    let start = Instant::now();
    let admitted = use_up_the_burst(proxy.addrs.inbound).await;
    // A fresh bucket of the new size (the old one would pass about one a
    // second), still limited (plus what refilled meanwhile).
    let refilled = start.elapsed().as_secs() as u32 + 1;
    assert!(
        (burst..=burst + refilled).contains(&admitted),
        "admitted {admitted}, burst {burst}, {refilled} refilled"
    );
    proxy.stop().await.expect("stop");
}
