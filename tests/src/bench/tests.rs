//! The load generator against the in-process upstream: counts follow the
//! schedule exactly, latencies are recorded, failures are counted.

use std::time::Duration;

use tokio::net::TcpListener;

use super::load::{self, LoadSpec, Protocol};
use super::upstream;

async fn start_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(upstream::serve_on(listener));
    addr
}

fn spec(target: std::net::SocketAddr, protocol: Protocol, rate: Option<f64>) -> LoadSpec {
    LoadSpec {
        target,
        authority: "bench".into(),
        protocol,
        connections: 4,
        rate,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(500),
    }
}

#[tokio::test]
async fn open_loop_sends_exactly_the_schedule() {
    let addr = start_upstream().await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let r = load::run(&spec(addr, protocol, Some(200.0))).await;
        // 200 req/s for 0.6 s = 120 sent, 100 of them in the measured 0.5 s.
        assert_eq!(r.errors, 0, "{protocol:?}");
        assert_eq!(r.total_ok, 120, "{protocol:?}");
        assert_eq!(r.ok, 100, "{protocol:?}");
        assert_eq!(r.latencies.count(), 100, "{protocol:?}");
        assert!(
            (r.achieved_rate() - 200.0).abs() < 1.0,
            "{}",
            r.achieved_rate()
        );
        let s = r.latencies.summary();
        assert!(
            s.p50_us > 0.0 && s.p50_us <= s.p99_us && s.p99_us <= s.max_us,
            "{s:?}"
        );
    }
}

#[tokio::test]
async fn closed_loop_and_idle_connections() {
    let addr = start_upstream().await;
    let r = load::run(&spec(addr, Protocol::Http1, None)).await;
    assert_eq!(r.errors, 0);
    assert!(r.ok > 100, "closed loop managed only {} requests", r.ok);
    let (conns, errors) = load::open_idle(&spec(addr, Protocol::Http1, None), 50).await;
    assert_eq!((conns.len(), errors), (50, 0));
}

#[tokio::test]
async fn a_dead_target_counts_errors() {
    // Bound then dropped: nothing listens there any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let r = load::run(&spec(addr, Protocol::Http1, Some(100.0))).await;
    assert_eq!(r.ok, 0);
    assert_eq!(r.errors, 50);
    assert_eq!(r.latencies.count(), 0);
}
