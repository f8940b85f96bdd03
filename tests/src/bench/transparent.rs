//! Transparent vs explicit (issue 11): what interception costs. Two pods
//! ([`super::pods`]), the load generator inside the client pod, and three
//! contenders measured round-robin with the same generator, rates and
//! connections:
//!
//! - [`DIRECT`]: the app's pod IP on a port neither pod intercepts;
//! - [`EXPLICIT`]: `127.0.0.1:4140` with `Host: bench` → client sidecar →
//!   server pod IP:8080, captured → server sidecar inbound → app;
//! - [`TRANSPARENT`]: the app's pod IP:8080 dialled unmodified, captured →
//!   client sidecar → the same server hop.
//!
//! The two Levee paths share the sidecars; they differ only in how the
//! client's connection reaches the client sidecar. Owns the scenario's run,
//! its path check (each sidecar's request counter around each contender's
//! runs) and its table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::contenders::{Contender, Env};
use super::load::Protocol;
use super::plan::Plan;
use super::pods::{Pods, Side};
use super::procfs::Usage;
use super::report::{LatencyRow, LatencySample, ThroughputRow, add_deltas, latency_row};
use super::scenarios::{measure, spec};
use crate::harness::BoxError;

pub const DIRECT: &str = "direct";
pub const EXPLICIT: &str = "levee-explicit";
pub const TRANSPARENT: &str = "levee-transparent";
const CONTENDERS: [&str; 3] = [DIRECT, EXPLICIT, TRANSPARENT];

/// What the scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct TransparentReport {
    /// The pods' network namespaces (client, server), deleted at the end.
    pub namespaces: Vec<String>,
    /// Open loop; `added_*` versus `direct` in the pods.
    pub latency: Vec<LatencyRow>,
    /// Transparent minus explicit, per open-loop case.
    pub vs_explicit: Vec<VsExplicit>,
    /// Closed loop: CPU per request of both sidecars at saturation.
    pub closed_loop: Vec<ThroughputRow>,
    /// Which sidecars counted each contender's requests.
    pub paths: Vec<PathCount>,
}

/// Transparent minus explicit at one case (medians; µs).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VsExplicit {
    pub protocol: Protocol,
    pub rate: f64,
    pub connections: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub cpu_us_per_req: Option<f64>,
}

/// Where one contender's requests went, over the whole run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PathCount {
    pub contender: String,
    /// Requests the load generator sent (warm-ups included).
    pub sent: u64,
    /// Counted outbound by the client sidecar while this contender ran.
    pub client_outbound: u64,
    /// Counted inbound by the server sidecar while this contender ran.
    pub server_inbound: u64,
}

/// Runs the scenario, or says loudly why it cannot run here (`None`, the
/// reason added to `skipped`).
pub async fn run_or_skip(
    env: &Env,
    plan: &Plan,
    skipped: &mut Vec<String>,
) -> Result<Option<TransparentReport>, BoxError> {
    if let Some(reason) = super::pods::unavailable() {
        eprintln!("\nlevee-bench: ===== skipped: transparent vs explicit: {reason} =====\n");
        skipped.push(format!("transparent vs explicit: {reason}"));
        return Ok(None);
    }
    let pods = Pods::start(env).await?;
    let result = run(env, plan, &pods).await;
    pods.stop().await;
    result.map(Some)
}

