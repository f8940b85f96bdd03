use crate::errors::ErrorKind;
use crate::resilience::breaker::machine::tests::config;

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const FAST: Duration = Duration::from_millis(1);

/// One attempt on `a` as the balancer makes it: let in, then its outcome.
fn attempt(health: &EndpointHealth, a: SocketAddr, outcome: Outcome) {
    let pass = health.begin(a).expect("the endpoint lets the attempt in");
    health.record(a, pass, &outcome, FAST);
}

fn fail(health: &EndpointHealth, a: SocketAddr, n: usize) {
    for _ in 0..n {
        attempt(health, a, Outcome::HttpStatus(503));
    }
}

fn three() -> (EndpointHealth, Metrics, [SocketAddr; 3]) {
    let metrics = Metrics::new();
    let health = EndpointHealth::new("payments.shop:8080", Some(&config()), &metrics);
    let addrs = [addr(1), addr(2), addr(3)];
    health.set_endpoints(&addrs);
    (health, metrics, addrs)
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_ejected_and_comes_back_after_probes() {
    let (health, metrics, [a, b, _]) = three();
    fail(&health, a, 2);
    attempt(&health, a, Outcome::Cancelled); // hang-ups do not count or reset
    assert!(health.is_available(a));
    fail(&health, a, 1);
    assert!(!health.is_available(a), "3 consecutive failures eject");
    assert!(health.is_available(b));
    assert_eq!(health.ejected(), 1);
    let text = metrics.encode();
    assert!(
        text.contains(r#"levee_endpoints{service="payments.shop:8080",state="ejected"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"levee_circuit_state{service="payments.shop:8080",endpoint="127.0.0.1:1"} 1"#
        ),
        "{text}"
    );

    // Open time over: offered again as HALF_OPEN; both probes succeed → back.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(health.is_available(a));
    attempt(&health, a, Outcome::Success);
    assert_eq!(health.ejected(), 1, "one probe is not enough");
    attempt(&health, a, Outcome::Success);
    assert_eq!(health.ejected(), 0);
    assert!(health.is_available(a));
    let text = metrics.encode();
    assert!(
        text.contains(r#"levee_endpoints{service="payments.shop:8080",state="ready"} 3"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_ejects_for_longer() {
    let (health, _metrics, [a, ..]) = three();
    fail(&health, a, 3);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(health.is_available(a));
    attempt(
        &health,
        a,
        Outcome::Error(ErrorKind::UpstreamConnect(
            crate::errors::ConnectCause::Refused,
        )),
    );
    assert!(!health.is_available(a));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!health.is_available(a), "second ejection lasts ≥ 1.8s");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(health.is_available(a));
}

#[tokio::test(start_paused = true)]
async fn never_more_than_max_ejected_percent() {
    let (health, _metrics, [a, b, c]) = three();
    // 50% of 3 endpoints rounds down to 1.
    fail(&health, a, 3);
    fail(&health, b, 10);
    fail(&health, c, 10);
    assert!(!health.is_available(a));
    assert!(health.is_available(b) && health.is_available(c));
    assert_eq!(health.ejected(), 1);

    // A lone endpoint is never ejected at 50%.
    let metrics = Metrics::new();
    let lone = EndpointHealth::new("s", Some(&config()), &metrics);
    lone.set_endpoints(&[a]);
    fail(&lone, a, 10);
    assert!(lone.is_available(a));

    // Four endpoints: two may go.
    let four = EndpointHealth::new("s", Some(&config()), &metrics);
    let addrs = [addr(1), addr(2), addr(3), addr(4)];
    four.set_endpoints(&addrs);
    for &x in &addrs {
        fail(&four, x, 3);
    }
    let available = addrs.iter().filter(|&&x| four.is_available(x)).count();
    assert_eq!(available, 2);
}

#[tokio::test(start_paused = true)]
async fn state_survives_unchanged_config_and_endpoint_updates() {
    let (health, _metrics, [a, b, c]) = three();
    fail(&health, a, 3);
    health.update_config(Some(&config()));
    assert!(!health.is_available(a), "same config keeps the ejection");
    health.set_endpoints(&[a, b, c, addr(4)]);
    assert!(
        !health.is_available(a),
        "endpoint update keeps the ejection"
    );
    assert_eq!(health.ejected(), 1);
    health.set_endpoints(&[b, c]);
    assert_eq!(health.ejected(), 0, "a removed endpoint is forgotten");

    fail(&health, b, 3);
    assert!(!health.is_available(b));
    let mut changed = config();
    changed.consecutive_failures = 7;
    health.update_config(Some(&changed));
    assert!(health.is_available(b), "a new config starts over");
    health.update_config(None);
    fail(&health, b, 20);
    assert!(health.is_available(b), "no breaker, no ejection");
    assert_eq!(health.ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn endpoint_health_owns_the_endpoint_gauges_while_a_breaker_is_configured() {
    let (health, metrics, [a, b, c]) = three();
    let series = |state: &str, n: usize| {
        format!(r#"levee_endpoints{{service="payments.shop:8080",state="{state}"}} {n}"#)
    };
    fail(&health, a, 3);
    // A snapshot install or a DNS refresh writes discovery's count: ignored.
    metrics.set_endpoints("payments.shop:8080", "ready", 3);
    let text = metrics.encode();
    assert!(text.contains(&series("ready", 2)), "{text}");
    assert!(text.contains(&series("ejected", 1)), "{text}");
    // An unchanged config keeps the ejection and the numbers.
    health.update_config(Some(&config()));
    assert!(metrics.encode().contains(&series("ready", 2)));

    // Breaker removed: discovery owns the series again.
    health.update_config(None);
    let text = metrics.encode();
    assert!(text.contains(&series("ready", 3)), "{text}");
    assert!(!text.contains("state=\"ejected\""), "{text}");
    metrics.set_endpoints("payments.shop:8080", "ready", 5);
    assert!(metrics.encode().contains(&series("ready", 5)));
    health.set_endpoints(&[a, b, c, addr(4)]);
    let text = metrics.encode();
    assert!(
        text.contains(&series("ready", 5)),
        "without a breaker health leaves the gauge alone: {text}"
    );
}

/// Ejects `a` and waits out its open time: it is HALF_OPEN on the next look.
async fn half_open(health: &EndpointHealth, a: SocketAddr) {
    fail(health, a, 3);
    assert!(!health.is_available(a));
    tokio::time::advance(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_half_open_probes_at_once() {
    let (health, _metrics, [a, ..]) = three();
    half_open(&health, a).await;
    assert!(health.is_available(a), "offered again");
    assert!(health.is_available(a), "asking has no side effect");
    let first = health.begin(a).expect("probe 1");
    let second = health.begin(a).expect("probe 2");
    assert!(first.probe.is_some() && second.probe.is_some());
    assert_eq!(health.begin(a), None, "a third concurrent probe is refused");
    assert!(!health.is_available(a), "no slot left: not a candidate");

    health.record(a, first, &Outcome::Success, FAST);
    assert_eq!(
        health.begin(a),
        None,
        "a finished probe does not free a slot"
    );
    assert_eq!(health.ejected(), 1);
    health.record(a, second, &Outcome::Success, FAST);
    assert_eq!(health.ejected(), 0, "both probes succeeded: closed");
    assert_eq!(
        health.begin(a),
        Some(Pass::default()),
        "ordinary calls again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_caller_hung_up_gives_its_slot_back() {
    let (health, _metrics, [a, ..]) = three();
    half_open(&health, a).await;
    let first = health.begin(a).expect("probe 1");
    let _second = health.begin(a).expect("probe 2");
    assert_eq!(health.begin(a), None);
    health.record(a, first, &Outcome::Cancelled, FAST);
    assert!(health.is_available(a));
    assert!(health.begin(a).is_some(), "the slot is back");
}

#[tokio::test(start_paused = true)]
async fn only_probes_decide_a_half_open_endpoint() {
    let (health, _metrics, [a, ..]) = three();
    // Admitted while CLOSED, finishing after the endpoint went HALF_OPEN.
    let late = health.begin(a).expect("closed");
    half_open(&health, a).await;
    assert!(health.is_available(a));
    health.record(a, late, &Outcome::HttpStatus(503), FAST);
    assert!(
        health.is_available(a),
        "a late ordinary call does not reopen it"
    );
    let probe = health.begin(a).expect("probe");
    health.record(a, probe, &Outcome::HttpStatus(503), FAST);
    assert!(!health.is_available(a), "a failed probe reopens it");
}

#[tokio::test(start_paused = true)]
async fn the_balancer_sends_no_more_than_the_probes_to_a_half_open_endpoint() {
    use crate::resilience::balance::Balancer;

    let metrics = Metrics::new();
    let health = Arc::new(EndpointHealth::new(
        "payments.shop:8080",
        Some(&config()),
        &metrics,
    ));
    let balancer = Balancer::new("payments.shop:8080".into(), health.clone());
    let addrs: Arc<[SocketAddr]> = Arc::new([addr(1), addr(2), addr(3)]);
    balancer.set_endpoints(&addrs);
    half_open(&health, addr(1)).await;
    // 300 attempts in flight at once (none finishes): at most 2 on the probe.
    let mut passes = Vec::new();
    for _ in 0..300 {
        let (chosen, at, pass) = balancer.pick_attempt(None).expect("picked");
        passes.push((chosen.at(at), pass));
    }
    let probes: Vec<_> = passes.iter().filter(|(e, _)| e.addr == addr(1)).collect();
    assert_eq!(probes.len(), 2, "exactly halfOpenProbes probes");
    assert!(probes.iter().all(|(_, pass)| pass.probe.is_some()));
    // Every caller hangs up: the probe slots come back.
    for &(e, pass) in &passes {
        health.record(e, pass, &Outcome::Cancelled, FAST);
    }
    assert!(health.begin(addr(1)).is_some_and(|p| p.probe.is_some()));
}

#[tokio::test(start_paused = true)]
async fn a_breaker_added_by_a_later_policy_covers_the_endpoints_already_known() {
    // Traffic first flows without a breaker (no policy yet)...
    let metrics = Metrics::new();
    let health = EndpointHealth::new("payments.shop:8080", None, &metrics);
    let addrs = [addr(1), addr(2), addr(3)];
    health.set_endpoints(&addrs);
    // ...then a policy with a breaker arrives; the endpoint set is unchanged,
    // so the balancer does not call set_endpoints again.
    health.update_config(Some(&config()));
    fail(&health, addrs[0], 3);
    assert!(
        !health.is_available(addrs[0]),
        "ejected under the new breaker"
    );
    assert_eq!(health.ejected(), 1);
    let text = metrics.encode();
    assert!(
        text.contains(r#"levee_endpoints{service="payments.shop:8080",state="ready"} 2"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_is_found_by_position_and_by_address_when_the_position_is_stale() {
    use crate::resilience::balance::EndpointRef;

    let (health, _metrics, [a, b, c]) = three();
    let at = |at, addr| EndpointRef { at, addr };
    // The balancer's positions: a 0, b 1, c 2.
    for _ in 0..3 {
        let pass = health.begin(at(0, a)).expect("let in");
        health.record(at(0, a), pass, &Outcome::HttpStatus(503), FAST);
    }
    assert!(!health.is_available(at(0, a)), "ejected at its position");
    // A position that holds another endpoint (a set being replaced): the
    // address decides, never the breaker that happens to be there.
    assert!(!health.is_available(at(2, a)));
    assert!(!health.is_available(at(usize::MAX, a)));
    assert!(health.is_available(at(0, b)), "b is not a's breaker");
    assert!(health.is_available(at(1, b)) && health.is_available(at(2, c)));
    // Duplicates count once, at their first position, as in the balancer's set.
    health.set_endpoints(&[c, c, a, b]);
    assert!(!health.is_available(at(1, a)), "a kept its state, now at 1");
    assert!(health.is_available(at(2, b)) && health.is_available(at(0, c)));
    assert_eq!(health.ejected(), 1);
}
