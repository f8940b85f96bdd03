//! Transparent mode across two "pods": a server namespace (a `levee-flaky`
//! app and an HTTP app on loopback, their sidecar, `init-iptables`
//! applied) and a client namespace (its sidecar with a policy file naming
//! the server's service, `init-iptables` applied) joined by a veth pair.
//! An unmodified client (`curl`, run in the client namespace) calls the
//! server pod's IP:port with a `Host` naming the service: the client
//! sidecar enforces the policy (retries hide the app's 503s; a breaker
//! ejects a failing endpoint), the server sidecar sees every attempt
//! inbound, and the apps run with no Levee flag or variable at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use levee_tests::harness::{
    eventually,
    netns::{B_V4, Netns},
    pods::TwoPods,
    upstream::echo_head,
    yaml,
};

/// The service the client calls, as the client sidecar's counters name it.
const SERVICE: &str = "web.default:9080";

/// `curl` inside `ns`: a plain GET of `http://target/hello` with `host`.
/// Its status code and body.
async fn curl(ns: &Netns, target: SocketAddr, host: &str) -> (u16, String) {
    let url = format!("http://{target}/hello");
    let out = ns.curl(&["-H", &format!("host: {host}"), &url]).await;
    assert!(out.exit.success(), "curl {url} failed: {}", out.stderr);
    (out.status, out.body)
}

/// Client calls sent in the retry test.
const CALLS: usize = 20;

#[tokio::test]
async fn the_client_sidecar_retries_an_unmodified_clients_calls_to_the_server_pod() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);

    // Server pod: apps on loopback, sidecar, interception.
    let flaky = ["--id", "web-1", "--status", "503", "--fail-rate", "0.3"];
    let _flaky = server
        .flaky_app(9080, &flaky, &pods.path("flaky.log"))
        .await;
    echo_head(server.listen(SocketAddr::from(([127, 0, 0, 1], 9081))));
    let _server_sidecar = pods.server_sidecar(&[], &[], &[]).await;

    // Client pod: interception, sidecar with the service's endpoints and a
    // retry on 503 (maxRetries 10: all eleven attempts failing at 30% is a
    // one-in-a-half-million event per call).
    let _client_sidecar = pods
        .client_sidecar(
            &[],
            &[
                yaml::endpoints("web", 9080, &[SocketAddr::new(B_V4, 9080)]),
                yaml::policy(
                    "web",
                    9080,
                    "  outbound:\n    retry:\n      maxRetries: 10\n      on: [\"503\"]\n      \
                 backoff: {base: 1ms, max: 5ms}\n      \
                 budget: {percent: 100, minPerSecond: 1000, window: 10s}\n",
                ),
                yaml::endpoints("echo", 9081, &[SocketAddr::new(B_V4, 9081)]),
            ],
            &[],
        )
        .await;

    let target = SocketAddr::new(B_V4, 9080);
    for i in 0..CALLS {
        let (code, body) = curl(client, target, "web:9080").await;
        assert_eq!(code, 200, "call {i}: {body}");
    }

    // The HTTP app sees the client's own request, nothing of Levee's
    // configuration, having been reached through both sidecars.
    let (code, head) = curl(client, SocketAddr::new(B_V4, 9081), "echo:9081").await;
    assert_eq!(code, 200, "{head}");
    assert!(head.starts_with("GET /hello HTTP/1.1"), "{head}");
    assert!(head.contains("host: echo:9081"), "{head}");
    assert!(
        head.contains("x-levee-hops: 2"),
        "the request did not cross both sidecars: {head}"
    );

    let c = client.admin_metrics().await;
    let served = c.value(
        "levee_requests_total",
        &[
            ("direction", "outbound"),
            ("service", SERVICE),
            ("code", "200"),
        ],
    );
    assert_eq!(served, CALLS as f64, "{}", c.text);
    let retries = c.sum("levee_retries_total", &[("service", SERVICE)]);
    assert!(
        retries.is_some_and(|r| r > 0.0),
        "no retry at 30% failures: {}",
        c.text
    );
    let retries = retries.unwrap_or_default();

    // Every attempt, first tries and retries alike, arrived inbound.
    let s = server.admin_metrics().await;
    let inbound = s
        .sum("levee_requests_total", &[("direction", "inbound")])
        .unwrap_or_default();
    assert_eq!(
        inbound,
        CALLS as f64 + retries + 1.0,
        "calls + retries + the echo call: {}",
        s.text
    );
    let inbound_503 = s
        .sum(
            "levee_requests_total",
            &[("direction", "inbound"), ("code", "503")],
        )
        .unwrap_or_default();
    assert_eq!(inbound_503, retries, "{}", s.text);
}

