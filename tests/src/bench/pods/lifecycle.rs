//! [`Pods`]: creating both pods in order (namespaces, the app,
//! `init-iptables`, the sidecars, the load runtime), waiting until every
//! path answers from the client pod, the three targets, and the teardown.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use super::layout::{
    ADMIN_PORT, APP_PORT, DIRECT_PORT, OUTBOUND_PORT, PROXY_UID, SCRAPE_DEADLINE, STARTUP,
};
use super::processes::{init_iptables, start_sidecar, start_upstream};
use super::runtime::NetnsRuntime;
use crate::bench::configs;
use crate::bench::contenders::{Env, answers};
use crate::harness::{
    BoxError, Process,
    netns::{B_V4, NetnsPair},
    write_atomically,
};

/// The two pods, running. Field order is drop order: processes, the load
/// runtime, then the namespaces.
pub struct Pods {
    client_sidecar: Process,
    server_sidecar: Process,
    upstream: Process,
    pub load: NetnsRuntime,
    pub netns: NetnsPair,
    /// Policy file, addr files and logs; owned by the proxy uid.
    _dir: tempfile::TempDir,
}

impl Pods {
    /// Creates both pods and returns once every path answers.
    pub async fn start(env: &Env) -> Result<Pods, BoxError> {
        // Blocking (it runs `ip` and waits for the veth link); a panic there
        // is a failure to report, its half-made namespaces already deleted.
        let netns = tokio::task::spawn_blocking(NetnsPair::create)
            .await
            .map_err(|e| format!("creating the pods' network namespaces: {}", panic_text(e)))?;
        eprintln!(
            "transparent: pods in network namespaces {} (client) and {} (server)",
            netns.a.name(),
            netns.b.name()
        );
        let dir = tempfile::Builder::new()
            .prefix("levee-bench-pods-")
            .tempdir()?;
        // The sidecars (the proxy uid) write their addr files here.
        std::os::unix::fs::chown(dir.path(), Some(PROXY_UID), Some(PROXY_UID))?;

        let upstream = start_upstream(env, &netns.b, dir.path()).await?;
        init_iptables(
            env,
            &netns.b,
            &["--skip-inbound-ports", &DIRECT_PORT.to_string()],
        )
        .await?;
        // The admin port is skipped too, so the runner's scrape of the
        // server sidecar is not itself counted by the client sidecar.
        let skip_out = format!("{DIRECT_PORT},{ADMIN_PORT}");
        init_iptables(env, &netns.a, &["--skip-outbound-ports", &skip_out]).await?;

        let app_port = APP_PORT.to_string();
        let server_sidecar = start_sidecar(
            env,
            &netns.b,
            dir.path(),
            "server",
            &["--service", configs::SERVICE, "--app-port", &app_port],
        )
        .await?;
        let policy = dir.path().join("client.policy.yaml");
        write_atomically(
            &policy,
            &configs::levee_endpoints(&[SocketAddr::new(B_V4, APP_PORT)]),
        )?;
        // Written by root; read by the proxy uid.
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644))?;
        let policy = policy.to_string_lossy().into_owned();
        let client_sidecar = start_sidecar(
            env,
            &netns.a,
            dir.path(),
            "client",
            &["--policy-file", &policy],
        )
        .await?;
        let load = NetnsRuntime::start(&netns.a).await?;
        let mut pods = Pods {
            client_sidecar,
            server_sidecar,
            upstream,
            load,
            netns,
            _dir: dir,
        };
        for addr in [Pods::direct(), Pods::explicit(), Pods::transparent()] {
            pods.wait_until_answered(addr).await?;
        }
        Ok(pods)
    }

    /// The direct call's target: the app's uncaptured port on the server pod.
    pub fn direct() -> SocketAddr {
        SocketAddr::new(B_V4, DIRECT_PORT)
    }

    /// The explicit call's target: the client sidecar's outbound listener.
    pub fn explicit() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), OUTBOUND_PORT)
    }

    /// The transparent call's target: the app's port on the server pod,
    /// which both pods intercept.
    pub fn transparent() -> SocketAddr {
        SocketAddr::new(B_V4, APP_PORT)
    }

    /// Both sidecars' pids (the explicit and transparent paths' CPU).
    pub fn sidecar_pids(&self) -> Vec<u32> {
        [&self.client_sidecar, &self.server_sidecar]
            .into_iter()
            .filter_map(Process::pid)
            .collect()
    }

    /// Polls a `GET /` through `addr` from the client pod until it answers
    /// 200; fails when a process exits or [`STARTUP`] passes.
    async fn wait_until_answered(&mut self, addr: SocketAddr) -> Result<(), BoxError> {
        let deadline = Instant::now() + STARTUP;
        loop {
            for p in [
                &mut self.client_sidecar,
                &mut self.server_sidecar,
                &mut self.upstream,
            ] {
                if let Some(status) = p.try_exit() {
                    return Err(
                        format!("{} exited with {status}:\n{}", p.name(), p.output()).into(),
                    );
                }
            }
            let answered = self
                .load
                .run(async move {
                    let attempt = answers(addr, configs::SERVICE);
                    match tokio::time::timeout(SCRAPE_DEADLINE, attempt).await {
                        Ok(answered) => answered.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("no answer in {SCRAPE_DEADLINE:?}")),
                    }
                })
                .await?;
            match answered {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "{addr} did not answer from the client pod in {STARTUP:?}: {e}\n\
                         client sidecar:\n{}\nserver sidecar:\n{}",
                        self.client_sidecar.output(),
                        self.server_sidecar.output()
                    )
                    .into());
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Stops the sidecars and the app gracefully (killed after 5 s), then
    /// deletes the namespaces.
    pub async fn stop(mut self) {
        for p in [&self.client_sidecar, &self.server_sidecar, &self.upstream] {
            let _ = p.terminate();
        }
        for p in [
            &mut self.client_sidecar,
            &mut self.server_sidecar,
            &mut self.upstream,
        ] {
            if p.wait_exit(Duration::from_secs(5)).await.is_err() {
                let _ = p.kill();
            }
        }
    }
}

/// The message of a panicked (or cancelled) blocking task.
fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}
