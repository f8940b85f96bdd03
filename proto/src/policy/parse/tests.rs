//! Tests of reading and printing whole files.

use super::*;
use crate::policy::{Document, Duration, FailureCondition, GrpcStatus};

/// The example of DESIGN.md §3.
pub(crate) const DESIGN_EXAMPLE: &str = r#"
apiVersion: levee.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: payments, namespace: shop}
spec:
  target: {service: payments, port: 8080}
  outbound:
    timeouts: {request: 2s, perTry: 500ms, connect: 1s, idle: 60s}
    retry:
      maxRetries: 2
      on: [connect-failure, refused-stream, reset, gateway-error, "503"]
      grpcOn: [unavailable]
      backoff: {base: 25ms, max: 250ms}          # full jitter
      budget: {percent: 20, minPerSecond: 10, window: 10s}
      retryNonIdempotent: false                  # POST/PATCH retried only with Idempotency-Key
      maxReplayBytes: 65536
      honorRetryAfter: true
    circuitBreaker:                              # per endpoint (ejection) and per service
      failureOn: [5xx, connect-failure, timeout, reset]
      consecutiveFailures: 5
      failureRate: {percent: 50, minRequests: 20, window: 10s}
      slowCall: {duration: 1s, percent: 80}
      open: {base: 5s, max: 60s}                 # grows on each consecutive trip
      halfOpenProbes: 3
      maxEjectedPercent: 50
    rateLimit: {requestsPerSecond: 200, burst: 50}
    concurrency: {maxInFlight: 256, maxQueued: 64}
    routes:                                      # overrides, merged field by field
      - name: create-payment
        match: {pathPrefix: /payments, methods: [POST]}      # or grpc: {service, method}
        timeouts: {request: 5s}
        retry: {maxRetries: 0}
  inbound:
    rateLimit: {requestsPerSecond: 100, burst: 20, perClient: true}
    concurrency: {maxInFlight: 512}
    timeouts: {request: 10s}
---
apiVersion: levee.dev/v1alpha1
kind: ServiceEndpoints
metadata: {name: payments, namespace: shop}
spec: {service: payments, port: 8080, addresses: ["127.0.0.1:9001", "127.0.0.1:9002"]}
"#;

fn policy(doc: &Document) -> &crate::policy::ResiliencePolicy {
    match doc {
        Document::Policy(p) => p,
        Document::Endpoints(_) => panic!("expected a policy"),
    }
}

#[test]
fn parses_the_design_example() {
    let docs = parse_documents(DESIGN_EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docs.len(), 2);
    let p = policy(&docs[0]);
    assert_eq!(p.metadata.qualified_name(), "shop/payments");
    assert_eq!(p.spec.target.port, Some(8080));
    let o = &p.spec.outbound;
    assert_eq!(o.timeouts.per_try, Some(Duration::from_millis(500)));
    let retry = o.retry.as_ref().expect("retry");
    assert_eq!(
        retry.on.as_deref().map(|on| on[4]),
        Some(FailureCondition::Status(503))
    );
    assert_eq!(retry.grpc_on, Some(vec![GrpcStatus::Unavailable]));
    assert_eq!(o.routes[0].name, "create-payment");
    assert_eq!(
        p.spec
            .inbound
            .rate_limit
            .as_ref()
            .and_then(|r| r.per_client),
        Some(true)
    );
    let Document::Endpoints(e) = &docs[1] else {
        panic!("expected endpoints")
    };
    assert_eq!(e.spec.addresses.len(), 2);
    assert_eq!(e.service_key("default").to_string(), "payments.shop:8080");
}

#[test]
fn prints_and_reads_back_the_same_documents() {
    let docs = parse_documents(DESIGN_EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let printed = to_yaml(&docs);
    let again = parse_documents(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(again, docs);
    assert!(printed.contains("perTry: 500ms"), "{printed}");
    assert!(
        printed.contains("- '503'") || printed.contains("- \"503\""),
        "{printed}"
    );
}

#[test]
fn json_is_readable() {
    let docs = parse_documents(DESIGN_EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_value(&docs[0]).expect("json");
    assert_eq!(json["apiVersion"], "levee.dev/v1alpha1");
    assert_eq!(json["kind"], "ResiliencePolicy");
    assert_eq!(json["spec"]["outbound"]["timeouts"]["perTry"], "500ms");
    let back: Document = serde_json::from_value(json).expect("from json");
    assert_eq!(back, docs[0]);
}

#[test]
fn skips_empty_documents_but_counts_them() {
    let src = "---\n# nothing\n---\napiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\n\
               metadata: {name: a}\nspec: {service: a, port: 0}\n";
    let err = parse_documents(src).expect_err("port 0");
    assert_eq!(err.0[0].document, 2, "{err}");
    assert_eq!(parse_documents("").map(|d| d.len()), Ok(0));
}

#[test]
fn reports_the_example_error_from_design() {
    let src = DESIGN_EXAMPLE.replace("base: 25ms, max: 250ms", "base: \"25\", max: 250ms");
    let err = parse_documents(&src).expect_err("bad duration");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "document 1 (ResiliencePolicy shop/payments): spec.outbound.retry.backoff.base: \
             \"25\" is not a duration (e.g. 25ms)"
        ),
        "{text}"
    );
}

#[test]
fn a_yaml_syntax_error_is_reported_and_earlier_documents_still_checked() {
    let src = "apiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\nmetadata: {name: a}\n\
               spec: {service: a, port: 0}\n---\nkind: [unclosed\n";
    let err = parse_documents(src).expect_err("syntax error");
    let found: Vec<(usize, &str)> = err.iter().map(|e| (e.document, e.path.as_str())).collect();
    assert_eq!(found, [(1, "spec.port"), (2, "")], "{err}");
    assert!(err.0[1].message.starts_with("not valid YAML"), "{err}");
}
