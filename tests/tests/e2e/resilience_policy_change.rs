//! A policy change under load, end to end (issue 3, scenario 8): the policy
//! file of a running `levee-proxy` is rewritten while load runs; the new
//! policy takes effect for new calls, calls in flight finish under the policy
//! they started with, and no call fails.

use std::time::{Duration, Instant};

use levee_tests::{
    flaky::Faults,
    harness::{
        Background, Http1Conn,
        web::{AUTHORITY, POLL, SERVICE, get, levee_error, policy_file, proxy, upstream},
    },
};

const BEFORE: &str = "    timeouts: {request: 10s}
    retry: {maxRetries: 2, on: [gateway-error], backoff: {base: 1ms, max: 5ms}}
";
const AFTER: &str = "    timeouts: {request: 1s}
    retry: {maxRetries: 2, on: [gateway-error], backoff: {base: 1ms, max: 5ms}}
";

/// How long the calls that straddle the change stay at the upstream: more
/// than `AFTER`'s request timeout, so finishing proves they kept `BEFORE`.
const IN_FLIGHT_DELAY: &str = "4s";

#[tokio::test]
async fn scenario_8_a_policy_change_mid_load_fails_no_call_and_takes_effect() {
    let ups = [
        upstream("a", Faults::default()).await,
        upstream("b", Faults::default()).await,
    ];
    let addrs = [ups[0].addr(), ups[1].addr()];
    let p = proxy(Some(BEFORE), &addrs).await;
    let addr = p.outbound();
    let background = Background::start(addr, AUTHORITY, 3);

    // Calls that are at the upstream while the policy changes.
    let straddling: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = Http1Conn::connect(addr).await.unwrap();
                let start = Instant::now();
                let r = conn
                    .send(get("/straddle", &[("x-flaky-delay", IN_FLIGHT_DELAY)]))
                    .await
                    .unwrap();
                (r, start.elapsed())
            })
        })
        .collect();
    let received = || -> u64 {
        ups.iter()
            .map(|u| u.stats().by_path.get("/straddle").copied().unwrap_or(0))
            .sum()
    };
    let deadline = Instant::now() + POLL;
    while received() < 3 {
        assert!(Instant::now() < deadline, "the slow calls never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The change: rewrite the file and nudge the proxy (SIGHUP reloads now
    // rather than at the next one-second poll).
    let version = p.config_version().await.unwrap();
    p.write_policy(&policy_file(Some(AFTER), &addrs));
    p.process.hangup().unwrap();
    p.wait_config_change(&version, POLL).await;
    assert!(
        straddling.iter().all(|h| !h.is_finished()),
        "the slow calls finished before the change: the test proves nothing"
    );

    // New calls get the new request timeout. The upstream answers after
    // 5 s: only the new 1 s timeout (not the old 10 s one) can end the call
    // first, even if a loaded machine holds the proxy's timer back a while.
    let mut conn = Http1Conn::connect(addr).await.unwrap();
    let start = Instant::now();
    let r = conn
        .send(get("/late", &[("x-flaky-delay", "5s")]))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), levee_error(&r)),
        (504, "timeout"),
        "{r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_millis(4500),
        "{:?}",
        start.elapsed()
    );

    // Calls in flight across the change finish under the old policy.
    for h in straddling {
        let (r, took) = h.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert!(took >= Duration::from_secs(1), "{took:?}");
    }
    let tally = background.stop().await;
    eprintln!("scenario 8: background load {tally:?}");
    assert!(tally.total() >= 100, "too little load: {tally:?}");
    assert_eq!(
        tally.count(200),
        tally.total(),
        "failed calls: {:?}",
        tally.bad
    );

    let m = p.metrics().await.unwrap();
    assert_eq!(
        m.value(
            "levee_timeouts_total",
            &[("service", SERVICE), ("kind", "request")]
        ),
        1.0
    );
}
