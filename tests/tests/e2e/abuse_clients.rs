//! Abuse: 10,000 distinct client addresses (client sockets bound to
//! `127.10.y.z` before connecting) against an inbound `perClient` rate
//! limit whose table holds 1,024 clients (`--max-rate-limit-clients`). The
//! table stays bounded (idle clients dropped and counted in
//! `levee_state_evictions_total{table="clients"}`, newcomers share an
//! overflow bucket), RSS and fds stay bounded, and a hot client that keeps
//! calling through the flood keeps its own bucket: it gets exactly its
//! limit, neither more nor starved by the flood.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use levee_tests::flaky::FlakyUpstream;
use levee_tests::harness::{Http1Conn, HttpResponse, Proxy, load, yaml};
use tokio::net::TcpSocket;

const CLIENTS: u32 = 10_000;
const TABLE: usize = 1024;
/// Flood connections at once.
const CONCURRENCY: u32 = 64;
const RPS: f64 = 2.0;
const BURST: f64 = 2.0;

fn rss(pid: u32) -> u64 {
    levee_tests::bench::procfs::rss(pid).expect("VmRSS of the proxy")
}

fn fds(pid: u32) -> usize {
    levee_tests::bench::procfs::open_fds(pid).expect("/proc/<pid>/fd of the proxy")
}

/// The `n`th flood address: `127.10.0.1` onwards.
fn client(n: u32) -> Ipv4Addr {
    let n = n + 1;
    Ipv4Addr::new(127, 10 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

/// One request from `source` on a fresh connection.
async fn call_from(source: Ipv4Addr, inbound: SocketAddr) -> HttpResponse {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .unwrap_or_else(|e| panic!("binding {source}: {e}"));
    let stream = socket.connect(inbound).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let response = sender
        .send_request(load::get("test-svc", "/", &[]))
        .await
        .expect("an answer");
    HttpResponse::read(response).await.expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients_keep_the_per_client_table_bounded_and_fair() {
    let up = FlakyUpstream::start("abuse-clients")
        .await
        .expect("upstream");
    let port = up.addr().port();
    let spec = format!(
        "  inbound:\n    rateLimit: {{requestsPerSecond: {RPS}, burst: {BURST}, perClient: true}}\n"
    );
    let proxy = Proxy::builder()
        .policy(yaml::policy("test-svc", port, &spec))
        .app_port(port)
        .arg("--max-rate-limit-clients")
        .arg(TABLE.to_string())
        // A log line per retry or refusal would cost more than the request.
        .env("LEVEE_LOG", "warn")
        .start()
        .await;
    let pid = proxy.process.pid().expect("proxy pid");
    let inbound = proxy.inbound();

    // Warm up: a table's worth of clients, then the baseline.
    for n in 0..TABLE as u32 {
        let answer = call_from(client(CLIENTS + n), inbound).await;
        assert_eq!(
            answer.status, 200,
            "a new client's first call is in its burst"
        );
    }
    let baseline_rss = rss(pid);
    let baseline_fds = fds(pid);

    // The hot client (127.0.0.1) calls every 2 ms through the flood.
    let hot = tokio::spawn(async move {
        let mut conn = Http1Conn::connect(inbound).await.expect("connect");
        let (mut admitted, mut limited) = (0u64, 0u64);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            let answer = conn
                .send(load::get("test-svc", "/", &[]))
                .await
                .expect("hot answer");
            match (answer.status.as_u16(), answer.header("x-levee-error")) {
                (200, _) => admitted += 1,
                (429, "rate-limited") => limited += 1,
                other => panic!("hot client got {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (admitted, limited, start.elapsed())
    });

    let next = Arc::new(AtomicU64::new(0));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flood_start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, ok, refused) = (next.clone(), ok.clone(), refused.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= u64::from(CLIENTS) {
                        return;
                    }
                    let answer = call_from(client(n as u32), inbound).await;
                    match (answer.status.as_u16(), answer.header("x-levee-error")) {
                        (200, _) => ok.fetch_add(1, Ordering::Relaxed),
                        (429, "rate-limited") => refused.fetch_add(1, Ordering::Relaxed),
                        other => panic!("flood client {n} got {other:?}"),
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("flood worker");
    }
    let flood = flood_start.elapsed();
    let (admitted, limited, hot_for) = hot.await.expect("hot client");

    // The hot client kept its own bucket: at most burst + rate × time,
    // at least half of what it could get (sharing the overflow bucket
    // with the flood would starve it), and it was limited.
    let offered = admitted + limited;
    let most = BURST + RPS * hot_for.as_secs_f64() + 1.0;
    let least = 0.5 * (RPS * hot_for.as_secs_f64()).min(offered as f64);
    assert!(
        (admitted as f64) <= most && (admitted as f64) >= least,
        "hot client admitted {admitted} of {offered} in {hot_for:?} (allowed {least}..={most})"
    );
    assert!(
        limited > 0,
        "the hot client went over its limit: {admitted} admitted in {hot_for:?}"
    );

    // Bounded state: evictions counted, RSS and fds back near the baseline.
    let metrics = proxy.metrics().await.expect("metrics");
    let evicted = metrics.value("levee_state_evictions_total", &[("table", "clients")]);
    assert!(evicted > 0.0, "idle clients were dropped: {}", metrics.text);
    let grown = rss(pid).saturating_sub(baseline_rss);
    assert!(grown <= 32 << 20, "RSS grew by {} MiB", grown >> 20);
    // Closed flood connections go away as the proxy sees them close; what
    // stays is the pool's idle connections to the app (one per flood
    // connection at most), never one per client.
    let bound = baseline_fds + CONCURRENCY as usize + 16;
    let open = levee_tests::harness::eventually(Duration::from_secs(5), "fds back", || async {
        let open = fds(pid);
        if open <= bound {
            Ok(open)
        } else {
            Err(format!("{open} fds (baseline {baseline_fds})"))
        }
    })
    .await;
    eprintln!(
        "{CLIENTS} clients in {flood:?}: {} admitted, {} limited; hot {admitted}/{offered} \
         in {hot_for:?}; {evicted} evicted; RSS +{} KiB; fds {baseline_fds} → {open}",
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        grown >> 10
    );
}
