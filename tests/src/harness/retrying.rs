//! A closed-loop HTTP/1.1 load that behaves like a well-written client
//! facing a restarting server: it retries only what was provably never
//! processed — a connect error (nothing listening: the server stopped
//! accepting), or a request hyper reports as cancelled (never written,
//! because the keep-alive connection was closed first) — and counts
//! everything else as an answer or a failure. With it, "zero failed
//! requests" means no request that reached the server was lost.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, task::JoinHandle};

use super::{Body, REQUEST_DEADLINE, load::get};

/// Pause between retries of a connect error (a client's backoff, not a wait
/// for the test's sake).
const RETRY_BACKOFF: Duration = Duration::from_millis(5);

/// How many failures a tally keeps as text.
const KEEP_FAILURES: usize = 5;

/// What the retrying clients saw.
#[derive(Debug, Default, Clone)]
pub struct RetryTally {
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Connect attempts refused (retried).
    pub refused: u64,
    /// Requests never written because their connection had closed (retried).
    pub unsent: u64,
    /// Requests sent that got no whole answer: reset, truncated, or no
    /// answer within [`REQUEST_DEADLINE`].
    pub failed: u64,
    /// The first few failures, for messages.
    pub failures: Vec<String>,
}

impl RetryTally {
    fn fail(&mut self, what: String) {
        self.failed += 1;
        if self.failures.len() < KEEP_FAILURES {
            self.failures.push(what);
        }
    }

    fn merge(&mut self, other: RetryTally) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.refused += other.refused;
        self.unsent += other.unsent;
        self.failed += other.failed;
        let room = KEEP_FAILURES.saturating_sub(self.failures.len());
        self.failures.extend(other.failures.into_iter().take(room));
    }

    /// Answers with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or_default()
    }

    /// Answers other than 200.
    pub fn not_ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum()
    }
}

/// `connections` retrying clients sending `GET /` for `host` (with extra
/// headers) to `addr` until [`RetryingLoad::stop`].
pub struct RetryingLoad {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<RetryTally>>,
}

impl RetryingLoad {
    pub fn start(
        addr: SocketAddr,
        host: &str,
        headers: &[(&str, &str)],
        connections: usize,
    ) -> RetryingLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let workers = (0..connections)
            .map(|_| {
                let (stop, host, headers) = (stop.clone(), host.to_owned(), headers.clone());
                tokio::spawn(worker(addr, host, headers, stop))
            })
            .collect();
        RetryingLoad { stop, workers }
    }

    /// Stops the clients (each finishes its request) and returns the tally.
    pub async fn stop(self) -> RetryTally {
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = RetryTally::default();
        for w in self.workers {
            tally.merge(w.await.unwrap_or_else(|e| panic!("retrying client: {e}")));
        }
        tally
    }
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Body>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn worker(
    addr: SocketAddr,
    host: String,
    headers: Vec<(String, String)>,
    stop: Arc<AtomicBool>,
) -> RetryTally {
    let mut tally = RetryTally::default();
    let mut conn: Option<SendRequest<Body>> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut sender = match conn.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => match connect(addr).await {
                Some(sender) => sender,
                None => {
                    tally.refused += 1;
                    tokio::time::sleep(RETRY_BACKOFF).await;
                    continue;
                }
            },
        };
        if sender.ready().await.is_err() {
            tally.unsent += 1;
            continue;
        }
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let req = get(&host, "/", &pairs);
        let answer = tokio::time::timeout(REQUEST_DEADLINE, async {
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let close = resp
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, close))
        })
        .await;
        match answer {
            Ok(Ok((status, close))) => {
                *tally.statuses.entry(status).or_default() += 1;
                if !close {
                    conn = Some(sender);
                }
            }
            Ok(Err(e)) if e.is_canceled() => tally.unsent += 1,
            Ok(Err(e)) => tally.fail(format!("{e:?}")),
            Err(_) => tally.fail(format!("no answer within {REQUEST_DEADLINE:?}")),
        }
    }
    tally
}
