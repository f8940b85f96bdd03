//! Starting and stopping what is measured: the upstream process and each
//! contender in front of it (direct, Levee one hop, Levee two hops in
//! plaintext and with mTLS, Levee
//! with the full policy, HAProxy, nginx), every one on loopback, each proxy
//! optionally pinned to its own CPU with `taskset`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Deserialize;
use tokio::process::Command;

use super::{configs, procfs::Usage};
use crate::harness::certs::TestCa;
use crate::harness::{Addrs, BoxError, Process, get_http1, write_atomically, yaml};

/// How long a process may take to be ready.
const STARTUP: Duration = Duration::from_secs(20);

/// Which CPUs things run on (`taskset -c` lists), when pinning is possible.
#[derive(Clone, Debug, Default)]
pub struct Pinning {
    /// The proxies (one core, like a sidecar with a CPU limit of 1).
    pub proxy: Option<String>,
    /// The upstream and the load generator.
    pub load: Option<String>,
}

/// Shared facts for starting contenders.
pub struct Env {
    pub pinning: Pinning,
    /// Where `levee-proxy` is.
    pub levee_proxy: PathBuf,
    pub ticks_per_sec: u64,
    /// Config files, logs and addr files of this run.
    pub dir: tempfile::TempDir,
}

/// A running contender: where clients connect and what to measure.
pub struct Contender {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// `Host` / `:authority` clients send.
    pub authority: String,
    /// Whether HTTP/2 (h2c prior knowledge) runs against it.
    pub h2: bool,
    /// The proxy processes' CPU and memory (empty for direct).
    pub usage: Usage,
    /// The runtime the load generator runs on when it must run inside a
    /// network namespace (the transparent scenario's client pod); `None`:
    /// the runner's own.
    pub load: Option<tokio::runtime::Handle>,
    procs: Vec<Process>,
}

/// The upstream process (`levee-bench --serve-upstream`).
pub struct Upstream {
    pub addr: SocketAddr,
    process: Process,
}

#[derive(Deserialize)]
struct UpstreamAddr {
    addr: SocketAddr,
}

