//! Reading a process's cost from `/proc`: CPU time (utime + stime from
//! `/proc/<pid>/stat`), resident memory (`VmRSS` from `/proc/<pid>/status`),
//! open file descriptors, and the process tree (nginx's master and worker count together).

use std::time::Duration;

/// CPU time and parent of one process, from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name may hold spaces
/// and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        ppid,
        cpu_ticks: utime + stime,
    })
}

/// `VmRSS` in bytes from the text of `/proc/<pid>/status`.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn rss(pid: u32) -> Option<u64> {
    parse_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Open file descriptors of `pid` (entries of `/proc/<pid>/fd`); `None`
/// when the process is gone (or not ours to read).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// `pid` and all its descendants that are alive now.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(s) = stat(child) {
                parents.push((child, s.ppid));
            }
        }
    }
    descendants(pid, &parents)
}

/// `root` followed by every process whose parent chain leads to it, given
/// `(pid, ppid)` pairs.
pub fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found
}

/// The cost counters of a set of processes (a contender).
#[derive(Clone, Debug)]
pub struct Usage {
    /// Root pids; their descendants are counted too.
    roots: Vec<u32>,
    /// Clock ticks per second (`getconf CLK_TCK`).
    ticks_per_sec: u64,
}

impl Usage {
    pub fn new(roots: Vec<u32>, ticks_per_sec: u64) -> Usage {
        Usage {
            roots,
            ticks_per_sec: ticks_per_sec.max(1),
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.roots.iter().flat_map(|r| tree(*r)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Total CPU time used so far by every process of the contender.
    pub fn cpu(&self) -> Duration {
        let ticks: u64 = self
            .pids()
            .iter()
            .filter_map(|p| stat(*p))
            .map(|s| s.cpu_ticks)
            .sum();
        Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / self.ticks_per_sec))
    }

    /// Total resident memory now, in bytes.
    pub fn rss(&self) -> u64 {
        self.pids().iter().filter_map(|p| rss(*p)).sum()
    }
}

/// `getconf CLK_TCK`, or 100 (the Linux default) when it cannot be run.
pub fn ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_tricky_name() {
        let text = "4242 (levee (x) y) S 17 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 35 0 0 20 0 3 0 123 456789 2000 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ppid: 17,
                cpu_ticks: 285
            })
        );
        assert_eq!(parse_stat("1 (x) S 0"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn rss_in_bytes() {
        let status = "Name:\tlevee-proxy\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t2\n";
        assert_eq!(parse_rss(status), Some(5120 * 1024));
        assert_eq!(parse_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn our_own_process_is_readable() {
        let me = std::process::id();
        let s = stat(me).expect("own stat");
        assert!(s.ppid > 0);
        assert!(rss(me).expect("own rss") > 1024 * 1024);
        assert!(tree(me).contains(&me));
    }

    #[test]
    fn descendants_follow_the_chain() {
        let pairs = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 10)];
        let mut d = descendants(10, &pairs);
        d.sort();
        assert_eq!(d, vec![10, 11, 12, 14]);
        assert_eq!(descendants(99, &pairs), vec![99]);
    }
}
