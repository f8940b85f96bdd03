use std::time::Duration;

use super::*;

fn line_value(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(str::to_owned)
}

#[test]
fn record_counts_requests_and_durations_with_contract_labels() {
    let metrics = Metrics::new();
    let route = metrics.requests(Direction::Outbound, "payments.shop:8080", "create-payment");
    route.record("200", outcome::SUCCESS, Duration::from_millis(3));
    route.record("200", outcome::SUCCESS, Duration::from_millis(40));
    route.record("503", outcome::FAILURE, Duration::from_secs(2));

    let text = metrics.encode();
    let labels = r#"direction="outbound",service="payments.shop:8080",route="create-payment""#;
    assert_eq!(
        line_value(
            &text,
            &format!(r#"levee_requests_total{{{labels},code="200",outcome="success"}}"#)
        )
        .as_deref(),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            &format!(r#"levee_requests_total{{{labels},code="503",outcome="failure"}}"#)
        )
        .as_deref(),
        Some("1"),
    );
    assert_eq!(
        line_value(
            &text,
            &format!("levee_request_duration_seconds_count{{{labels}}}")
        )
        .as_deref(),
        Some("3")
    );
    // 3 ms falls in the 5 ms bucket, not in the 2.5 ms one.
    assert_eq!(
        line_value(
            &text,
            &format!(r#"levee_request_duration_seconds_bucket{{le="0.0025",{labels}}}"#)
        )
        .as_deref(),
        Some("0"),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            &format!(r#"levee_request_duration_seconds_bucket{{le="0.005",{labels}}}"#)
        )
        .as_deref(),
        Some("1"),
    );
    assert!(
        text.contains("levee_request_duration_seconds_bucket{le=\"0.0005\","),
        "{text}"
    );
    assert!(
        text.contains("levee_request_duration_seconds_bucket{le=\"30.0\","),
        "{text}"
    );
}

#[test]
fn handles_of_one_route_share_counters_and_directions_stay_apart() {
    let metrics = Metrics::new();
    metrics
        .requests(Direction::Inbound, "app", "default")
        .record("200", outcome::SUCCESS, Duration::ZERO);
    metrics
        .requests(Direction::Inbound, "app", "default")
        .record("200", outcome::SUCCESS, Duration::ZERO);
    metrics
        .requests(Direction::Outbound, "app", "default")
        .record("200", outcome::SUCCESS, Duration::ZERO);

    let text = metrics.encode();
    let series = |direction: &str| {
        format!(
            r#"levee_requests_total{{direction="{direction}",service="app",route="default",code="200",outcome="success"}}"#
        )
    };
    assert_eq!(
        line_value(&text, &series("inbound")).as_deref(),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        line_value(&text, &series("outbound")).as_deref(),
        Some("1"),
        "{text}"
    );
}

#[test]
fn codes_beyond_the_per_route_cache_are_still_counted() {
    let metrics = Metrics::new();
    let route = metrics.requests(Direction::Outbound, "svc", "r");
    for code in 100..200 {
        route.record(&code.to_string(), outcome::SUCCESS, Duration::ZERO);
    }
    route.record("199", outcome::SUCCESS, Duration::ZERO);
    let text = metrics.encode();
    let series = |code: u32| {
        format!(
            r#"levee_requests_total{{direction="outbound",service="svc",route="r",code="{code}",outcome="success"}}"#
        )
    };
    assert_eq!(line_value(&text, &series(100)).as_deref(), Some("1"));
    assert_eq!(line_value(&text, &series(199)).as_deref(), Some("2"));
}

#[test]
fn control_side_series_exist_before_first_use() {
    let text = Metrics::new().encode();
    assert_eq!(
        line_value(&text, "levee_policy_version").as_deref(),
        Some("0")
    );
    assert_eq!(
        line_value(&text, "levee_control_plane_connected").as_deref(),
        Some("0")
    );
    assert_eq!(
        line_value(&text, r#"levee_policy_updates_total{result="ack"}"#).as_deref(),
        Some("0")
    );
    assert_eq!(
        line_value(&text, r#"levee_policy_updates_total{result="nack"}"#).as_deref(),
        Some("0")
    );
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn every_family_of_the_catalog_is_encoded_once_used() {
    let metrics = Metrics::new();
    metrics
        .requests(Direction::Outbound, "s", "r")
        .record("200", outcome::SUCCESS, Duration::ZERO);
    metrics.retries("s", "r", "5xx");
    metrics.retry_budget_exhausted("s", "r");
    metrics.set_circuit_state("s", "", CircuitState::Closed);
    metrics.circuit_transitions("s", "", CircuitState::Open);
    metrics.rejected(Direction::Outbound, "s", "overloaded");
    metrics.timeouts("s", "r", "request");
    metrics.set_endpoints("s", "ready", 1);
    let text = metrics.encode();
    for (name, kind) in [
        ("levee_requests", "counter"),
        ("levee_request_duration_seconds", "histogram"),
        ("levee_retries", "counter"),
        ("levee_retry_budget_exhausted", "counter"),
        ("levee_circuit_state", "gauge"),
        ("levee_circuit_transitions", "counter"),
        ("levee_rejected", "counter"),
        ("levee_timeouts", "counter"),
        ("levee_endpoints", "gauge"),
        ("levee_policy_version", "gauge"),
        ("levee_policy_updates", "counter"),
        ("levee_control_plane_connected", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} missing:\n{text}"
        );
    }
    assert_eq!(
        line_value(&text, "levee_policy_version").as_deref(),
        Some("0")
    );
    assert_eq!(
        line_value(&text, "levee_control_plane_connected").as_deref(),
        Some("0")
    );
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn control_side_gauges_and_counters() {
    let metrics = Metrics::new();
    metrics.set_policy_version(7);
    metrics.policy_update(true);
    metrics.policy_update(true);
    metrics.policy_update(false);
    metrics.set_endpoints("payments.shop:8080", "ready", 3);
    metrics.set_endpoints("gone.shop:80", "ready", 1);
    metrics.remove_endpoints("gone.shop:80");
    metrics.set_control_plane_connected(true);

    let text = metrics.encode();
    assert_eq!(
        line_value(&text, "levee_policy_version").as_deref(),
        Some("7")
    );
    assert_eq!(
        line_value(&text, r#"levee_policy_updates_total{result="ack"}"#).as_deref(),
        Some("2")
    );
    assert_eq!(
        line_value(&text, r#"levee_policy_updates_total{result="nack"}"#).as_deref(),
        Some("1")
    );
    assert_eq!(
        (metrics.policy_updates(true), metrics.policy_updates(false)),
        (2, 1)
    );
    assert_eq!(
        line_value(
            &text,
            r#"levee_endpoints{service="payments.shop:8080",state="ready"}"#
        )
        .as_deref(),
        Some("3")
    );
    assert!(!text.contains("gone.shop"), "{text}");
    assert_eq!(
        line_value(&text, "levee_control_plane_connected").as_deref(),
        Some("1")
    );
}

#[test]
fn resilience_families_take_their_labels() {
    let metrics = Metrics::new();
    metrics
        .retries("payments.shop:8080", "default", "5xx")
        .inc();
    metrics
        .retry_budget_exhausted("payments.shop:8080", "default")
        .inc();
    metrics.set_circuit_state("payments.shop:8080", "", CircuitState::HalfOpen);
    metrics
        .circuit_transitions("payments.shop:8080", "127.0.0.1:9001", CircuitState::Open)
        .inc();
    metrics
        .rejected(Direction::Inbound, "app", "rate-limited")
        .inc();
    metrics
        .timeouts("payments.shop:8080", "default", "per-try")
        .inc();

    let text = metrics.encode();
    for series in [
        r#"levee_retries_total{service="payments.shop:8080",route="default",reason="5xx"} 1"#,
        r#"levee_retry_budget_exhausted_total{service="payments.shop:8080",route="default"} 1"#,
        r#"levee_circuit_state{service="payments.shop:8080",endpoint=""} 2"#,
        r#"levee_circuit_transitions_total{service="payments.shop:8080",endpoint="127.0.0.1:9001",to="open"} 1"#,
        r#"levee_rejected_total{direction="inbound",service="app",reason="rate-limited"} 1"#,
        r#"levee_timeouts_total{service="payments.shop:8080",route="default",kind="per-try"} 1"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
}

#[test]
fn forgetting_a_destination_removes_every_series_it_created() {
    let metrics = Metrics::new();
    let kept = "payments.shop:8080";
    let gone = "127.1.0.1:1";
    for service in [kept, gone] {
        let route = metrics.requests(Direction::Outbound, service, "default");
        route.record("200", outcome::SUCCESS, Duration::from_millis(1));
        // Codes beyond the per-route fast list go too.
        for code in 300..340 {
            route.record(
                &code.to_string(),
                outcome::SUCCESS,
                Duration::from_millis(1),
            );
        }
        metrics.retries(service, "default", "reset").inc();
        metrics.retry_budget_exhausted(service, "default").inc();
        metrics.set_circuit_state(service, "", CircuitState::Open);
        metrics
            .circuit_transitions(service, "", CircuitState::Open)
            .inc();
        metrics
            .rejected(Direction::Outbound, service, "overloaded")
            .inc();
        metrics.timeouts(service, "default", "request").inc();
        metrics.set_endpoint_health(service, 2, 1);
    }
    assert_eq!(metrics.inner.series.services(), 2);
    metrics.forget_destination(gone, None);
    let text = metrics.encode();
    assert!(!text.contains(gone), "{text}");
    let kept_lines = text.lines().filter(|l| l.contains(kept)).count();
    // 41 codes + 19 histogram lines (16 buckets, +Inf, sum, count) + 6
    // resilience series + 2 endpoint states.
    assert_eq!(kept_lines, 41 + 19 + 6 + 2, "{text}");
    assert_eq!(metrics.inner.series.services(), 1);
    // Static endpoints: `ready` goes back to the listed count.
    metrics.forget_destination(kept, Some(3));
    let text = metrics.encode();
    assert_eq!(
        line_value(
            &text,
            r#"levee_endpoints{service="payments.shop:8080",state="ready"}"#
        )
        .as_deref(),
        Some("3"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(kept)).count(),
        1,
        "{text}"
    );
}

#[test]
fn eviction_counters_exist_for_every_table_from_the_start() {
    let text = Metrics::new().encode();
    for table in ["destinations", "dns", "clients"] {
        let series = format!(r#"levee_state_evictions_total{{table="{table}"}}"#);
        assert_eq!(line_value(&text, &series).as_deref(), Some("0"), "{text}");
    }
}
