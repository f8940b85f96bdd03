//! SIGHUP to a proxy in control-plane mode: there is no policy file to
//! reload, and the signal's default action would end the process. The proxy
//! logs it, stays up, and keeps serving.

use std::time::Duration;

use levee_tests::flaky::FlakyUpstream;
use levee_tests::harness::mesh::{CONVERGE, PAYMENTS_PORT, mesh_proxy, wait_metric};
use levee_tests::harness::{ControlPlane, empty, eventually, send_http1};

/// `GET /` to the proxy's inbound listener (the local app behind it).
async fn inbound_status(proxy: &levee_tests::harness::Proxy) -> Result<http::StatusCode, String> {
    let req = http::Request::get("/")
        .header(http::header::HOST, "payments:8080")
        .body(empty())
        .map_err(|e| e.to_string())?;
    send_http1(proxy.inbound(), req)
        .await
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn sighup_in_control_plane_mode_is_survived() {
    let cp = ControlPlane::builder().start().await;
    let app = FlakyUpstream::start("a").await.expect("flaky upstream");
    let mut proxy = mesh_proxy(&cp, "payments", app.addr().port(), PAYMENTS_PORT)
        .start()
        .await;
    wait_metric(&proxy, "levee_control_plane_connected", &[], 1.0).await;
    assert_eq!(inbound_status(&proxy).await, Ok(http::StatusCode::OK));

    for sent in 1..=2 {
        proxy.process.hangup().expect("kill -HUP");
        // The handler logs each SIGHUP it takes; a process without one dies.
        eventually(CONVERGE, "the SIGHUP to be handled", || {
            let mut exited = proxy.process.try_exit();
            let log = proxy.process.output();
            async move {
                if let Some(status) = exited.take() {
                    panic!("the proxy exited on SIGHUP: {status}\n{log}");
                }
                let handled = log.matches("SIGHUP received").count();
                if handled >= sent {
                    Ok(())
                } else {
                    Err(format!("{handled} SIGHUP(s) logged, {sent} sent"))
                }
            }
        })
        .await;
    }
    assert_eq!(proxy.process.try_exit(), None, "{}", proxy.process.output());
    assert_eq!(inbound_status(&proxy).await, Ok(http::StatusCode::OK));
    let config = proxy.config().await.expect("/config");
    assert!(
        config["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("control-plane:")),
        "{config}"
    );
    let status = proxy.shutdown(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}
