//! Two "pods" for the transparent-mode tests ([`TwoPods`]): a client and a
//! server namespace joined by a veth pair ([`NetnsPair`]: the client is
//! side `a`, the server side `b`, at [`B_V4`](super::netns::B_V4)/[`B_V6`](super::netns::B_V6)), each with
//! `init-iptables` applied and a sidecar running as the proxy uid when the
//! test asks for one. Apps run inside with no Levee flag or variable: they
//! do not know they have a sidecar.
//!
//! Also what every such test does inside one namespace: apply
//! `init-iptables`, start a sidecar with a policy file, read its
//! `/metrics` over loopback (never captured), run `curl`, start a
//! `levee-flaky` app on loopback.

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use levee_proto::policy::Document;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[cfg(doc)]
use super::upstream::{greeting, reversing};
use super::{
    CurlOutput, Metrics, Process, binary, curl_command, eventually,
    netns::{B_V4, Netns, NetnsPair, NetnsProxy},
    upstream::{GREETING, exchange},
    yaml,
};

/// The proxy's uid: its own connections are never captured.
pub const PROXY_UID: u32 = 2102;

/// The admin port the sidecars listen on (every address of the pod).
pub const ADMIN_PORT: u16 = 4191;

const DEADLINE: Duration = Duration::from_secs(10);

/// A client pod and a server pod (see the module doc). Both namespaces
/// are deleted on drop.
pub struct TwoPods {
    pub client: Netns,
    pub server: Netns,
    /// Policy files and logs, readable by the proxy uid.
    dir: tempfile::TempDir,
}

impl TwoPods {
    /// Creates both namespaces and links them (no rules, no sidecar yet).
    pub fn create() -> TwoPods {
        let NetnsPair { a, b } = NetnsPair::create();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temp dir");
        TwoPods {
            client: a,
            server: b,
            dir,
        }
    }

    /// The server pod's IPv4 address and `port`: what a client dials.
    pub fn server_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(B_V4, port)
    }

    /// A file in the pods' temp directory (logs, scripts).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Applies `init-iptables` (plus `init_args`) in the server pod and
    /// starts its sidecar with `docs` as its policy file (none when empty)
    /// and `extra` flags.
    pub async fn server_sidecar(
        &self,
        init_args: &[&str],
        docs: &[Document],
        extra: &[&str],
    ) -> NetnsProxy {
        self.server.init_iptables(init_args).await;
        self.server.sidecar(self.dir.path(), docs, extra).await
    }

    /// The same in the client pod.
    pub async fn client_sidecar(
        &self,
        init_args: &[&str],
        docs: &[Document],
        extra: &[&str],
    ) -> NetnsProxy {
        self.client.init_iptables(init_args).await;
        self.client.sidecar(self.dir.path(), docs, extra).await
    }
}

impl Netns {
    /// Runs `levee-proxy init-iptables args…` inside; panics with its
    /// stderr unless it succeeds.
    pub async fn init_iptables(&self, args: &[&str]) {
        let mut all = vec!["init-iptables"];
        all.extend_from_slice(args);
        let init = self
            .output(&binary("levee-proxy").to_string_lossy(), &all)
            .await;
        assert!(
            init.status.success(),
            "init-iptables {args:?} in {}: {}",
            self.name(),
            String::from_utf8_lossy(&init.stderr)
        );
    }

    /// Starts a sidecar as [`PROXY_UID`] with `docs` as its policy file
    /// (written in `dir`, readable by that uid; none when `docs` is empty)
    /// and `extra` flags.
    pub async fn sidecar(&self, dir: &Path, docs: &[Document], extra: &[&str]) -> NetnsProxy {
        let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if !docs.is_empty() {
            let path = dir.join(format!("{}-policy.yaml", self.name()));
            std::fs::write(&path, yaml::documents(docs)).expect("write the policy");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .expect("chmod the policy");
            args.push("--policy-file".to_owned());
            args.push(path.to_string_lossy().into_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.start_proxy(PROXY_UID, &args).await
    }

    /// The sidecar's `/metrics`, fetched inside over loopback (not captured).
    pub async fn admin_metrics(&self) -> Metrics {
        let mut conn = self
            .connect(SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT)))
            .expect("connect to the admin port");
        conn.write_all(b"GET /metrics HTTP/1.0\r\nhost: admin\r\n\r\n")
            .await
            .expect("send");
        let mut got = Vec::new();
        tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got))
            .await
            .expect("metrics in time")
            .expect("read");
        let text = String::from_utf8_lossy(&got);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Metrics::parse(body).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// `curl -sS args…` run inside (10 s max), as [`super::curl`] runs it;
    /// panics when curl cannot be run.
    pub async fn curl(&self, args: &[&str]) -> CurlOutput {
        curl_command(self.command("curl"), args)
            .await
            .unwrap_or_else(|e| panic!("curl {args:?} in {}: {e}", self.name()))
    }

    /// Sends `sent` to `target` from inside and half-closes; asserts that
    /// the answer is `sent` reversed (a [`reversing`] peer reached through
    /// whatever forwards it).
    pub async fn assert_reversed(&self, target: SocketAddr, sent: &[u8]) {
        let conn = self.connect(target).expect("connect");
        let got = exchange(conn, sent, DEADLINE).await;
        let mut reversed = sent.to_vec();
        reversed.reverse();
        assert!(
            got == reversed,
            "{target}: {} bytes back of {}",
            got.len(),
            sent.len()
        );
    }

    /// Connects to `target` from inside and sends nothing; asserts that a
    /// [`greeting`] server's first words arrive (a server-speaks-first
    /// protocol gets through).
    pub async fn assert_greeted(&self, target: SocketAddr) {
        let mut conn = self.connect(target).expect("connect");
        let mut first = vec![0u8; GREETING.len()];
        tokio::time::timeout(DEADLINE, conn.read_exact(&mut first))
            .await
            .expect("the server's first words in time")
            .expect("read");
        assert_eq!(first, GREETING, "{target}");
    }

    /// Returns once something accepts connections on `addr` inside.
    pub async fn wait_listening(&self, addr: SocketAddr) {
        eventually(DEADLINE, &format!("{addr} accepts"), || async move {
            self.connect(addr).map(drop).map_err(|e| e.to_string())
        })
        .await;
    }

    /// `levee-flaky` inside on `127.0.0.1:port` (only the sidecar reaches
    /// it) with `args`, an empty environment and no flag about Levee;
    /// returns once it answers. Its output goes to `log`.
    pub async fn flaky_app(&self, port: u16, args: &[&str], log: &Path) -> Process {
        let mut cmd = self.command(binary("levee-flaky"));
        cmd.env_clear()
            .env("RUST_LOG", "warn")
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(args);
        let process = Process::spawn("levee-flaky", cmd, log).expect("spawn levee-flaky");
        self.wait_listening(SocketAddr::from(([127, 0, 0, 1], port)))
            .await;
        process
    }

    /// The `requests` count of the `levee-flaky` app on `127.0.0.1:port`
    /// inside, read on loopback (not through the sidecar).
    pub async fn flaky_requests(&self, port: u16) -> u64 {
        let mut conn = self
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("connect to the app");
        conn.write_all(b"GET /__flaky/stats HTTP/1.0\r\nhost: stats\r\n\r\n")
            .await
            .expect("send");
        let mut got = Vec::new();
        tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got))
            .await
            .expect("stats in time")
            .expect("read");
        let text = String::from_utf8_lossy(&got);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let stats: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        stats["requests"]
            .as_u64()
            .unwrap_or_else(|| panic!("no requests count: {text}"))
    }
}
