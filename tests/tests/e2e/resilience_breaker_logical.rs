//! The service circuit breaker judges logical calls (issue 9, item 1): the
//! real `levee-proxy` in front of a `levee-flaky` upstream. Attempts that
//! fail and recover on a retry must not open the service breaker; a service
//! that is down as a whole still opens it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use levee_tests::flaky::Faults;
use levee_tests::harness::Http1Conn;
use levee_tests::harness::web::{SERVICE, always, get, levee_error, proxy, upstream};

/// Retries 503s (with room in the budget for all of them) and a service
/// breaker that opens after three failed calls in a row.
const POLICY: &str = "    retry:
      maxRetries: 3
      on: [503]
      backoff: {base: 1ms, max: 2ms}
      budget: {percent: 100}
    circuitBreaker:
      consecutiveFailures: 3
      failureOn: [5xx]
      open: {base: 30s, max: 60s}
";

const REQUESTS: u64 = 2000;
const CONNECTIONS: u64 = 8;

/// Answers a closed-loop run saw: total, 200s, `circuit-open` refusals.
#[derive(Debug, Default)]
struct Seen {
    total: u64,
    ok: u64,
    circuit_open: u64,
}

async fn run(addr: std::net::SocketAddr) -> Seen {
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut conn = Http1Conn::connect(addr).await.unwrap();
                while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                    let r = conn.send(get("/", &[])).await.unwrap();
                    seen.total += 1;
                    seen.ok += u64::from(r.status == 200);
                    seen.circuit_open += u64::from(levee_error(&r) == "circuit-open");
                }
                seen
            })
        })
        .collect();
    let mut all = Seen::default();
    for w in workers {
        let s = w.await.unwrap();
        all.total += s.total;
        all.ok += s.ok;
        all.circuit_open += s.circuit_open;
    }
    all
}

fn transitions(m: &levee_tests::harness::Metrics, to: &str) -> f64 {
    m.value(
        "levee_circuit_transitions_total",
        &[("service", SERVICE), ("endpoint", ""), ("to", to)],
    )
}

#[tokio::test]
async fn retried_and_recovered_failures_never_open_the_service_breaker() {
    // One endpoint fails 20% of attempts: three failed attempts in a row
    // happen many times in a run, three failed calls (four attempts each)
    // practically never. (With one endpoint, ejection is capped off.)
    let flaky = upstream(
        "flaky",
        Faults {
            status: Some(503),
            fail_rate: Some(0.2),
            ..Faults::default()
        },
    )
    .await;
    let p = proxy(Some(POLICY), &[flaky.addr()]).await;
    let seen = run(p.outbound()).await;
    assert_eq!(seen.total, REQUESTS);
    assert_eq!(seen.circuit_open, 0, "{seen:?}");
    // A call fails only when all four attempts do: 0.2^4 = 0.16 %, about 3
    // of 2,000 calls (Poisson, λ = 3.2). More than 15 has odds below 1e-6;
    // without retries it would be about 400.
    assert!(seen.ok >= REQUESTS - 15, "retries should recover: {seen:?}");

    let m = p.metrics().await.unwrap();
    let retried = m
        .sum("levee_retries_total", &[("service", SERVICE)])
        .unwrap_or(0.0);
    assert!(
        retried >= 200.0,
        "the run must have had failed attempts that recovered: {retried} retries\n{}",
        m.text
    );
    assert_eq!(transitions(&m, "open"), 0.0, "{}", m.text);
    assert_eq!(
        m.value(
            "levee_circuit_state",
            &[("service", SERVICE), ("endpoint", "")]
        ),
        0.0,
        "CLOSED"
    );
    assert_eq!(
        m.value(
            "levee_rejected_total",
            &[("service", SERVICE), ("reason", "circuit-open")]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_dead_service_still_opens_the_service_breaker() {
    let dead = upstream("dead", always(503)).await;
    let p = proxy(Some(POLICY), &[dead.addr()]).await;
    let mut conn = Http1Conn::connect(p.outbound()).await.unwrap();
    // Three failed calls (each retried to the end) open it; the fourth is
    // refused without reaching the upstream.
    for n in 1..=3 {
        let r = conn.send(get("/", &[])).await.unwrap();
        assert_eq!(r.status, 503, "call {n}");
        assert_eq!(levee_error(&r), "", "call {n} is the upstream's answer");
    }
    assert_eq!(dead.requests(), 12, "four attempts per call");
    let r = conn.send(get("/", &[])).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(levee_error(&r), "circuit-open");
    assert_eq!(dead.requests(), 12, "an open breaker sends nothing");

    let m = p.metrics().await.unwrap();
    assert_eq!(transitions(&m, "open"), 1.0, "{}", m.text);
    assert_eq!(
        m.value(
            "levee_circuit_state",
            &[("service", SERVICE), ("endpoint", "")]
        ),
        1.0,
        "OPEN"
    );
}
