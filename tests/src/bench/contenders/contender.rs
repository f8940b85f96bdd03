//! A running [`Contender`]: where clients connect, what to measure, and
//! stopping its processes (and their descendants, should the runner exit
//! early).

use std::{net::SocketAddr, time::Duration};

use crate::bench::configs;
use crate::bench::procfs::{self, Usage};
use crate::harness::Process;

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
    pub(super) procs: Vec<Process>,
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
    pub(in crate::bench) fn on_shared(
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
            .flat_map(procfs::tree)
        {
            terminate(pid);
        }
    }
}
