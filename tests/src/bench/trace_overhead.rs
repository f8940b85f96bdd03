//! The tracing-overhead scenario (issue 5): Levee one hop untraced
//! ([`OFF`], the `levee-1hop` contender) against the same hop sampling 1 %
//! and 100 % of new traces ([`TRACED`]), each exporting over OTLP/gRPC to
//! its own [`CountingCollector`] in this process. Owns starting the traced
//! contenders, counting their exported and dropped spans, and the
//! scenario's table.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use super::configs;
use super::contenders::{Contender, Env, Upstream, answers, wait_for};
use super::load::Protocol;
use super::plan::LatencyCase;
use super::report::{LatencyRow, ThroughputRow};
use crate::harness::{BoxError, Metrics, get_http1};

/// The untraced baseline: the plain one-hop contender (no collector set).
pub const OFF: &str = "levee-1hop";

/// The traced contenders and the ratio of new traces each samples.
pub const TRACED: [(&str, f64); 2] = [("levee-trace-1%", 0.01), ("levee-trace-100%", 1.0)];

/// Whether `contender` is one of [`TRACED`].
pub fn is_traced(contender: &str) -> bool {
    TRACED.iter().any(|(name, _)| *name == contender)
}

/// An OTLP/gRPC trace collector that counts the spans it receives and
/// drops them: cheap enough not to hold the exporters back.
pub struct CountingCollector {
    addr: SocketAddr,
    counts: Arc<Counts>,
    /// Dropping it stops the server.
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    exports: AtomicU64,
}

impl CountingCollector {
    /// Starts the collector on a loopback port.
    pub async fn start() -> std::io::Result<CountingCollector> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = TraceServiceServer::new(Counting(counts.clone()))
            .max_decoding_message_size(64 * 1024 * 1024);
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("levee-bench: OTLP collector stopped: {e}");
            }
        });
        Ok(CountingCollector {
            addr,
            counts,
            _stop: stop,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.counts.spans.load(Ordering::Relaxed)
    }

    /// Export calls received so far.
    pub fn exports(&self) -> u64 {
        self.counts.exports.load(Ordering::Relaxed)
    }
}

struct Counting(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Counting {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.0.exports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A traced Levee hop and its collector.
pub struct Traced {
    pub contender: Contender,
    pub ratio: f64,
    admin: SocketAddr,
    collector: CountingCollector,
}

/// Starts one traced Levee hop in front of `upstream` (the `levee-1hop`
/// policy), sampling `ratio` of new traces (the default parent-based
/// sampler; the load carries no trace context).
pub async fn start(
    env: &Env,
    upstream: &Upstream,
    name: &'static str,
    ratio: f64,
) -> Result<Traced, BoxError> {
    let collector = CountingCollector::start().await?;
    let policy = configs::levee_endpoints(&[upstream.addr]);
    let flags = [
        "--otlp-endpoint".to_owned(),
        collector.endpoint(),
        "--trace-sampler-arg".to_owned(),
        ratio.to_string(),
        "--trace-service-name".to_owned(),
        name.to_owned(),
    ];
    let (mut process, addrs) = env
        .levee_args(name, Some(&policy), upstream.addr.port(), &flags)
        .await?;
    wait_for(&mut process, name, || {
        answers(addrs.outbound, configs::SERVICE)
    })
    .await?;
    Ok(Traced {
        contender: env.contender(name, addrs.outbound, true, vec![process]),
        ratio,
        admin: addrs.admin,
        collector,
    })
}

/// What one traced contender exported over the whole run.
#[derive(Clone, Debug, Serialize)]
pub struct SpanTally {
    pub contender: String,
    pub ratio: f64,
    /// Requests the load generator sent through it (warm-ups included; the
    /// one readiness request at start-up is not counted).
    pub requests: u64,
    /// Spans the collector received.
    pub exported: u64,
    /// Export calls the collector received.
    pub export_calls: u64,
    /// `levee_trace_spans_dropped_total` at the end (`None`: scrape failed).
    pub dropped: Option<u64>,
}

impl Traced {
    /// Waits until the collector's count stops moving (the exporter sends
    /// at least every 500 ms), then reads the proxy's dropped-span counter.
    pub async fn tally(&self, requests: u64) -> SpanTally {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.collector.spans();
        loop {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let now = self.collector.spans();
            if now == last || Instant::now() >= deadline {
                break;
            }
            last = now;
        }
        let dropped = match get_http1(self.admin, "localhost", "/metrics").await {
            Ok(resp) => Metrics::parse(&resp.text())
                .ok()
                .map(|m| m.value("levee_trace_spans_dropped_total", &[]) as u64),
            Err(_) => None,
        };
        SpanTally {
            contender: self.contender.name.to_owned(),
            ratio: self.ratio,
            requests,
            exported: self.collector.spans(),
            export_calls: self.collector.exports(),
            dropped,
        }
    }
}

/// One tracing case for one of off / 1 % / 100 %.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TracingRow {
    pub contender: String,
    /// Sampled ratio of new traces; `None` for tracing off.
    pub ratio: Option<f64>,
    pub protocol: Protocol,
    pub rate: f64,
    pub connections: usize,
    /// Versus the direct call at the same case (medians).
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
    pub added_p999_us: Option<f64>,
    pub cpu_us_per_req: Option<f64>,
    /// CPU per request minus tracing off's at the same case.
    pub cpu_vs_off_us: Option<f64>,
    pub errors: u64,
}

/// The tracing table from the latency rows (deltas already filled in), in
/// case order, off / 1 % / 100 % within a case; missing rows are skipped.
pub fn rows(latency: &[LatencyRow], cases: &[LatencyCase]) -> Vec<TracingRow> {
    let mut out = Vec::new();
    for case in cases {
        let find = |name: &str| {
            latency.iter().find(|r| {
                r.contender == name
                    && r.protocol == case.protocol
                    && r.rate == case.rate
                    && r.connections == case.connections
            })
        };
        let off_cpu = find(OFF).and_then(|r| r.cpu_us_per_req);
        let named = std::iter::once((OFF, None)).chain(TRACED.iter().map(|(n, r)| (*n, Some(*r))));
        for (name, ratio) in named {
            let Some(r) = find(name) else { continue };
            out.push(TracingRow {
                contender: name.to_owned(),
                ratio,
                protocol: case.protocol,
                rate: case.rate,
                connections: case.connections,
                added_p50_us: r.added_p50_us,
                added_p99_us: r.added_p99_us,
                added_p999_us: r.added_p999_us,
                cpu_us_per_req: r.cpu_us_per_req,
                cpu_vs_off_us: r.cpu_us_per_req.zip(off_cpu).map(|(c, o)| c - o),
                errors: r.errors,
            });
        }
    }
    out
}

/// Off / 1 % / 100 % in the closed loop (the proxy's core saturated).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClosedLoopRow {
    pub contender: String,
    /// Sampled ratio of new traces; `None` for tracing off.
    pub ratio: Option<f64>,
    pub connections: usize,
    pub achieved_rps: f64,
    pub cpu_us_per_req: Option<f64>,
    /// CPU per request minus tracing off's.
    pub cpu_vs_off_us: Option<f64>,
    pub p99_us: f64,
    pub errors: u64,
}

