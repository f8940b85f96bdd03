//! The benchmark plan and its execution: start the upstream and every
//! contender once, measure idle memory, then run the latency and throughput
//! cases round-robin over the contenders (order rotated each repetition) so
//! machine noise hits them alike, and reduce to medians.

use std::{collections::BTreeMap, time::Duration};

use super::contenders::{Contender, Env};
use super::histogram::median;
use super::load::{self, LoadSpec, Protocol};
use super::report::{
    self, LatencySample, MIB, Machine, MemoryRow, Report, ThroughputRow, latency_row,
};
use crate::harness::BoxError;

/// One open-loop latency case.
#[derive(Clone, Copy, Debug)]
pub struct LatencyCase {
    pub protocol: Protocol,
    pub rate: f64,
    pub connections: usize,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub reps: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub latency: Vec<LatencyCase>,
    /// Closed-loop connections for the throughput scenario; `None` skips it.
    pub throughput_connections: Option<usize>,
    pub idle_connections: usize,
    /// Scenario 5: measured seconds per fault case and contender; `None` skips it.
    pub faults: Option<Duration>,
    /// Scenario 6: `(watch streams, rounds)` for the control plane's
    /// convergence example.
    pub convergence: Vec<(usize, u32)>,
}

impl Plan {
    /// Issue 6's scenarios 1–4.
    pub fn full(reps: usize, duration: Duration) -> Plan {
        let case = |protocol, rate, connections| LatencyCase {
            protocol,
            rate,
            connections,
        };
        Plan {
            reps,
            warmup: Duration::from_secs(2),
            duration,
            latency: vec![
                case(Protocol::Http1, 1000.0, 16),
                case(Protocol::Http1, 5000.0, 16),
                case(Protocol::Http2, 1000.0, 16),
                case(Protocol::Http2, 5000.0, 16),
                case(Protocol::Http1, 1000.0, 100),
            ],
            throughput_connections: Some(64),
            idle_connections: 1000,
            faults: Some(Duration::from_secs(5)),
            convergence: vec![(10, 20), (100, 20), (1000, 20)],
        }
    }

    /// A smoke test: every contender and scenario once, briefly.
    pub fn quick() -> Plan {
        Plan {
            reps: 1,
            warmup: Duration::from_millis(300),
            duration: Duration::from_secs(1),
            latency: vec![
                LatencyCase {
                    protocol: Protocol::Http1,
                    rate: 500.0,
                    connections: 8,
                },
                LatencyCase {
                    protocol: Protocol::Http2,
                    rate: 500.0,
                    connections: 8,
                },
            ],
            throughput_connections: Some(16),
            idle_connections: 100,
            faults: Some(Duration::from_secs(1)),
            convergence: vec![(10, 3)],
        }
    }
}

