//! A dead or stalled collector never slows or breaks traffic: spans are
//! dropped and counted in `levee_trace_spans_dropped_total`.

use std::time::{Duration, Instant};

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, empty, eventually, send_http1, yaml},
    otlp::{ClosedPort, OtlpReceiver},
};

const DROPPED: &str = "levee_trace_spans_dropped_total";

/// Sends `n` sampled calls; each must succeed within a second.
async fn calls(proxy: &Proxy, n: usize) {
    for i in 0..n {
        let req = Request::get("/echo")
            .header("host", "web:80")
            .header(
                "traceparent",
                format!("00-{:032x}-00f067aa0ba902b7-01", 0xfeed_0000 + i),
            )
            .body(empty())
            .unwrap();
        let start = Instant::now();
        let r = send_http1(proxy.outbound(), req).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "call {i} took {:?}",
            start.elapsed()
        );
    }
}

async fn dropped(proxy: &Proxy) -> f64 {
    proxy.metrics().await.unwrap().value(DROPPED, &[])
}

#[tokio::test]
async fn a_dead_collector_drops_and_counts_every_span() {
    let up = FlakyUpstream::start("c-1").await.unwrap();
    let closed = ClosedPort::new().unwrap();
    let dead = closed.addr();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg("--otlp-endpoint")
        .arg(format!("http://{dead}"))
        .start()
        .await;
    assert_eq!(
        dropped(&proxy).await,
        0.0,
        "the counter exists from the start"
    );
    calls(&proxy, 20).await;
    // Two spans per call (the call and its attempt), none exported.
    eventually(
        Duration::from_secs(20),
        "40 spans counted as dropped",
        || async {
            match dropped(&proxy).await {
                40.0 => Ok(()),
                n => Err(format!("{DROPPED} = {n}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_stalled_collector_fills_the_queue_and_spans_beyond_are_dropped() {
    let collector = OtlpReceiver::start().await.unwrap();
    collector.stall(true);
    let up = FlakyUpstream::start("c-2").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .traced(&collector)
        .arg("--trace-queue-size")
        .arg("4")
        .arg("--trace-export-timeout")
        .arg("60s")
        .start()
        .await;
    calls(&proxy, 2).await;
    // The export task now waits on the stalled collector...
    eventually(
        Duration::from_secs(10),
        "an export call in flight",
        || async {
            match collector.exports() {
                0 => Err("none yet".to_owned()),
                _ => Ok(()),
            }
        },
    )
    .await;
    // ...so of the next 20 calls' 40 spans, 4 fit in the queue.
    calls(&proxy, 20).await;
    assert_eq!(dropped(&proxy).await, 36.0);
    assert!(collector.spans().is_empty());
}
