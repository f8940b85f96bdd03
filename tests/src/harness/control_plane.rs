//! `levee-control-plane` under test: started on loopback port 0 with
//! `--addr-file`, ready when its HTTP `/ready` answers 200; `leveectl` run
//! against it; stopped gracefully or with `kill -9` and restarted on the same
//! data directory.

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Output},
    time::Duration,
};

use serde::Deserialize;

use super::{BoxError, Metrics, Process, STARTUP_DEADLINE, get_http1, startup};

/// The bound addresses, as `--addr-file` reports them.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ControlPlaneAddrs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The HTTPS admission webhooks, with `--webhook-addr`.
    #[serde(default)]
    pub webhook: Option<SocketAddr>,
}

/// Flags for a `levee-control-plane` run.
pub struct ControlPlaneBuilder {
    data_dir: Option<PathBuf>,
    token: Option<String>,
    args: Vec<OsString>,
    /// Listen here instead of port 0 (a restart that proxies find again).
    addrs: Option<ControlPlaneAddrs>,
    /// Serve gRPC over TLS with identities on (default: `--insecure-plaintext`).
    tls: bool,
    /// Environment variables to set (`Some`) or remove (`None`).
    envs: Vec<(OsString, Option<OsString>)>,
}

/// A running `levee-control-plane`.
pub struct ControlPlane {
    pub process: Process,
    pub addrs: ControlPlaneAddrs,
    /// Holds the addr file, the token file, the log, and (by default) the data.
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    /// Passed to `leveectl` when the admin API requires it.
    token: Option<String>,
    /// TLS and identities on ([`ControlPlaneBuilder::tls`]).
    tls: bool,
}

impl ControlPlaneBuilder {
    /// Keep the store here (e.g. to restart on the same data); default: a
    /// fresh directory that lives as long as the [`ControlPlane`].
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Require this bearer token on the admin API (`--admin-token-file`).
    pub fn admin_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Serve gRPC over TLS with workload identities required by Discovery
    /// (the binary's default); without this the harness passes
    /// `--insecure-plaintext`.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Start the process with this environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), Some(value.into())));
        self
    }

    /// Start the process without this environment variable.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), None));
        self
    }

    /// Listen on these addresses rather than on port 0.
    pub fn addrs(mut self, addrs: ControlPlaneAddrs) -> Self {
        self.addrs = Some(addrs);
        self
    }

    /// Starts it and waits for `/ready`; panics with its output on failure.
    pub async fn start(self) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("levee-cp-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
        let data_dir = self.data_dir.unwrap_or_else(|| dir.path().join("data"));
        let addr_file = dir.path().join("addrs.json");
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = startup::command(
            "levee-control-plane",
            dir.path(),
            "info,levee_control_plane=debug",
        );
        let (grpc, http) = match self.addrs {
            Some(addrs) => (addrs.grpc.to_string(), addrs.http.to_string()),
            None => ("127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned()),
        };
        cmd.args(["--grpc-addr", &grpc, "--http-addr", &http])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--addr-file")
            .arg(&addr_file);
        if let Some(token) = &self.token {
            let path = dir.path().join("admin-token");
            std::fs::write(&path, token).unwrap_or_else(|e| panic!("writing the token: {e}"));
            cmd.arg("--admin-token-file").arg(path);
        }
        if !self.tls {
            cmd.arg("--insecure-plaintext");
        }
        cmd.args(&self.args);
        for (key, value) in &self.envs {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let log = dir.path().join("control-plane.log");
        let mut process =
            Process::spawn("levee-control-plane", cmd, &log).unwrap_or_else(|e| panic!("{e}"));
        let addrs: ControlPlaneAddrs =
            startup::wait_addr_file(&mut process, &addr_file, STARTUP_DEADLINE).await;
        startup::wait_http_ok(&mut process, addrs.http, "/ready", STARTUP_DEADLINE).await;
        ControlPlane {
            process,
            addrs,
            dir,
            data_dir,
            token: self.token,
            tls: self.tls,
        }
    }
}

impl ControlPlane {
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder {
            data_dir: None,
            token: None,
            args: Vec::new(),
            envs: Vec::new(),
            addrs: None,
            tls: false,
        }
    }

    /// `http://IP:PORT` of the gRPC server (`https://` with [`ControlPlaneBuilder::tls`]),
    /// for `--control-plane` / `--server`.
    pub fn grpc_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addrs.grpc)
    }

    /// The trust bundle the control plane wrote (`<data-dir>/trust-bundle.pem`).
    pub fn trust_bundle(&self) -> PathBuf {
        self.data_dir.join("trust-bundle.pem")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Scrapes the HTTP server's `/metrics`.
    pub async fn metrics(&self) -> Result<Metrics, BoxError> {
        let resp = get_http1(self.addrs.http, "localhost", "/metrics").await?;
        if resp.status != 200 {
            return Err(format!("/metrics answered {}", resp.status).into());
        }
        Ok(Metrics::parse(&resp.text())?)
    }

    /// Runs `leveectl --server <this> [--token T] ARGS` (30 s at most).
    pub async fn leveectl(&self, args: &[&str]) -> Result<Output, BoxError> {
        let mut cmd = startup::command("leveectl", self.dir.path(), "warn");
        cmd.args(["--server", &self.grpc_url()]).kill_on_drop(true);
        if self.tls {
            cmd.arg("--trust-bundle-file").arg(self.trust_bundle());
        }
        if let Some(token) = &self.token {
            cmd.args(["--token", token]);
        }
        cmd.args(args);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| "leveectl did not finish within 30 s")??;
        Ok(out)
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn shutdown(&mut self, timeout: Duration) -> ExitStatus {
        self.process.shutdown(timeout).await
    }

    /// `kill -9`, then waits for the process to be gone.
    pub async fn kill9(&mut self) {
        self.process.kill9().await;
    }

    /// A new control plane on the same data directory (and token).
    pub async fn restart_on_same_data(&self) -> ControlPlane {
        let mut builder = ControlPlane::builder().data_dir(&self.data_dir);
        if let Some(token) = &self.token {
            builder = builder.admin_token(token);
        }
        builder.tls = self.tls;
        builder.start().await
    }

    /// A new control plane on the same data directory, token and addresses
    /// (so proxies pointed at this one reconnect to it). Call after this one
    /// has exited.
    pub async fn restart_on_same_addrs(&self) -> ControlPlane {
        let mut builder = ControlPlane::builder()
            .data_dir(&self.data_dir)
            .addrs(self.addrs);
        if let Some(token) = &self.token {
            builder = builder.admin_token(token);
        }
        builder.tls = self.tls;
        builder.start().await
    }
}
