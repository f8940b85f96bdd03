//! `levee-soak`: the soak run of `docs/reliability.md` (not part of CI).
//! A control plane, a caller proxy in control-plane mode and an upstream on
//! loopback; an open-loop load at a fixed rate through the proxy while a
//! policy change is applied through the control plane every second. Every
//! sample interval it appends a CSV row (requests, errors, p50/p99, RSS and
//! open file descriptors of the proxy and the control plane, policy
//! version) and at the end prints whether memory and descriptors stayed
//! flat. Exit status 0 when flat and error-free, 1 otherwise.
//!
//! Run it through `scripts/soak.sh` (builds the binaries first).

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use levee_tests::{
    bench::{
        load::{self, LoadSpec, Protocol},
        procfs,
    },
    flaky::FlakyUpstream,
    harness::{ControlPlane, mesh, yaml},
};

/// Soak: steady load and a policy change every second, sampled over time.
#[derive(Parser, Debug)]
#[command(name = "levee-soak", version, about)]
struct Args {
    /// How long to run, in minutes (fractions allowed).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,

    /// Requests per second through the proxy (open loop).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,

    /// Keep-alive connections the load is spread over.
    #[arg(long, default_value_t = 32)]
    connections: usize,

    /// Seconds per sample (one CSV row each).
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,

    /// Milliseconds between policy changes through the control plane.
    #[arg(long, default_value_t = 1000)]
    policy_every_ms: u64,

    /// The CSV to write.
    #[arg(long, default_value = "soak.csv")]
    csv: PathBuf,
}

const AUTHORITY: &str = "inventory:7100";

/// One CSV row.
struct Sample {
    elapsed_s: f64,
    ok: u64,
    errors: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    proxy_rss_kib: u64,
    proxy_fds: usize,
    cp_rss_kib: u64,
    cp_fds: usize,
    applies_ok: u64,
    applies_failed: u64,
    policy_version: f64,
}

const HEADER: &str = "elapsed_s,ok,errors,rate,p50_ms,p99_ms,proxy_rss_kib,proxy_fds,cp_rss_kib,cp_fds,policy_applies_ok,policy_applies_failed,policy_version";

impl Sample {
    fn row(&self) -> String {
        format!(
            "{:.0},{},{},{:.0},{:.3},{:.3},{},{},{},{},{},{},{}",
            self.elapsed_s,
            self.ok,
            self.errors,
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.proxy_rss_kib,
            self.proxy_fds,
            self.cp_rss_kib,
            self.cp_fds,
            self.applies_ok,
            self.applies_failed,
            self.policy_version
        )
    }
}

fn fds(pid: Option<u32>) -> usize {
    pid.and_then(procfs::open_fds).unwrap_or(0)
}

fn rss_kib(pid: Option<u32>) -> u64 {
    pid.and_then(procfs::rss).unwrap_or(0) / 1024
}

/// The policy applied at change `n`: alternating timeouts and retries, so
/// every change is a new revision that rebuilds the proxy's route stacks.
fn policy(n: u64) -> String {
    let spec = format!(
        "  outbound:\n    timeouts: {{request: {}ms}}\n    retry: {{maxRetries: {}, on: [gateway-error]}}\n",
        2000 + (n % 2) * 1000,
        1 + n % 2
    );
    yaml::documents(&[yaml::policy("inventory", 7100, &spec)])
}

