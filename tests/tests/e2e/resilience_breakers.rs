//! Circuit breakers end to end: the real `levee-proxy` binary in front of
//! flaky upstreams (issue 3, scenarios 1 and 3). Each run also prints its
//! success rate and retry amplification (`MEASURED` lines; run with
//! `--nocapture`), with and without the policy.

use std::time::{Duration, Instant};

use levee_tests::{
    flaky::{Faults, FlakyUpstream},
    harness::{
        Http1Conn, Tally, load,
        web::{
            AUTHORITY, Closer, POLL, SERVICE, always, get, levee_error, policy_file, proxy, report,
            retry_after, upstream,
        },
    },
};

const SCENARIO_1: &str = "    retry:
      maxRetries: 2
      on: [gateway-error]
      backoff: {base: 1ms, max: 5ms}
    circuitBreaker:
      consecutiveFailures: 5
      failureRate: {percent: 80, minRequests: 20, window: 10s}
      open: {base: 30s, max: 60s}
      halfOpenProbes: 2
";

#[tokio::test]
async fn scenario_1_an_always_failing_endpoint_is_ejected_and_calls_succeed() {
    let bad = upstream("bad", always(503)).await;
    let good = [
        upstream("good-1", Faults::default()).await,
        upstream("good-2", Faults::default()).await,
    ];
    let addrs = [bad.addr(), good[0].addr(), good[1].addr()];
    let attempts = || bad.requests() + good.iter().map(FlakyUpstream::requests).sum::<u64>();

    // Control: no policy (connect failures are retried, 503s are not).
    let plain = proxy(None, &addrs).await;
    let control = load::requests(plain.outbound(), AUTHORITY, 4, 2000).await;
    report("scenario-1", "none", &control, attempts());
    drop(plain);

    let before = attempts();
    let bad_before = bad.requests();
    let p = proxy(Some(SCENARIO_1), &addrs).await;
    let tally = load::requests(p.outbound(), AUTHORITY, 4, 2000).await;
    report("scenario-1", "retry+breaker", &tally, attempts() - before);

    assert_eq!(tally.total(), 2000);
    assert!(
        tally.count(200) >= 1998,
        "at least 99.9% must succeed: {tally:?}"
    );
    let bad_calls = bad.requests() - bad_before;
    assert!(
        bad_calls <= 20,
        "the ejected endpoint still got {bad_calls} calls"
    );

    let endpoint = bad.addr().to_string();
    let m = p.metrics().await.unwrap();
    let opened = m.value(
        "levee_circuit_transitions_total",
        &[
            ("service", SERVICE),
            ("endpoint", &endpoint),
            ("to", "open"),
        ],
    );
    assert!(opened >= 1.0, "no ejection recorded:\n{}", m.text);
    let state = |m: &levee_tests::harness::Metrics, s: &str| {
        m.sum("levee_endpoints", &[("service", SERVICE), ("state", s)])
    };
    assert_eq!(state(&m, "ejected"), Some(1.0), "{}", m.text);
    assert_eq!(state(&m, "ready"), Some(2.0), "{}", m.text);
    assert_eq!(
        m.value(
            "levee_circuit_state",
            &[("service", SERVICE), ("endpoint", &endpoint)]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "levee_circuit_state",
            &[("service", SERVICE), ("endpoint", "")]
        ),
        0.0,
        "the service breaker stays closed"
    );

    // A policy reload (same outbound section) installs a new snapshot, which
    // writes the static endpoint count: endpoint health keeps owning the gauge.
    let version = p.config_version().await.unwrap();
    let mut reloaded = policy_file(Some(SCENARIO_1), &addrs);
    reloaded.push_str("  inbound:\n    timeouts: {request: 10s}\n");
    p.write_policy(&reloaded);
    p.wait_config_change(&version, POLL).await;
    let m = p.metrics().await.unwrap();
    assert_eq!(state(&m, "ready"), Some(2.0), "{}", m.text);
    assert_eq!(state(&m, "ejected"), Some(1.0), "{}", m.text);
}

const SCENARIO_3: &str = "    retry:
      maxRetries: 2
      on: [connect-failure, reset, gateway-error]
      backoff: {base: 1ms, max: 5ms}
    circuitBreaker:
      consecutiveFailures: 5
      open: {base: 3s, max: 10s}
      halfOpenProbes: 2
