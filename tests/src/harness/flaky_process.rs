//! `levee-flaky` as a separate process (not the in-process
//! [`FlakyUpstream`](crate::flaky::FlakyUpstream)), for tests that must
//! `kill -9` an upstream: a real process dying mid-response closes its
//! sockets the way a crashed server does.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Process, STARTUP_DEADLINE, startup};

/// What `levee-flaky --addr-file` writes.
#[derive(Deserialize)]
struct AddrFile {
    addr: SocketAddr,
}

/// A running `levee-flaky` on loopback port 0.
pub struct FlakyProcess {
    pub process: Process,
    pub addr: SocketAddr,
    /// Holds the addr file and the log.
    _dir: tempfile::TempDir,
}

impl FlakyProcess {
    /// Starts `levee-flaky --id id` with extra flags; waits until it answers.
    pub async fn start(id: &str, args: &[&str]) -> FlakyProcess {
        let dir = tempfile::Builder::new()
            .prefix("levee-flaky-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
        let addr_file = dir.path().join("addr.json");
        let mut cmd = startup::command("levee-flaky", dir.path(), "warn");
        cmd.args(["--addr", "127.0.0.1:0", "--id", id])
            .arg("--addr-file")
            .arg(&addr_file)
            .args(args);
        let log = dir.path().join("flaky.log");
        let mut process =
            Process::spawn("levee-flaky", cmd, &log).unwrap_or_else(|e| panic!("{e}"));
        let AddrFile { addr } =
            startup::wait_addr_file(&mut process, &addr_file, STARTUP_DEADLINE).await;
        startup::wait_http_ok(&mut process, addr, "/__flaky/stats", STARTUP_DEADLINE).await;
        FlakyProcess {
            process,
            addr,
            _dir: dir,
        }
    }

    /// `kill -9`, then waits for the process to be gone.
    pub async fn kill9(&mut self) {
        self.process.kill9().await;
    }
}
