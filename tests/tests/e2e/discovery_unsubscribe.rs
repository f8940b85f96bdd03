//! Control-plane mode under a flood of distinct `Host` values: a caller
//! proxy with a small destination table (`--max-destinations 64`) meets a
//! few thousand services `svc-N.default:80` (each with a static endpoint at
//! a closed loopback port, so no DNS is ever asked: each answers
//! `502 upstream-connect` at once). Every destination the table evicts is
//! unsubscribed and its discovered state forgotten, so:
//! - the control plane's subscriptions for that proxy stay about the size of
//!   the table, never reaching its `--max-subscriptions-per-stream` (before,
//!   the proxy kept up to 4,096 subscriptions for good and that limit ended
//!   its stream over and over);
//! - `payments`, met only after the flood, still gets its policy and its
//!   endpoints (200 from its replica through its proxy);
//! - the proxy's `/config`, RSS and file descriptors stay bounded, and no
//!   update is NACKed (updates that cross an `Unsubscribe` are ignored).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use levee_tests::flaky::FlakyUpstream;
use levee_tests::harness::mesh::{
    CONVERGE, PAYMENTS, PAYMENTS_AUTHORITY, PAYMENTS_PORT, apply, call, endpoints_of, mesh_proxy,
    metric, policy_of, status,
};
use levee_tests::harness::resources::{Sampler, open_fds, rss_kib};
use levee_tests::harness::{ControlPlane, Http1Conn, eventually, load, yaml};

/// The caller's destination table (`--max-destinations`).
const MAX_DESTINATIONS: usize = 64;
/// Subscriptions the control plane allows one stream: far above the
/// table, far below the hosts sent.
const CP_MAX_SUBSCRIPTIONS: usize = 256;
/// Keep-alive connections sending the distinct hosts at once.
const CONNECTIONS: usize = 16;
/// The closed port every flood service's endpoint points at.
const CLOSED: &str = "127.0.0.1:9";

