//! Shared by the `resilience_*` end-to-end tests: flaky upstreams, a proxy
//! for service `web:80` with an outbound policy (or none), a closed-loop load
//! generator that counts answers, a listener that accepts and closes (an
//! upstream that is down but counts every connect), and metric look-ups.

#![allow(dead_code)] // each test file uses a different part

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use http::Request;
use levee_tests::{
    flaky::{Faults, FlakyUpstream},
    harness::{Http1Conn, HttpResponse, Proxy, empty, yaml},
};
use tokio::{net::TcpListener, task::JoinHandle};

/// The `service` label of the target every test calls.
pub const SERVICE: &str = "web.default:80";

pub async fn upstream(id: &str, faults: Faults) -> FlakyUpstream {
    FlakyUpstream::builder()
        .id(id)
        .faults(faults)
        .start()
        .await
        .unwrap()
}

/// Always answers `status`.
pub fn always(status: u16) -> Faults {
    Faults {
        status: Some(status),
        ..Faults::default()
    }
}

/// The policy file: `outbound` (YAML indented by four spaces, `None`: no
/// policy at all) for `web:80`, whose endpoints are `addrs`.
pub fn policy_file(outbound: Option<&str>, addrs: &[SocketAddr]) -> String {
    let mut docs = vec![yaml::endpoints("web", 80, addrs)];
    if let Some(outbound) = outbound {
        docs.push(yaml::policy("web", 80, &format!("  outbound:\n{outbound}")));
    }
    yaml::documents(&docs)
}

pub async fn proxy(outbound: Option<&str>, addrs: &[SocketAddr]) -> Proxy {
    Proxy::builder()
        .policy(policy_file(outbound, addrs))
        .start()
        .await
}

/// `GET path` for `web:80`, with extra headers.
pub fn get(path: &str, headers: &[(&str, &str)]) -> Request<levee_tests::harness::Body> {
    let mut req = Request::get(path).header("host", "web:80");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(empty()).unwrap()
}

/// Answers seen by a load run, by status code.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub by_status: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer at all (connection errors).
    pub errors: u64,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.errors
    }

    pub fn count(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    pub fn success_rate(&self) -> f64 {
        self.count(200) as f64 / self.total().max(1) as f64
    }

    fn add(&mut self, other: &Tally) {
        for (status, n) in &other.by_status {
            *self.by_status.entry(*status).or_default() += n;
        }
        self.errors += other.errors;
    }
}

/// Sends `total` GETs to the proxy's outbound listener over `connections`
/// keep-alive connections at once (closed loop), and counts the answers.
pub async fn load(addr: SocketAddr, connections: u64, total: u64) -> Tally {
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut conn = Http1Conn::connect(addr).await.unwrap();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    match conn.send(get("/", &[])).await {
                        Ok(r) => *tally.by_status.entry(r.status.as_u16()).or_default() += 1,
                        Err(_) => {
                            tally.errors += 1;
                            conn = Http1Conn::connect(addr).await.unwrap();
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.add(&w.await.unwrap());
    }
    tally
}

/// A load loop running until [`Background::stop`]; counts answers, and
/// keeps the non-200 ones for the failure message.
pub struct Background {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<(Tally, Vec<String>)>>,
}

impl Background {
    pub fn start(addr: SocketAddr, connections: usize) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..connections)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut bad = Vec::new();
                    let mut conn = Http1Conn::connect(addr).await.unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        match conn.send(get("/", &[])).await {
                            Ok(r) => {
                                *tally.by_status.entry(r.status.as_u16()).or_default() += 1;
                                if r.status != 200 && bad.len() < 5 {
                                    bad.push(format!("{} {}", r.status, r.text()));
                                }
                            }
                            Err(e) => {
                                tally.errors += 1;
                                bad.push(e.to_string());
                                conn = Http1Conn::connect(addr).await.unwrap();
                            }
                        }
                    }
                    (tally, bad)
                })
            })
            .collect();
        Background { stop, workers }
    }

    pub async fn stop(self) -> (Tally, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        let mut bad = Vec::new();
        for w in self.workers {
            let (t, b) = w.await.unwrap();
            tally.add(&t);
            bad.extend(b);
        }
        (tally, bad)
    }
}

/// An upstream that is down but observable: it accepts each connection and
/// closes it at once, counting connects. [`Closer::stop`] frees the port.
pub struct Closer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Closer {
    pub async fn start() -> Closer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Closer {
            addr,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening (the port is free when this returns); returns the count.
    pub async fn stop(self) -> u64 {
        self.task.abort();
        let _ = self.task.await;
        self.accepted.load(Ordering::SeqCst)
    }
}

/// `x-levee-error` of a response.
pub fn levee_error(r: &HttpResponse) -> &str {
    r.header("x-levee-error")
}

/// `Retry-After` in whole seconds, if present and numeric.
pub fn retry_after(r: &HttpResponse) -> Option<u64> {
    r.header("retry-after").parse().ok()
}

/// One line per measured run, easy to grep from `--nocapture` output.
pub fn report(scenario: &str, policy: &str, tally: &Tally, upstream_attempts: u64) {
    let requests = tally.total();
    eprintln!(
        "MEASURED {scenario} policy={policy}: requests {requests}, success {:.4} ({} ok), \
         upstream attempts {upstream_attempts}, amplification {:.3}, answers {:?}, errors {}",
        tally.success_rate(),
        tally.count(200),
        upstream_attempts as f64 / requests.max(1) as f64,
        tally.by_status,
        tally.errors,
    );
}

/// Deadline for anything the tests poll for.
pub const POLL: Duration = Duration::from_secs(15);