";

/// Requests sent while the upstream is down, in each run.
const DOWN_REQUESTS: u64 = 200;

#[tokio::test]
async fn scenario_3_a_down_upstream_opens_the_breaker_and_recovery_closes_it_via_half_open() {
    // Control: no policy, the same down upstream.
    let down = Closer::start().await;
    let plain = proxy(None, &[down.addr]).await;
    let control = load::requests(plain.outbound(), AUTHORITY, 1, DOWN_REQUESTS).await;
    report("scenario-3", "none", &control, down.stop().await);
    drop(plain);

    let down = Closer::start().await;
    let addr = down.addr;
    let p = proxy(Some(SCENARIO_3), &[addr]).await;
    let mut conn = Http1Conn::connect(p.outbound()).await.unwrap();
    let mut tally = Tally::default();

    // Trip: every call fails (the upstream hangs up) until the breaker opens.
    let mut sent = 0;
    let open = loop {
        assert!(sent < 50, "the breaker did not open after {sent} calls");
        let r = conn.send(get("/", &[])).await;
        tally.record(&r);
        let r = r.unwrap();
        sent += 1;
        assert_ne!(r.status, 200, "{r:?}");
        if levee_error(&r) == "circuit-open" {
            break r;
        }
    };
    assert_eq!(open.status, 503, "{open:?}");
    let wait = retry_after(&open).expect("Retry-After on circuit-open");
    assert!((1..=3).contains(&wait), "Retry-After {wait}");

    // Open: calls fail fast and no connection is attempted (the open time is
    // ≥ 2.7s; this phase stops after 1.5s at the latest).
    let connects = down.accepted();
    let opened_at = Instant::now();
    let mut fast_fails = 1;
    while sent < DOWN_REQUESTS && opened_at.elapsed() < Duration::from_millis(1500) {
        let start = Instant::now();
        let r = conn.send(get("/", &[])).await;
        tally.record(&r);
        let r = r.unwrap();
        sent += 1;
        assert_eq!(
            (r.status.as_u16(), levee_error(&r)),
            (503, "circuit-open"),
            "{r:?}"
        );
        assert!(retry_after(&r).is_some_and(|s| s >= 1), "{r:?}");
        assert!(start.elapsed() < Duration::from_millis(500), "not fast");
        fast_fails += 1;
    }
    assert_eq!(
        down.accepted(),
        connects,
        "a connection was attempted while the breaker was open"
    );
    assert!(sent >= 40, "only {sent} calls in the open phase");
    report("scenario-3", "retry+breaker", &tally, down.accepted());
    let m = p.metrics().await.unwrap();
    let service_breaker = [("service", SERVICE), ("endpoint", "")];
    assert_eq!(m.value("levee_circuit_state", &service_breaker), 1.0);
    let rejected = m.value(
        "levee_rejected_total",
        &[("service", SERVICE), ("reason", "circuit-open")],
    );
    assert!(rejected >= fast_fails as f64, "{rejected} < {fast_fails}");

    // The upstream comes back on the same port: after the open time a call
    // goes through as a probe (HALF_OPEN), and the probes close the breaker.
    down.stop().await;
    let back = FlakyUpstream::builder()
        .id("back")
        .addr(addr)
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + POLL;
    loop {
        let r = conn.send(get("/", &[])).await.unwrap();
        if r.status == 200 {
            let m = p.metrics().await.unwrap();
            if m.sum("levee_circuit_state", &service_breaker) == Some(0.0) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the breaker did not close; last answer {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back.requests() >= 2, "probes reached the upstream");
    let m = p.metrics().await.unwrap();
    let to = |state: &str| {
        m.value(
            "levee_circuit_transitions_total",
            &[("service", SERVICE), ("endpoint", ""), ("to", state)],
        )
    };
    assert!(to("open") >= 1.0, "{}", m.text);
    assert!(to("half-open") >= 1.0, "{}", m.text);
    assert!(to("closed") >= 1.0, "{}", m.text);
    for _ in 0..20 {
        assert_eq!(conn.send(get("/", &[])).await.unwrap().status, 200);
    }
}
