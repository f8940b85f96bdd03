//! The processes inside the pods: a command line in a namespace as a uid
//! (and pinned), the app (the upstream) in the server pod, `init-iptables`
//! in each pod, and the sidecars as the proxy uid.

use std::{ffi::OsString, path::Path};

use tokio::process::Command;

use super::layout::{ADMIN_PORT, APP_PORT, DIRECT_PORT, OUTBOUND_PORT, PROXY_UID, STARTUP};
use crate::bench::contenders::{Env, quiet_env, read_json, wait_for};
use crate::harness::{BoxError, Process, netns::Netns};

/// `program` inside `ns` as `uid` (root when `None`), under `taskset -c
/// cpus` when pinned, quiet like every contender. `ip netns exec`,
/// `setpriv` and `taskset` each exec the next: the pid is `program`'s.
fn command_in(ns: &Netns, uid: Option<u32>, cpus: Option<&str>, program: &Path) -> Command {
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(uid) = uid {
        argv.extend(
            [
                "setpriv".to_owned(),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_owned(),
            ]
            .map(OsString::from),
        );
    }
    if let Some(cpus) = cpus {
        argv.extend(["taskset", "-c", cpus].map(OsString::from));
    }
    argv.push(program.into());
    let mut cmd = ns.command(&argv[0]);
    cmd.args(&argv[1..]);
    quiet_env(&mut cmd);
    cmd
}

/// The upstream (`levee-bench --serve-upstream`) in the server pod on both
/// app ports, pinned with the load generator.
pub(super) async fn start_upstream(env: &Env, ns: &Netns, dir: &Path) -> Result<Process, BoxError> {
    let exe = std::env::current_exe()?;
    let addr_file = dir.join("app.json");
    let mut cmd = command_in(ns, None, env.pinning.load.as_deref(), &exe);
    cmd.arg("--serve-upstream")
        .args(["--addr", &format!("0.0.0.0:{APP_PORT}")])
        .args(["--addr", &format!("0.0.0.0:{DIRECT_PORT}")])
        .arg("--addr-file")
        .arg(&addr_file);
    let mut process = Process::spawn("app", cmd, &dir.join("app.log"))?;
    wait_for(&mut process, "app", || {
        read_json::<serde_json::Value>(&addr_file)
    })
    .await?;
    Ok(process)
}

/// `levee-proxy init-iptables extra…` inside `ns`.
pub(super) async fn init_iptables(env: &Env, ns: &Netns, extra: &[&str]) -> Result<(), BoxError> {
    let mut cmd = ns.command(&env.levee_proxy);
    cmd.arg("init-iptables").args(extra);
    let out = tokio::time::timeout(STARTUP, cmd.output())
        .await
        .map_err(|_| format!("init-iptables in {} ran over {STARTUP:?}", ns.name()))??;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "init-iptables in {} failed ({}): {}",
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// A sidecar in `ns` as the proxy uid, pinned to the proxies' CPU, its
/// listeners where `init-iptables` redirects (`[::]:4140`, `[::]:4143`,
/// admin `[::]:4191`), plus `extra`; returns once they are bound.
pub(super) async fn start_sidecar(
    env: &Env,
    ns: &Netns,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> Result<Process, BoxError> {
    let addr_file = dir.join(format!("{name}.addrs.json"));
    let mut cmd = command_in(
        ns,
        Some(PROXY_UID),
        env.pinning.proxy.as_deref(),
        &env.levee_proxy,
    );
    cmd.args(["--outbound-addr", &format!("[::]:{OUTBOUND_PORT}")])
        .args(["--inbound-addr", "[::]:4143"])
        .args(["--admin-addr", &format!("[::]:{ADMIN_PORT}")])
        .arg("--addr-file")
        .arg(&addr_file)
        .args(extra);
    let what = format!("{name} sidecar");
    let mut process = Process::spawn(&what, cmd, &dir.join(format!("{name}.log")))?;
    wait_for(&mut process, &what, || {
        read_json::<serde_json::Value>(&addr_file)
    })
    .await?;
    Ok(process)
}
