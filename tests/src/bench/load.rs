//! The load generator: N keep-alive connections (HTTP/1.1 or h2c), each
//! sending its share of a fixed total rate when the
//! [`Pacer`](super::pacing::Pacer) says (open loop),
//! or back to back (closed loop, for maximum throughput).
//!
//! Latency reference: on HTTP/1.1 a request whose connection was still busy
//! at its intended send time (the contender was slow) is timed from that
//! intended time, so a stall is charged to every request it delayed (no
//! coordinated omission). When the connection was free, it is timed from
//! the actual send, so the generator's own wake-up delay is not charged to
//! the contender. On h2 requests never wait for each other: each is sent
//! on schedule as its own stream.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{StreamExt, stream::FuturesUnordered};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::{net::TcpStream, sync::mpsc};

use super::histogram::Latencies;
use super::pacing::Pacer;
use crate::harness::BoxError;

/// A request that takes longer than this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
        }
    }
}

/// One load run against one contender.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub target: SocketAddr,
    /// `Host` / `:authority` of every request (Levee routes by it).
    pub authority: String,
    pub protocol: Protocol,
    pub connections: usize,
    /// Total requests per second; `None` runs closed loop (as fast as answered).
    pub rate: Option<f64>,
    /// Sent but not measured: connections and caches warm up.
    pub warmup: Duration,
    /// The measured window after the warm-up.
    pub duration: Duration,
}

/// What a load run measured (the warm-up excluded, except `total_ok`).
#[derive(Clone, Default)]
pub struct LoadResult {
    pub latencies: Latencies,
    pub ok: u64,
    pub errors: u64,
    /// Successful requests including the warm-up (for CPU per request).
    pub total_ok: u64,
    /// Requests attempted including the warm-up (for retry amplification).
    pub sent: u64,
    pub window: Duration,
}

impl LoadResult {
    pub fn achieved_rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Adds `other`'s counts and samples (same window).
    pub fn merge(&mut self, other: &LoadResult) {
        self.latencies.merge(&other.latencies);
        self.ok += other.ok;
        self.errors += other.errors;
        self.total_ok += other.total_ok;
        self.sent += other.sent;
    }
}

/// The measurement window of a run, shared by its connections.
struct Window {
    begin: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn record(&self, result: &mut LoadResult, started: Instant, outcome: Result<(), BoxError>) {
        let done = Instant::now();
        let ok = outcome.is_ok();
        result.sent += 1;
        if ok {
            result.total_ok += 1;
        }
        if started < self.measure_from {
            return;
        }
        if ok {
            result.ok += 1;
            result
                .latencies
                .record(done.saturating_duration_since(started));
        } else {
            result.errors += 1;
        }
    }
}

/// Runs `spec` and returns the merged measurements of all connections.
pub async fn run(spec: &LoadSpec) -> LoadResult {
    let spec = Arc::new(spec.clone());
    let begin = Instant::now() + Duration::from_millis(20);
    let window = Arc::new(Window {
        begin,
        measure_from: begin + spec.warmup,
        end: begin + spec.warmup + spec.duration,
    });
    let mut total = LoadResult {
        window: spec.duration,
        ..LoadResult::default()
    };
    // Open loop: one token per send, on time, from the pacer thread.
    let mut tokens: Vec<Option<Tokens>> = match spec.rate {
        Some(rate) => match Pacer::spawn(rate, spec.connections, begin, window.end) {
            Ok(rx) => rx.into_iter().map(Some).collect(),
            Err(e) => {
                eprintln!("levee-bench: cannot start the pacer thread: {e}");
                total.errors += 1;
                return total;
            }
        },
        None => (0..spec.connections).map(|_| None).collect(),
    };
    let tasks: Vec<_> = tokens
        .iter_mut()
        .map(|t| tokio::spawn(drive(spec.clone(), window.clone(), t.take())))
        .collect();
    for task in tasks {
        match task.await {
            Ok(r) => total.merge(&r),
            Err(_) => total.errors += 1,
        }
    }
    total
}

/// The intended send times of one connection, released by the pacer.
type Tokens = mpsc::UnboundedReceiver<Instant>;

/// One connection's share of the run.
async fn drive(spec: Arc<LoadSpec>, window: Arc<Window>, tokens: Option<Tokens>) -> LoadResult {
    match (spec.protocol, tokens) {
        (Protocol::Http2, Some(tokens)) => drive_h2(&spec, &window, tokens).await,
        (_, tokens) => drive_sequential(&spec, &window, tokens).await,
    }
}