/// The closed-loop rows of off, 1 % and 100 %, in that order.
pub fn closed_loop_rows(throughput: &[ThroughputRow]) -> Vec<ClosedLoopRow> {
    let find = |name: &str| throughput.iter().find(|r| r.contender == name);
    let off_cpu = find(OFF).and_then(|r| r.cpu_us_per_req);
    std::iter::once((OFF, None))
        .chain(TRACED.iter().map(|(n, r)| (*n, Some(*r))))
        .filter_map(|(name, ratio)| {
            let r = find(name)?;
            Some(ClosedLoopRow {
                contender: name.to_owned(),
                ratio,
                connections: r.connections,
                achieved_rps: r.achieved_rps,
                cpu_us_per_req: r.cpu_us_per_req,
                cpu_vs_off_us: r.cpu_us_per_req.zip(off_cpu).map(|(c, o)| c - o),
                p99_us: r.p99_us,
                errors: r.errors,
            })
        })
        .collect()
}

fn sampled(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "off".into(), |p| format!("{}%", p * 100.0))
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// The scenario's tables: overhead per open-loop case, in the closed loop,
/// spans per contender.
pub fn render(rows: &[TracingRow], closed: &[ClosedLoopRow], spans: &[SpanTally]) -> String {
    if rows.is_empty() && closed.is_empty() && spans.is_empty() {
        return String::new();
    }
    let mut out =
        "\nTRACING OVERHEAD (Levee one hop; added = contender - direct, µs; cpu µs/req)\n"
            .to_owned();
    out += &format!(
        "{:<17} {:>7} {:<3} {:>6} {:>5} {:>8} {:>8} {:>8} {:>7} {:>7} {:>5}\n",
        "contender",
        "sampled",
        "pr",
        "rate",
        "conn",
        "+p50",
        "+p99",
        "+p99.9",
        "cpu/req",
        "vs off",
        "errs"
    );
    for r in rows {
        out += &format!(
            "{:<17} {:>7} {:<3} {:>6.0} {:>5} {:>8} {:>8} {:>8} {:>7} {:>7} {:>5}\n",
            r.contender,
            sampled(r.ratio),
            r.protocol.label(),
            r.rate,
            r.connections,
            opt(r.added_p50_us, 1),
            opt(r.added_p99_us, 1),
            opt(r.added_p999_us, 1),
            opt(r.cpu_us_per_req, 1),
            opt(r.cpu_vs_off_us, 1),
            r.errors
        );
    }
    if !closed.is_empty() {
        out += &format!(
            "{:<17} {:>7} {:>5} {:>8} {:>7} {:>7} {:>9} {:>6} {:>5}\n",
            "closed loop",
            "sampled",
            "conn",
            "req/s",
            "cpu/req",
            "vs off",
            "p99 µs",
            "core%",
            "errs"
        );
        for r in closed {
            out += &format!(
                "{:<17} {:>7} {:>5} {:>8.0} {:>7} {:>7} {:>9.1} {:>6} {:>5}\n",
                r.contender,
                sampled(r.ratio),
                r.connections,
                r.achieved_rps,
                opt(r.cpu_us_per_req, 1),
                opt(r.cpu_vs_off_us, 1),
                r.p99_us,
                opt(r.cpu_us_per_req.map(|c| c * r.achieved_rps / 1e4), 0),
                r.errors
            );
        }
    }
    if !spans.is_empty() {
        out += &format!(
            "{:<17} {:>10} {:>10} {:>9} {:>8} {:>8}\n",
            "contender", "requests", "exported", "spans/req", "exports", "dropped"
        );
        for s in spans {
            out += &format!(
                "{:<17} {:>10} {:>10} {:>9.4} {:>8} {:>8}\n",
                s.contender,
                s.requests,
                s.exported,
                s.exported as f64 / s.requests.max(1) as f64,
                s.export_calls,
                s.dropped.map_or_else(|| "?".into(), |d| d.to_string())
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
