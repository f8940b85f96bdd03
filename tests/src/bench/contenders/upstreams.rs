//! The upstream processes behind the contenders: the 1 KiB upstream
//! (`levee-bench --serve-upstream`) and `levee-flaky` with faults, each
//! pinned with the load generator.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use super::env::Env;
use super::launch::{command, read_json, wait_for};
use crate::harness::{BoxError, Process};

/// The upstream process (`levee-bench --serve-upstream`).
pub struct Upstream {
    pub addr: SocketAddr,
    process: Process,
}

#[derive(Deserialize)]
struct UpstreamAddr {
    addr: SocketAddr,
}

impl Env {
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
}

impl Upstream {
    pub async fn stop(mut self) {
        let _ = self.process.terminate();
        let _ = self.process.wait_exit(Duration::from_secs(5)).await;
    }
}
