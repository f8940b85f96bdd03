//! A child process under test: its output goes to a log file that is printed
//! when a test panics while the process is alive, and it is stopped with
//! signals (SIGTERM, SIGHUP, SIGKILL) and waited for with a deadline.

use std::{
    fs::OpenOptions,
    io,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::process::{Child, Command};

/// A running (or exited) child process with its output in a file.
pub struct Process {
    /// For messages: which binary this is.
    name: String,
    child: Child,
    /// stdout and stderr both land here (appending, so they interleave).
    log_path: PathBuf,
    /// Set once the exit status has been collected.
    exited: Option<ExitStatus>,
}

/// Sends `signal` to `pid`.
// The only unsafe in the harness: libc::kill has no memory-safety
// preconditions; it is `unsafe` only because it is an FFI call.
#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Process {
    /// Spawns `cmd` with stdin closed and output appended to `log_path`.
    pub fn spawn(name: &str, mut cmd: Command, log_path: &Path) -> io::Result<Process> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning {name}: {e}")))?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log_path: log_path.to_owned(),
            exited: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// How many file descriptors the process has open (`/proc/<pid>/fd`).
    pub fn open_fds(&self) -> io::Result<usize> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other(format!("{} has exited", self.name)))?;
        crate::bench::procfs::open_fds(pid)
            .ok_or_else(|| io::Error::other(format!("cannot read /proc/{pid}/fd")))
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        match (self.exited, self.child.id()) {
            (None, Some(pid)) => send_signal(pid, signal),
            _ => Err(io::Error::other(format!(
                "{} has already exited",
                self.name
            ))),
        }
    }

    /// SIGTERM: graceful shutdown.
    pub fn terminate(&self) -> io::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// SIGHUP: reload.
    pub fn hangup(&self) -> io::Result<()> {
        self.signal(libc::SIGHUP)
    }

    /// SIGKILL (`kill -9`).
    pub fn kill(&self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.exited = Some(status);
                Ok(status)
            }
            Ok(Err(e)) => Err(format!("waiting for {}: {e}", self.name)),
            Err(_) => Err(format!("{} did not exit within {timeout:?}", self.name)),
        }
    }

    /// SIGTERM, then the exit status within `timeout`; panics saying which
    /// step failed.
    pub async fn shutdown(&mut self, timeout: Duration) -> ExitStatus {
        self.terminate()
            .unwrap_or_else(|e| panic!("SIGTERM to {}: {e}", self.name));
        self.wait_exit(timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kill -9`, then waits (10 s at most) for the process to be gone;
    /// panics saying which step failed.
    pub async fn kill9(&mut self) {
        self.kill()
            .unwrap_or_else(|e| panic!("SIGKILL to {}: {e}", self.name));
        self.wait_exit(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Prints the process's output to the test's stderr, framed by its name.
    pub fn print_output(&self) {
        eprintln!(
            "----- {} output ({}) -----\n{}\n----- end of {} output -----",
            self.name,
            self.log_path.display(),
            self.output(),
            self.name
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_output();
        }
        if self.try_exit().is_none() {
            let _ = self.child.start_kill();
        }
    }
}
