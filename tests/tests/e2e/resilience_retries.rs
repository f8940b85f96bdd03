//! Retries, timeouts and balancing end to end: the real `levee-proxy`
//! binary in front of flaky upstreams (issue 3, scenarios 2, 4, 5 and 7).

use std::time::{Duration, Instant};

use http::Request;
use levee_tests::{
    flaky::{Delay, Faults, FlakyUpstream},
    harness::{
        Http1Conn, Proxy, empty, full, grpc_channel, load,
        web::{self, AUTHORITY, upstream},
        yaml,
    },
    pb::{EchoRequest, flaky_client::FlakyClient},
};
use tonic::Code;

async fn proxy(outbound: &str, upstreams: &[&FlakyUpstream]) -> Proxy {
    let addrs: Vec<_> = upstreams.iter().map(|u| u.addr()).collect();
    web::proxy(Some(outbound), &addrs).await
}

fn failing(status: u16, rate: Option<f64>) -> Faults {
    Faults {
        status: Some(status),
        fail_rate: rate,
        ..Faults::default()
    }
}

#[tokio::test]
async fn scenario_2_random_503s_are_retried_within_the_budget() {
    let ups = [
        upstream("r-1", failing(503, Some(0.2))).await,
        upstream("r-2", failing(503, Some(0.2))).await,
        upstream("r-3", failing(503, Some(0.2))).await,
    ];
    let proxy = proxy(
        "    retry:\n      maxRetries: 2\n      on: [gateway-error]\n      backoff: {base: 1ms, max: 5ms}\n      budget: {percent: 20, minPerSecond: 10, window: 10s}\n",
        &ups.iter().collect::<Vec<_>>(),
    )
    .await;
    let (clients, per_client) = (4, 250);
    let ok = random_503_load(&proxy, clients, per_client).await;
    let total = clients * per_client;
    let metrics = proxy.metrics().await.unwrap();
    let retries = metrics
        .sum("levee_retries_total", &[("service", "web.default:80")])
        .unwrap_or(0.0);
    let refused = metrics
        .sum(
            "levee_retry_budget_exhausted_total",
            &[("service", "web.default:80")],
        )
        .unwrap_or(0.0);
    let sent: u64 = ups.iter().map(|u| u.stats().requests).sum();
    let success = f64::from(ok) / f64::from(total);
    eprintln!(
        "MEASURED scenario-2 policy=retry: requests {total}, success {success:.4}, retries {retries}, \
         budget refusals {refused}, upstream attempts {sent}, amplification {:.3}",
        sent as f64 / f64::from(total)
    );
    // Each call fails only if all three attempts draw a 503: 0.2³, so 8
    // failures are expected out of 1,000 (Poisson, sd 2.8). At most 25 is
    // ~6 sd out (a flake once in millions of runs, where 15 failed one CI
    // run in a hundred), yet still refuses one retry too few (0.2² = 40
    // failures expected) or no retries (200).
    let failed = total - ok;
    assert!(
        failed <= 25,
        "{failed} of {total} calls failed (success rate {success}), {refused} retries refused by the budget"
    );
    assert!(
        retries <= 0.2 * f64::from(total) + 100.0,
        "{retries} retries over budget"
    );
    assert_eq!(
        sent as f64,
        f64::from(total) + retries,
        "every retry reached an upstream"
    );

    // Control: the same load without a policy (503s are not retried).
    let plain = Proxy::builder()
        .policy(yaml::endpoints(
            "web",
            80,
            &ups.iter().map(FlakyUpstream::addr).collect::<Vec<_>>(),
        ))
        .start()
        .await;
    let ok = random_503_load(&plain, clients, per_client).await;
    let sent_plain = ups.iter().map(|u| u.stats().requests).sum::<u64>() - sent;
    eprintln!(
        "MEASURED scenario-2 policy=none: requests {total}, success {:.4}, \
         upstream attempts {sent_plain}, amplification {:.3}",
        f64::from(ok) / f64::from(total),
        sent_plain as f64 / f64::from(total)
    );
    assert_eq!(
        sent_plain,
        u64::from(total),
        "nothing retried without a policy"
    );
}

/// `clients` connections × `per_client` GETs to `web:80`; the 200s.
async fn random_503_load(proxy: &Proxy, clients: u32, per_client: u32) -> u32 {
    let total = u64::from(clients * per_client);
    let tally = load::requests(proxy.outbound(), AUTHORITY, clients as usize, total).await;
    assert_eq!(tally.errors, 0, "{:?}", tally.bad);
    u32::try_from(tally.count(200)).unwrap_or(u32::MAX)
}

