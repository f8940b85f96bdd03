//! Launching a process and waiting until it is ready: its command line
//! (under `taskset` when pinned, with a quiet environment), polling a
//! readiness check with a deadline, and the checks themselves.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use tokio::process::Command;

use crate::harness::{BoxError, Process, get_http1};

/// How long a process may take to be ready.
const STARTUP: Duration = Duration::from_secs(20);

/// `program args…`, under `taskset -c cpus` when pinned.
pub(super) fn command(program: &Path, cpus: Option<&str>) -> Command {
    let mut cmd = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(program);
            c
        }
        None => Command::new(program),
    };
    quiet_env(&mut cmd);
    cmd
}

/// Keeps the runner's own `LEVEE_*` / `OTEL_*` settings from `cmd` and has
/// it log only warnings, without colour.
pub(in crate::bench) fn quiet_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        // The runner's own LEVEE_* / OTEL_* settings (a collector endpoint
        // would turn tracing on) must not reach the contenders.
        let key_text = key.to_string_lossy();
        if key_text.starts_with("LEVEE_") || key_text.starts_with("OTEL_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUST_LOG", "warn").env("NO_COLOR", "1");
}

/// Polls `check` every 20 ms until it succeeds or `STARTUP` passes.
pub(in crate::bench) async fn wait_for<T, F, Fut>(
    process: &mut Process,
    what: &str,
    mut check: F,
) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BoxError>>,
{
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(status) = process.try_exit() {
            return Err(format!("{what}: exited with {status}:\n{}", process.output()).into());
        }
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "{what}: not ready in {STARTUP:?}: {e}\n{}",
                    process.output()
                )
                .into());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

pub(in crate::bench) async fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<T, BoxError> {
    Ok(serde_json::from_slice(&tokio::fs::read(path).await?)?)
}

/// A 200 for `GET /` through `addr` with `authority`.
pub(in crate::bench) async fn answers(addr: SocketAddr, authority: &str) -> Result<(), BoxError> {
    let resp = get_http1(addr, authority, "/").await?;
    if resp.status == 200 {
        Ok(())
    } else {
        Err(format!("answered {}", resp.status).into())
    }
}

/// A loopback port that was free a moment ago (for HAProxy and nginx, which
/// cannot report a port-0 binding).
pub fn free_port() -> Result<SocketAddr, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
