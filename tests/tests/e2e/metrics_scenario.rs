//! Metrics end to end (issue 5): after a scenario with retries, an ejection,
//! rate-limit and concurrency-limit rejections and timeouts, the real `levee-proxy`'s
//! `/metrics` equals what the client and the upstreams saw.
//!
//! Four services behind one proxy, and inbound calls to its app:
//! - `web:80`: three flaky upstreams, one always 503, with retries on
//!   `gateway-error`, a circuit breaker (the bad endpoint is ejected) and a
//!   rate limit far below the offered load;
//! - `slow:80`: one upstream answering after 40 ms, with `maxInFlight: 1`
//!   and no queue, loaded by three callers at once (bulkhead rejections);
//! - `deadline:80`: an upstream slower than the 10 ms request timeout;
//! - `down:80`: an always-503 upstream whose first failure opens the service
//!   breaker (circuit-open rejections);
//! - inbound: peers call the local app, which fails 30% of the calls with 500.
//!
//! Every comparison is an equality: the client tallies each answer by status
//! and `x-levee-error`, the upstreams count the attempts they received.

use std::time::Duration;

use std::collections::BTreeMap;

use levee_tests::{
    flaky::{Delay, Faults},
    harness::{Metrics, Proxy, Tally, load, web::upstream, yaml},
};

const WEB: &str = "web.default:80";
const SLOW: &str = "slow.default:80";

const WEB_POLICY: &str = "  outbound:
    retry:
      maxRetries: 2
      on: [gateway-error]
      backoff: {base: 1ms, max: 5ms}
    circuitBreaker:
      consecutiveFailures: 5
      failureRate: {percent: 80, minRequests: 20, window: 10s}
      open: {base: 60s, max: 120s}
      halfOpenProbes: 2
    rateLimit: {requestsPerSecond: 100, burst: 20}
";

const SLOW_POLICY: &str = "  outbound:
    concurrency: {maxInFlight: 1, maxQueued: 0}
";

/// `down:80` always answers 503: its first failure opens the service breaker.
const DOWN_POLICY: &str = "  outbound:
    circuitBreaker: {consecutiveFailures: 1, open: {base: 60s, max: 60s}}
";

/// `deadline:80` answers after 40 ms; its request timeout is 10 ms.
const DEADLINE_POLICY: &str = "  outbound:
    timeouts: {request: 10ms}
";