/// Applies a changed policy every `every` until the task is aborted.
async fn change_policies(
    cp: Arc<ControlPlane>,
    every: Duration,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("levee-soak: no temp dir for policies: {e}");
            return;
        }
    };
    let path = dir.path().join("policy.yaml");
    let path_arg = path.display().to_string();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0.. {
        tick.tick().await;
        let applied = std::fs::write(&path, policy(n)).is_ok()
            && cp
                .leveectl(&["apply", "-f", &path_arg])
                .await
                .is_ok_and(|out| out.status.success());
        if applied { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Least-squares slope of `ys` over `xs` (units of y per unit of x).
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}

/// Prints the verdict; true when flat and error-free.
fn summarize(samples: &[Sample]) -> bool {
    let Some(last) = samples.last() else {
        println!("no samples");
        return false;
    };
    // The first minute (or the first sample of a short run) is warm-up.
    let base = samples
        .iter()
        .find(|s| s.elapsed_s >= 60.0)
        .filter(|s| !std::ptr::eq(*s, last))
        .unwrap_or(&samples[0]);
    let errors: u64 = samples.iter().map(|s| s.errors).sum();
    let ok: u64 = samples.iter().map(|s| s.ok).sum();
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.elapsed_s >= base.elapsed_s)
        .collect();
    let xs: Vec<f64> = after.iter().map(|s| s.elapsed_s / 60.0).collect();
    let rss: Vec<f64> = after.iter().map(|s| s.proxy_rss_kib as f64).collect();
    let rss_slope = slope(&xs, &rss);
    let rss_growth = last.proxy_rss_kib as f64 - base.proxy_rss_kib as f64;
    let rss_allowed = (base.proxy_rss_kib as f64 * 0.10).max(4096.0);
    let fd_growth = last.proxy_fds as i64 - base.proxy_fds as i64;
    let cp_rss_growth = last.cp_rss_kib as f64 - base.cp_rss_kib as f64;
    let cp_rss_allowed = (base.cp_rss_kib as f64 * 0.10).max(4096.0);
    let cp_fd_growth = last.cp_fds as i64 - base.cp_fds as i64;
    let p99_max = samples.iter().map(|s| s.p99_ms).fold(0.0, f64::max);
    let rss_flat = rss_growth <= rss_allowed;
    let fds_flat = fd_growth <= 8 && cp_fd_growth <= 8;
    let cp_flat = cp_rss_growth <= cp_rss_allowed;
    let p99_flat = last.p99_ms <= (base.p99_ms * 2.0).max(base.p99_ms + 5.0);
    let flat = rss_flat && fds_flat && cp_flat && p99_flat && errors == 0;
    println!(
        "levee-soak summary ({} samples, {:.1} min)",
        samples.len(),
        last.elapsed_s / 60.0
    );
    println!("  requests: {ok} ok, {errors} errors");
    println!(
        "  proxy RSS: {} KiB at {:.0}s -> {} KiB at end ({rss_growth:+.0} KiB, allowed {rss_allowed:.0}; slope {rss_slope:+.1} KiB/min)",
        base.proxy_rss_kib, base.elapsed_s, last.proxy_rss_kib
    );
    println!(
        "  proxy fds: {} -> {} ({fd_growth:+})",
        base.proxy_fds, last.proxy_fds
    );
    println!(
        "  control plane RSS: {} -> {} KiB ({cp_rss_growth:+.0}); fds {} -> {} ({cp_fd_growth:+})",
        base.cp_rss_kib, last.cp_rss_kib, base.cp_fds, last.cp_fds
    );
    println!(
        "  p99: {:.2} ms at {:.0}s -> {:.2} ms at end (max of any sample {p99_max:.2} ms)",
        base.p99_ms, base.elapsed_s, last.p99_ms
    );
    println!(
        "  policy changes: {} applied, {} failed; proxy policy version {}",
        last.applies_ok, last.applies_failed, last.policy_version
    );
    println!(
        "  verdict: {} (rss {}, fds {}, control plane {}, p99 {}, errors {})",
        if flat { "FLAT" } else { "NOT FLAT" },
        if rss_flat { "flat" } else { "grew" },
        if fds_flat { "flat" } else { "grew" },
        if cp_flat { "flat" } else { "grew" },
        if p99_flat { "flat" } else { "grew" },
        errors
    );
    flat
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let cp = Arc::new(ControlPlane::builder().start().await);
    let up = match FlakyUpstream::start("soak").await {
        Ok(up) => up,
        Err(e) => {
            eprintln!("levee-soak: upstream: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    mesh::apply(
        &cp,
        yaml::documents(&[yaml::endpoints("inventory", 7100, &[up.addr()])]),
    )
    .await;
    mesh::apply(&cp, policy(0)).await;
    let proxy = mesh::mesh_proxy(&cp, "client", 1, 80).start().await;
    if let Err(e) = mesh::call(&proxy, AUTHORITY, &[]).await {
        eprintln!("levee-soak: first call: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let (applies_ok, applies_failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let changer = tokio::spawn(change_policies(
        cp.clone(),
        Duration::from_millis(args.policy_every_ms),
        applies_ok.clone(),
        applies_failed.clone(),
    ));

    let mut csv = match std::fs::File::create(&args.csv) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("levee-soak: {}: {e}", args.csv.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    let _ = writeln!(csv, "{HEADER}");
    println!("{HEADER}");
    let windows = ((args.minutes * 60.0) / args.sample_secs as f64)
        .ceil()
        .max(1.0) as u64;
    let spec = LoadSpec {
        target: proxy.outbound(),
        authority: AUTHORITY.to_owned(),
        protocol: Protocol::Http1,
        connections: args.connections,
        rate: Some(args.rate),
        warmup: Duration::ZERO,
        duration: Duration::from_secs(args.sample_secs),
    };
    let start = Instant::now();
    let mut samples = Vec::new();
    // Ctrl-C or SIGTERM ends the run early, still with a summary (and the
    // children killed on the way out).
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    for _ in 0..windows {
        let result = tokio::select! {
            result = load::run(&spec) => result,
            () = &mut interrupted => {
                println!("interrupted: stopping early");
                break;
            }
        };
        let summary = result.latencies.summary();
        let version = proxy
            .metrics()
            .await
            .map(|m| m.value("levee_policy_version", &[]))
            .unwrap_or(-1.0);
        let sample = Sample {
            elapsed_s: start.elapsed().as_secs_f64(),
            ok: result.ok,
            errors: result.errors,
            rate: result.achieved_rate(),
            p50_ms: summary.p50_us / 1000.0,
            p99_ms: summary.p99_us / 1000.0,
            proxy_rss_kib: rss_kib(proxy.process.pid()),
            proxy_fds: fds(proxy.process.pid()),
            cp_rss_kib: rss_kib(cp.process.pid()),
            cp_fds: fds(cp.process.pid()),
            applies_ok: applies_ok.load(Ordering::Relaxed),
            applies_failed: applies_failed.load(Ordering::Relaxed),
            policy_version: version,
        };
        println!("{}", sample.row());
        let _ = writeln!(csv, "{}", sample.row());
        samples.push(sample);
    }
    changer.abort();
    if summarize(&samples) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
