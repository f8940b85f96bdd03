//! `levee-proxy` under test: started in a temp dir on loopback port 0 with
//! `--addr-file`, ready when `/ready` answers 200; its policy file written
//! atomically; admin endpoints read as metrics and JSON.

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitStatus,
    time::Duration,
};

use super::{
    BoxError, HttpResponse, Metrics, Process, STARTUP_DEADLINE, eventually, get_http1, startup,
    yaml::PolicyFile,
};
use serde::Deserialize;

use crate::otlp::OtlpReceiver;

/// The listeners' bound addresses, as `--addr-file` reports them.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Addrs {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
}

impl Addrs {
    /// Where a client reaches each listener: a wildcard-bound one (`0.0.0.0`,
    /// `::`) is reached on loopback of its family.
    fn reachable(self) -> Addrs {
        let reach = |mut addr: SocketAddr| {
            match addr.ip() {
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into())
                }
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                    addr.set_ip(std::net::Ipv6Addr::LOCALHOST.into())
                }
                _ => {}
            }
            addr
        };
        Addrs {
            outbound: reach(self.outbound),
            inbound: reach(self.inbound),
            admin: reach(self.admin),
        }
    }
}

/// Writes `contents` to `path` so a reader never sees half a file
/// (levee-proto's one write-temp-then-rename helper).
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    levee_proto::fs::write_atomically(path, contents.as_bytes())
}

/// Flags and files for a `levee-proxy` run.
pub struct ProxyBuilder {
    policy: Option<String>,
    app_port: Option<u16>,
    service: String,
    namespace: String,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    /// `--outbound-addr`, `--inbound-addr`, `--admin-addr`.
    listen: [String; 3],
}

/// A running `levee-proxy`.
pub struct Proxy {
    pub process: Process,
    pub addrs: Addrs,
    /// Holds the addr file, the policy file and the log.
    dir: tempfile::TempDir,
    /// Always passed as `--policy-file` when the builder had a policy.
    policy_path: PathBuf,
}

impl ProxyBuilder {
    /// Static mode with this policy file (multi-document YAML, or documents).
    pub fn policy(mut self, yaml: impl PolicyFile) -> Self {
        self.policy = Some(yaml.into_yaml());
        self
    }

    /// A proxy in front of one upstream both ways: outbound calls to
    /// `web:80` go to `upstream` (a static `ServiceEndpoints`), and inbound
    /// calls go to it as the local app.
    pub fn fronting(self, upstream: std::net::SocketAddr) -> Self {
        self.policy(super::yaml::endpoints("web", 80, &[upstream]))
            .app_port(upstream.port())
    }

    /// Binds the outbound, inbound and admin listeners here instead of
    /// `127.0.0.1:0` each (a wildcard such as `0.0.0.0:0` or `[::]:0`, or a
    /// fixed port). `addrs` then reports loopback for a wildcard.
    pub fn listen(mut self, outbound: &str, inbound: &str, admin: &str) -> Self {
        self.listen = [outbound.to_owned(), inbound.to_owned(), admin.to_owned()];
        self
    }

    /// `--app-port`: where inbound calls go.
    pub fn app_port(mut self, port: u16) -> Self {
        self.app_port = Some(port);
        self
    }

    /// `--service` (default `test-svc`).
    pub fn service(mut self, service: &str) -> Self {
        self.service = service.to_owned();
        self
    }

    /// Listen for outbound calls here instead of on port 0 (e.g. a
    /// restarted proxy taking over its predecessor's address).
    pub fn outbound_addr(mut self, addr: SocketAddr) -> Self {
        self.listen[0] = addr.to_string();
        self
    }

    /// `--namespace` (default `default`).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    /// `--control-plane URL` (e.g. [`super::ControlPlane::grpc_url`]); an
    /// `http://` URL adds `--insecure-plaintext` (an `https://` one needs
    /// `--trust-bundle-file` and, for Discovery, an identity flag).
    pub fn control_plane(self, url: &str) -> Self {
        let plaintext = url.starts_with("http://");
        let this = self.arg("--control-plane").arg(url);
        if plaintext {
            this.arg("--insecure-plaintext")
        } else {
            this
        }
    }

    /// Any other flag, e.g. `.arg("--max-connections").arg("2")`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Exports traces to `collector` (`OTEL_EXPORTER_OTLP_ENDPOINT`, the
    /// way a deployment configures it), with the default sampler.
    pub fn traced(self, collector: &OtlpReceiver) -> Self {
        self.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
    }

