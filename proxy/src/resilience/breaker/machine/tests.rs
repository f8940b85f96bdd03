use levee_proto::policy::{EffectiveSlowCall, defaults};

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Consecutive failures 3, rate 50% of ≥ 10 calls in 10s, open 1s → 8s, 2 probes.
pub(crate) fn config() -> EffectiveCircuitBreaker {
    EffectiveCircuitBreaker {
        failure_on: defaults::FAILURE_ON.to_vec(),
        consecutive_failures: 3,
        failure_rate_percent: 50.0,
        failure_rate_min_requests: 10,
        failure_rate_window: Duration::from_secs(10).into(),
        slow_call: None,
        open_base: Duration::from_secs(1).into(),
        open_max: Duration::from_secs(8).into(),
        half_open_probes: 2,
        max_ejected_percent: 50.0,
    }
}

fn fail(m: &mut Machine, now: Instant) -> Option<CircuitState> {
    m.record(now, true, false, None, || true)
}

fn ok(m: &mut Machine, now: Instant) -> Option<CircuitState> {
    m.record(now, false, false, None, || true)
}

fn admitted(m: &mut Machine, now: Instant) -> Option<u64> {
    match m.admit(now).0 {
        Admission::Admitted { generation, .. } => Some(generation),
        Admission::Rejected { .. } => None,
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_a_success_resets_the_count() {
    let now = Instant::now();
    let mut m = Machine::new(&config(), now);
    assert_eq!(fail(&mut m, now), None);
    assert_eq!(fail(&mut m, now), None);
    assert_eq!(ok(&mut m, now), None);
    assert_eq!(fail(&mut m, now), None);
    assert_eq!(fail(&mut m, now), None);
    assert_eq!(fail(&mut m, now), Some(CircuitState::Open));
    match m.admit(now).0 {
        Admission::Rejected { retry_after } => {
            assert!(
                retry_after <= ms(1000) && retry_after >= ms(900),
                "{retry_after:?}"
            )
        }
        other => panic!("open breaker admitted: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn open_time_grows_per_consecutive_trip_and_resets_on_close() {
    let start = Instant::now();
    let mut m = Machine::new(&config(), start);
    let mut now = start;
    for _ in 0..3 {
        fail(&mut m, now);
    }
    assert_eq!(m.state(), CircuitState::Open);
    // Trip n stays open between 0.9·base·2^(n-1) and base·2^(n-1), capped at 8s.
    for (trip, full) in [(1u32, 1000u64), (2, 2000), (3, 4000), (4, 8000), (5, 8000)] {
        assert!(
            admitted(&mut m, now + ms(full * 9 / 10 - 1)).is_none(),
            "trip {trip} open too short"
        );
        now += ms(full);
        let (admission, changed) = m.admit(now);
        assert_eq!(changed, Some(CircuitState::HalfOpen), "trip {trip}");
        let Admission::Admitted {
            probe: true,
            generation,
        } = admission
        else {
            panic!("half-open did not admit a probe: {admission:?}");
        };
        let changed = m.record(now, true, false, Some(generation), || true);
        assert_eq!(changed, Some(CircuitState::Open), "a failed probe reopens");
    }
    // Both probes succeed: closed, and the next trip is short again.
    now += ms(8000);
    let g1 = admitted(&mut m, now).expect("probe 1");
    let g2 = admitted(&mut m, now).expect("probe 2");
    assert!(admitted(&mut m, now).is_none(), "only two probes at once");
    assert_eq!(m.record(now, false, false, Some(g1), || true), None);
    assert_eq!(
        m.record(now, false, false, Some(g2), || true),
        Some(CircuitState::Closed)
    );
    for _ in 0..3 {
        fail(&mut m, now);
    }
    assert!(admitted(&mut m, now + ms(899)).is_none());
    assert!(admitted(&mut m, now + ms(1000)).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_slot_and_stale_results_are_ignored() {
    let now = Instant::now();
    let mut m = Machine::new(&config(), now);
    for _ in 0..3 {
        fail(&mut m, now);
    }
    // A call admitted before the trip finishes late: ignored.
    assert_eq!(fail(&mut m, now), None);
    let later = now + ms(1000);
    let g = admitted(&mut m, later).expect("probe");
    let _g2 = admitted(&mut m, later).expect("probe");
    assert!(admitted(&mut m, later).is_none());
    m.release(g);
    assert!(
        admitted(&mut m, later).is_some(),
        "released slot is reusable"
    );
    // A result from an older generation does not count.
    assert_eq!(m.record(later, true, false, Some(g - 1), || true), None);
    assert_eq!(m.state(), CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_trips_after_min_requests_within_the_window() {
    let mut cfg = config();
    cfg.consecutive_failures = 0; // rate only
    let start = Instant::now();
    let mut m = Machine::new(&cfg, start);
    // 4 of 9 calls fail: below min requests, nothing happens.
    for i in 0..9 {
        let changed = m.record(start, i % 2 == 1, false, None, || true);
        assert_eq!(changed, None);
    }
    // The 10th call brings 5 of 10 = 50%: trip.
    assert_eq!(fail(&mut m, start), Some(CircuitState::Open));

    // Calls spread so old ones leave the window never reach min requests.
    let mut m = Machine::new(&cfg, start);
    for i in 0..30u64 {
        let changed = m.record(
            start + Duration::from_secs(2 * i),
            true,
            false,
            None,
            || true,
        );
        assert_eq!(changed, None, "call {i}");
    }
    // 40% failures over many calls: no trip.
    let mut m = Machine::new(&cfg, start);
    for i in 0..50 {
        assert_eq!(m.record(start, i % 5 >= 3, false, None, || true), None);
    }
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_breaker() {
    let mut cfg = config();
    cfg.consecutive_failures = 0;
    cfg.slow_call = Some(EffectiveSlowCall {
        duration: ms(500).into(),
        percent: 80.0,
    });
    let now = Instant::now();
    let mut m = Machine::new(&cfg, now);
    assert!(m.is_slow(ms(500)) && !m.is_slow(ms(499)));
    for _ in 0..7 {
        assert_eq!(m.record(now, false, true, None, || true), None);
    }
    assert_eq!(m.record(now, false, false, None, || true), None);
    assert_eq!(m.record(now, false, true, None, || true), None);
    // 8 slow of 10.
    assert_eq!(
        m.record(now, false, true, None, || true),
        Some(CircuitState::Open)
    );
}

#[tokio::test(start_paused = true)]
async fn a_vetoed_trip_stays_closed() {
    let now = Instant::now();
    let mut m = Machine::new(&config(), now);
    for _ in 0..5 {
        assert_eq!(m.record(now, true, false, None, || false), None);
    }
    assert_eq!(m.state(), CircuitState::Closed);
    assert_eq!(fail(&mut m, now), Some(CircuitState::Open));
}

#[test]
fn open_duration_jitter_and_cap() {
    let cfg = config();
    assert_eq!(open_duration(&cfg, 1, 0.0), ms(1000));
    assert_eq!(open_duration(&cfg, 1, 1.0), ms(900));
    assert_eq!(open_duration(&cfg, 3, 0.0), ms(4000));
    assert_eq!(open_duration(&cfg, 40, 0.0), ms(8000));
    assert_eq!(open_duration(&cfg, u32::MAX, 0.5), ms(7600));
}