fn hosts() -> usize {
    std::env::var("LEVEE_UNSUBSCRIBE_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_flood_leaves_subscriptions_bounded_and_later_services_discovered() {
    let total = hosts();
    let cp = ControlPlane::builder()
        .arg("--max-subscriptions-per-stream")
        .arg(CP_MAX_SUBSCRIPTIONS.to_string())
        .start()
        .await;
    let up = FlakyUpstream::start("payments-1").await.expect("upstream");
    let replica = mesh_proxy(&cp, "payments", up.addr().port(), PAYMENTS_PORT)
        .start()
        .await;
    let closed = CLOSED.parse().expect("addr");
    let mut documents: Vec<_> = (0..total)
        .map(|n| yaml::endpoints(&format!("svc-{n}"), 80, &[closed]))
        .collect();
    documents.push(yaml::policy(
        "payments",
        PAYMENTS_PORT,
        "  outbound:\n    timeouts: {request: 7s}\n",
    ));
    apply(&cp, yaml::documents(&documents)).await;

    let caller = mesh_proxy(&cp, "client", 1, 80)
        .arg("--max-destinations")
        .arg(MAX_DESTINATIONS.to_string())
        // A log line per retry would cost more than the request.
        .env("LEVEE_LOG", "warn")
        .start()
        .await;
    let pid = caller.process.pid().expect("proxy pid");
    let outbound = caller.outbound();

    // Warm up past a full table, so the baseline has it full.
    let warm = 2 * MAX_DESTINATIONS;
    assert_eq!(run_hosts(outbound, 0, warm).await, warm);
    let baseline_rss = rss_kib(pid).expect("rss");
    let baseline_fds = open_fds(pid).expect("fds");
    let sampler = Sampler::start(pid);

    let started = Instant::now();
    let answered = run_hosts(outbound, warm, total - warm).await;
    let flood = started.elapsed();
    assert_eq!(answered, total - warm, "every flood host answered 502");

    // Met only now, `payments` gets its endpoints (its replica) and policy.
    let at = Instant::now();
    let r = call(&caller, PAYMENTS_AUTHORITY, &[])
        .await
        .expect("payments");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-flaky-instance"), "payments-1");
    let first_call = at.elapsed();
    let config = caller.config().await.expect("/config");
    assert!(
        policy_of(&config, PAYMENTS).is_some_and(|p| p.to_string().contains("\"7s\"")),
        "the payments policy: {config}"
    );
    assert_eq!(
        endpoints_of(&config, PAYMENTS),
        [replica.inbound().to_string()],
        "{config}"
    );
    // Discovered state is as bounded as the table.
    let services = config["endpoints"].as_object().map_or(0, |e| e.len());
    assert!(
        services <= MAX_DESTINATIONS + 1,
        "{services} services in /config"
    );

    // The control plane never refused the stream, and holds about a table's
    // worth of subscriptions for it (once the last unsubscribes landed).
    let cp_metrics = cp.metrics().await.expect("control plane metrics");
    assert_eq!(
        cp_metrics.value(
            "levee_cp_watch_refused_total",
            &[("reason", "subscriptions")]
        ),
        0.0
    );
    let subscribed = eventually(CONVERGE, "the caller's subscriptions to shrink", || async {
        let json: serde_json::Value =
            serde_json::from_str(&status(&cp, true).await).map_err(|e| e.to_string())?;
        let callers: Vec<usize> = json["proxies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["service"] == "client")
            .map(|p| p["subscriptions"].as_array().map_or(0, Vec::len))
            .collect();
        match callers.as_slice() {
            [n] if *n <= MAX_DESTINATIONS + 1 => Ok(*n),
            other => Err(format!("caller subscriptions {other:?}: {json}")),
        }
    })
    .await;
    assert_eq!(
        metric(&caller, "levee_control_plane_connected", &[]).await,
        1.0
    );
    assert_eq!(
        metric(&caller, "levee_policy_updates_total", &[("result", "nack")]).await,
        0.0,
        "updates crossing an unsubscribe are not NACKed"
    );
    let evicted = metric(
        &caller,
        "levee_state_evictions_total",
        &[("table", "destinations")],
    )
    .await;
    assert!(evicted >= (total - MAX_DESTINATIONS) as f64, "{evicted}");

    // Memory and descriptors stay bounded.
    let (peak_rss, peak_fds) = (sampler.peak_rss_kib(), sampler.peak_fds());
    drop(sampler);
    let rss = rss_kib(pid).expect("rss");
    assert!(
        rss.saturating_sub(baseline_rss) <= 64 * 1024,
        "RSS {baseline_rss} → {rss} KiB"
    );
    let fds = open_fds(pid).expect("fds");
    assert!(fds <= baseline_fds + 16, "fds {baseline_fds} → {fds}");
    eprintln!(
        "{total} hosts in {flood:?}; payments first call {first_call:?}; caller \
         subscriptions at the control plane {subscribed}; {services} services in \
         /config; {evicted} evictions; RSS {baseline_rss} → {rss} KiB (peak \
         {peak_rss}); fds {baseline_fds} → {fds} (peak {peak_fds})"
    );
}

/// Sends hosts `svc-{first}` .. over [`CONNECTIONS`] keep-alive
/// connections; returns how many were answered `502 upstream-connect`.
async fn run_hosts(outbound: std::net::SocketAddr, first: usize, count: usize) -> usize {
    let next = Arc::new(AtomicU64::new(first as u64));
    let end = (first + count) as u64;
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Http1Conn::connect(outbound).await.expect("connect");
            let mut answered = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return answered;
                }
                let host = format!("svc-{n}.default:80");
                let answer = conn
                    .send(load::get(&host, "/", &[]))
                    .await
                    .expect("an answer on the kept-alive connection");
                assert_eq!(
                    (answer.status.as_u16(), answer.header("x-levee-error")),
                    (502, "upstream-connect"),
                    "{host}: {}",
                    answer.text()
                );
                answered += 1;
            }
        }));
    }
    let mut answered = 0;
    for worker in workers {
        answered += worker.await.expect("worker");
    }
    answered
}
