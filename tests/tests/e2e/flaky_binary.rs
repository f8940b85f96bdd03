//! The `levee-flaky` binary: flags set its id and default faults, and it
//! reports its address through `--addr-file`.

use std::time::Duration;

use levee_tests::harness::{Process, eventually, get_http1};
use tokio::process::Command;

#[tokio::test]
async fn binary_serves_with_its_default_faults() {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_levee-flaky"));
    cmd.args([
        "--addr",
        "127.0.0.1:0",
        "--id",
        "bin-1",
        "--status",
        "503",
        "--fail-rate",
        "1",
    ])
    .arg("--addr-file")
    .arg(&addr_file);
    let mut process = Process::spawn("levee-flaky", cmd, &dir.path().join("flaky.log")).unwrap();
    let addr: std::net::SocketAddr = eventually(Duration::from_secs(10), "the addr file", || {
        let read = std::fs::read(&addr_file);
        async move {
            let json: serde_json::Value = serde_json::from_slice(&read.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            json["addr"]
                .as_str()
                .ok_or("no addr")?
                .parse()
                .map_err(|e| format!("{e}"))
        }
    })
    .await;
    let r = get_http1(addr, "x", "/").await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-flaky-instance"), "bin-1");
    let stats = get_http1(addr, "x", "/__flaky/stats")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["injected_failures"], 1);
    process.terminate().unwrap();
    let status = process.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert_eq!(status.code(), Some(0), "stops cleanly on SIGTERM: {status}");
}
