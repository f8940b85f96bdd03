//! The report: per-repetition samples reduced to medians, added latency
//! against the direct call, and rendering as a text table and JSON.

use serde::Serialize;

use super::histogram::{Summary, median, median_summary};
use super::load::Protocol;

/// What one repetition of one latency case measured for one contender.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySample {
    pub latency: Summary,
    pub achieved_rps: f64,
    pub errors: u64,
    /// Proxy CPU time over successful requests (warm-up included in both).
    pub cpu_us_per_req: Option<f64>,
    /// Proxy RSS halfway through the measured window.
    pub rss_bytes: Option<u64>,
    /// Requests sent, warm-up included.
    pub requests: u64,
}

/// The medians of a latency case for one contender.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    pub contender: String,
    pub protocol: Protocol,
    pub rate: f64,
    pub connections: usize,
    pub reps: usize,
    pub latency: Summary,
    pub achieved_rps: f64,
    /// Errors summed over all repetitions.
    pub errors: u64,
    pub cpu_us_per_req: Option<f64>,
    pub rss_mib: Option<f64>,
    /// Contender minus direct at the same percentile (medians); none for direct.
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
    pub added_p999_us: Option<f64>,
}

/// Closed-loop maximum throughput of one contender.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRow {
    pub contender: String,
    pub connections: usize,
    pub reps: usize,
    pub achieved_rps: f64,
    pub errors: u64,
    pub cpu_us_per_req: Option<f64>,
    pub p99_us: f64,
}

/// Resident memory of one contender's processes.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryRow {
    pub contender: String,
    /// Right after start-up and its readiness checks, before any load.
    pub rss_idle_mib: f64,
    pub idle_connections: usize,
    /// With `idle_connections` open keep-alive connections, each used once.
    pub rss_with_connections_mib: f64,
    pub connection_errors: u64,
    /// After the connections closed: RSS once back within 2 MiB of
    /// `rss_idle_mib`, or at the end of the wait.
    pub rss_after_mib: f64,
    /// Seconds from the close until RSS was back within 2 MiB of idle
    /// (`None`: not within the wait, 60 s in a full run).
    pub settled_after: Option<f64>,
}

/// Everything one run measured, as printed and as written to `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub reps: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub pinning: String,
    pub latency: Vec<LatencyRow>,
    pub throughput: Vec<ThroughputRow>,
    pub memory: Vec<MemoryRow>,
    /// Levee with the full policy versus none: CPU per request ratio − 1, in percent.
    pub policy_cpu_overhead_pct: Option<f64>,
    /// Scenario 5: outcomes behind faulty endpoints.
    pub faults: Vec<super::faults::FaultRow>,
    /// Scenario 6: the control plane's convergence example, one line per size.
    pub convergence: Vec<String>,
    /// Tracing overhead: off / 1 % / 100 % per case.
    pub tracing: Vec<super::trace_overhead::TracingRow>,
    /// Tracing overhead: off / 1 % / 100 % in the closed loop.
    pub tracing_closed_loop: Vec<super::trace_overhead::ClosedLoopRow>,
    /// Tracing overhead: spans each traced contender exported and dropped.
    pub trace_spans: Vec<super::trace_overhead::SpanTally>,
    /// Transparent vs explicit (`None`: not run, or skipped).
    pub transparent: Option<super::transparent::TransparentReport>,
    pub skipped: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `git describe`-like: the commit measured, `+dirty` with local changes.
    pub commit: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub haproxy: String,
    pub nginx: String,
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// Reduces the samples of one case and contender to their medians.
pub fn latency_row(
    contender: &str,
    protocol: Protocol,
    rate: f64,
    connections: usize,
    samples: &[LatencySample],
) -> LatencyRow {
    let opt_median = |vals: Vec<f64>| (!vals.is_empty()).then(|| median(&vals));
    LatencyRow {
        contender: contender.to_owned(),
        protocol,
        rate,
        connections,
        reps: samples.len(),
        latency: median_summary(&samples.iter().map(|s| s.latency).collect::<Vec<_>>()),
        achieved_rps: median(&samples.iter().map(|s| s.achieved_rps).collect::<Vec<_>>()),
        errors: samples.iter().map(|s| s.errors).sum(),
        cpu_us_per_req: opt_median(samples.iter().filter_map(|s| s.cpu_us_per_req).collect()),
        rss_mib: opt_median(
            samples
                .iter()
                .filter_map(|s| s.rss_bytes)
                .map(|b| b as f64 / MIB)
                .collect(),
        ),
        added_p50_us: None,
        added_p99_us: None,
        added_p999_us: None,
    }
}

