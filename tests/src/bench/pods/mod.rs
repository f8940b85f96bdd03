//! The transparent scenario's two "pods": network namespaces joined by a
//! veth pair (the harness's [`NetnsPair`](crate::harness::netns::NetnsPair): client 10.213.0.1, server
//! 10.213.0.2), each with `levee-proxy init-iptables` applied and a sidecar
//! running as the proxy uid; the upstream as the server pod's app; and a
//! tokio runtime on a thread inside the client pod for the load generator.
//!
//! Owns their start, readiness and teardown. [`Pods`] drops its processes
//! (killed), the load runtime and then the namespaces (deleted) in that
//! order, so an error, a panic or Ctrl-C (the runner drops the run) leaves
//! nothing behind, as [`Pods::stop`] does.
//!
//! The app listens on two ports: [`APP_PORT`], which both pods intercept,
//! and [`DIRECT_PORT`], which both skip (`--skip-outbound-ports` in the
//! client pod, `--skip-inbound-ports` in the server pod): the direct call's
//! baseline crosses the same namespaces, veth and (empty-handed) nat chains.
//!
//! Layout: `lifecycle.rs` [`Pods`] (start, the three targets, teardown);
//! `processes.rs` the processes inside them (the app, `init-iptables`, the
//! sidecars); `runtime.rs` the load generator's runtime in the client pod;
//! `requests.rs` each sidecar's request count; `layout.rs` the fixed ports,
//! uid and deadlines.

mod layout;
mod lifecycle;
mod processes;
mod requests;
mod runtime;

pub use layout::{APP_PORT, DIRECT_PORT, PROXY_UID};
pub use lifecycle::Pods;
pub use requests::Side;
pub use runtime::NetnsRuntime;

use crate::harness::netns::current_euid;

/// Why the scenario cannot run here, if it cannot: not root, or no `ip`.
pub fn unavailable() -> Option<String> {
    let euid = current_euid();
    if euid != 0 {
        return Some(format!(
            "needs root for network namespaces (running as uid {euid})"
        ));
    }
    match std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "needs `ip netns` for network namespaces: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("needs `ip` (iproute2) for network namespaces: {e}")),
    }
}
