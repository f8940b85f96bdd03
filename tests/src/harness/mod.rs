//! The end-to-end harness: runs the workspace's real binaries on loopback
//! port 0, waits for them with deadlines, and talks to them over sockets.
//!
//! Layout:
//! - `mod.rs`: finding binaries, [`eventually`] (poll with a deadline).
//! - `process.rs`: [`Process`], a child with its output in a log file,
//!   printed when a test panics; signals and exit with a deadline.
//! - `proxy.rs`: [`ProxyBuilder`] / [`Proxy`]: `levee-proxy` with a temp dir,
//!   `--addr-file`, a policy file and admin helpers (`/metrics`, `/config`).
//! - `control_plane.rs`: [`ControlPlane`]: `levee-control-plane` on port 0,
//!   `leveectl` against it, `kill -9` and restart on the same data.
//! - `startup.rs`: the shared start sequence (clean env, addr file, health).
//! - `client.rs`: hyper HTTP/1.1 and HTTP/2 clients and a `curl` runner.
//! - `metrics.rs`: Prometheus text parsing.
//! - [`yaml`]: policy files from levee-proto's typed documents.
//! - [`load`]: closed-loop load that tallies answers ([`Tally`]).
//! - [`web`]: the `web:80` fixture of the resilience tests.
//! - [`mesh`]: proxies in control-plane mode, `leveectl apply`, `/config` polling.
//! - [`python`]: a Python with `grpcio` for the third-party gRPC client.
//! - [`upstream`]: small in-process upstreams that report what arrived.
//! - [`resources`]: a process's open fds and RSS from `/proc`, and their peaks.
//! - [`flaky_process`]: `levee-flaky` as a process, for `kill -9` mid-response.
//! - [`retrying`]: load from clients that retry only what never reached the server.
//! - [`abuse`]: a process's footprint (RSS, fds) and an upstream recording
//!   every request, for the abuse tests.
//! - [`h2frames`]: hand-written HTTP/2 frames over a raw TCP stream.
//! - [`admission`]: the recorded AdmissionReview fixtures, the webhook
//!   golden files, a JSONPatch applier and an HTTPS client for the webhooks.

//! - [`certs`]: a test CA and SPIFFE workload certificates (rcgen) for mTLS.
//! - [`identity`]: join tokens, proxies certified by a control plane, and
//!   the certificate a TLS listener presents.
//! - [`netns`]: network namespaces (root only) joined by a veth pair, commands
//!   and TCP listeners inside them, deleted on drop.
//! - [`pods`]: [`pods::TwoPods`], a client and a server "pod" (namespaces
//!   with `init-iptables` and a sidecar each) for the transparent tests.

pub mod abuse;
pub mod admission;

pub mod certs;
mod client;
mod control_plane;
pub mod flaky_process;
pub mod h2frames;
pub mod identity;
pub mod kube_api;
pub mod load;
pub mod mesh;
mod metrics;
pub mod netns;
pub mod pods;
mod process;
mod proxy;
pub mod python;
pub mod resources;
pub mod retrying;
mod startup;
pub mod upstream;
pub mod web;
pub mod yaml;

use std::{path::PathBuf, time::Duration};

pub use client::{
    Body, BoxError, CurlOutput, Http1Conn, Http2Conn, HttpResponse, REQUEST_DEADLINE, curl,
    curl_command, empty, full, get_http1, get_http2, grpc_channel, read_head, send_http1,
    send_http2, with_trailers,
};
pub use control_plane::{ControlPlane, ControlPlaneAddrs, ControlPlaneBuilder};
pub use load::{Background, Tally};
pub use metrics::{Metrics, Sample};
pub use process::Process;
pub use proxy::{Addrs, Proxy, ProxyBuilder, write_atomically};

/// How long a binary may take to start (bind, write its addr file, be ready).
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// The directory holding the workspace's built binaries: `CARGO_TARGET_DIR`'s
/// profile dir, else derived from this test executable
/// (`target/debug/deps/<test>` → `target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let profile = dir
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| "debug".into());
        let candidate = PathBuf::from(target).join(profile);
        if candidate.is_dir() {
            return candidate;
        }
    }
    dir
}

/// The path of workspace binary `name`; panics with how to build it when absent.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` before the end-to-end tests",
        path.display()
    );
    path
}

/// Polls `check` every 20 ms until it returns `Ok`, or panics after
/// `timeout` with `what` and the last `Err` reason seen.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = tokio::time::Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Installs a test log subscriber (once) honouring `RUST_LOG`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
