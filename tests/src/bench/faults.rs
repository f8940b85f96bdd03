//! Scenario 5, resilience outcomes: the same faulty endpoints behind no
//! proxy (the client spreads its connections over the endpoints itself),
//! Levee with a retry/timeout/breaker policy, and HAProxy with its own
//! retries and passive health checks. Reports the success rate, retry
//! amplification (requests the endpoints saw per request the client sent)
//! and latency.

use std::{net::SocketAddr, time::Duration};

use serde::Serialize;

use super::configs;
use super::contenders::{Contender, Env, Upstream, free_port};
use super::histogram::Summary;
use super::load::{self, LoadResult, LoadSpec, Protocol};
use crate::flaky::StatsSnapshot;
use crate::harness::{BoxError, get_http1};

/// One endpoint of a fault case.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    Healthy,
    /// Nothing listens: connections are refused.
    Down,
    /// Answers 503 with this probability.
    Failing(f64),
    /// Answers after this delay.
    Slow(Duration),
}

/// A named set of endpoints behind the service.
#[derive(Clone, Debug)]
pub struct FaultCase {
    pub name: &'static str,
    pub endpoints: Vec<Endpoint>,
}

/// The fault cases of issue 6, scenario 5.
pub fn cases() -> Vec<FaultCase> {
    vec![
        FaultCase {
            name: "one endpoint down",
            endpoints: vec![Endpoint::Healthy, Endpoint::Down],
        },
        FaultCase {
            name: "20% random 503",
            endpoints: vec![Endpoint::Failing(0.2), Endpoint::Failing(0.2)],
        },
        FaultCase {
            name: "slow endpoint (200ms)",
            endpoints: vec![
                Endpoint::Healthy,
                Endpoint::Slow(Duration::from_millis(200)),
            ],
        },
    ]
}

/// What one contender achieved in one fault case.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRow {
    pub case: String,
    pub contender: String,
    pub sent: u64,
    pub success_pct: f64,
    /// Requests the endpoints received per request the client sent.
    pub amplification: f64,
    pub latency: Summary,
}

impl Endpoint {
    fn args(self) -> Vec<String> {
        match self {
            Endpoint::Healthy | Endpoint::Down => Vec::new(),
            Endpoint::Failing(p) => vec![
                "--status".into(),
                "503".into(),
                "--fail-rate".into(),
                p.to_string(),
            ],
            Endpoint::Slow(d) => vec!["--delay".into(), format!("{}ms", d.as_millis())],
        }
    }
}

/// The endpoints' total request count (`/__flaky/stats`), or 0 for those
/// that cannot answer.
async fn upstream_requests(endpoints: &[Upstream]) -> u64 {
    let mut total = 0;
    for e in endpoints {
        if let Ok(resp) = get_http1(e.addr, "localhost", "/__flaky/stats").await
            && let Ok(stats) = serde_json::from_slice::<StatsSnapshot>(&resp.body)
        {
            total += stats.requests;
        }
    }
    total
}

/// Load for one contender: `targets` share the rate and connections (the
/// no-proxy client spreads itself over the endpoints).
async fn drive(
    targets: &[SocketAddr],
    rate: f64,
    connections: usize,
    duration: Duration,
) -> LoadResult {
    let n = targets.len().max(1);
    let specs: Vec<LoadSpec> = targets
        .iter()
        .map(|t| LoadSpec {
            target: *t,
            authority: configs::SERVICE.into(),
            protocol: Protocol::Http1,
            connections: (connections / n).max(1),
            rate: Some(rate / n as f64),
            warmup: Duration::from_secs(1),
            duration,
        })
        .collect();
    let results = futures_util::future::join_all(specs.iter().map(load::run)).await;
    let mut total = LoadResult {
        window: duration,
        ..LoadResult::default()
    };
    for r in &results {
        total.merge(r);
    }
    total
}

/// Runs every fault case against direct, Levee and HAProxy.
pub async fn run(
    env: &Env,
    rate: f64,
    connections: usize,
    duration: Duration,
) -> Result<Vec<FaultRow>, BoxError> {
    let mut rows = Vec::new();
    for case in cases() {
        let mut live = Vec::new();
        let mut addrs = Vec::new();
        for (i, e) in case.endpoints.iter().enumerate() {
            match e {
                Endpoint::Down => addrs.push(free_port()?),
                _ => {
                    let args = e.args();
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let up = env.flaky(&format!("flaky{}", i + 1), &args).await?;
                    addrs.push(up.addr);
                    live.push(up);
                }
            }
        }
        let mut contenders: Vec<(&str, Option<Contender>)> = vec![("direct", None)];
        let levee = env
            .levee_with("levee-faults", &configs::levee_fault_policy(&addrs))
            .await?;
        contenders.push(("levee-policy", Some(levee)));
        match env
            .haproxy_with("haproxy-retry", |l| configs::haproxy_retrying(l, &addrs))
            .await
        {
            Ok(h) => contenders.push(("haproxy-retry", Some(h))),
            Err(e) => eprintln!("levee-bench: haproxy-retry did not start: {e}"),
        }
        for (name, contender) in &contenders {
            eprintln!("faults: {} via {name}", case.name);
            let targets = match contender {
                Some(c) => vec![c.addr],
                None => addrs.clone(),
            };
            let before = upstream_requests(&live).await;
            let r = drive(&targets, rate, connections, duration).await;
            let seen = upstream_requests(&live).await.saturating_sub(before);
            rows.push(FaultRow {
                case: case.name.into(),
                contender: (*name).into(),
                sent: r.sent,
                success_pct: 100.0 * r.total_ok as f64 / r.sent.max(1) as f64,
                amplification: seen as f64 / r.sent.max(1) as f64,
                latency: r.latencies.summary(),
            });
        }
        for (_, c) in contenders {
            if let Some(c) = c {
                c.stop().await;
            }
        }
        for up in live {
            up.stop().await;
        }
    }
    Ok(rows)
}

/// The fault table.
pub fn render(rows: &[FaultRow]) -> String {
    let mut out = String::from(
        "\nRESILIENCE OUTCOMES (open loop HTTP/1.1; amplification = endpoint requests / client requests)\n",
    );
    out += &format!(
        "{:<22} {:<14} {:>7} {:>9} {:>7} {:>9} {:>9} {:>9}\n",
        "case", "contender", "sent", "success%", "ampl.", "p50 µs", "p99 µs", "max µs"
    );
    for r in rows {
        out += &format!(
            "{:<22} {:<14} {:>7} {:>9.2} {:>7.2} {:>9.1} {:>9.1} {:>9.1}\n",
            r.case,
            r.contender,
            r.sent,
            r.success_pct,
            r.amplification,
            r.latency.p50_us,
            r.latency.p99_us,
            r.latency.max_us
        );
    }
    out
}
