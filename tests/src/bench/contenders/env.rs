//! The [`Env`] every contender start shares: CPU pinning, where
//! `levee-proxy` is, the run directory, spawning a process with its log
//! there, and making a [`Contender`] of started processes.

use std::{net::SocketAddr, path::PathBuf};

use tokio::process::Command;

use super::contender::Contender;
use crate::bench::{configs, procfs::Usage};
use crate::harness::{BoxError, Process};

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

impl Env {
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(super) fn spawn(&self, name: &str, cmd: Command) -> Result<Process, BoxError> {
        Ok(Process::spawn(
            name,
            cmd,
            &self.path(&format!("{name}.log")),
        )?)
    }

    pub(in crate::bench) fn contender(
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
