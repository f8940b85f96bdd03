//! The benchmark plan's execution: start the upstream and every contender
//! once, measure idle memory, then run the latency, tracing and throughput
//! cases round-robin over the contenders (order rotated each repetition) so
//! machine noise hits them alike, and reduce to medians.

use std::collections::BTreeMap;

use super::contenders::{Contender, Env};
use super::histogram::median;
use super::load::{self, LoadSpec, Protocol};
use super::plan::{Plan, planned_cases, runs_in};
use super::report::{self, LatencySample, Machine, MemoryRow, Report, ThroughputRow, latency_row};
use super::trace_overhead::{self, Traced};
use crate::harness::BoxError;

/// Starts every contender. Levee must start (a policy it refuses fails the
/// run, which is what the `--quick` smoke test is for); HAProxy or nginx
/// that cannot start (not installed) is skipped with the reason.
/// Only the direct call and Levee one hop when the plan does not compare
/// proxies (the tracing scenario alone).
async fn start_all(
    env: &Env,
    plan: &Plan,
    upstream: &super::contenders::Upstream,
    skipped: &mut Vec<String>,
) -> Result<Vec<Contender>, BoxError> {
    let mut all = vec![
        env.direct(upstream),
        env.levee_one_hop(upstream, false).await?,
    ];
    if !plan.compares_proxies() {
        return Ok(all);
    }
    all.push(env.levee_two_hop(upstream).await?);
    all.push(env.levee_two_hop_mtls(upstream).await?);
    all.push(env.levee_one_hop(upstream, true).await?);
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

pub(super) fn spec(
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

/// One load run with the contender's CPU and mid-run RSS measured; on the
/// contender's own load runtime when it has one (inside a namespace).
pub(super) async fn measure(c: &Contender, spec: &LoadSpec) -> LatencySample {
    let usage = c.usage.clone();
    let halfway = spec.warmup + spec.duration / 2;
    let rss = tokio::spawn(async move {
        tokio::time::sleep(halfway).await;
        (!usage.is_empty()).then(|| usage.rss())
    });
    let cpu_before = c.usage.cpu();
    let result = match &c.load {
        Some(runtime) => {
            let spec = spec.clone();
            runtime
                .spawn(async move { load::run(&spec).await })
                .await
                .unwrap_or_else(|_| load::LoadResult {
                    errors: 1,
                    ..load::LoadResult::default()
                })
        }
        None => load::run(spec).await,
    };
    let cpu = c.usage.cpu().saturating_sub(cpu_before);
    LatencySample {
        latency: result.latencies.summary(),
        achieved_rps: result.achieved_rate(),
        errors: result.errors,
        cpu_us_per_req: (!c.usage.is_empty() && result.total_ok > 0)
            .then(|| cpu.as_secs_f64() * 1e6 / result.total_ok as f64),
        rss_bytes: rss.await.ok().flatten(),
        requests: result.sent,
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
    let loopback = if plan.runs_loopback() {
        loopback(env, plan, &mut skipped).await?
    } else {
        Loopback::default()
    };
    let transparent = if plan.runs_transparent() {
        super::transparent::run_or_skip(env, plan, &mut skipped).await?
    } else {
        None
    };
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
        latency: loopback.latency,
        throughput: loopback.throughput,
        memory: loopback.memory,
        policy_cpu_overhead_pct: loopback.policy_cpu_overhead_pct,
        faults,
        convergence,
        tracing: loopback.tracing,
        tracing_closed_loop: loopback.tracing_closed_loop,
        trace_spans: loopback.trace_spans,
        transparent,
        skipped,
    })
}

/// What the loopback scenarios (1–4 and tracing) measured.
#[derive(Default)]
struct Loopback {
    latency: Vec<report::LatencyRow>,
    throughput: Vec<ThroughputRow>,
    memory: Vec<MemoryRow>,
    policy_cpu_overhead_pct: Option<f64>,
    tracing: Vec<trace_overhead::TracingRow>,
    tracing_closed_loop: Vec<trace_overhead::ClosedLoopRow>,
    trace_spans: Vec<trace_overhead::SpanTally>,
}

/// Scenarios 1–4 and the tracing overhead: the upstream and the contenders
/// on loopback, started once, measured round-robin, stopped.
async fn loopback(env: &Env, plan: &Plan, skipped: &mut Vec<String>) -> Result<Loopback, BoxError> {
    let upstream = env.upstream().await?;
    let contenders = start_all(env, plan, &upstream, skipped).await?;
    let mut traced: Vec<Traced> = Vec::new();
    if !plan.tracing.is_empty() {
        for (name, ratio) in trace_overhead::TRACED {
            traced.push(trace_overhead::start(env, &upstream, name, ratio).await?);
        }
    }

    let memory_rows: Vec<MemoryRow> = {
        let mut rows = Vec::new();
        let measured = contenders
            .iter()
            .filter(|c| plan.memory && !c.usage.is_empty());
        for c in measured {
            eprintln!(
                "memory: {} with {} idle connections",
                c.name, plan.idle_connections
            );
            rows.push(super::memory::measure(c, plan.idle_connections, plan.memory_settle).await);
        }
        rows
    };

    let cases = planned_cases(plan);
    let mut latency: BTreeMap<(usize, &str), Vec<LatencySample>> = BTreeMap::new();
    let mut throughput: BTreeMap<&str, Vec<LatencySample>> = BTreeMap::new();
    for rep in 0..plan.reps {
        let mut order: Vec<&Contender> = contenders
            .iter()
            .chain(traced.iter().map(|t| &t.contender))
            .collect();
        let shift = rep % order.len().max(1);
        order.rotate_left(shift);
        for (i, planned) in cases.iter().enumerate() {
            let case = planned.case;
            for c in order.iter().filter(|c| runs_in(planned, c.name, c.h2)) {
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
        if let Some(conns) = plan.closed_loop_connections() {
            for c in order.iter().filter(|c| plan.runs_closed_loop(c.name)) {
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
            let case = cases[*i].case;
            latency_row(name, case.protocol, case.rate, case.connections, samples)
        })
        .collect();
    // Cases in plan order, contenders in start order within a case.
    let rank = |name: &str| {
        contenders
            .iter()
            .chain(traced.iter().map(|t| &t.contender))
            .position(|c| c.name == name)
            .unwrap_or(usize::MAX)
    };
    latency_rows.sort_by_key(|r| {
        let case = cases.iter().position(|c| {
            c.case.protocol == r.protocol
                && c.case.rate == r.rate
                && c.case.connections == r.connections
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
                plan.closed_loop_connections().unwrap_or(0),
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
    let tracing = trace_overhead::rows(&latency_rows, &plan.tracing);
    let tracing_closed_loop = if plan.tracing_closed_loop.is_some() {
        trace_overhead::closed_loop_rows(&throughput_rows)
    } else {
        Vec::new()
    };
    if plan.throughput_connections.is_none() {
        // Only the tracing scenario ran the closed loop: its own table shows it.
        throughput_rows.clear();
    }
    let mut trace_spans = Vec::new();
    for t in &traced {
        let name = t.contender.name;
        let open = latency.iter().filter(|((_, n), _)| *n == name);
        let closed = throughput.get(name).into_iter().flatten();
        let requests = open
            .flat_map(|(_, samples)| samples)
            .chain(closed)
            .map(|s| s.requests)
            .sum();
        trace_spans.push(t.tally(requests).await);
    }

    for c in contenders {
        c.stop().await;
    }
    for t in traced {
        t.contender.stop().await;
    }
    upstream.stop().await;
    Ok(Loopback {
        latency: latency_rows,
        throughput: throughput_rows,
        memory: memory_rows,
        policy_cpu_overhead_pct,
        tracing,
        tracing_closed_loop,
        trace_spans,
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