/// `program args…`, under `taskset -c cpus` when pinned.
fn command(program: &Path, cpus: Option<&str>) -> Command {
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
pub(super) fn quiet_env(cmd: &mut Command) {
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
pub(super) async fn wait_for<T, F, Fut>(
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

pub(super) async fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BoxError> {
    Ok(serde_json::from_slice(&tokio::fs::read(path).await?)?)
}

/// A 200 for `GET /` through `addr` with `authority`.
pub(super) async fn answers(addr: SocketAddr, authority: &str) -> Result<(), BoxError> {
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

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&self, name: &str, cmd: Command) -> Result<Process, BoxError> {
        Ok(Process::spawn(
            name,
            cmd,
            &self.path(&format!("{name}.log")),
        )?)
    }

    pub async fn upstream(&self) -> Result<Upstream, BoxError> {
        let exe = std::env::current_exe()?;
        let addr_file = self.path("upstream.json");
        // A previous run of the same name left its addresses here.
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = command(&exe, self.pinning.load.as_deref());
        cmd.arg("--serve-upstream")
            .arg("--addr-file")
            .arg(&addr_file);
        let mut process = self.spawn("upstream", cmd)?;
        let up: UpstreamAddr = wait_for(&mut process, "upstream", || read_json(&addr_file)).await?;
        Ok(Upstream {
            addr: up.addr,
            process,
        })
    }

    pub fn direct(&self, upstream: &Upstream) -> Contender {
        Contender {
            name: "direct",
            addr: upstream.addr,
            authority: configs::SERVICE.into(),
            h2: true,
            usage: Usage::new(Vec::new(), self.ticks_per_sec),
            load: None,
            procs: Vec::new(),
        }
    }

    /// One `levee-proxy` with `policy` (if any) and `--app-port app_port`.
    async fn levee(
        &self,
        name: &str,
        policy: Option<&str>,
        app_port: u16,
    ) -> Result<(Process, Addrs), BoxError> {
        self.levee_args(name, policy, app_port, &[]).await
    }

    /// [`Env::levee`] with `extra` flags (e.g. tracing).
    pub(super) async fn levee_args(
        &self,
        name: &str,
        policy: Option<&str>,
        app_port: u16,
        extra: &[String],
    ) -> Result<(Process, Addrs), BoxError> {
        let addr_file = self.path(&format!("{name}.addrs.json"));
        // A previous run of the same name left its addresses here.
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = command(&self.levee_proxy, self.pinning.proxy.as_deref());
        for flag in ["--outbound-addr", "--inbound-addr", "--admin-addr"] {
            cmd.args([flag, "127.0.0.1:0"]);
        }
        cmd.arg("--addr-file").arg(&addr_file);
        cmd.args([
            "--service",
            configs::SERVICE,
            "--app-port",
            &app_port.to_string(),
        ]);
        if let Some(policy) = policy {
            let path = self.path(&format!("{name}.policy.yaml"));
            write_atomically(&path, policy)?;
            cmd.arg("--policy-file").arg(path);
        }
        cmd.args(extra);
        let mut process = self.spawn(name, cmd)?;
        let addrs: Addrs = wait_for(&mut process, name, || read_json(&addr_file)).await?;
        wait_for(&mut process, name, || async move {
            let resp = get_http1(addrs.admin, "localhost", "/ready").await?;
            if resp.status == 200 {
                Ok(())
            } else {
                Err(format!("/ready {}", resp.status).into())
            }
        })
        .await?;
        Ok((process, addrs))
    }

    /// Levee outbound in front of the upstream; `full_policy` adds every
    /// resilience layer of DESIGN.md §3.
    pub async fn levee_one_hop(
        &self,
        upstream: &Upstream,
        full_policy: bool,
    ) -> Result<Contender, BoxError> {
        let (name, policy) = if full_policy {
            ("levee-policy", configs::levee_full_policy(&[upstream.addr]))
        } else {
            ("levee-1hop", configs::levee_endpoints(&[upstream.addr]))
        };
        let (mut process, addrs) = self
            .levee(name, Some(&policy), upstream.addr.port())
            .await?;
        wait_for(&mut process, name, || {
            answers(addrs.outbound, configs::SERVICE)
        })
        .await?;
        Ok(self.contender(name, addrs.outbound, true, vec![process]))
    }

    /// The mesh path: a client sidecar's outbound to a server sidecar's
    /// inbound, which forwards to the upstream as its local app.
    pub async fn levee_two_hop(&self, upstream: &Upstream) -> Result<Contender, BoxError> {
        let (server, server_addrs) = self
            .levee("levee-server", None, upstream.addr.port())
            .await?;
        let policy = configs::levee_endpoints(&[server_addrs.inbound]);
        let (mut client, addrs) = self
            .levee("levee-client", Some(&policy), upstream.addr.port())
            .await?;
        wait_for(&mut client, "levee-2hop", || {
            answers(addrs.outbound, configs::SERVICE)
        })
        .await?;
        Ok(self.contender("levee-2hop", addrs.outbound, true, vec![client, server]))
    }

    /// [`Env::levee_two_hop`] with mTLS on the hop: both sidecars get a
    /// workload certificate from a test CA (rcgen) and the client expects
    /// the server's SPIFFE ID. Connections are kept alive, so a handshake
    /// is paid per connection, not per request.
    pub async fn levee_two_hop_mtls(&self, upstream: &Upstream) -> Result<Contender, BoxError> {
        let ca = TestCa::new("levee-bench CA");
        let server_id = "spiffe://levee.bench/ns/default/sa/bench";
        let server_files = ca.workload(server_id).write(self.dir.path(), "server", &ca);
        let (server, server_addrs) = self
            .levee_args(
                "levee-mtls-server",
                None,
                upstream.addr.port(),
                &server_files.flags(),
            )
            .await?;
        let client_files = ca
            .workload("spiffe://levee.bench/ns/default/sa/client")
            .write(self.dir.path(), "client", &ca);
        let policy = yaml::documents(&[yaml::endpoints_with_identity(
            configs::SERVICE,
            configs::SERVICE_PORT,
            &[server_addrs.inbound],
            server_id,
        )]);
        let (mut client, addrs) = self
            .levee_args(
                "levee-mtls-client",
                Some(&policy),
                upstream.addr.port(),
                &client_files.flags(),
            )
            .await?;
        wait_for(&mut client, "levee-2hop-mtls", || {
            answers(addrs.outbound, configs::SERVICE)
        })
        .await?;
        Ok(self.contender(
            "levee-2hop-mtls",
            addrs.outbound,
            true,
            vec![client, server],
        ))
    }

    pub async fn haproxy(&self, upstream: &Upstream) -> Result<Contender, BoxError> {
        self.haproxy_with("haproxy", |listen| configs::haproxy(listen, upstream.addr))
            .await
    }

    /// HAProxy with the config `render` makes for its listen address.
    pub async fn haproxy_with(
        &self,
        name: &'static str,
        render: impl FnOnce(SocketAddr) -> String,
    ) -> Result<Contender, BoxError> {
        let listen = free_port()?;
        let cfg = self.path(&format!("{name}.cfg"));
        write_atomically(&cfg, &render(listen))?;
        let mut cmd = command(Path::new("haproxy"), self.pinning.proxy.as_deref());
        cmd.arg("-f").arg(&cfg).arg("-db");
        let mut process = self.spawn(name, cmd)?;
        wait_for(&mut process, name, || answers(listen, configs::SERVICE)).await?;
        Ok(self.contender(name, listen, false, vec![process]))
    }

    /// One Levee hop with this policy file, ready when a call through it succeeds.
    pub async fn levee_with(
        &self,
        name: &'static str,
        policy: &str,
    ) -> Result<Contender, BoxError> {
        let (mut process, addrs) = self.levee(name, Some(policy), 1).await?;
        wait_for(&mut process, name, || {
            answers(addrs.outbound, configs::SERVICE)
        })
        .await?;
        Ok(self.contender(name, addrs.outbound, true, vec![process]))
    }

    /// A `levee-flaky` process pinned with the load generator, started with
    /// `fault_args` (e.g. `--status 503 --fail-rate 0.2`); answers 1 KiB.
    pub async fn flaky(&self, name: &str, fault_args: &[&str]) -> Result<Upstream, BoxError> {
        let exe = crate::harness::bin_dir().join("levee-flaky");
        let addr_file = self.path(&format!("{name}.json"));
        // A previous run of the same name left its addresses here.
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = command(&exe, self.pinning.load.as_deref());
        cmd.args(["--id", name, "--body-bytes", "1024", "--addr-file"])
            .arg(&addr_file)
            .args(fault_args);
        let mut process = self.spawn(name, cmd)?;
        let up: UpstreamAddr = wait_for(&mut process, name, || read_json(&addr_file)).await?;
        Ok(Upstream {
            addr: up.addr,
            process,
        })
    }

    pub async fn nginx(&self, upstream: &Upstream) -> Result<Contender, BoxError> {
        let listen = free_port()?;
        let prefix = self.path("nginx");
        std::fs::create_dir_all(&prefix)?;
        let cfg = prefix.join("nginx.conf");
        write_atomically(&cfg, &configs::nginx(&prefix, listen, upstream.addr))?;
        let mut cmd = command(Path::new("nginx"), self.pinning.proxy.as_deref());
        cmd.arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("error.log"));
        cmd.arg("-c").arg(&cfg).args(["-g", "daemon off;"]);
        let mut process = self.spawn("nginx", cmd)?;
        wait_for(&mut process, "nginx", || answers(listen, configs::SERVICE)).await?;
        Ok(self.contender("nginx", listen, false, vec![process]))
    }

    pub(super) fn contender(
        &self,
        name: &'static str,
        addr: SocketAddr,
        h2: bool,
        procs: Vec<Process>,
    ) -> Contender {
        let pids = procs.iter().filter_map(Process::pid).collect();
        Contender {
            name,
            addr,
            authority: configs::SERVICE.into(),
            h2,
            usage: Usage::new(pids, self.ticks_per_sec),
            load: None,
            procs,
        }
    }
}

/// SIGTERM to `pid` with `kill(1)`, ignoring failures (already gone).
fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Contender {
    /// A contender on processes someone else owns and stops (the
    /// transparent scenario's pods): `usage` measures them, the load runs on
    /// `load`.
    pub(super) fn on_shared(
        name: &'static str,
        addr: SocketAddr,
        usage: Usage,
        load: tokio::runtime::Handle,
    ) -> Contender {
        Contender {
            name,
            addr,
            authority: configs::SERVICE.into(),
            h2: true,
            usage,
            load: Some(load),
            procs: Vec::new(),
        }
    }

    /// Stops every process gracefully (nginx's master takes its worker
    /// along), killing what has not exited after 5 s.
    pub async fn stop(mut self) {
        for p in &self.procs {
            let _ = p.terminate();
        }
        for p in &mut self.procs {
            if p.wait_exit(Duration::from_secs(5)).await.is_err() {
                let _ = p.kill();
            }
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        // On an early exit, no descendant (nginx's worker) may outlive us.
        for pid in self
            .procs
            .iter()
            .filter_map(Process::pid)
            .flat_map(super::procfs::tree)
        {
            terminate(pid);
        }
    }
}

impl Upstream {
    pub async fn stop(mut self) {
        let _ = self.process.terminate();
        let _ = self.process.wait_exit(Duration::from_secs(5)).await;
    }
}
