//! Traces end to end (DESIGN.md §5): real proxies export to a test OTLP
//! collector; the flaky upstream's `/echo` shows the `traceparent` it got.
//!
//! - a sampled call: one logical CLIENT span with an attempt child, and the
//!   upstream's parent is that attempt;
//! - a call retried once: two attempt children, each with its endpoint and
//!   outcome, the upstream's parent being the second;
//! - through a peer proxy: its inbound SERVER span is in the same trace, the
//!   attempt's child, and the app's parent.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{HttpResponse, Proxy, empty, send_http1, yaml},
    otlp::{ClosedPort, OtlpReceiver, RecordedSpan, parse_traceparent},
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const DEADLINE: Duration = Duration::from_secs(10);

/// A traced proxy whose `web:80` is `endpoints`.
async fn traced_proxy(collector: &OtlpReceiver, endpoints: &[SocketAddr], name: &str) -> Proxy {
    Proxy::builder()
        .policy(yaml::endpoints("web", 80, endpoints))
        .traced(collector)
        .env("OTEL_SERVICE_NAME", name)
        .start()
        .await
}

/// A fresh sampled `traceparent` from the "app": (header, trace id, span id).
fn app_traceparent(n: u64) -> (String, String, String) {
    let trace = format!(
        "{:032x}",
        0x5eed_0000_0000_0000_0000_0000_0000_0000_u128 + u128::from(n)
    );
    let span = format!("{:016x}", 0xa000_0000_0000_0000_u64 + n);
    (format!("00-{trace}-{span}-01"), trace, span)
}

async fn echo(proxy: &Proxy, traceparent: &str) -> HttpResponse {
    let req = Request::get("/echo?q=1")
        .header("host", "web:80")
        .header("traceparent", traceparent)
        .header("tracestate", "app=1")
        .body(empty())
        .unwrap();
    let r = send_http1(proxy.outbound(), req).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r
}

/// The `traceparent` the upstream received, parsed.
fn upstream_traceparent(r: &HttpResponse) -> (String, String, bool) {
    let echo = r.json().unwrap();
    let value = echo["headers"]["traceparent"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent upstream: {echo}"));
    parse_traceparent(value).unwrap_or_else(|| panic!("bad traceparent {value}"))
}

fn logical(spans: &[RecordedSpan]) -> Option<&RecordedSpan> {
    spans.iter().find(|s| s.kind == SpanKind::Client)
}

fn attempts(spans: &[RecordedSpan]) -> Vec<&RecordedSpan> {
    let mut attempts: Vec<_> = spans.iter().filter(|s| s.name == "attempt").collect();
    attempts.sort_by_key(|s| s.attr("levee.attempt").parse::<u32>().unwrap_or(0));
    attempts
}

#[tokio::test]
async fn a_sampled_call_has_a_logical_span_an_attempt_and_the_upstreams_parent() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("t-1").await.unwrap();
    let proxy = traced_proxy(&collector, &[up.addr()], "client-sidecar").await;
    let (traceparent, trace_id, app_span) = app_traceparent(1);

    let r = echo(&proxy, &traceparent).await;
    let (seen_trace, seen_parent, sampled) = upstream_traceparent(&r);
    assert_eq!(seen_trace, trace_id, "the trace continues upstream");
    assert!(sampled);
    let echo = r.json().unwrap();
    assert_eq!(
        echo["headers"]["tracestate"][0], "app=1",
        "tracestate passes"
    );

    let spans = collector
        .wait_for_trace(&trace_id, DEADLINE, |s| logical(s).is_some())
        .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let call = logical(&spans).unwrap();
    assert_eq!(call.parent_span_id, app_span, "child of the app's span");
    assert_eq!(call.service_name, "client-sidecar");
    assert_eq!(call.name, "GET");
    assert_eq!(call.attr("http.request.method"), "GET");
    assert_eq!(call.attr("url.path"), "/echo");
    assert_eq!(call.attr("server.address"), "web");
    assert_eq!(call.attr("server.port"), "80");
    assert_eq!(call.attr("network.protocol.version"), "1.1");
    assert_eq!(call.attr("http.response.status_code"), "200");
    assert_eq!(call.attr("levee.service"), "web.default:80");
    assert_eq!(call.attr("levee.policy_version"), "1");
    assert_eq!(call.attr("levee.attempts"), "1");
    assert_eq!(call.attr("error.type"), "");

    let tries = attempts(&spans);
    assert_eq!(tries.len(), 1, "{spans:#?}");
    let attempt = tries[0];
    assert_eq!(attempt.parent_span_id, call.span_id);
    assert_eq!(attempt.attr("levee.attempt"), "1");
    assert_eq!(attempt.attr("levee.endpoint"), up.addr().to_string());
    assert_eq!(attempt.attr("http.response.status_code"), "200");
    assert_eq!(
        seen_parent, attempt.span_id,
        "the upstream's parent is the attempt"
    );
}