    fn spawn(self) -> (Process, tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("levee-proxy-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
        let policy_path = dir.path().join("policy.yaml");
        let mut cmd = startup::command("levee-proxy", dir.path(), "info,levee_proxy=debug");
        let [outbound, inbound, admin] = &self.listen;
        cmd.args(["--outbound-addr", outbound])
            .args(["--inbound-addr", inbound])
            .args(["--admin-addr", admin])
            .arg("--addr-file")
            .arg(dir.path().join("addrs.json"))
            .args(["--service", &self.service, "--namespace", &self.namespace]);
        if let Some(port) = self.app_port {
            cmd.args(["--app-port", &port.to_string()]);
        }
        if let Some(policy) = &self.policy {
            write_atomically(&policy_path, policy)
                .unwrap_or_else(|e| panic!("writing {}: {e}", policy_path.display()));
            cmd.arg("--policy-file").arg(&policy_path);
        }
        cmd.args(&self.args);
        cmd.envs(self.envs);
        let log = dir.path().join("proxy.log");
        let process = Process::spawn("levee-proxy", cmd, &log).unwrap_or_else(|e| panic!("{e}"));
        (process, dir, policy_path)
    }

    /// Starts the proxy and waits until `/ready` answers 200; panics (with
    /// the proxy's output) if it exits or is not ready in time.
    pub async fn start(self) -> Proxy {
        let (mut process, dir, policy_path) = self.spawn();
        let addr_file = dir.path().join("addrs.json");
        let addrs: Addrs =
            startup::wait_addr_file(&mut process, &addr_file, STARTUP_DEADLINE).await;
        let addrs = addrs.reachable();
        let mut proxy = Proxy {
            process,
            addrs,
            dir,
            policy_path,
        };
        proxy.wait_ready(STARTUP_DEADLINE).await;
        proxy
    }

    /// Starts the proxy and waits only for its addr file, not for `/ready`
    /// (for a proxy that is not expected to become ready).
    pub async fn start_unready(self) -> Proxy {
        let (mut process, dir, policy_path) = self.spawn();
        let addr_file = dir.path().join("addrs.json");
        let addrs: Addrs =
            startup::wait_addr_file(&mut process, &addr_file, STARTUP_DEADLINE).await;
        let addrs = addrs.reachable();
        Proxy {
            process,
            addrs,
            dir,
            policy_path,
        }
    }

    /// Runs a proxy that is expected to refuse to start: returns its exit
    /// status and output, or panics if it is still running after `timeout`.
    pub async fn start_expecting_exit(self, timeout: Duration) -> (ExitStatus, String) {
        let (mut process, _dir, _) = self.spawn();
        let status = process
            .wait_exit(timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}: expected it to refuse to start"));
        (status, process.output())
    }
}

impl Proxy {
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            policy: None,
            app_port: None,
            service: "test-svc".into(),
            namespace: "default".into(),
            args: Vec::new(),
            envs: Vec::new(),
            listen: ["127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"].map(String::from),
        }
    }

    pub fn outbound(&self) -> SocketAddr {
        self.addrs.outbound
    }

    pub fn inbound(&self) -> SocketAddr {
        self.addrs.inbound
    }

    pub fn admin(&self) -> SocketAddr {
        self.addrs.admin
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn policy_path(&self) -> &Path {
        &self.policy_path
    }

    /// Waits until `/ready` answers 200 (or panics, also if the proxy exits).
    pub async fn wait_ready(&mut self, timeout: Duration) {
        startup::wait_http_ok(&mut self.process, self.addrs.admin, "/ready", timeout).await;
    }

    /// `GET path` on the admin server.
    pub async fn admin_get(&self, path: &str) -> Result<HttpResponse, BoxError> {
        get_http1(self.addrs.admin, "localhost", path).await
    }

    /// Scrapes `/metrics`.
    pub async fn metrics(&self) -> Result<Metrics, BoxError> {
        let resp = self.admin_get("/metrics").await?;
        if resp.status != 200 {
            return Err(format!("/metrics answered {}", resp.status).into());
        }
        Ok(Metrics::parse(&resp.text())?)
    }

    /// `GET /config` as JSON.
    pub async fn config(&self) -> Result<serde_json::Value, BoxError> {
        let resp = self.admin_get("/config").await?;
        if resp.status != 200 {
            return Err(format!("/config answered {}: {}", resp.status, resp.text()).into());
        }
        resp.json()
    }

    /// The `version` field of `/config`.
    pub async fn config_version(&self) -> Result<serde_json::Value, BoxError> {
        let config = self.config().await?;
        config
            .get("version")
            .cloned()
            .ok_or_else(|| format!("/config has no \"version\": {config}").into())
    }

    /// Replaces the policy file atomically (the proxy notices on its own).
    pub fn write_policy(&self, yaml: &str) {
        write_atomically(&self.policy_path, yaml)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.policy_path.display()));
    }

    /// Waits until `/config`'s version differs from `old`; returns the config.
    pub async fn wait_config_change(
        &self,
        old: &serde_json::Value,
        timeout: Duration,
    ) -> serde_json::Value {
        eventually(timeout, "/config version to change", || async {
            let config = self.config().await.map_err(|e| e.to_string())?;
            match config.get("version") {
                Some(v) if v != old => Ok(config),
                v => Err(format!("version still {v:?}")),
            }
        })
        .await
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn shutdown(&mut self, timeout: Duration) -> ExitStatus {
        self.process.shutdown(timeout).await
    }
}