#[tokio::test]
async fn scenario_4_a_slow_endpoint_times_out_per_try_and_the_retry_lands_elsewhere() {
    let slow = upstream(
        "slow",
        Faults {
            delay: Some(Delay::Fixed(Duration::from_secs(3))),
            ..Faults::default()
        },
    )
    .await;
    let fast = [
        upstream("fast-1", Faults::default()).await,
        upstream("fast-2", Faults::default()).await,
    ];
    let proxy = proxy(
        "    timeouts: {request: 1s, perTry: 200ms}\n    retry: {maxRetries: 2, on: [timeout], backoff: {base: 1ms, max: 5ms}}\n",
        &[&slow, &fast[0], &fast[1]],
    )
    .await;
    let mut conn = Http1Conn::connect(proxy.outbound()).await.unwrap();
    for _ in 0..60 {
        let start = Instant::now();
        let req = Request::get("/")
            .header("host", "web:80")
            .body(empty())
            .unwrap();
        let r = conn.send(req).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.header("x-flaky-instance").starts_with("fast"), "{r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        if slow.stats().requests > 0 {
            break;
        }
    }
    assert!(
        slow.stats().requests > 0,
        "the balancer never tried the slow endpoint"
    );
    let metrics = proxy.metrics().await.unwrap();
    assert!(metrics.value("levee_timeouts_total", &[("kind", "per-try")]) >= 1.0);
}

#[tokio::test]
async fn scenario_5_post_is_retried_only_with_an_idempotency_key() {
    let up = upstream("always-503", failing(503, None)).await;
    let proxy = proxy(
        "    retry: {maxRetries: 2, on: [\"503\"], backoff: {base: 1ms, max: 5ms}}\n",
        &[&up],
    )
    .await;
    let mut conn = Http1Conn::connect(proxy.outbound()).await.unwrap();
    let post = |key: Option<&str>| {
        let mut req = Request::post("/").header("host", "web:80");
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        req.body(full("order")).unwrap()
    };
    assert_eq!(conn.send(post(None)).await.unwrap().status, 503);
    assert_eq!(up.stats().requests, 1, "not retried without a key");
    assert_eq!(conn.send(post(Some("order-7"))).await.unwrap().status, 503);
    assert_eq!(up.stats().requests, 4, "retried twice with a key");
}

#[tokio::test]
async fn scenario_7_grpc_unavailable_is_retried_deadlines_hold_and_streams_work() {
    let down = upstream(
        "down",
        Faults {
            grpc_status: Some(14),
            ..Faults::default()
        },
    )
    .await;
    let up = upstream("up", Faults::default()).await;
    let p = proxy(
        "    retry: {maxRetries: 2, grpcOn: [unavailable], backoff: {base: 1ms, max: 5ms}}\n",
        &[&down, &up],
    )
    .await;
    let mut client = FlakyClient::new(grpc_channel(p.outbound(), "web:80").await.unwrap());
    for i in 0..40 {
        let r = client
            .echo(EchoRequest {
                message: format!("m{i}"),
            })
            .await
            .unwrap();
        assert_eq!(r.into_inner().instance, "up");
    }
    assert!(
        down.stats().grpc_requests > 0,
        "the failing endpoint was tried"
    );

    // A request timeout shorter than the upstream's delay: DEADLINE_EXCEEDED
    // from the proxy, in time. (A tonic client timeout would race it: the
    // client gives up at the same instant; the caller's `grpc-timeout`
    // travelling upstream is covered by the proxy's own tests.)
    let slow = upstream(
        "slow",
        Faults {
            delay: Some(Delay::Fixed(Duration::from_secs(3))),
            ..Faults::default()
        },
    )
    .await;
    let slow_proxy = proxy(
        "    timeouts: {request: 300ms}\n    retry: {grpcOn: [unavailable]}\n",
        &[&slow],
    )
    .await;
    let mut slow_client =
        FlakyClient::new(grpc_channel(slow_proxy.outbound(), "web:80").await.unwrap());
    let req = tonic::Request::new(EchoRequest {
        message: "late".into(),
    });
    let start = Instant::now();
    let status = slow_client.echo(req).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    // A bidirectional stream through the retry layer interleaves as usual.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let outbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    tx.send(EchoRequest {
        message: "ping 0".into(),
    })
    .await
    .unwrap();
    let mut healthy = FlakyClient::new(grpc_channel(p.outbound(), "web:80").await.unwrap());
    // The first attempt may meet the failing endpoint's UNAVAILABLE: the
    // retry replays what was sent so far and streams on.
    let mut inbound = healthy.bidi_stream(outbound).await.unwrap().into_inner();
    for i in 0..5u32 {
        let m = inbound.message().await.unwrap().expect("an answer");
        assert_eq!((m.message, m.sequence), (format!("ping {i}"), i));
        tx.send(EchoRequest {
            message: format!("ping {}", i + 1),
        })
        .await
        .unwrap();
    }
    drop(tx);
    assert_eq!(inbound.message().await.unwrap().unwrap().message, "ping 5");
    assert!(inbound.message().await.unwrap().is_none());
}
