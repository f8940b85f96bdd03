//! What a process holds, read from `/proc/<pid>`: open file descriptors and
//! resident memory, and a [`Sampler`] that records their peaks while a test
//! runs (for the abuse tests' bounds), and the CPU time it used.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Open file descriptors of `pid` (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> std::io::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS line"))
}

/// CPU time `pid` has used (user + system), from `/proc/<pid>/stat`; a
/// measure of work that, unlike wall time, does not depend on the load of
/// the machine.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(std::io::Error::other("unexpected /proc/<pid>/stat"));
    };
    // Clock ticks: USER_HZ, 100 on every Linux ABI.
    Ok(Duration::from_millis((user + system) * 10))
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
