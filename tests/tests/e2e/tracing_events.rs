//! What the resilience layers decided shows on the logical span as events:
//! per-try and request timeouts, rate limiting, an open circuit. Attempts cut
//! by a timeout end as `error.type = timeout`.

use std::time::Duration;

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{HttpResponse, Proxy, empty, send_http1, yaml},
    otlp::{OtlpReceiver, RecordedSpan},
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const DEADLINE: Duration = Duration::from_secs(10);

async fn start(collector: &OtlpReceiver, up: &FlakyUpstream, outbound: &str) -> Proxy {
    let policy = yaml::documents(&[
        yaml::endpoints("web", 80, &[up.addr()]),
        yaml::policy("web", 80, &format!("  outbound:\n{outbound}")),
    ]);
    Proxy::builder()
        .policy(policy)
        .traced(collector)
        .start()
        .await
}

/// Sends a call in trace `n` with extra headers; returns the response and the trace id.
async fn call(proxy: &Proxy, n: u64, headers: &[(&str, &str)]) -> (HttpResponse, String) {
    let trace_id = format!("{:032x}", 0xe7e7_0000_u128 + u128::from(n));
    let mut req = Request::get("/")
        .header("host", "web:80")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = send_http1(proxy.outbound(), req.body(empty()).unwrap())
        .await
        .unwrap();
    (r, trace_id)
}

async fn logical(collector: &OtlpReceiver, trace_id: &str) -> (RecordedSpan, Vec<RecordedSpan>) {
    let spans = collector
        .wait_for_trace(trace_id, DEADLINE, |s| {
            s.iter().any(|s| s.kind == SpanKind::Client)
        })
        .await;
    let call = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client)
        .cloned()
        .unwrap();
    let attempts = spans.into_iter().filter(|s| s.name == "attempt").collect();
    (call, attempts)
}

#[tokio::test]
async fn per_try_timeouts_are_events_and_cut_attempts_end_as_timeouts() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("e-1").await.unwrap();
    let proxy = start(
        &collector,
        &up,
        "    timeouts: {request: 5s, perTry: 100ms}\n    \
         retry: {maxRetries: 1, on: [timeout], backoff: {base: 1ms, max: 2ms}}\n",
    )
    .await;
    let (r, trace_id) = call(&proxy, 1, &[("x-flaky-delay", "2s")]).await;
    assert_eq!(r.status, 504, "{r:?}");
    let (call, attempts) = logical(&collector, &trace_id).await;
    assert_eq!(call.attr("error.type"), "timeout");
    let per_try: Vec<_> = call
        .events
        .iter()
        .filter(|(name, attrs)| name == "timeout" && attrs["levee.timeout.kind"] == "per-try")
        .collect();
    assert_eq!(per_try.len(), 2, "{call:#?}");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for attempt in &attempts {
        assert_eq!(attempt.attr("error.type"), "timeout", "{attempt:#?}");
        assert_eq!(attempt.parent_span_id, call.span_id);
    }
}

#[tokio::test]
async fn a_request_timeout_is_an_event() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("e-2").await.unwrap();
    let proxy = start(&collector, &up, "    timeouts: {request: 150ms}\n").await;
    let (r, trace_id) = call(&proxy, 2, &[("x-flaky-delay", "2s")]).await;
    assert_eq!(r.status, 504, "{r:?}");
    let (call, attempts) = logical(&collector, &trace_id).await;
    let (_, attrs) = call
        .events
        .iter()
        .find(|(name, _)| name == "timeout")
        .unwrap_or_else(|| panic!("no timeout event: {call:#?}"));
    assert_eq!(attrs["levee.timeout.kind"], "request");
    assert_eq!(attrs["levee.attempt"], "1");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].attr("error.type"), "timeout");
}

#[tokio::test]
async fn a_rate_limited_call_is_an_event_without_attempts() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("e-3").await.unwrap();
    let proxy = start(
        &collector,
        &up,
        "    rateLimit: {requestsPerSecond: 1, burst: 1}\n",
    )
    .await;
    let mut limited = None;
    for n in 0..5 {
        let (r, trace_id) = call(&proxy, 10 + n, &[]).await;
        if r.status == 429 {
            limited = Some(trace_id);
            break;
        }
    }
    let trace_id = limited.expect("a 429 within 5 calls at 1/s");
    let (call, attempts) = logical(&collector, &trace_id).await;
    assert!(call.has_event("rate-limited"), "{call:#?}");
    assert_eq!(call.attr("error.type"), "rate-limited");
    assert_eq!(call.attr("levee.attempts"), "0");
    assert!(attempts.is_empty());
}

#[tokio::test]
async fn an_open_circuit_is_an_event() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("e-4").await.unwrap();
    let proxy = start(
        &collector,
        &up,
        "    retry: {maxRetries: 0}\n    \
         circuitBreaker: {failureOn: [5xx], consecutiveFailures: 2, open: {base: 30s, max: 60s}}\n",
    )
    .await;
    let mut open = None;
    for n in 0..6 {
        let (r, trace_id) = call(&proxy, 20 + n, &[("x-flaky-status", "500")]).await;
        if r.header("x-levee-error") == "circuit-open" {
            open = Some(trace_id);
            break;
        }
        assert_eq!(r.status, 500, "{r:?}");
    }
    let trace_id = open.expect("the circuit opens after 2 failures");
    let (call, attempts) = logical(&collector, &trace_id).await;
    assert!(call.has_event("circuit-open"), "{call:#?}");
    assert_eq!(call.attr("error.type"), "circuit-open");
    assert!(
        attempts.is_empty(),
        "refused before any attempt: {attempts:#?}"
    );
}

#[tokio::test]
async fn an_empty_retry_budget_is_an_event() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("e-5").await.unwrap();
    // One retry in reserve, none earned by traffic.
    let proxy = start(
        &collector,
        &up,
        "    retry:\n      maxRetries: 1\n      on: [\"500\"]\n      \
         backoff: {base: 1ms, max: 2ms}\n      \
         budget: {percent: 0, minPerSecond: 1, window: 1s}\n",
    )
    .await;
    let mut exhausted = None;
    for n in 0..20 {
        let (r, trace_id) = call(&proxy, 30 + n, &[("x-flaky-status", "500")]).await;
        assert_eq!(r.status, 500, "{r:?}");
        let (call, attempts) = logical(&collector, &trace_id).await;
        if call.has_event("retry-budget-exhausted") {
            exhausted = Some((call, attempts));
            break;
        }
    }
    let (call, attempts) = exhausted.expect("the budget runs out within 20 failing calls");
    assert_eq!(
        attempts.len(),
        1,
        "the denied retry was not sent: {attempts:#?}"
    );
    assert_eq!(call.attr("levee.attempts"), "1");
    assert_eq!(call.attr("error.type"), "500");
    assert_eq!(attempts[0].attr("http.response.status_code"), "500");
}