/// Fills `added_*` of every row from the direct row of the same case.
pub fn add_deltas(rows: &mut [LatencyRow]) {
    let directs: Vec<LatencyRow> = rows
        .iter()
        .filter(|r| r.contender == "direct")
        .cloned()
        .collect();
    for row in rows.iter_mut().filter(|r| r.contender != "direct") {
        let Some(d) = directs.iter().find(|d| {
            d.protocol == row.protocol && d.rate == row.rate && d.connections == row.connections
        }) else {
            continue;
        };
        row.added_p50_us = Some(row.latency.p50_us - d.latency.p50_us);
        row.added_p99_us = Some(row.latency.p99_us - d.latency.p99_us);
        row.added_p999_us = Some(row.latency.p999_us - d.latency.p999_us);
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// The human-readable tables.
pub fn render(report: &Report) -> String {
    let m = &report.machine;
    let mut out = format!(
        "commit {} | machine: {} x {} | kernel {} | {} | {}\nreps {} (medians), warm-up {:.1}s, window {:.1}s, {}\n\n",
        m.commit,
        m.nproc,
        m.cpu_model,
        m.kernel,
        m.haproxy,
        m.nginx,
        report.reps,
        report.warmup_s,
        report.duration_s,
        report.pinning
    );
    if !report.latency.is_empty() {
        out += &latency_table(&report.latency);
    }
    if !report.throughput.is_empty() {
        out += "\nTHROUGHPUT (closed loop, HTTP/1.1, proxy pinned to one core)\n";
        out += &format!(
            "{:<13} {:>5} {:>10} {:>6} {:>8} {:>9} {:>6}\n",
            "contender", "conn", "req/s", "errs", "cpu/req", "p99 µs", "core%"
        );
        for r in &report.throughput {
            out += &format!(
                "{:<13} {:>5} {:>10.0} {:>6} {:>8} {:>9.1} {:>6}\n",
                r.contender,
                r.connections,
                r.achieved_rps,
                r.errors,
                opt(r.cpu_us_per_req, 1),
                r.p99_us,
                // CPU time per request x requests per second: how busy the
                // proxy's core was; well under 100 means the load side was the limit.
                opt(r.cpu_us_per_req.map(|c| c * r.achieved_rps / 1e4), 0)
            );
        }
    }
    if !report.memory.is_empty() {
        out += "\nMEMORY (RSS of the proxy processes)\n";
        out += &format!(
            "{:<13} {:>9} {:>12} {:>9} {:>10} {:>11}\n",
            "contender", "idle MiB", "idle conns", "MiB", "after MiB", "settled s"
        );
        for r in &report.memory {
            let settled = r
                .settled_after
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.1}"));
            out += &format!(
                "{:<13} {:>9.1} {:>12} {:>9.1} {:>10.1} {:>11}\n",
                r.contender,
                r.rss_idle_mib,
                r.idle_connections,
                r.rss_with_connections_mib,
                r.rss_after_mib,
                settled
            );
        }
    }
    if let Some(p) = report.policy_cpu_overhead_pct {
        out += &format!("\nfull policy vs no policy (Levee one hop, CPU per request): {p:+.1}%\n");
    }
    if !report.faults.is_empty() {
        out += &super::faults::render(&report.faults);
    }
    out += &super::trace_overhead::render(
        &report.tracing,
        &report.tracing_closed_loop,
        &report.trace_spans,
    );
    if !report.convergence.is_empty() {
        out += "\nCONTROL-PLANE CONVERGENCE (Apply answered -> every watch stream ACKed)\n";
        for line in &report.convergence {
            out += line;
            out += "\n";
        }
    }
    if let Some(t) = &report.transparent {
        out += &super::transparent::render(t);
    }
    for s in &report.skipped {
        out += &format!("skipped: {s}\n");
    }
    out
}

/// Scenario 1's table.
fn latency_table(rows: &[LatencyRow]) -> String {
    let mut out =
        "LATENCY (open loop, µs from intended send; added = contender - direct)\n".to_owned();
    out += &format!(
        "{:<16} {:<3} {:>6} {:>5} {:>8} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>7} {:>6}\n",
        "contender",
        "pr",
        "rate",
        "conn",
        "achieved",
        "errs",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "+p50",
        "+p99",
        "+p99.9",
        "cpu/req",
        "rssMiB"
    );
    for r in rows {
        let l = &r.latency;
        out += &format!(
            "{:<16} {:<3} {:>6.0} {:>5} {:>8.0} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8} {:>8} {:>8} {:>7} {:>6}\n",
            r.contender,
            r.protocol.label(),
            r.rate,
            r.connections,
            r.achieved_rps,
            r.errors,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            opt(r.added_p50_us, 1),
            opt(r.added_p99_us, 1),
            opt(r.added_p999_us, 1),
            opt(r.cpu_us_per_req, 1),
            opt(r.rss_mib, 1)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(p50: f64, p99: f64, cpu: Option<f64>) -> LatencySample {
        LatencySample {
            latency: Summary {
                count: 100,
                p50_us: p50,
                p90_us: p50,
                p99_us: p99,
                p999_us: p99,
                max_us: p99,
            },
            achieved_rps: 1000.0,
            errors: 1,
            cpu_us_per_req: cpu,
            rss_bytes: Some(4 * 1024 * 1024),
            requests: 120,
        }
    }

    #[test]
    fn rows_take_medians_and_deltas_match_the_case() {
        let direct = latency_row(
            "direct",
            Protocol::Http1,
            1000.0,
            16,
            &[
                sample(50.0, 90.0, None),
                sample(40.0, 80.0, None),
                sample(60.0, 100.0, None),
            ],
        );
        let levee = latency_row(
            "levee-1hop",
            Protocol::Http1,
            1000.0,
            16,
            &[
                sample(80.0, 150.0, Some(20.0)),
                sample(90.0, 170.0, Some(30.0)),
                sample(70.0, 160.0, Some(25.0)),
            ],
        );
        let other_case = latency_row(
            "haproxy",
            Protocol::Http1,
            5000.0,
            16,
            &[sample(1.0, 2.0, None)],
        );
        assert_eq!(levee.errors, 3);
        assert_eq!(levee.cpu_us_per_req, Some(25.0));
        assert_eq!(levee.rss_mib, Some(4.0));
        let mut rows = vec![direct, levee, other_case];
        add_deltas(&mut rows);
        assert_eq!(rows[0].added_p50_us, None);
        assert_eq!(rows[1].added_p50_us, Some(30.0));
        assert_eq!(rows[1].added_p99_us, Some(70.0));
        assert_eq!(rows[2].added_p50_us, None, "no direct row at 5000 req/s");
    }
}