/// One request at a time on the connection (HTTP/1.1, or closed loop when
/// there are no tokens).
async fn drive_sequential(
    spec: &LoadSpec,
    window: &Window,
    mut tokens: Option<Tokens>,
) -> LoadResult {
    let mut result = LoadResult::default();
    let mut conn: Option<Conn> = None;
    let mut free_since = Instant::now();
    loop {
        let intended = match &mut tokens {
            Some(rx) => match rx.recv().await {
                Some(due) => due,
                None => break,
            },
            None => {
                tokio::time::sleep_until(window.begin.into()).await;
                let now = Instant::now();
                if now >= window.end {
                    break;
                }
                now
            }
        };
        // Busy past the intended time: the wait counts (no coordinated omission).
        let started = if free_since > intended {
            intended
        } else {
            Instant::now()
        };
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, send(spec, &mut conn)).await {
            Ok(r) => r,
            Err(_) => Err("request timed out".into()),
        };
        if outcome.is_err() {
            conn = None;
        }
        window.record(&mut result, started, outcome);
        free_since = Instant::now();
    }
    result
}

/// Open loop on one h2 connection: every request its own stream, sent when
/// its token arrives.
async fn drive_h2(spec: &LoadSpec, window: &Window, mut tokens: Tokens) -> LoadResult {
    let mut result = LoadResult::default();
    let sender = match connect(spec).await {
        Ok(Conn::H2(s)) => Some(s),
        _ => None,
    };
    let uri: Option<Uri> = format!("http://{}/", spec.authority).parse().ok();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some((started, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                window.record(&mut result, started, outcome);
            }
            token = tokens.recv(), if open => {
                if token.is_none() {
                    open = false;
                    continue;
                }
                let sender = sender.clone();
                let uri = uri.clone();
                in_flight.push(async move {
                    let started = Instant::now();
                    let outcome = match (sender, uri) {
                        (Some(s), Some(u)) => {
                            match tokio::time::timeout(REQUEST_TIMEOUT, send_h2(s, u)).await {
                                Ok(r) => r,
                                Err(_) => Err("request timed out".into()),
                            }
                        }
                        _ => Err(BoxError::from("no h2 connection")),
                    };
                    (started, outcome)
                });
            }
        }
    }
    result
}

/// A client connection of either protocol.
pub enum Conn {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// Opens one connection to the target (TCP_NODELAY) and spawns its driver.
pub async fn connect(spec: &LoadSpec) -> Result<Conn, BoxError> {
    let stream = TcpStream::connect(spec.target).await?;
    stream.set_nodelay(true)?;
    let io = TokioIo::new(stream);
    match spec.protocol {
        Protocol::Http1 => {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Ok(Conn::H1(sender))
        }
        Protocol::Http2 => {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(Conn::H2(sender))
        }
    }
}

/// Sends one request on `conn`, connecting first when there is none.
pub async fn send(spec: &LoadSpec, conn: &mut Option<Conn>) -> Result<(), BoxError> {
    if conn.is_none() {
        *conn = Some(connect(spec).await?);
    }
    match conn {
        Some(Conn::H1(sender)) => {
            sender.ready().await?;
            let req = Request::get("/")
                .header(header::HOST, spec.authority.as_str())
                .body(Empty::new())?;
            check(sender.send_request(req).await?).await
        }
        Some(Conn::H2(sender)) => {
            let uri: Uri = format!("http://{}/", spec.authority).parse()?;
            send_h2(sender.clone(), uri).await
        }
        None => Err("not connected".into()),
    }
}

async fn send_h2(mut sender: http2::SendRequest<Empty<Bytes>>, uri: Uri) -> Result<(), BoxError> {
    sender.ready().await?;
    let req = Request::get(uri).body(Empty::new())?;
    check(sender.send_request(req).await?).await
}

/// A success is a 200 whose whole body arrived.
async fn check(resp: http::Response<hyper::body::Incoming>) -> Result<(), BoxError> {
    let status = resp.status();
    resp.into_body().collect().await?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!("status {status}").into())
    }
}

/// Opens `n` HTTP/1.1 connections, sends one request on each, and returns
/// them open and idle (for the memory scenario).
pub async fn open_idle(spec: &LoadSpec, n: usize) -> (Vec<Conn>, u64) {
    let mut conns = Vec::with_capacity(n);
    let mut errors = 0;
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        pending.push(async {
            let mut conn = None;
            let r = tokio::time::timeout(REQUEST_TIMEOUT, send(spec, &mut conn)).await;
            (r, conn)
        });
        // At most 64 handshakes at a time.
        while pending.len() >= 64 {
            collect_idle(&mut pending, &mut conns, &mut errors).await;
        }
    }
    while !pending.is_empty() {
        collect_idle(&mut pending, &mut conns, &mut errors).await;
    }
    (conns, errors)
}

async fn collect_idle<F>(pending: &mut FuturesUnordered<F>, conns: &mut Vec<Conn>, errors: &mut u64)
where
    F: Future<
        Output = (
            Result<Result<(), BoxError>, tokio::time::error::Elapsed>,
            Option<Conn>,
        ),
    >,
{
    match pending.next().await {
        Some((Ok(Ok(())), Some(conn))) => conns.push(conn),
        Some(_) => *errors += 1,
        None => {}
    }
}