async fn run(env: &Env, plan: &Plan, pods: &Pods) -> Result<TransparentReport, BoxError> {
    let load = pods.load.handle.clone();
    let sidecars = Usage::new(pods.sidecar_pids(), env.ticks_per_sec);
    let nothing = Usage::new(Vec::new(), env.ticks_per_sec);
    let contenders = [
        Contender::on_shared(DIRECT, Pods::direct(), nothing, load.clone()),
        Contender::on_shared(EXPLICIT, Pods::explicit(), sidecars.clone(), load.clone()),
        Contender::on_shared(TRANSPARENT, Pods::transparent(), sidecars, load),
    ];
    let mut open: BTreeMap<(usize, &str), Vec<LatencySample>> = BTreeMap::new();
    let mut closed: BTreeMap<&str, Vec<LatencySample>> = BTreeMap::new();
    let mut paths: Vec<PathCount> = CONTENDERS
        .iter()
        .map(|name| PathCount {
            contender: (*name).to_owned(),
            sent: 0,
            client_outbound: 0,
            server_inbound: 0,
        })
        .collect();
    for rep in 0..plan.reps {
        let mut order: Vec<&Contender> = contenders.iter().collect();
        order.rotate_left(rep % CONTENDERS.len());
        for (i, case) in plan.transparent.iter().enumerate() {
            for c in &order {
                eprintln!(
                    "transparent rep {}/{}: {} {} {} req/s over {}",
                    rep + 1,
                    plan.reps,
                    c.name,
                    case.protocol.label(),
                    case.rate,
                    case.connections
                );
                let load = spec(c, plan, case.protocol, case.connections, Some(case.rate));
                let s = counted(pods, c, &load, &mut paths).await?;
                open.entry((i, c.name)).or_default().push(s);
            }
        }
        if let Some(conns) = plan.transparent_closed_loop {
            for c in &order {
                eprintln!(
                    "transparent rep {}/{}: {} closed loop over {conns}",
                    rep + 1,
                    plan.reps,
                    c.name
                );
                let load = spec(c, plan, Protocol::Http1, conns, None);
                let s = counted(pods, c, &load, &mut paths).await?;
                closed.entry(c.name).or_default().push(s);
            }
        }
    }
    let rank = |name: &str| CONTENDERS.iter().position(|n| *n == name);
    let mut latency: Vec<LatencyRow> = open
        .iter()
        .map(|((i, name), samples)| {
            let case = plan.transparent[*i];
            latency_row(name, case.protocol, case.rate, case.connections, samples)
        })
        .collect();
    latency.sort_by_key(|r| {
        let case = plan.transparent.iter().position(|c| {
            c.protocol == r.protocol && c.rate == r.rate && c.connections == r.connections
        });
        (case, rank(&r.contender))
    });
    add_deltas(&mut latency);
    let mut closed_loop: Vec<ThroughputRow> = closed
        .iter()
        .map(|(name, samples)| {
            let conns = plan.transparent_closed_loop.unwrap_or(0);
            let row = latency_row(name, Protocol::Http1, 0.0, conns, samples);
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
    closed_loop.sort_by_key(|r| rank(&r.contender));
    Ok(TransparentReport {
        namespaces: vec![
            pods.netns.a.name().to_owned(),
            pods.netns.b.name().to_owned(),
        ],
        vs_explicit: vs_explicit(&latency),
        latency,
        closed_loop,
        paths,
    })
}

/// One measured load run, with what each sidecar counted during it added
/// to the contender's [`PathCount`].
async fn counted(
    pods: &Pods,
    c: &Contender,
    load: &super::load::LoadSpec,
    paths: &mut [PathCount],
) -> Result<LatencySample, BoxError> {
    let client = pods.requests(Side::ClientOutbound).await?;
    let server = pods.requests(Side::ServerInbound).await?;
    let sample = measure(c, load).await;
    let client = pods.requests(Side::ClientOutbound).await? - client;
    let server = pods.requests(Side::ServerInbound).await? - server;
    if let Some(p) = paths.iter_mut().find(|p| p.contender == c.name) {
        p.sent += sample.requests;
        p.client_outbound += client.max(0.0) as u64;
        p.server_inbound += server.max(0.0) as u64;
    }
    Ok(sample)
}

/// Transparent minus explicit for every case both ran.
pub fn vs_explicit(rows: &[LatencyRow]) -> Vec<VsExplicit> {
    rows.iter()
        .filter(|t| t.contender == TRANSPARENT)
        .filter_map(|t| {
            let e = rows.iter().find(|e| {
                e.contender == EXPLICIT
                    && e.protocol == t.protocol
                    && e.rate == t.rate
                    && e.connections == t.connections
            })?;
            Some(VsExplicit {
                protocol: t.protocol,
                rate: t.rate,
                connections: t.connections,
                p50_us: t.latency.p50_us - e.latency.p50_us,
                p99_us: t.latency.p99_us - e.latency.p99_us,
                p999_us: t.latency.p999_us - e.latency.p999_us,
                cpu_us_per_req: t.cpu_us_per_req.zip(e.cpu_us_per_req).map(|(t, e)| t - e),
            })
        })
        .collect()
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// The scenario's tables.
pub fn render(r: &TransparentReport) -> String {
    let mut out = format!(
        "\nTRANSPARENT VS EXPLICIT (two pods in network namespaces {}; µs, added = contender - direct; cpu/req: both sidecars)\n",
        r.namespaces.join(" / ")
    );
    out += &format!(
        "{:<17} {:<3} {:>6} {:>5} {:>8} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}\n",
        "contender",
        "pr",
        "rate",
        "conn",
        "achieved",
        "errs",
        "p50",
        "p99",
        "p99.9",
        "+p50",
        "+p99",
        "+p99.9",
        "cpu/req"
    );
    for row in &r.latency {
        let l = &row.latency;
        out += &format!(
            "{:<17} {:<3} {:>6.0} {:>5} {:>8.0} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8} {:>8} {:>8} {:>7}\n",
            row.contender,
            row.protocol.label(),
            row.rate,
            row.connections,
            row.achieved_rps,
            row.errors,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            opt(row.added_p50_us, 1),
            opt(row.added_p99_us, 1),
            opt(row.added_p999_us, 1),
            opt(row.cpu_us_per_req, 1)
        );
    }
    for d in &r.vs_explicit {
        out += &format!(
            "transparent - explicit {} {:.0} req/s over {}: p50 {:+.1}, p99 {:+.1}, p99.9 {:+.1} µs; cpu {} µs/req\n",
            d.protocol.label(),
            d.rate,
            d.connections,
            d.p50_us,
            d.p99_us,
            d.p999_us,
            d.cpu_us_per_req
                .map_or_else(|| "-".into(), |c| format!("{c:+.1}"))
        );
    }
    if !r.closed_loop.is_empty() {
        out += &format!(
            "{:<17} {:>5} {:>10} {:>6} {:>8} {:>9} {:>6}\n",
            "closed loop", "conn", "req/s", "errs", "cpu/req", "p99 µs", "core%"
        );
        for row in &r.closed_loop {
            out += &format!(
                "{:<17} {:>5} {:>10.0} {:>6} {:>8} {:>9.1} {:>6}\n",
                row.contender,
                row.connections,
                row.achieved_rps,
                row.errors,
                opt(row.cpu_us_per_req, 1),
                row.p99_us,
                opt(row.cpu_us_per_req.map(|c| c * row.achieved_rps / 1e4), 0)
            );
        }
    }
    out += &format!(
        "{:<17} {:>10} {:>15} {:>15}\n",
        "path check", "sent", "client outbound", "server inbound"
    );
    for p in &r.paths {
        out += &format!(
            "{:<17} {:>10} {:>15} {:>15}\n",
            p.contender, p.sent, p.client_outbound, p.server_inbound
        );
    }
    out
}
