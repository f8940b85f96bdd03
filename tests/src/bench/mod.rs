//! `levee-bench`: Levee side by side with a direct call, HAProxy and nginx
//! (issue 6, DESIGN.md §9). Everything runs on loopback (the transparent
//! scenario: in two network namespaces), started by the runner itself;
//! results are medians of interleaved repetitions.
//!
//! Layout:
//! - [`plan`]: the [`Plan`] (full or `--quick`), `--scenarios`, which
//!   contender runs which case.
//! - [`scenarios`]: the plan's execution.
//! - [`trace_overhead`]: the tracing-overhead scenario (traced Levees, a
//!   counting OTLP collector, its table).
//! - [`contenders`]: starting the upstream, Levee (one hop, two hops, full
//!   policy), HAProxy and nginx, pinned with `taskset`.
//! - [`convergence`]: scenario 6, the control plane's convergence example.
//! - [`faults`]: scenario 5, outcomes behind faulty endpoints (`levee-flaky`).
//! - [`memory`]: scenario 3's RSS measurement of one contender.
//! - [`transparent`]: transparent vs explicit, two pods in network
//!   namespaces (root only), its table.
//! - [`pods`]: those pods: namespaces, `init-iptables`, sidecars, the app,
//!   a load runtime inside the client pod; their teardown.
//! - [`load`]: the open-loop / closed-loop HTTP/1.1 and h2c load generator.
//! - [`pacing`]: the open-loop send schedule.
//! - [`histogram`]: HDR latency histograms, percentiles and medians.
//! - [`procfs`]: CPU time and RSS of the contenders from `/proc`.
//! - [`configs`]: HAProxy and nginx configs, Levee policy files.
//! - [`upstream`]: the 1 KiB upstream (`levee-bench --serve-upstream`).
//! - [`report`]: medians, added latency, the text table and JSON.

pub mod configs;
pub mod contenders;
pub mod convergence;
pub mod faults;
pub mod histogram;
pub mod load;
pub mod memory;
pub mod pacing;
pub mod plan;
pub mod pods;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod trace_overhead;
pub mod transparent;
pub mod upstream;

pub use contenders::{Env, Pinning};
pub use plan::{Plan, Scenario};
pub use report::{Machine, Report};

/// Describes this machine for the report.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        commit: commit(),
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel,
        haproxy: version_line("haproxy", "-v"),
        nginx: version_line("nginx", "-v"),
    }
}

/// The checked-out commit, `+dirty` when the work tree has changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{head}+dirty"),
            _ => head,
        },
        None => "unknown".into(),
    }
}

/// The first line a tool prints for its version (stdout or stderr).
fn version_line(program: &str, flag: &str) -> String {
    match std::process::Command::new(program).arg(flag).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
        Err(_) => format!("{program}: not installed"),
    }
}

/// Proxies on the last CPU, everything else on CPU 0, when there are at
/// least two CPUs and `taskset` works; otherwise no pinning.
pub fn pinning() -> Pinning {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = std::process::Command::new("taskset")
        .args(["-c", "0", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if cpus < 2 || !taskset {
        return Pinning::default();
    }
    Pinning {
        proxy: Some((cpus - 1).to_string()),
        load: Some("0".into()),
    }
}

/// Moves every thread of this process onto `cpus` (`taskset -a -p`).
pub fn pin_self(cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests;
