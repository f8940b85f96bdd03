//! Sampling and propagation without spans: an unsampled call exports
//! nothing, and the app's `traceparent` / `tracestate` reach the upstream
//! exactly as sent. "Nothing" is checked after a graceful shutdown, which
//! flushes whatever the proxy had queued.

use std::time::Duration;

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, empty, send_http1, yaml},
    otlp::OtlpReceiver,
};

const SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const UNSAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// Sends `/echo` with `traceparent` (if any) and returns the `traceparent`
/// and `tracestate` the upstream saw.
async fn through(proxy: &Proxy, traceparent: Option<&str>) -> (String, String) {
    let mut req = Request::get("/echo").header("host", "web:80");
    if let Some(tp) = traceparent {
        req = req
            .header("traceparent", tp)
            .header("tracestate", "app=1,b=2");
    }
    let r = send_http1(proxy.outbound(), req.body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json().unwrap();
    let header = |name: &str| echo["headers"][name][0].as_str().unwrap_or("").to_owned();
    (header("traceparent"), header("tracestate"))
}

async fn proxy(collector: &OtlpReceiver, up: &FlakyUpstream, sampler: &[(&str, &str)]) -> Proxy {
    let mut builder = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .traced(collector);
    for (k, v) in sampler {
        builder = builder.env(*k, *v);
    }
    builder.start().await
}

#[tokio::test]
async fn sampling_off_exports_nothing_and_traceparent_passes_untouched() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("s-1").await.unwrap();
    let mut proxy = proxy(&collector, &up, &[("OTEL_TRACES_SAMPLER", "always_off")]).await;
    for _ in 0..5 {
        let (tp, state) = through(&proxy, Some(SAMPLED)).await;
        assert_eq!(tp, SAMPLED, "the app's traceparent is passed untouched");
        assert_eq!(state, "app=1,b=2");
    }
    assert!(proxy.shutdown(Duration::from_secs(10)).await.success());
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
}

#[tokio::test]
async fn an_unsampled_parent_is_followed_and_passed_untouched() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("s-2").await.unwrap();
    // The default sampler: parent-based, ratio 1.
    let mut proxy = proxy(&collector, &up, &[]).await;
    let (tp, state) = through(&proxy, Some(UNSAMPLED)).await;
    assert_eq!(tp, UNSAMPLED);
    assert_eq!(state, "app=1,b=2");
    assert!(proxy.shutdown(Duration::from_secs(10)).await.success());
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
}

#[tokio::test]
async fn a_ratio_of_zero_starts_unsampled_traces_downstream_follows() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("s-3").await.unwrap();
    let mut proxy = proxy(
        &collector,
        &up,
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    )
    .await;
    // No parent: a new trace, not sampled, announced as such upstream.
    let (tp, _) = through(&proxy, None).await;
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "a traceparent was added: {tp:?}");
    assert_eq!(parts[3], "00", "not sampled: {tp}");
    // A sampled parent wins over the ratio (parent-based).
    let (tp, _) = through(&proxy, Some(SAMPLED)).await;
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{tp}"
    );
    assert!(tp.ends_with("-01"), "{tp}");
    assert_ne!(tp, SAMPLED, "the proxy's attempt span is the new parent");
    assert!(proxy.shutdown(Duration::from_secs(10)).await.success());
    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "only the sampled call's spans: {spans:#?}");
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id == "0af7651916cd43dd8448eb211c80319c")
    );
}
