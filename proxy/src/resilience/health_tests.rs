use crate::errors::ErrorKind;
use crate::resilience::breaker::machine::tests::config;

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const FAST: Duration = Duration::from_millis(1);

fn fail(health: &EndpointHealth, a: SocketAddr, n: usize) {
    for _ in 0..n {
        health.record(a, &Outcome::HttpStatus(503), FAST);
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
    health.record(a, &Outcome::Cancelled, FAST); // hang-ups do not count or reset
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
    health.record(a, &Outcome::Success, FAST);
    assert_eq!(health.ejected(), 1, "one probe is not enough");
    health.record(a, &Outcome::Success, FAST);
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
    health.record(a, &Outcome::Error(ErrorKind::UpstreamConnect), FAST);
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
async fn an_unchanged_config_republishes_the_endpoint_gauges() {
    let (health, metrics, [a, ..]) = three();
    fail(&health, a, 3);
    // A snapshot install writes the static endpoint count over the gauge.
    metrics.set_endpoints("payments.shop:8080", "ready", 3);
    health.update_config(Some(&config()));
    let text = metrics.encode();
    assert!(
        text.contains(r#"levee_endpoints{service="payments.shop:8080",state="ready"} 2"#),
        "{text}"
    );
}
