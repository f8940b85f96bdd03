//! A policy change under load: the new config takes effect while requests
//! in flight finish normally.

mod resilience_upstream;
mod support;

use std::time::Duration;

use http::{Request, StatusCode};
use levee_proxy::ProxyConfig;
use resilience_upstream::{Behaviour, metric, policy, start};
use support::{DEADLINE, admin_get, full, h1};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BEFORE: &str =
    "    timeouts: {request: 2s}\n    retry: {maxRetries: 2, on: [gateway-error]}\n";
const AFTER: &str = "    timeouts: {request: 3s}\n    retry: {maxRetries: 2, on: [gateway-error]}\n    routes:\n      - name: short\n        match: {pathPrefix: /short}\n        timeouts: {request: 10ms}\n";

async fn get(addr: std::net::SocketAddr, path: &str) -> StatusCode {
    let mut client = h1(addr).await;
    let req = Request::get(path)
        .header("host", "svc:8080")
        .body(full(""))
        .expect("request");
    client.send_request(req).await.expect("response").status()
}

#[tokio::test]
async fn a_policy_change_mid_load_fails_no_request_in_flight() {
    let upstream = start(Behaviour {
        delay: Duration::from_millis(100),
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy("svc", BEFORE, &[upstream.addr])).expect("write");
    let path = file.to_str().expect("utf-8").to_owned();
    let config = ProxyConfig::from_args([
        "--outbound-addr",
        "127.0.0.1:0",
        "--inbound-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--namespace",
        "test",
        "--policy-file",
        &path,
    ])
    .expect("flags");
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(levee_proxy::run_with(config, shutdown.clone(), Some(tx)));
    let addrs = rx.await.expect("started");

    // Before: `/short` has the service's 2 s timeout and succeeds.
    assert_eq!(get(addrs.outbound, "/short").await, StatusCode::OK);

    let stop = CancellationToken::new();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.is_cancelled() {
                    statuses.push(get(addrs.outbound, "/").await);
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&file, policy("svc", AFTER, &[upstream.addr])).expect("rewrite");
    let deadline = Instant::now() + DEADLINE;
    while metric(
        &admin_get(addrs.admin, "/metrics").await,
        "levee_policy_version",
    ) < 2.0
    {
        assert!(Instant::now() < deadline, "the new policy was never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let requests that started under the old policy finish under the new one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let mut total = 0;
    for worker in load {
        let statuses = worker.await.expect("worker");
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        total += statuses.len();
    }
    assert!(total >= 8, "{total} requests");
    // After: the new route's 10 ms timeout applies.
    assert_eq!(
        get(addrs.outbound, "/short").await,
        StatusCode::GATEWAY_TIMEOUT
    );

    shutdown.cancel();
    task.await.expect("join").expect("proxy ran");
}
