//! Transparent inbound, per port: a server pod serving two ports (8080 and
//! 9090, a `levee-flaky` app on each), its sidecar with one inbound
//! policy per port (a bulkhead of one call each). A plain client pod calls
//! the pod's IP on both ports: with 9090's one slot held by a slow call,
//! another call to 9090 is refused (503 overloaded, counted under
//! `web:9090`) while a call to 8080 passes (its own bulkhead, labelled
//! `web`).

use std::time::Duration;

use levee_tests::harness::{curl_command, eventually, pods::TwoPods, yaml};

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn each_port_of_the_pod_gets_its_own_inbound_policy() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    let _http = server
        .flaky_app(8080, &["--id", "http"], &pods.path("http.log"))
        .await;
    let _grpc = server
        .flaky_app(9090, &["--id", "grpc"], &pods.path("grpc.log"))
        .await;
    let one = "  inbound:\n    concurrency: {maxInFlight: 1, maxQueued: 0}\n";
    let _sidecar = pods
        .server_sidecar(
            &[],
            &[
                yaml::named(yaml::policy("web", 8080, one), "web-8080"),
                yaml::named(yaml::policy("web", 9090, one), "web-9090"),
            ],
            &["--service", "web", "--app-port", "8080"],
        )
        .await;

    // A slow call holds 9090's only slot.
    let slow_url = format!("http://{}/slow", pods.server_addr(9090));
    let slow = {
        let curl = client.command("curl");
        tokio::spawn(
            async move { curl_command(curl, &["-H", "x-flaky-delay: 4s", &slow_url]).await },
        )
    };
    eventually(DEADLINE, "the slow call reached the app", || async {
        match server.flaky_requests(9090).await {
            1 => Ok(()),
            n => Err(format!("{n} requests")),
        }
    })
    .await;

    let refused = client
        .curl(&[&format!("http://{}/again", pods.server_addr(9090))])
        .await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("x-levee-error"), Some("overloaded"));
    let other_port = client
        .curl(&[&format!("http://{}/other", pods.server_addr(8080))])
        .await;
    assert_eq!(
        other_port.status, 200,
        "8080 has a slot of its own: {other_port:?}"
    );
    let slow = slow.await.expect("join").expect("curl runs");
    assert_eq!(slow.status, 200, "{slow:?}");

    let m = server.admin_metrics().await;
    let overloaded = |service| {
        m.sum(
            "levee_rejected_total",
            &[
                ("direction", "inbound"),
                ("service", service),
                ("reason", "overloaded"),
            ],
        )
        .unwrap_or_default()
    };
    assert_eq!(overloaded("web:9090"), 1.0, "{}", m.text);
    assert_eq!(overloaded("web"), 0.0, "{}", m.text);
    let requests = |service| {
        m.sum(
            "levee_requests_total",
            &[("direction", "inbound"), ("service", service)],
        )
        .unwrap_or_default()
    };
    assert_eq!(requests("web:9090"), 2.0, "{}", m.text);
    assert_eq!(requests("web"), 1.0, "{}", m.text);
}