#[tokio::test]
async fn the_client_sidecars_breaker_ejects_a_hard_failing_server_endpoint() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    let bad = ["--id", "bad", "--status", "503", "--fail-rate", "1"];
    let _bad = server.flaky_app(9080, &bad, &pods.path("bad.log")).await;
    let good = ["--id", "good", "--status", "503", "--fail-rate", "0"];
    let _good = server.flaky_app(9082, &good, &pods.path("good.log")).await;
    let _server_sidecar = pods.server_sidecar(&[], &[], &[]).await;

    let _client_sidecar = pods
        .client_sidecar(
            &[],
            &[
                yaml::endpoints(
                    "web",
                    9080,
                    &[SocketAddr::new(B_V4, 9080), SocketAddr::new(B_V4, 9082)],
                ),
                yaml::policy(
                    "web",
                    9080,
                    "  outbound:\n    retry:\n      maxRetries: 6\n      on: [\"503\"]\n      \
                 backoff: {base: 1ms, max: 5ms}\n      \
                 budget: {percent: 100, minPerSecond: 1000, window: 10s}\n    \
                 circuitBreaker:\n      consecutiveFailures: 3\n      \
                 open: {base: 60s, max: 60s}\n",
                ),
            ],
            &[],
        )
        .await;

    // The client dials the bad endpoint's address; the sidecar balances
    // over the service's endpoints, retries, and ejects the bad one. How
    // many calls that takes is the balancer's business: its latency
    // estimate steers most calls away from the bad endpoint once it has
    // failed, so it reaches its third failure after a handful of calls or
    // after many. Every call meanwhile succeeds.
    let target = SocketAddr::new(B_V4, 9080);
    let calls = &AtomicUsize::new(0);
    let c = eventually(
        Duration::from_secs(20),
        "the bad endpoint ejected",
        || async move {
            let calls = calls.fetch_add(1, Ordering::Relaxed) + 1;
            let (code, body) = curl(client, target, "web:9080").await;
            assert_eq!(code, 200, "call {calls}: {body}");
            let c = client.admin_metrics().await;
            let ejected = c.sum(
                "levee_endpoints",
                &[("service", SERVICE), ("state", "ejected")],
            );
            match ejected {
                Some(1.0) => Ok(c),
                other => Err(format!("ejected {other:?} after {calls} calls: {}", c.text)),
            }
        },
    )
    .await;
    let bad_circuit = c.sum(
        "levee_circuit_state",
        &[("service", SERVICE), ("endpoint", "10.213.0.2:9080")],
    );
    assert_eq!(
        bad_circuit,
        Some(1.0),
        "the bad endpoint's breaker: {}",
        c.text
    );

    // Ejected: further calls never reach the bad app.
    let bad_before = server.flaky_requests(9080).await;
    assert!(bad_before >= 3, "the bad app saw {bad_before} requests");
    let good_before = server.flaky_requests(9082).await;
    for i in 0..CALLS {
        let (code, body) = curl(client, target, "web:9080").await;
        assert_eq!(code, 200, "call {i} after ejection: {body}");
    }
    assert_eq!(server.flaky_requests(9080).await, bad_before);
    assert_eq!(
        server.flaky_requests(9082).await,
        good_before + CALLS as u64,
        "every call after the ejection went to the good app, once"
    );
}