#[tokio::test]
async fn scraped_metrics_equal_what_happened() {
    let bad = upstream(
        "bad",
        Faults {
            status: Some(503),
            ..Faults::default()
        },
    )
    .await;
    let good = [
        upstream("good-1", Faults::default()).await,
        upstream("good-2", Faults::default()).await,
    ];
    let slow = upstream(
        "slow",
        Faults {
            delay: Some(Delay::Fixed(Duration::from_millis(40))),
            ..Faults::default()
        },
    )
    .await;
    let late = upstream(
        "late",
        Faults {
            delay: Some(Delay::Fixed(Duration::from_millis(40))),
            ..Faults::default()
        },
    )
    .await;
    let down = upstream(
        "down",
        Faults {
            status: Some(503),
            ..Faults::default()
        },
    )
    .await;
    let app = upstream(
        "app",
        Faults {
            status: Some(500),
            fail_rate: Some(0.3),
            ..Faults::default()
        },
    )
    .await;
    let policy = yaml::documents(&[
        yaml::endpoints("web", 80, &[bad.addr(), good[0].addr(), good[1].addr()]),
        yaml::policy("web", 80, WEB_POLICY),
        yaml::endpoints("slow", 80, &[slow.addr()]),
        yaml::policy("slow", 80, SLOW_POLICY),
        yaml::endpoints("deadline", 80, &[late.addr()]),
        yaml::policy("deadline", 80, DEADLINE_POLICY),
        yaml::endpoints("down", 80, &[down.addr()]),
        yaml::policy("down", 80, DOWN_POLICY),
    ]);
    let proxy = Proxy::builder()
        .policy(policy)
        .service("front")
        .app_port(app.addr().port())
        .start()
        .await;

    let (web, slowed, timed_out, inbound, broken) = tokio::join!(
        load::for_duration(proxy.outbound(), "web:80", 4, Duration::from_millis(1500)),
        load::for_duration(proxy.outbound(), "slow:80", 3, Duration::from_millis(600)),
        load::for_duration(
            proxy.outbound(),
            "deadline:80",
            1,
            Duration::from_millis(300)
        ),
        load::for_duration(proxy.inbound(), "front", 2, Duration::from_millis(500)),
        load::for_duration(proxy.outbound(), "down:80", 1, Duration::from_millis(300)),
    );
    for tally in [&web, &slowed, &timed_out, &inbound, &broken] {
        assert_eq!(
            tally.errors, 0,
            "requests without an answer: {:?}",
            tally.bad
        );
    }
    let m = proxy.metrics().await.unwrap();
    let web_total: u64 = web.total();
    let slow_total: u64 = slowed.total();
    eprintln!("web answers {web:?}; slow answers {slowed:?}");

    // Requests by code and outcome, and one latency observation each.
    assert_eq!(
        scraped_requests(&m, WEB),
        expected_requests(&web),
        "{}",
        m.text
    );
    assert_eq!(
        scraped_requests(&m, SLOW),
        expected_requests(&slowed),
        "{}",
        m.text
    );
    let count = |service| {
        m.value(
            "levee_request_duration_seconds_count",
            &[("direction", "outbound"), ("service", service)],
        ) as u64
    };
    assert_eq!(count(WEB), web_total);
    assert_eq!(count(SLOW), slow_total);

    // Rejections: each refused call is one the client saw refused.
    let rejected = |service, reason| {
        m.value(
            "levee_rejected_total",
            &[
                ("direction", "outbound"),
                ("service", service),
                ("reason", reason),
            ],
        ) as u64
    };
    let rate_limited = web.answered(429, "rate-limited");
    assert!(rate_limited > 0, "the rate limit never refused: {web:?}");
    assert_eq!(rejected(WEB, "rate-limited"), rate_limited);
    let overloaded = slowed.answered(503, "overloaded");
    assert!(overloaded > 0, "the bulkhead never refused: {slowed:?}");
    assert_eq!(rejected(SLOW, "overloaded"), overloaded);
    for reason in ["circuit-open", "no-endpoints", "overloaded"] {
        assert_eq!(rejected(WEB, reason), 0, "{reason}\n{}", m.text);
    }
    for reason in ["circuit-open", "no-endpoints", "rate-limited"] {
        assert_eq!(rejected(SLOW, reason), 0, "{reason}\n{}", m.text);
    }

    // Retries: every upstream attempt beyond the first of an admitted call.
    let attempts = bad.requests()
        + good
            .iter()
            .map(levee_tests::flaky::FlakyUpstream::requests)
            .sum::<u64>();
    let admitted = web_total - rate_limited;
    let retries = m.value("levee_retries_total", &[("service", WEB)]) as u64;
    assert!(retries > 0, "nothing was retried\n{}", m.text);
    assert_eq!(
        retries,
        attempts - admitted,
        "{attempts} upstream attempts for {admitted} admitted calls\n{}",
        m.text
    );
    assert_eq!(
        m.value(
            "levee_retries_total",
            &[("service", WEB), ("reason", "503")]
        ) + m.value(
            "levee_retries_total",
            &[("service", WEB), ("reason", "gateway-error")]
        ),
        retries as f64,
        "every retry was of a 503\n{}",
        m.text
    );
    // A retry the budget denied hands the caller the last attempt's 503.
    let denied = m.value("levee_retry_budget_exhausted_total", &[("service", WEB)]) as u64;
    assert!(denied <= web.answered(503, ""), "{web:?}\n{}", m.text);
    assert_eq!(slow.requests(), slow_total - overloaded);
    assert_eq!(m.value("levee_retries_total", &[("service", SLOW)]), 0.0);

    // The bad endpoint was ejected once (its open time outlasts the test);
    // the good ones and the service breaker never opened.
    let endpoint = bad.addr().to_string();
    let transitions = |endpoint: &str, to| {
        m.value(
            "levee_circuit_transitions_total",
            &[("service", WEB), ("endpoint", endpoint), ("to", to)],
        )
    };
    assert_eq!(transitions(&endpoint, "open"), 1.0, "{}", m.text);
    assert_eq!(transitions(&endpoint, "half-open"), 0.0, "{}", m.text);
    let state = |endpoint: &str| {
        m.sum(
            "levee_circuit_state",
            &[("service", WEB), ("endpoint", endpoint)],
        )
    };
    assert_eq!(state(&endpoint), Some(1.0), "{}", m.text);
    for ok in &good {
        let ok = ok.addr().to_string();
        assert_eq!(transitions(&ok, "open"), 0.0, "{}", m.text);
        assert_eq!(state(&ok).unwrap_or(0.0), 0.0, "{}", m.text);
    }
    assert_eq!(transitions("", "open"), 0.0, "{}", m.text);
    assert_eq!(state("").unwrap_or(0.0), 0.0, "{}", m.text);
    // The bad endpoint got its `consecutiveFailures` attempts, plus at most
    // one from each other caller already on its way when it was ejected.
    let bad_attempts = bad.requests();
    assert!(
        (5..=8).contains(&bad_attempts),
        "the bad endpoint got {bad_attempts} attempts"
    );

    let endpoints = |service, s| m.sum("levee_endpoints", &[("service", service), ("state", s)]);
    assert_eq!(endpoints(WEB, "ready"), Some(2.0), "{}", m.text);
    assert_eq!(endpoints(WEB, "ejected"), Some(1.0), "{}", m.text);
    assert_eq!(endpoints(SLOW, "ready"), Some(1.0), "{}", m.text);
    assert_eq!(endpoints(SLOW, "ejected").unwrap_or(0.0), 0.0);

    // Request timeouts: each one a 504 the client got, and only there.
    let deadline_total: u64 = timed_out.total();
    let timeouts = timed_out.answered(504, "timeout");
    assert!(timeouts > 0 && timeouts == deadline_total, "{timed_out:?}");
    assert_eq!(
        scraped_requests(&m, "deadline.default:80"),
        expected_requests(&timed_out),
        "{}",
        m.text
    );
    assert_eq!(
        m.value(
            "levee_timeouts_total",
            &[("service", "deadline.default:80"), ("kind", "request")]
        ),
        timeouts as f64,
        "{}",
        m.text
    );
    assert_eq!(
        m.value("levee_timeouts_total", &[]),
        timeouts as f64,
        "no other timeout fired\n{}",
        m.text
    );

    // The service breaker of `down:80`: one failure reached the upstream and
    // opened it; every later call was refused and counted as such.
    const DOWN: &str = "down.default:80";
    assert_eq!(
        scraped_requests(&m, DOWN),
        expected_requests(&broken),
        "{}",
        m.text
    );
    assert_eq!(down.requests(), 1, "{broken:?}");
    assert_eq!(broken.answered(503, ""), 1, "{broken:?}");
    let fast_failed = broken.answered(503, "circuit-open");
    assert!(fast_failed > 0, "{broken:?}");
    assert_eq!(rejected(DOWN, "circuit-open"), fast_failed, "{}", m.text);
    let service_breaker = [("service", DOWN), ("endpoint", "")];
    assert_eq!(m.value("levee_circuit_state", &service_breaker), 1.0);
    assert_eq!(
        m.value(
            "levee_circuit_transitions_total",
            &[("service", DOWN), ("endpoint", ""), ("to", "open")]
        ),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value("levee_circuit_transitions_total", &[("service", DOWN)]),
        1.0,
        "a lone endpoint is never ejected\n{}",
        m.text
    );

    // Inbound: what peers got from the local app, by code.
    let inbound_total: u64 = inbound.total();
    assert!(inbound.answered(500, "") > 0, "{inbound:?}");
    assert_eq!(
        scraped(&m, "inbound", "front"),
        expected_requests(&inbound),
        "{}",
        m.text
    );
    assert_eq!(
        m.value(
            "levee_request_duration_seconds_count",
            &[("direction", "inbound")]
        ) as u64,
        inbound_total
    );
    assert_eq!(app.requests(), inbound_total);

    // The policy was loaded once.
    assert_eq!(
        m.value("levee_policy_updates_total", &[("result", "ack")]),
        1.0
    );
    assert_eq!(
        m.value("levee_policy_updates_total", &[("result", "nack")]),
        0.0
    );
}

fn outcome(status: u16, cause: &str) -> &str {
    match (cause, status) {
        ("", s) if s >= 500 => "failure",
        ("", _) => "success",
        (cause, _) => cause,
    }
}

/// `levee_requests_total` of `service` as `(code, outcome) → count`.
fn scraped_requests(m: &Metrics, service: &str) -> BTreeMap<(String, String), u64> {
    scraped(m, "outbound", service)
}

/// `levee_requests_total` of `direction` and `service` as `(code, outcome) → count`.
fn scraped(m: &Metrics, direction: &str, service: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for s in m.matching(
        "levee_requests_total",
        &[("direction", direction), ("service", service)],
    ) {
        let key = (s.labels["code"].clone(), s.labels["outcome"].clone());
        *out.entry(key).or_default() += s.value as u64;
    }
    out
}

/// The client's tally in the same shape.
fn expected_requests(tally: &Tally) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for ((status, cause), n) in tally.answers() {
        let key = (status.to_string(), outcome(*status, cause).to_owned());
        *out.entry(key).or_default() += n;
    }
    out
}