/// Starts every contender. Levee must start (a policy it refuses fails the
/// run, which is what the `--quick` smoke test is for); HAProxy or nginx
/// that cannot start (not installed) is skipped with the reason.
async fn start_all(
    env: &Env,
    upstream: &super::contenders::Upstream,
    skipped: &mut Vec<String>,
) -> Result<Vec<Contender>, BoxError> {
    let mut all = vec![
        env.direct(upstream),
        env.levee_one_hop(upstream, false).await?,
        env.levee_two_hop(upstream).await?,
        env.levee_one_hop(upstream, true).await?,
    ];
    for (name, result) in [
        ("haproxy", env.haproxy(upstream).await),
        ("nginx", env.nginx(upstream).await),
    ] {
        match result {
            Ok(c) => all.push(c),
            Err(e) => {
                eprintln!("levee-bench: {name} did not start: {e}");
                skipped.push(format!(
                    "{name}: did not start ({})",
                    first_line(&e.to_string())
                ));
            }
        }
    }
    Ok(all)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn spec(
    c: &Contender,
    plan: &Plan,
    protocol: Protocol,
    connections: usize,
    rate: Option<f64>,
) -> LoadSpec {
    LoadSpec {
        target: c.addr,
        authority: c.authority.clone(),
        protocol,
        connections,
        rate,
        warmup: plan.warmup,
        duration: plan.duration,
    }
}

/// One load run with the contender's CPU and mid-run RSS measured.
async fn measure(c: &Contender, spec: &LoadSpec) -> LatencySample {
    let usage = c.usage.clone();
    let halfway = spec.warmup + spec.duration / 2;
    let rss = tokio::spawn(async move {
        tokio::time::sleep(halfway).await;
        (!usage.is_empty()).then(|| usage.rss())
    });
    let cpu_before = c.usage.cpu();
    let result = load::run(spec).await;
    let cpu = c.usage.cpu().saturating_sub(cpu_before);
    LatencySample {
        latency: result.latencies.summary(),
        achieved_rps: result.achieved_rate(),
        errors: result.errors,
        cpu_us_per_req: (!c.usage.is_empty() && result.total_ok > 0)
            .then(|| cpu.as_secs_f64() * 1e6 / result.total_ok as f64),
        rss_bytes: rss.await.ok().flatten(),
    }
}

/// Idle RSS, then RSS with `n` idle keep-alive connections open.
async fn memory(c: &Contender, n: usize) -> MemoryRow {
    let idle = c.usage.rss();
    let target = LoadSpec {
        target: c.addr,
        authority: c.authority.clone(),
        protocol: Protocol::Http1,
        connections: n,
        rate: None,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
    };
    let (conns, errors) = load::open_idle(&target, n).await;
    let with = c.usage.rss();
    drop(conns);
    MemoryRow {
        contender: c.name.to_owned(),
        rss_idle_mib: idle as f64 / MIB,
        idle_connections: n,
        rss_with_connections_mib: with as f64 / MIB,
        connection_errors: errors,
    }
}

/// Runs `plan` and returns the report (`command` and `machine` as given).
pub async fn run(
    env: &Env,
    plan: &Plan,
    machine: Machine,
    command: String,
) -> Result<Report, BoxError> {
    let mut skipped = Vec::new();
    let upstream = env.upstream().await?;
    let contenders = start_all(env, &upstream, &mut skipped).await?;

    let memory_rows: Vec<MemoryRow> = {
        let mut rows = Vec::new();
        for c in contenders.iter().filter(|c| !c.usage.is_empty()) {
            eprintln!(
                "memory: {} with {} idle connections",
                c.name, plan.idle_connections
            );
            rows.push(memory(c, plan.idle_connections).await);
        }
        rows
    };

    let mut latency: BTreeMap<(usize, &str), Vec<LatencySample>> = BTreeMap::new();
    let mut throughput: BTreeMap<&str, Vec<LatencySample>> = BTreeMap::new();
    for rep in 0..plan.reps {
        let mut order: Vec<&Contender> = contenders.iter().collect();
        let shift = rep % order.len().max(1);
        order.rotate_left(shift);
        for (i, case) in plan.latency.iter().enumerate() {
            for c in order
                .iter()
                .filter(|c| c.h2 || case.protocol == Protocol::Http1)
            {
                eprintln!(
                    "rep {}/{}: {} {} {} req/s over {}",
                    rep + 1,
                    plan.reps,
                    c.name,
                    case.protocol.label(),
                    case.rate,
                    case.connections
                );
                let s = measure(
                    c,
                    &spec(c, plan, case.protocol, case.connections, Some(case.rate)),
                )
                .await;
                latency.entry((i, c.name)).or_default().push(s);
            }
        }
        if let Some(conns) = plan.throughput_connections {
            for c in &order {
                eprintln!(
                    "rep {}/{}: {} closed loop over {conns}",
                    rep + 1,
                    plan.reps,
                    c.name
                );
                let s = measure(c, &spec(c, plan, Protocol::Http1, conns, None)).await;
                throughput.entry(c.name).or_default().push(s);
            }
        }
    }

    let mut latency_rows: Vec<_> = latency
        .iter()
        .map(|((i, name), samples)| {
            let case = plan.latency[*i];
            latency_row(name, case.protocol, case.rate, case.connections, samples)
        })
        .collect();
    // Cases in plan order, contenders in start order within a case.
    let rank = |name: &str| {
        contenders
            .iter()
            .position(|c| c.name == name)
            .unwrap_or(usize::MAX)
    };
    latency_rows.sort_by_key(|r| {
        let case = plan.latency.iter().position(|c| {
            c.protocol == r.protocol && c.rate == r.rate && c.connections == r.connections
        });
        (case, rank(&r.contender))
    });
    report::add_deltas(&mut latency_rows);
    let mut throughput_rows: Vec<ThroughputRow> = throughput
        .iter()
        .map(|(name, samples)| {
            let row = latency_row(
                name,
                Protocol::Http1,
                0.0,
                plan.throughput_connections.unwrap_or(0),
                samples,
            );
            ThroughputRow {
                contender: row.contender,
                connections: row.connections,
                reps: row.reps,
                achieved_rps: row.achieved_rps,
                errors: row.errors,
                cpu_us_per_req: row.cpu_us_per_req,
                p99_us: row.latency.p99_us,
            }
        })
        .collect();
    throughput_rows.sort_by_key(|r| rank(&r.contender));

    let policy_cpu_overhead_pct = policy_overhead(&latency_rows);

    for c in contenders {
        c.stop().await;
    }
    upstream.stop().await;
    let faults = match plan.faults {
        // Enough connections that a 200 ms endpoint does not hold the client back.
        Some(duration) => super::faults::run(env, 500.0, 128, duration).await?,
        None => Vec::new(),
    };
    let convergence = if plan.convergence.is_empty() {
        Vec::new()
    } else {
        // The example holds the control plane and the simulated proxies in
        // one process: it gets every CPU (the load generator is idle by now).
        super::convergence::run(&plan.convergence, None)
            .await
            .unwrap_or_else(|e| {
                skipped.push(format!("scenario 6 (control-plane convergence): {e}"));
                Vec::new()
            })
    };
    Ok(Report {
        machine,
        command,
        reps: plan.reps,
        warmup_s: plan.warmup.as_secs_f64(),
        duration_s: plan.duration.as_secs_f64(),
        pinning: match (&env.pinning.proxy, &env.pinning.load) {
            (Some(p), Some(l)) => {
                format!("proxies on CPU {p}, load generator and upstream on CPU {l}")
            }
            _ => "no CPU pinning".into(),
        },
        latency: latency_rows,
        throughput: throughput_rows,
        memory: memory_rows,
        policy_cpu_overhead_pct,
        faults,
        convergence,
        skipped,
    })
}

/// Median over the HTTP/1.1 latency cases of (policy CPU / plain CPU − 1).
fn policy_overhead(rows: &[report::LatencyRow]) -> Option<f64> {
    let ratios: Vec<f64> = rows
        .iter()
        .filter(|r| r.contender == "levee-policy" && r.protocol == Protocol::Http1)
        .filter_map(|p| {
            let plain = rows.iter().find(|r| {
                r.contender == "levee-1hop"
                    && r.protocol == p.protocol
                    && r.rate == p.rate
                    && r.connections == p.connections
            })?;
            Some((p.cpu_us_per_req? / plain.cpu_us_per_req?.max(1e-9) - 1.0) * 100.0)
        })
        .collect();
    (!ratios.is_empty()).then(|| median(&ratios))
}
