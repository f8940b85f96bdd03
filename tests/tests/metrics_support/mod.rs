//! Shared by `metrics_scenario.rs`: a closed-loop load that tallies answers
//! by status and `x-levee-error`, and `levee_requests_total` in the same shape.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use http::Request;
use levee_tests::{
    flaky::{Faults, FlakyUpstream},
    harness::{Http1Conn, Metrics, empty},
};

/// Answers by `(status, x-levee-error)` (`""` when the upstream answered).
pub type Tally = BTreeMap<(u16, String), u64>;

/// `callers` closed loops of `GET /` for `host` through the proxy, for `run`.
pub async fn load(proxy: SocketAddr, host: &'static str, callers: usize, run: Duration) -> Tally {
    let until = Instant::now() + run;
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut conn = Http1Conn::connect(proxy).await.unwrap();
                while Instant::now() < until {
                    let req = Request::get("/")
                        .header("host", host)
                        .body(empty())
                        .unwrap();
                    let r = conn.send(req).await.unwrap();
                    let cause = r.header("x-levee-error").to_owned();
                    *tally.entry((r.status.as_u16(), cause)).or_default() += 1;
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::new();
    for w in workers {
        for (key, n) in w.await.unwrap() {
            *tally.entry(key).or_default() += n;
        }
    }
    tally
}

/// The `outcome` label the proxy must have given an answer (docs/metrics.md).
pub fn outcome(status: u16, cause: &str) -> &str {
    match (cause, status) {
        ("", s) if s >= 500 => "failure",
        ("", _) => "success",
        (cause, _) => cause,
    }
}

/// `levee_requests_total` of `service` as `(code, outcome) → count`.
pub fn scraped_requests(m: &Metrics, service: &str) -> BTreeMap<(String, String), u64> {
    scraped(m, "outbound", service)
}

/// `levee_requests_total` of `direction` and `service` as `(code, outcome) → count`.
pub fn scraped(m: &Metrics, direction: &str, service: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for s in m.matching(
        "levee_requests_total",
        &[("direction", direction), ("service", service)],
    ) {
        let key = (s.labels["code"].clone(), s.labels["outcome"].clone());
        *out.entry(key).or_default() += s.value as u64;
    }
    out
}

/// The client's tally in the same shape.
pub fn expected_requests(tally: &Tally) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for ((status, cause), n) in tally {
        let key = (status.to_string(), outcome(*status, cause).to_owned());
        *out.entry(key).or_default() += n;
    }
    out
}

pub fn answered(tally: &Tally, status: u16, cause: &str) -> u64 {
    tally
        .get(&(status, cause.to_owned()))
        .copied()
        .unwrap_or_default()
}

pub async fn upstream(id: &str, faults: Faults) -> FlakyUpstream {
    FlakyUpstream::builder()
        .id(id)
        .faults(faults)
        .start()
        .await
        .unwrap()
}
