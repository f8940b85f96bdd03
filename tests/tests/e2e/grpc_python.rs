//! A third-party gRPC client through the proxy: Python `grpcio` (see
//! `tests/py/flaky_grpc_client.py`) calls every Flaky method via the
//! outbound listener. The harness provides that Python: a virtual
//! environment made on first use (see `harness::python`).

use std::time::Duration;

use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, python, yaml},
};
use tokio::process::Command;

#[tokio::test]
async fn python_grpcio_client_through_the_proxy() {
    let up = FlakyUpstream::start("py-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .start()
        .await;
    let dir = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new(python::python().await);
    cmd.arg(format!("{dir}/py/flaky_grpc_client.py"))
        .args(["--target", &proxy.outbound().to_string()])
        .args(["--authority", "web:80"])
        .args(["--proto-root", &format!("{dir}/proto")])
        .kill_on_drop(true);
    for var in [
        "http_proxy",
        "https_proxy",
        "grpc_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(var).env_remove(var.to_uppercase());
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the Python client finishes within 60 s")
        .expect("the environment's python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed: {}\n{stderr}",
        out.status
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(
        got["unary"],
        serde_json::json!({"message": "hello", "instance": "py-1", "instance_header": "py-1"})
    );
    assert_eq!(
        got["server_stream"],
        serde_json::json!(["s 0", "s 1", "s 2"])
    );
    assert_eq!(
        got["client_stream"],
        serde_json::json!({"message": "a,b,c", "count": 3})
    );
    assert_eq!(
        got["bidi_stream"],
        serde_json::json!(["bidi 0", "bidi 1", "bidi 2", "bidi 3"])
    );
    assert_eq!(
        got["injected_error"],
        serde_json::json!({"code": "UNAVAILABLE", "details": "flaky: injected"})
    );
    assert_eq!(
        got["stream_error"],
        serde_json::json!({
            "received": ["f 0", "f 1"],
            "error": {"code": "FAILED_PRECONDITION", "details": "flaky: stream failed"}
        })
    );
    assert_eq!(up.stats().grpc_requests, 6);
}
