//! The span model in-process: parents, propagation, attributes, events.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SpanData, SpanExporter};

use super::*;
use crate::errors::{ConnectCause, ErrorKind, ProxyError};
use crate::metrics::Metrics;
use crate::resilience::call::CallAttempts;
use crate::snapshot::Snapshot;

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Store(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Store {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch);
        Ok(())
    }
}

fn tracing(sampler: Sampler) -> (Tracing, Store, Metrics) {
    let store = Store::default();
    let metrics = Metrics::new();
    let resource = Resource::builder_empty().with_service_name("test").build();
    let shared = Arc::new(Shared::new("default".into(), metrics.clone()));
    shared.snapshot.store(Arc::new(Snapshot {
        version: 3,
        ..Snapshot::default()
    }));
    let export = ExportSettings {
        queue_size: 64,
        timeout: Duration::from_secs(1),
    };
    let tracing = Tracing::with_exporter(store.clone(), resource, sampler, export, &shared);
    (tracing, store, metrics)
}

/// Everything exported once the queue is drained.
async fn spans(tracing: &Tracing, store: &Store) -> Vec<SpanData> {
    tracing.shutdown(Duration::from_secs(5)).await;
    store
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn attr(span: &SpanData, key: &'static str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from_static_str(key))
        .map(|kv| kv.value.clone())
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn request(traceparent: Option<&'static str>) -> Request<()> {
    let mut builder = Request::get("http://payments:8080/charge?x=1");
    if let Some(tp) = traceparent {
        builder = builder.header("traceparent", tp);
    }
    builder.body(()).expect("request")
}

fn traceparent_span_id(req: &Request<()>) -> SpanId {
    let tp = req.headers()["traceparent"].to_str().expect("ascii");
    let cx = propagation::extract(req.headers()).unwrap_or_else(|| panic!("bad {tp}"));
    cx.span_id()
}

#[tokio::test]
async fn a_retried_call_has_one_logical_span_with_two_attempts() {
    let (tracing, store, _) = tracing(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    let mut req = request(Some(PARENT));
    let call = Tracing::outbound(Some(&tracing), &mut req, "payments.default:8080");
    let trace_id = call.trace_id().expect("sampled");
    assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");

    // The retry layer copies the extensions into each attempt.
    let (mut first, mut second) = (request(None), request(None));
    *first.extensions_mut() = req.extensions().clone();
    *second.extensions_mut() = req.extensions().clone();
    // The balancer records each attempt before it is sent.
    CallAttempts::record_in(&first, "127.0.0.1:1".parse().expect("addr"));
    let a1 = AttemptSpan::start(&mut first, "127.0.0.1:1".parse().expect("addr")).expect("traced");
    event(req.extensions(), SpanEvent::Timeout("per-try"));
    a1.error(&ProxyError::new(
        ErrorKind::UpstreamConnect(ConnectCause::Refused),
        "payments",
        "refused",
    ));
    CallAttempts::record_in(&second, "127.0.0.1:2".parse().expect("addr"));
    let a2 = AttemptSpan::start(&mut second, "127.0.0.1:2".parse().expect("addr")).expect("traced");
    a2.response(&Response::new(()));
    call.response(&Response::new(()));

    let spans = spans(&tracing, &store).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let logical = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .expect("client span");
    assert_eq!(
        format!("{:016x}", logical.parent_span_id),
        "00f067aa0ba902b7"
    );
    assert_eq!(logical.name, "GET");
    assert_eq!(attr(logical, "url.path"), Some("/charge".into()));
    assert_eq!(attr(logical, "server.address"), Some("payments".into()));
    assert_eq!(attr(logical, "server.port"), Some(8080.into()));
    assert_eq!(attr(logical, "http.response.status_code"), Some(200.into()));
    assert_eq!(attr(logical, "levee.policy_version"), Some(3.into()));
    assert_eq!(attr(logical, "levee.attempts"), Some(2.into()));
    let timeout = logical
        .events
        .iter()
        .find(|e| e.name == "timeout")
        .expect("timeout event");
    assert!(
        timeout
            .attributes
            .iter()
            .any(|kv| kv.value == Value::from("per-try"))
    );

    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "attempt").collect();
    assert_eq!(attempts.len(), 2);
    for (n, (attempt, sent)) in attempts.iter().zip([&first, &second]).enumerate() {
        assert_eq!(attempt.parent_span_id, logical.span_context.span_id());
        assert_eq!(
            attempt.span_context.trace_id(),
            logical.span_context.trace_id()
        );
        assert_eq!(attr(attempt, "levee.attempt"), Some((n as i64 + 1).into()));
        assert_eq!(
            traceparent_span_id(sent),
            attempt.span_context.span_id(),
            "attempt {n}"
        );
    }
    assert_eq!(
        attr(attempts[0], "error.type"),
        Some("upstream-connect".into())
    );
    assert_eq!(
        attr(attempts[0], "levee.error.cause"),
        Some("connect-refused".into())
    );
    assert_eq!(
        attr(attempts[0], "levee.endpoint"),
        Some("127.0.0.1:1".into())
    );
    assert!(matches!(attempts[0].status, Status::Error { .. }));
    assert_eq!(
        attr(attempts[1], "http.response.status_code"),
        Some(200.into())
    );
}

#[tokio::test]
async fn an_unsampled_parent_passes_untouched_and_exports_nothing() {
    let (tracing, store, metrics) = tracing(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let mut req = request(Some(unsampled));
    let call = Tracing::outbound(Some(&tracing), &mut req, "payments.default:8080");
    assert!(call.trace_id().is_none());
    assert!(req.extensions().get::<CallSpan>().is_none());
    assert!(AttemptSpan::start(&mut req, "127.0.0.1:1".parse().expect("addr")).is_none());
    event(req.extensions(), SpanEvent::CircuitOpen);
    call.response(&Response::new(()));
    assert_eq!(req.headers()["traceparent"], unsampled);
    assert!(spans(&tracing, &store).await.is_empty());
    assert_eq!(metrics.trace_spans_dropped().get(), 0);
}

#[tokio::test]
async fn a_new_unsampled_trace_tells_downstream_not_to_sample() {
    let (tracing, store, _) = tracing(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
    let mut req = request(None);
    Tracing::outbound(Some(&tracing), &mut req, "payments.default:8080")
        .response(&Response::new(()));
    let cx = propagation::extract(req.headers()).expect("a traceparent was added");
    assert!(!cx.is_sampled());
    assert!(spans(&tracing, &store).await.is_empty());
}

#[tokio::test]
async fn server_span_continues_the_callers_trace_and_b3_is_accepted() {
    let (tracing, store, _) = tracing(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
    let mut req = Request::get("/x")
        .header("host", "web:80")
        .header("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736")
        .header("x-b3-spanid", "00f067aa0ba902b7")
        .header("x-b3-sampled", "1")
        .body(())
        .expect("request");
    let server = Tracing::inbound(Some(&tracing), &mut req, "web");
    let sent = traceparent_span_id(&req);
    server.error(&ProxyError::new(ErrorKind::Timeout, "web", "2s"));
    let spans = spans(&tracing, &store).await;
    assert_eq!(
        spans.len(),
        1,
        "sampled by the caller's decision: {spans:#?}"
    );
    let span = &spans[0];
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(
        format!("{:032x}", span.span_context.trace_id()),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(format!("{:016x}", span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        sent,
        span.span_context.span_id(),
        "the app's parent is the SERVER span"
    );
    assert_eq!(attr(span, "error.type"), Some("timeout".into()));
    assert_eq!(attr(span, "http.response.status_code"), Some(504.into()));
}

#[tokio::test]
async fn an_attempt_dropped_unfinished_ends_as_cancelled() {
    let (tracing, store, _) = tracing(Sampler::AlwaysOn);
    let mut req = request(None);
    let call = Tracing::outbound(Some(&tracing), &mut req, "payments.default:8080");
    drop(AttemptSpan::start(
        &mut req,
        "127.0.0.1:1".parse().expect("addr"),
    ));
    call.error(&ProxyError::new(ErrorKind::Timeout, "payments", "1s"));
    let spans = spans(&tracing, &store).await;
    let attempt = spans
        .iter()
        .find(|s| s.name == "attempt")
        .expect("attempt span");
    assert_eq!(attr(attempt, "error.type"), Some("cancelled".into()));
}

#[test]
fn samplers_follow_the_otel_names() {
    assert!(sampler(TraceSampler::TraceIdRatio, Some(1.5)).is_err());
    assert!(matches!(
        sampler(TraceSampler::ParentBasedTraceIdRatio, None),
        Ok(Sampler::ParentBased(_))
    ));
    let config = ProxyConfig::from_args([
        "--trace-sampler",
        "always_off",
        "--trace-sampler-arg",
        "0.5",
    ])
    .expect("parse");
    assert_eq!(config.trace_sampler, TraceSampler::AlwaysOff);
    assert_eq!(config.trace_sampler_arg, Some(0.5));
}

#[tokio::test]
async fn no_endpoint_means_no_tracing() {
    let config = ProxyConfig::from_args(Vec::<String>::new()).expect("parse");
    if config.otlp_endpoint.is_some() {
        return; // OTEL_EXPORTER_OTLP_ENDPOINT set in the test environment
    }
    let shared = Arc::new(Shared::new("default".into(), Metrics::new()));
    assert!(
        Tracing::from_config(&config, &shared)
            .expect("ok")
            .is_none()
    );
    let bad = ProxyConfig::from_args(["--otlp-endpoint", "not a url"]).expect("parse");
    assert!(Tracing::from_config(&bad, &shared).is_err());
}

#[tokio::test]
async fn a_call_dropped_unfinished_ends_as_cancelled() {
    let (tracing, store, _) = tracing(Sampler::AlwaysOn);
    let mut req = request(None);
    drop(Tracing::outbound(
        Some(&tracing),
        &mut req,
        "payments.default:8080",
    ));
    let mut inbound = request(None);
    drop(Tracing::inbound(Some(&tracing), &mut inbound, "web"));
    let spans = spans(&tracing, &store).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for span in &spans {
        assert_eq!(
            attr(span, "error.type"),
            Some("cancelled".into()),
            "{span:#?}"
        );
    }
}

#[test]
fn the_service_name_is_the_flag_else_levee_proxy() {
    let name = |r: &Resource| r.get(&Key::from_static_str("service.name"));
    let config =
        ProxyConfig::from_args(["--trace-service-name", "pay-sidecar", "--service", "pay"])
            .expect("parse");
    let r = resource(&config);
    assert_eq!(name(&r), Some("pay-sidecar".into()));
    assert_eq!(
        r.get(&Key::from_static_str("levee.service")),
        Some("pay".into())
    );
    let unnamed = ProxyConfig::from_args(Vec::<String>::new()).expect("parse");
    let from_env = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_some();
    if !from_env {
        assert_eq!(name(&resource(&unnamed)), Some("levee-proxy".into()));
    }
}

#[tokio::test]
async fn a_trailers_only_grpc_error_fails_the_span() {
    let (tracing, store, _) = tracing(Sampler::AlwaysOn);
    let mut req = request(None);
    let call = Tracing::outbound(Some(&tracing), &mut req, "payments.default:8080");
    let response = Response::builder()
        .header("grpc-status", "14")
        .body(())
        .expect("response");
    call.response(&response);
    let spans = spans(&tracing, &store).await;
    assert_eq!(attr(&spans[0], "rpc.grpc.status_code"), Some(14.into()));
    assert_eq!(attr(&spans[0], "error.type"), Some("14".into()));
    assert_eq!(attr(&spans[0], "levee.outcome"), Some("failure".into()));
}

/// `levee.outcome` is the one rule for both span kinds; the span status is
/// OpenTelemetry's: any non-OK code fails a CLIENT span, only failures a
/// SERVER span.
#[tokio::test]
async fn grpc_outcome_is_the_one_rule_and_span_status_follows_the_span_kind() {
    let (tracing, store, _) = tracing(Sampler::AlwaysOn);
    let answer = |code: &'static str| {
        Response::builder()
            .header("grpc-status", code)
            .body(())
            .expect("response")
    };
    for code in ["5", "12"] {
        let mut req = request(None);
        Tracing::outbound(Some(&tracing), &mut req, "payments.default:8080")
            .response(&answer(code));
        let mut req = request(None);
        Tracing::inbound(Some(&tracing), &mut req, "web").response(&answer(code));
    }
    let spans = spans(&tracing, &store).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    for span in &spans {
        let Some(Value::I64(code)) = attr(span, "rpc.grpc.status_code") else {
            panic!("no grpc status: {span:#?}");
        };
        let failure = code == 12; // UNIMPLEMENTED; NOT_FOUND is an answer
        let outcome = if failure { "failure" } else { "success" };
        assert_eq!(attr(span, "levee.outcome"), Some(outcome.into()), "{code}");
        let error_status = matches!(span.status, Status::Error { .. });
        let want_error = failure || span.span_kind == SpanKind::Client;
        assert_eq!(error_status, want_error, "{code} {:?}", span.span_kind);
    }
}

#[tokio::test]
async fn a_response_over_mtls_names_the_server_identity() {
    let (tracing, store, _) = tracing(Sampler::AlwaysOn);
    let mut req = request(None);
    let call = Tracing::outbound(Some(&tracing), &mut req, "payments.default:8080");
    let mut attempt = request(None);
    *attempt.extensions_mut() = req.extensions().clone();
    let span = AttemptSpan::start(&mut attempt, "127.0.0.1:1".parse().expect("addr"));
    let id = levee_proto::policy::SpiffeId::parse("spiffe://td/ns/shop/sa/payments").expect("id");
    let mut response = Response::new(());
    response
        .extensions_mut()
        .insert(crate::tls::ServerIdentity(id));
    span.expect("traced").response(&response);
    call.response(&response);
    // A plaintext answer names no one.
    let mut plain = request(None);
    Tracing::outbound(Some(&tracing), &mut plain, "orders.default:80").response(&Response::new(()));

    let spans = spans(&tracing, &store).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    for span in &spans {
        let expected = (span.name == "attempt"
            || attr(span, "levee.service") == Some("payments.default:8080".into()))
        .then(|| Value::from("spiffe://td/ns/shop/sa/payments"));
        assert_eq!(
            attr(span, "levee.server.identity"),
            expected,
            "{}",
            span.name
        );
    }
}
