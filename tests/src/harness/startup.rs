//! Starting a workspace binary the same way for every kind: a clean
//! environment, an `--addr-file` to wait for, and an HTTP health path to poll.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::de::DeserializeOwned;
use tokio::process::Command;

use super::{Process, binary, eventually, get_http1};

/// A command for workspace binary `name`, run in `dir`, that sees none of
/// the caller's `LEVEE_*` variables and logs without colour.
pub(crate) fn command(name: &str, dir: &Path, log_filter: &str) -> Command {
    let mut cmd = Command::new(binary(name));
    cmd.current_dir(dir);
    clean_env(&mut cmd, log_filter);
    cmd
}

/// Hides the caller's `LEVEE_*` variables from `cmd` and sets its logging:
/// no colour, `log_filter` unless the caller set `RUST_LOG`.
pub(crate) fn clean_env(cmd: &mut Command, log_filter: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEVEE_") {
            cmd.env_remove(&key);
        }
    }
    // Logs go to a file that humans read.
    cmd.env("NO_COLOR", "1");
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", log_filter);
    }
}

/// Waits for the JSON a binary writes to `--addr-file`; panics if the
/// process exits first or nothing valid appears within `timeout`.
pub(crate) async fn wait_addr_file<T: DeserializeOwned>(
    process: &mut Process,
    path: &Path,
    timeout: Duration,
) -> T {
    let what = format!("{}'s --addr-file", process.name());
    eventually(timeout, &what, || {
        let exited = process.try_exit();
        let read = std::fs::read(path);
        async move {
            if let Some(status) = exited {
                return Err(format!("exited early with {status}"));
            }
            let bytes = read.map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| format!("addr file: {e}"))
        }
    })
    .await
}

/// Waits until `GET path` on `addr` answers 200; panics if the process
/// exits or it does not within `timeout`.
pub(crate) async fn wait_http_ok(
    process: &mut Process,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) {
    let what = format!("{} {path} to answer 200", process.name());
    eventually(timeout, &what, || {
        let exited = process.try_exit();
        async move {
            if let Some(status) = exited {
                return Err(format!("exited with {status}"));
            }
            let resp = get_http1(addr, "localhost", path)
                .await
                .map_err(|e| e.to_string())?;
            match resp.status.as_u16() {
                200 => Ok(()),
                code => Err(format!("{path} answered {code}")),
            }
        }
    })
    .await;
}
