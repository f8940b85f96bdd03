//! The transparent scenario's two "pods": network namespaces joined by a
//! veth pair (the harness's [`NetnsPair`]: client 10.213.0.1, server
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

use std::{
    ffi::OsString,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

use tokio::{process::Command, runtime::Handle, sync::oneshot};

use super::configs;
use super::contenders::{Env, answers, quiet_env, read_json};
use crate::harness::{
    BoxError, Metrics, Process, get_http1,
    netns::{B_V4, Netns, NetnsPair, current_euid, enter_netns},
    write_atomically,
};

/// The app's port that the pods intercept (transparent and explicit paths).
pub const APP_PORT: u16 = 8080;
/// The app's port that neither pod intercepts (the direct call).
pub const DIRECT_PORT: u16 = 8081;
/// `init-iptables`' default `--proxy-uid`: the sidecars run as it.
pub const PROXY_UID: u32 = 2102;
/// The sidecars' fixed listeners (the ports `init-iptables` redirects to).
const OUTBOUND_PORT: u16 = 4140;
const ADMIN_PORT: u16 = 4191;
/// How long one readiness call or `/metrics` scrape may take.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);
/// How long the pods may take to be ready.
const STARTUP: Duration = Duration::from_secs(20);

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

/// A current-thread tokio runtime on a thread that joined a network
/// namespace: sockets its tasks open belong to the namespace. Stops (its
/// tasks dropped) when this is dropped.
pub struct NetnsRuntime {
    pub handle: Handle,
    /// Dropping it ends the thread's `block_on`.
    _stop: oneshot::Sender<()>,
}

impl NetnsRuntime {
    pub async fn start(ns: &Netns) -> Result<NetnsRuntime, BoxError> {
        let file = ns.open()?;
        let (ready, started) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("load-in-netns".into())
            .spawn(move || {
                let runtime = enter_netns(&file).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                match runtime {
                    Ok(rt) => {
                        if ready.send(Ok(rt.handle().clone())).is_ok() {
                            rt.block_on(async {
                                let _ = stopped.await;
                            });
                        }
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })?;
        let handle = started
            .await
            .map_err(|_| "the load thread ended before its runtime started")??;
        Ok(NetnsRuntime {
            handle,
            _stop: stop,
        })
    }

    /// Runs `f` on this runtime (inside the namespace) and returns its output.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, BoxError> {
        Ok(self.handle.spawn(f).await?)
    }
}

/// Which sidecar's request counter: the client's outbound or the server's inbound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    ClientOutbound,
    ServerInbound,
}

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

    /// `levee_requests_total` of one side, once it has stopped moving
    /// (requests are counted when they finish, just after the client has
    /// its answer).
    pub async fn requests(&self, side: Side) -> Result<f64, BoxError> {
        let mut last = self.scrape(side).await?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.scrape(side).await?;
            if now == last || Instant::now() >= deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    async fn scrape(&self, side: Side) -> Result<f64, BoxError> {
        let (admin, direction) = match side {
            Side::ClientOutbound => (
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), ADMIN_PORT),
                "outbound",
            ),
            Side::ServerInbound => (SocketAddr::new(B_V4, ADMIN_PORT), "inbound"),
        };
        let text = self
            .load
            .run(async move {
                let scrape = get_http1(admin, "localhost", "/metrics");
                match tokio::time::timeout(SCRAPE_DEADLINE, scrape).await {
                    Ok(Ok(resp)) => Ok(resp.text()),
                    Ok(Err(e)) => Err(format!("scraping {admin}: {e}")),
                    Err(_) => Err(format!(
                        "scraping {admin}: no answer in {SCRAPE_DEADLINE:?}"
                    )),
                }
            })
            .await??;
        let metrics = Metrics::parse(&text)?;
        Ok(metrics
            .sum("levee_requests_total", &[("direction", direction)])
            .unwrap_or(0.0))
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
async fn start_upstream(env: &Env, ns: &Netns, dir: &Path) -> Result<Process, BoxError> {
    let exe = std::env::current_exe()?;
    let addr_file = dir.join("app.json");
    let mut cmd = command_in(ns, None, env.pinning.load.as_deref(), &exe);
    cmd.arg("--serve-upstream")
        .args(["--addr", &format!("0.0.0.0:{APP_PORT}")])
        .args(["--addr", &format!("0.0.0.0:{DIRECT_PORT}")])
        .arg("--addr-file")
        .arg(&addr_file);
    let mut process = Process::spawn("app", cmd, &dir.join("app.log"))?;
    super::contenders::wait_for(&mut process, "app", || {
        read_json::<serde_json::Value>(&addr_file)
    })
    .await?;
    Ok(process)
}

/// `levee-proxy init-iptables extra…` inside `ns`.
async fn init_iptables(env: &Env, ns: &Netns, extra: &[&str]) -> Result<(), BoxError> {
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
async fn start_sidecar(
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
    super::contenders::wait_for(&mut process, &what, || {
        read_json::<serde_json::Value>(&addr_file)
    })
    .await?;
    Ok(process)
}
