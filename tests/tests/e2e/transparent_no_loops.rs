//! Under load, the proxy's own upstream connections are never captured
//! again, and skipped ports bypass it: in a client pod with
//! `init-iptables` (port 9443 skipped) and a sidecar, `h2load` opens
//! several connections to a server's IP and sends hundreds of requests.
//! Each request crosses the sidecar exactly once (the app sees
//! `x-levee-hops: 1` on every one, the sidecar counts each once, no loop
//! refusal), and the app sees no more connections than the sidecar's pool
//! needs. A call to the skipped port reaches its server directly, the
//! sidecar's counters unchanged.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use levee_tests::harness::{Body, Metrics, empty, netns::Netns, pods::TwoPods};

const DEADLINE: Duration = Duration::from_secs(20);
const REQUESTS: usize = 400;
const CONNECTIONS: usize = 8;

/// What an app saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    connections: AtomicUsize,
    /// Requests whose `x-levee-hops` was not exactly `hops`.
    other_hops: AtomicUsize,
}

/// An HTTP/1.1 app on every address of `ns` at `port`, counting what it
/// sees; each request must carry `x-levee-hops: <hops>` (`None`: none).
fn counting_app(ns: &Netns, port: u16, hops: Option<&'static str>) -> Arc<Seen> {
    let listener = ns.listen(SocketAddr::from(([0u16; 8], port)));
    let seen = Arc::new(Seen::default());
    let tally = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tally.connections.fetch_add(1, Ordering::SeqCst);
            let tally = tally.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    tally.requests.fetch_add(1, Ordering::SeqCst);
                    let got = req.headers().get("x-levee-hops").map(|h| h.as_bytes());
                    if got != hops.map(str::as_bytes) {
                        tally.other_hops.fetch_add(1, Ordering::SeqCst);
                    }
                    async { Ok::<Response<Body>, Infallible>(Response::new(empty())) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    seen
}

/// Everything the sidecar counts per call or connection, summed.
fn traffic(m: &Metrics) -> [f64; 3] {
    [
        m.sum("levee_requests_total", &[]).unwrap_or_default(),
        m.sum("levee_tcp_connections_total", &[])
            .unwrap_or_default(),
        m.sum("levee_rejected_total", &[]).unwrap_or_default(),
    ]
}

#[tokio::test]
async fn no_loop_under_load_and_skipped_ports_bypass_the_sidecar() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    let app = counting_app(server, 9080, Some("1"));
    let skipped = counting_app(server, 9443, None);
    let _sidecar = pods
        .client_sidecar(&["--skip-outbound-ports", "9443"], &[], &[])
        .await;

    let url = format!("http://{}/load", pods.server_addr(9080));
    let (n, c) = (REQUESTS.to_string(), CONNECTIONS.to_string());
    let mut h2load = client.command("h2load");
    h2load.args(["--h1", "-n", &n, "-c", &c, "-m", "1", &url]);
    let out = tokio::time::timeout(DEADLINE, h2load.output())
        .await
        .expect("h2load finishes in time")
        .expect("h2load runs (install nghttp2-client)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!(
            "requests: {n} total, {n} started, {n} done, {n} succeeded, 0 failed"
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!("status codes: {n} 2xx")),
        "{report}"
    );

    assert_eq!(app.requests.load(Ordering::SeqCst), REQUESTS);
    assert_eq!(
        app.other_hops.load(Ordering::SeqCst),
        0,
        "requests that crossed the sidecar more than once (or not at all)"
    );
    let connections = app.connections.load(Ordering::SeqCst);
    assert!(
        (1..=CONNECTIONS).contains(&connections),
        "the app saw {connections} connections for {CONNECTIONS} client connections"
    );

    let m = client.admin_metrics().await;
    let service = format!("passthrough:{}", pods.server_addr(9080));
    let counted = m.sum(
        "levee_requests_total",
        &[
            ("direction", "outbound"),
            ("service", &service),
            ("code", "200"),
        ],
    );
    assert_eq!(counted, Some(REQUESTS as f64), "{}", m.text);
    let before = traffic(&m);
    assert_eq!(
        before[0], REQUESTS as f64,
        "only the load was counted: {}",
        m.text
    );
    assert_eq!(before[1], 0.0, "no opaque connection: {}", m.text);
    assert_eq!(
        before[2], 0.0,
        "no refusal (loop-detected or other): {}",
        m.text
    );

    // The skipped port: straight to its server, past the sidecar.
    let direct = client
        .curl(&[&format!("http://{}/direct", pods.server_addr(9443))])
        .await;
    assert_eq!(direct.status, 200, "{direct:?}");
    assert_eq!(skipped.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        skipped.other_hops.load(Ordering::SeqCst),
        0,
        "the skipped port's request went through the sidecar"
    );
    let after = client.admin_metrics().await;
    assert_eq!(traffic(&after), before, "{}", after.text);
}