#[tokio::test]
async fn a_call_retried_once_has_two_attempts_under_one_logical_span() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("t-2").await.unwrap();
    // Nothing listens there: connecting fails, and connect failures are retried
    // by default, preferably on another endpoint.
    let closed = ClosedPort::new().unwrap();
    let dead = closed.addr();
    let proxy = traced_proxy(&collector, &[dead, up.addr()], "client-sidecar").await;

    // The balancer picks the dead endpoint first about half the time: send
    // calls until one was retried (20 calls all going first to `up`: ~1e-6).
    for n in 0..20 {
        let (traceparent, trace_id, _) = app_traceparent(100 + n);
        let r = echo(&proxy, &traceparent).await;
        let (_, seen_parent, _) = upstream_traceparent(&r);
        let spans = collector
            .wait_for_trace(&trace_id, DEADLINE, |s| logical(s).is_some())
            .await;
        let call = logical(&spans).unwrap();
        let tries = attempts(&spans);
        assert_eq!(
            call.attr("levee.attempts"),
            tries.len().to_string(),
            "{spans:#?}"
        );
        for attempt in &tries {
            assert_eq!(attempt.parent_span_id, call.span_id);
            assert_eq!(attempt.trace_id, trace_id);
        }
        let last = tries.last().unwrap();
        assert_eq!(
            seen_parent, last.span_id,
            "the upstream's parent is the last attempt"
        );
        assert_eq!(last.attr("levee.endpoint"), up.addr().to_string());
        assert_eq!(last.attr("http.response.status_code"), "200");
        if tries.len() == 1 {
            continue;
        }
        assert_eq!(tries.len(), 2, "{spans:#?}");
        let first = tries[0];
        assert_eq!(first.attr("levee.attempt"), "1");
        assert_eq!(first.attr("levee.endpoint"), dead.to_string());
        assert_eq!(first.attr("error.type"), "upstream-connect");
        assert_eq!(first.status_code, 2, "the failed attempt is an error");
        assert_eq!(last.attr("levee.attempt"), "2");
        assert_eq!(last.attr("http.request.resend_count"), "1");
        assert_eq!(call.attr("http.response.status_code"), "200");
        assert_eq!(spans.len(), 3, "one logical span, two attempts: {spans:#?}");
        return;
    }
    panic!("no call was retried in 20 tries");
}

#[tokio::test]
async fn the_peer_proxys_server_span_shares_the_trace() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("t-3").await.unwrap();
    let peer = Proxy::builder()
        .service("web")
        .app_port(up.addr().port())
        .traced(&collector)
        .env("OTEL_SERVICE_NAME", "web-sidecar")
        .start()
        .await;
    let client = traced_proxy(&collector, &[peer.inbound()], "client-sidecar").await;
    let (traceparent, trace_id, _) = app_traceparent(7);

    let r = echo(&client, &traceparent).await;
    let (seen_trace, seen_parent, _) = upstream_traceparent(&r);
    assert_eq!(seen_trace, trace_id);

    let spans = collector
        .wait_for_trace(&trace_id, DEADLINE, |s| {
            logical(s).is_some() && s.iter().any(|s| s.kind == SpanKind::Server)
        })
        .await;
    let call = logical(&spans).unwrap();
    let attempt = attempts(&spans)[0];
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(server.service_name, "web-sidecar");
    assert_eq!(call.service_name, "client-sidecar");
    assert_eq!(
        server.parent_span_id, attempt.span_id,
        "the peer continues the attempt"
    );
    assert_eq!(server.attr("http.request.method"), "GET");
    assert_eq!(server.attr("url.path"), "/echo");
    assert_eq!(server.attr("server.address"), "web");
    assert_eq!(server.attr("http.response.status_code"), "200");
    assert_eq!(server.attr("levee.service"), "web");
    assert_eq!(
        seen_parent, server.span_id,
        "the app's parent is the SERVER span"
    );
}

#[tokio::test]
async fn the_access_log_names_the_trace_the_proxy_started() {
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("t-4").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .traced(&collector)
        .arg("--access-log")
        .arg("json")
        .start()
        .await;
    // No trace context from the app: the proxy starts the trace.
    let req = Request::get("/echo")
        .header("host", "web:80")
        .body(empty())
        .unwrap();
    let r = send_http1(proxy.outbound(), req).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let (trace_id, _, sampled) = upstream_traceparent(&r);
    assert!(sampled, "the default sampler samples new traces at ratio 1");
    let spans = collector
        .wait_for_trace(&trace_id, DEADLINE, |s| logical(s).is_some())
        .await;
    assert_eq!(logical(&spans).unwrap().parent_span_id, "", "a root span");
    let line = levee_tests::harness::eventually(DEADLINE, "the access-log line", || {
        let output = proxy.process.output();
        async move {
            output
                .lines()
                .find(|l| l.contains("\"direction\":\"outbound\""))
                .map(str::to_owned)
                .ok_or(output)
        }
    })
    .await;
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["trace_id"], trace_id.as_str(), "{line}");
}

#[tokio::test]
async fn a_grpc_call_is_traced_over_http2() {
    use levee_tests::{
        harness::grpc_channel,
        pb::{EchoRequest, flaky_client::FlakyClient},
    };
    let collector = OtlpReceiver::start().await.unwrap();
    let up = FlakyUpstream::start("t-5").await.unwrap();
    let proxy = traced_proxy(&collector, &[up.addr()], "client-sidecar").await;
    let (traceparent, trace_id, app_span) = app_traceparent(9);
    let mut client = FlakyClient::new(grpc_channel(proxy.outbound(), "web:80").await.unwrap());
    let mut req = tonic::Request::new(EchoRequest {
        message: "traced".into(),
    });
    req.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let r = client.echo(req).await.unwrap();
    assert_eq!(r.into_inner().message, "traced");

    let spans = collector
        .wait_for_trace(&trace_id, DEADLINE, |s| logical(s).is_some())
        .await;
    let call = logical(&spans).unwrap();
    assert_eq!(call.parent_span_id, app_span);
    assert_eq!(call.name, "POST");
    assert_eq!(call.attr("network.protocol.version"), "2");
    assert_eq!(call.attr("url.path"), "/levee.testing.v1.Flaky/Echo");
    assert_eq!(call.attr("server.address"), "web");
    let tries = attempts(&spans);
    assert_eq!(tries.len(), 1, "{spans:#?}");
    assert_eq!(tries[0].parent_span_id, call.span_id);
}
