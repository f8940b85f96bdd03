//! The admin server: `/live`, `/ready`, `/config`, and `/metrics` counting
//! requests with the labels of DESIGN.md §5.

use std::time::Duration;

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, empty, eventually, get_http1, send_http1, yaml},
};

#[tokio::test]
async fn live_ready_and_config() {
    let proxy = Proxy::builder().start().await;
    for path in ["/live", "/ready"] {
        let r = proxy.admin_get(path).await.unwrap();
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    let config = proxy.config().await.unwrap();
    assert!(config.get("version").is_some(), "{config}");
    assert_eq!(proxy.admin_get("/nope").await.unwrap().status, 404);
}

#[tokio::test]
async fn metrics_count_requests_by_direction_service_route_code_and_outcome() {
    let up = FlakyUpstream::start("m-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::documents(&[
            yaml::endpoints("web", 80, &[up.addr()]),
            yaml::endpoints("empty", 80, &[]),
        ]))
        .app_port(up.addr().port())
        .start()
        .await;
    for _ in 0..3 {
        assert_eq!(
            get_http1(proxy.outbound(), "web:80", "/")
                .await
                .unwrap()
                .status,
            200
        );
    }
    for _ in 0..2 {
        let req = Request::get("/")
            .header("host", "web:80")
            .header("x-flaky-status", "503")
            .body(empty())
            .unwrap();
        assert_eq!(send_http1(proxy.outbound(), req).await.unwrap().status, 503);
    }
    assert_eq!(
        get_http1(proxy.outbound(), "empty:80", "/")
            .await
            .unwrap()
            .status,
        503
    );
    for _ in 0..4 {
        assert_eq!(
            get_http1(proxy.inbound(), "test-svc:4143", "/")
                .await
                .unwrap()
                .status,
            200
        );
    }

    let web = [("direction", "outbound"), ("service", "web.default:80")];
    // Metrics may be recorded as the response body ends: wait for the totals,
    // then check each series exactly.
    let m = eventually(
        Duration::from_secs(10),
        "all 10 requests counted",
        || async {
            let m = proxy.metrics().await.map_err(|e| e.to_string())?;
            match m.value("levee_requests_total", &[]) {
                10.0 => Ok(m),
                n => Err(format!("{n} counted:\n{}", m.text)),
            }
        },
    )
    .await;
    let ok = [web[0], web[1], ("code", "200"), ("outcome", "success")];
    assert_eq!(m.value("levee_requests_total", &ok), 3.0, "{}", m.text);
    let failed = [web[0], web[1], ("code", "503"), ("outcome", "failure")];
    assert_eq!(m.value("levee_requests_total", &failed), 2.0, "{}", m.text);
    let rejected = [
        ("service", "empty.default:80"),
        ("code", "503"),
        ("outcome", "no-endpoints"),
    ];
    assert_eq!(
        m.value("levee_requests_total", &rejected),
        1.0,
        "{}",
        m.text
    );
    let inbound = [
        ("direction", "inbound"),
        ("code", "200"),
        ("outcome", "success"),
    ];
    assert_eq!(m.value("levee_requests_total", &inbound), 4.0, "{}", m.text);
    for s in m.matching("levee_requests_total", &[]) {
        assert!(
            s.labels.contains_key("route") && !s.labels["route"].is_empty(),
            "every series has a route label: {s:?}"
        );
    }

    let count = "levee_request_duration_seconds_count";
    assert_eq!(m.value(count, &web), 5.0, "{}", m.text);
    assert_eq!(
        m.value(count, &[("direction", "inbound")]),
        4.0,
        "{}",
        m.text
    );
    let inf = [web[0], web[1], ("le", "+Inf")];
    assert_eq!(
        m.value("levee_request_duration_seconds_bucket", &inf),
        5.0,
        "{}",
        m.text
    );
    assert!(
        m.value("levee_request_duration_seconds_sum", &web) > 0.0,
        "{}",
        m.text
    );
}
