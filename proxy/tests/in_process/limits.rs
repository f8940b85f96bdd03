//! HTTP/2 idle connections and `--addr-file`, in-process. The other
//! protective limits (header read timeout, 431, `--max-connections`) and
//! graceful shutdown are tested on the real binary in `tests/tests/e2e`
//! (`limits`, `shutdown`).

use std::time::{Duration, Instant};

use crate::support::*;
use http::{Request, StatusCode};

#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let upstream = upstream::echo().await;
    let proxy = start_proxy(
        &endpoints("echo", 8080, &[upstream]),
        &["--idle-timeout", "200ms"],
    )
    .await;
    let mut client = h2(proxy.addrs.outbound).await;
    let req = Request::get("http://echo:8080/")
        .body(full(""))
        .expect("request");
    assert_eq!(
        client.send_request(req).await.expect("response").status(),
        StatusCode::OK
    );
    let deadline = Instant::now() + DEADLINE;
    while !client.is_closed() {
        assert!(Instant::now() < deadline, "idle connection still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn addr_file_holds_the_bound_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("addrs.json");
    let path_text = path.to_str().expect("utf-8").to_owned();
    let proxy = start_proxy("", &["--addr-file", &path_text]).await;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("addr file")).expect("json");
    assert_eq!(json["outbound"], proxy.addrs.outbound.to_string());
    assert_eq!(json["inbound"], proxy.addrs.inbound.to_string());
    assert_eq!(json["admin"], proxy.addrs.admin.to_string());
    assert_ne!(proxy.addrs.outbound.port(), 0);
    proxy.stop().await.expect("clean stop");
}
