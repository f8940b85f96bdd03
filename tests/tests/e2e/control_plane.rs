//! Harness smoke test for `levee-control-plane`: it starts on port 0, answers
//! `/live` and `/ready`, survives `kill -9` with a restart on the same data
//! directory, and exits 0 on SIGTERM.

use std::time::Duration;

use levee_tests::harness::{ControlPlane, get_http1};

#[tokio::test]
async fn starts_restarts_after_kill_9_and_stops_on_sigterm() {
    let mut cp = ControlPlane::builder().start().await;
    let live = get_http1(cp.addrs.http, "localhost", "/live")
        .await
        .unwrap();
    assert_eq!(live.status, 200, "{live:?}");
    cp.metrics().await.expect("/metrics parses");

    cp.kill9().await;
    let mut again = cp.restart_on_same_data().await;
    assert!(
        cp.process.try_exit().is_some(),
        "the killed process is gone"
    );
    let status = again.shutdown(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}
