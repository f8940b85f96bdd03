//! What a process holds, read from `/proc/<pid>`: open file descriptors and
//! resident memory, and a [`Sampler`] that records their peaks while a test
//! runs (for the abuse tests' bounds), and the CPU time it used.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::bench::procfs;

fn gone(pid: u32) -> std::io::Error {
    std::io::Error::other(format!("cannot read /proc/{pid}: has it exited?"))
}

/// Open file descriptors of `pid` (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> std::io::Result<u64> {
    procfs::open_fds(pid)
        .map(|n| n as u64)
        .ok_or_else(|| gone(pid))
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    procfs::rss(pid).map(|b| b / 1024).ok_or_else(|| gone(pid))
}

/// CPU time `pid` has used (user + system), from `/proc/<pid>/stat`; a
/// measure of work that, unlike wall time, does not depend on the load of
/// the machine.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = procfs::stat(pid).ok_or_else(|| gone(pid))?;
    // Clock ticks: USER_HZ, 100 on every Linux ABI.
    Ok(Duration::from_millis(stat.cpu_ticks * 10))
}

/// Peaks of a process's fds and RSS, sampled every 20 ms until dropped.
pub struct Sampler {
    peak_fds: Arc<AtomicU64>,
    peak_rss_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let peak_fds = Arc::new(AtomicU64::new(0));
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (fds, rss, done) = (peak_fds.clone(), peak_rss_kib.clone(), stop.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = open_fds(pid) {
                    fds.fetch_max(n, Ordering::Relaxed);
                }
                if let Ok(kib) = rss_kib(pid) {
                    rss.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Sampler {
            peak_fds,
            peak_rss_kib,
            stop,
        }
    }

    /// The most file descriptors seen open at once.
    pub fn peak_fds(&self) -> u64 {
        self.peak_fds.load(Ordering::Relaxed)
    }

    /// The largest resident memory seen, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.peak_rss_kib.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
