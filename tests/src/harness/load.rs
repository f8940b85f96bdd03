//! Load for end-to-end tests: closed loops of `GET /` over keep-alive
//! HTTP/1.1 connections, each answer tallied by status and `x-levee-error`.
//! A run ends after a number of requests ([`requests`]), after a time
//! ([`for_duration`]), or when told to ([`Background::stop`]).
//!
//! (`levee-bench` has its own open-loop generator with latency histograms;
//! this one only counts, which is what tests compare with metrics.)

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::Request;
use tokio::task::JoinHandle;

use super::{Body, BoxError, Http1Conn, HttpResponse, empty};

/// How many non-200 answers (or errors) a tally keeps as text.
const KEEP_BAD: usize = 5;

/// Answers seen by a load run.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Answers by `(status, x-levee-error)` (`""` when the upstream answered).
    answers: BTreeMap<(u16, String), u64>,
    /// Requests that got no HTTP answer at all (connection errors).
    pub errors: u64,
    /// The first few non-200 answers and errors, for failure messages.
    pub bad: Vec<String>,
    /// The first response of each status, for checking its headers.
    first: BTreeMap<u16, HttpResponse>,
}

impl Tally {
    /// Counts one request's result.
    pub fn record(&mut self, result: &Result<HttpResponse, BoxError>) {
        match result {
            Ok(r) => {
                let status = r.status.as_u16();
                let cause = r.header("x-levee-error").to_owned();
                *self.answers.entry((status, cause)).or_default() += 1;
                if status != 200 && self.bad.len() < KEEP_BAD {
                    self.bad.push(format!("{status} {}", r.text()));
                }
                self.first.entry(status).or_insert_with(|| r.clone());
            }
            Err(e) => {
                self.errors += 1;
                if self.bad.len() < KEEP_BAD {
                    self.bad.push(e.to_string());
                }
            }
        }
    }

    /// Adds another tally's counts to this one.
    pub fn merge(&mut self, other: Tally) {
        for (key, n) in other.answers {
            *self.answers.entry(key).or_default() += n;
        }
        self.errors += other.errors;
        let room = KEEP_BAD.saturating_sub(self.bad.len());
        self.bad.extend(other.bad.into_iter().take(room));
        for (status, r) in other.first {
            self.first.entry(status).or_insert(r);
        }
    }

    /// Every request sent, answered or not.
    pub fn total(&self) -> u64 {
        self.answers.values().sum::<u64>() + self.errors
    }

    /// Answers with `status`, whatever their cause.
    pub fn count(&self, status: u16) -> u64 {
        self.answers
            .iter()
            .filter(|((s, _), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Answers with `status` and `x-levee-error: cause` (`""`: none).
    pub fn answered(&self, status: u16, cause: &str) -> u64 {
        self.answers
            .get(&(status, cause.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// Answers by `(status, x-levee-error)`.
    pub fn answers(&self) -> &BTreeMap<(u16, String), u64> {
        &self.answers
    }

    /// Answers by status.
    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        let mut out = BTreeMap::new();
        for ((status, _), n) in &self.answers {
            *out.entry(*status).or_default() += n;
        }
        out
    }

    /// The share of requests answered 200.
    pub fn success_rate(&self) -> f64 {
        self.count(200) as f64 / self.total().max(1) as f64
    }

    /// The first response with `status`, if any came.
    pub fn first(&self, status: u16) -> Option<&HttpResponse> {
        self.first.get(&status)
    }
}

/// `GET path` with `Host: host` and extra headers.
pub fn get(host: &str, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::get(path).header(http::header::HOST, host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(empty())
        .unwrap_or_else(|e| panic!("building GET {path} for {host}: {e}"))
}

/// When a worker stops sending.
#[derive(Clone)]
enum Until {
    /// After the shared counter reaches the total.
    Requests {
        sent: Arc<AtomicU64>,
        total: u64,
    },
    Deadline(Instant),
    Stopped(Arc<AtomicBool>),
}

impl Until {
    /// Whether to send one more request (takes a ticket for `Requests`).
    fn another(&self) -> bool {
        match self {
            Until::Requests { sent, total } => sent.fetch_add(1, Ordering::Relaxed) < *total,
            Until::Deadline(at) => Instant::now() < *at,
            Until::Stopped(stop) => !stop.load(Ordering::Relaxed),
        }
    }
}

fn spawn_workers(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    until: Until,
) -> Vec<JoinHandle<Tally>> {
    (0..connections)
        .map(|_| {
            let (host, until) = (host.to_owned(), until.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut conn = Http1Conn::connect(addr).await;
                while until.another() {
                    let result = match &mut conn {
                        Ok(c) => c.send(get(&host, "/", &[])).await,
                        Err(e) => Err(e.to_string().into()),
                    };
                    if result.is_err() {
                        conn = Http1Conn::connect(addr).await;
                    }
                    tally.record(&result);
                }
                tally
            })
        })
        .collect()
}

async fn join(workers: Vec<JoinHandle<Tally>>) -> Tally {
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.unwrap_or_else(|e| panic!("load worker: {e}")));
    }
    tally
}

/// `total` GETs of `/` for `host` to `addr`, over `connections` keep-alive
/// connections at once.
pub async fn requests(addr: SocketAddr, host: &str, connections: usize, total: u64) -> Tally {
    let sent = Arc::new(AtomicU64::new(0));
    join(spawn_workers(
        addr,
        host,
        connections,
        Until::Requests { sent, total },
    ))
    .await
}

/// GETs of `/` for `host` to `addr` over `connections` connections for `run`.
pub async fn for_duration(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    run: Duration,
) -> Tally {
    let until = Until::Deadline(Instant::now() + run);
    join(spawn_workers(addr, host, connections, until)).await
}

/// A load running until [`Background::stop`].
pub struct Background {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Tally>>,
}

impl Background {
    /// Starts `connections` closed loops of `GET /` for `host` to `addr`.
    pub fn start(addr: SocketAddr, host: &str, connections: usize) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = spawn_workers(addr, host, connections, Until::Stopped(stop.clone()));
        Background { stop, workers }
    }

    /// Stops the loops and returns what they saw.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        join(self.workers).await
    }
}
