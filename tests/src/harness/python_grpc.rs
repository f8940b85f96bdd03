//! The third-party gRPC peers: Python grpcio's client
//! (`tests/py/flaky_grpc_client.py`) and server
//! (`tests/py/flaky_grpc_server.py`), which share the stub generation in
//! `tests/py/flaky_stubs.py`. This module owns how a test starts them and
//! what their answers must be; [`super::python`] owns the Python they run
//! in.
//!
//! Each function takes the command of the environment's `python3` the test
//! built (`Command::new(python().await)` on the host, or
//! [`super::netns::Netns::command`] inside a namespace), so one start-up
//! serves both.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde_json::{Value, json};
use tokio::process::Command;

use super::Process;

/// Environment variables grpcio reads as a proxy to dial through; the peers
/// must dial the address they are given.
const PROXY_VARS: [&str; 5] = [
    "http_proxy",
    "https_proxy",
    "grpc_proxy",
    "all_proxy",
    "no_proxy",
];

/// `tests/py/<script>` with its `--proto-root`, proxies variables removed.
fn script(mut cmd: Command, script: &str) -> Command {
    let dir = env!("CARGO_MANIFEST_DIR");
    for var in PROXY_VARS {
        cmd.env_remove(var).env_remove(var.to_uppercase());
    }
    cmd.arg(format!("{dir}/py/{script}"))
        .args(["--proto-root", &format!("{dir}/proto")])
        .kill_on_drop(true);
    cmd
}

/// Runs the client with `python`: it calls every Flaky method at `target`
/// with `:authority` `authority`; returns its report (one JSON object).
/// Panics with the client's output when it fails or outlives `deadline`.
pub async fn call_every_method(
    python: Command,
    target: &str,
    authority: &str,
    deadline: Duration,
) -> Value {
    let mut cmd = script(python, "flaky_grpc_client.py");
    cmd.args(["--target", target, "--authority", authority]);
    let out = tokio::time::timeout(deadline, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the Python client finishes within {deadline:?}"))
        .expect("the environment's python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed: {}\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)))
}

/// Asserts the client's report: every method answered as the Flaky service
/// named `instance` answers (levee-flaky and the Python server alike),
/// including the injected UNAVAILABLE and the stream ending in
/// FAILED_PRECONDITION.
pub fn assert_every_answer(got: &Value, instance: &str) {
    assert_eq!(
        got["unary"],
        json!({"message": "hello", "instance": instance, "instance_header": instance})
    );
    assert_eq!(got["server_stream"], json!(["s 0", "s 1", "s 2"]));
    assert_eq!(
        got["client_stream"],
        json!({"message": "a,b,c", "count": 3})
    );
    assert_eq!(
        got["bidi_stream"],
        json!(["bidi 0", "bidi 1", "bidi 2", "bidi 3"])
    );
    assert_eq!(
        got["injected_error"],
        json!({"code": "UNAVAILABLE", "details": "flaky: injected"})
    );
    assert_eq!(
        got["stream_error"],
        json!({
            "received": ["f 0", "f 1"],
            "error": {"code": "FAILED_PRECONDITION", "details": "flaky: stream failed"}
        })
    );
}

/// How many gRPC calls [`call_every_method`] makes.
pub const CALLS: u64 = 6;

/// Starts the server with `python`, serving as `instance` on `listen`, its
/// output in `log`. The caller waits for it to accept connections (where it
/// runs decides how: a namespace's `wait_listening`, a connect loop).
pub fn serve(python: Command, listen: SocketAddr, instance: &str, log: &Path) -> Process {
    let mut cmd = script(python, "flaky_grpc_server.py");
    cmd.args(["--listen", &listen.to_string()])
        .args(["--instance", instance]);
    Process::spawn("python grpc server", cmd, log).expect("spawn the Python server")
}
