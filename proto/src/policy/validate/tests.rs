//! One test (at least) per validation rule.

use crate::policy::{FieldError, parse_documents};

pub(crate) fn errors_of(src: &str) -> Vec<FieldError> {
    match parse_documents(src) {
        Ok(docs) => panic!("expected errors, parsed {docs:?}"),
        Err(e) => e.0,
    }
}

/// A policy for `payments` in `shop` with the given flow-style `spec`.
pub(crate) fn policy(spec: &str) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
         metadata: {{name: payments, namespace: shop}}\nspec: {spec}\n"
    )
}

/// Errors of a policy whose spec is `{target: {service: payments}, outbound: <outbound>}`.
pub(crate) fn outbound_errors(outbound: &str) -> Vec<FieldError> {
    errors_of(&policy(&format!(
        "{{target: {{service: payments}}, outbound: {outbound}}}"
    )))
}

pub(crate) fn ok(src: &str) {
    if let Err(e) = parse_documents(src) {
        panic!("expected valid, got:\n{e}\n---\n{src}");
    }
}

pub(crate) fn ok_outbound(outbound: &str) {
    ok(&policy(&format!(
        "{{target: {{service: payments}}, outbound: {outbound}}}"
    )));
}

#[track_caller]
pub(crate) fn has(errors: &[FieldError], path: &str, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(needle)),
        "no error at {path:?} containing {needle:?} in:\n{}",
        errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn unknown_fields_anywhere_are_rejected_with_their_path() {
    has(
        &outbound_errors("{retry: {maxRetrys: 1}}"),
        "spec.outbound.retry.maxRetrys",
        "unknown field",
    );
    has(
        &outbound_errors("{routes: [{name: a, match: {path: /a}, timeouts: {connect: 1s}}]}"),
        "spec.outbound.routes[0].timeouts.connect",
        "unknown field",
    );
    has(
        &errors_of(
            &policy("{target: {service: payments}}")
                .replace("namespace: shop", "namespace: shop, labels: {}"),
        ),
        "metadata.labels",
        "unknown field",
    );
    has(
        &errors_of(&(policy("{target: {service: payments}}") + "status: {}\n")),
        "status",
        "unknown field",
    );
    has(
        &outbound_errors("{routes: [{name: a, match: {prefix: /a}}]}"),
        "spec.outbound.routes[0].match.prefix",
        "unknown field",
    );
}

#[test]
fn api_version_and_kind_are_checked() {
    let base = policy("{target: {service: payments}}");
    has(
        &errors_of(&base.replace("levee.dev/v1alpha1", "levee.dev/v1")),
        "apiVersion",
        "not supported",
    );
    has(
        &errors_of(&base.replace("apiVersion: levee.dev/v1alpha1\n", "")),
        "apiVersion",
        "missing",
    );
    has(
        &errors_of(&base.replace("kind: ResiliencePolicy", "kind: RetryPolicy")),
        "kind",
        "is not ResiliencePolicy or ServiceEndpoints",
    );
    has(
        &errors_of(&base.replace("kind: ResiliencePolicy\n", "")),
        "kind",
        "missing",
    );
    has(&errors_of("- just a list\n"), "", "must be a mapping");
}

#[test]
fn names_and_target_are_required() {
    has(
        &errors_of(&policy("{target: {service: payments}}").replace("name: payments, ", "")),
        "metadata",
        "missing field `name`",
    );
    has(
        &errors_of(
            &policy("{target: {service: payments}}").replace("name: payments", "name: \"\""),
        ),
        "metadata.name",
        "missing",
    );
    has(
        &errors_of(
            &policy("{target: {service: payments}}").replace("name: payments", "name: Pay_ments"),
        ),
        "metadata.name",
        "not a valid name",
    );
    has(
        &errors_of(
            &policy("{target: {service: payments}}").replace("namespace: shop", "namespace: a.b"),
        ),
        "metadata.namespace",
        "not a valid namespace",
    );
    has(
        &errors_of(&policy("{outbound: {}}")),
        "spec",
        "missing field `target`",
    );
    has(
        &errors_of(&policy("{target: {port: 80}}")),
        "spec.target",
        "missing field `service`",
    );
    has(
        &errors_of(&policy("{target: {service: \"\"}}")),
        "spec.target.service",
        "missing",
    );
    has(
        &errors_of(&policy("{target: {service: payments.shop}}")),
        "spec.target.service",
        "not a service name",
    );
}

#[test]
fn bad_durations_are_named() {
    has(
        &outbound_errors("{timeouts: {request: \"25\"}}"),
        "spec.outbound.timeouts.request",
        "\"25\" is not a duration (e.g. 25ms)",
    );
    has(
        &outbound_errors("{timeouts: {request: 25}}"),
        "spec.outbound.timeouts.request",
        "\"25\" is not a duration",
    );
    has(
        &outbound_errors("{timeouts: {request: 5d}}"),
        "spec.outbound.timeouts.request",
        "not a duration",
    );
    has(
        &outbound_errors("{timeouts: {request: -1s}}"),
        "spec.outbound.timeouts.request",
        "negative",
    );
}

#[test]
fn per_try_longer_than_request_is_rejected() {
    has(
        &outbound_errors("{timeouts: {request: 1s, perTry: 2s}}"),
        "spec.outbound.timeouts.perTry",
        "longer than request",
    );
    ok_outbound("{timeouts: {request: 0s, perTry: 2s}}");
    ok_outbound("{timeouts: {request: 2s, perTry: 2s}}");
}

#[test]
fn backoff_base_longer_than_max_is_rejected() {
    has(
        &outbound_errors("{retry: {backoff: {base: 1s, max: 100ms}}}"),
        "spec.outbound.retry.backoff",
        "base 1s is longer than max 100ms",
    );
    has(
        &outbound_errors("{retry: {backoff: {max: 10ms}}}"),
        "spec.outbound.retry.backoff",
        "base 25ms (default) is longer than max 10ms",
    );
    ok_outbound("{retry: {backoff: {base: 500ms}}}"); // max defaults to 10 × base
    has(
        &outbound_errors("{retry: {backoff: {base: 0s}}}"),
        "spec.outbound.retry.backoff.base",
        "more than 0s",
    );
    has(
        &outbound_errors(
            "{retry: {backoff: {base: 100ms}}, routes: [{name: a, match: {path: /a}, retry: {backoff: {max: 50ms}}}]}",
        ),
        "spec.outbound.routes[0].retry.backoff",
        "after merging",
    );
}

#[test]
fn percentages_must_be_within_0_and_100() {
    has(
        &outbound_errors("{retry: {budget: {percent: 120}}}"),
        "spec.outbound.retry.budget.percent",
        "outside 0-100",
    );
    has(
        &outbound_errors("{retry: {budget: {percent: -1}}}"),
        "spec.outbound.retry.budget.percent",
        "outside 0-100",
    );
    has(
        &outbound_errors("{circuitBreaker: {failureRate: {percent: 101}}}"),
        "spec.outbound.circuitBreaker.failureRate.percent",
        "outside 0-100",
    );
    has(
        &outbound_errors("{circuitBreaker: {failureRate: {percent: 0}}}"),
        "spec.outbound.circuitBreaker.failureRate.percent",
        "more than 0",
    );
    has(
        &outbound_errors("{circuitBreaker: {slowCall: {duration: 1s, percent: 150}}}"),
        "spec.outbound.circuitBreaker.slowCall.percent",
        "outside 0-100",
    );
    has(
        &outbound_errors("{circuitBreaker: {maxEjectedPercent: 100.5}}"),
        "spec.outbound.circuitBreaker.maxEjectedPercent",
        "outside 0-100",
    );
    ok_outbound("{retry: {budget: {percent: 0}}, circuitBreaker: {maxEjectedPercent: 0}}");
}

#[test]
fn zero_is_rejected_where_meaningless() {
    has(
        &outbound_errors("{rateLimit: {requestsPerSecond: 0}}"),
        "spec.outbound.rateLimit.requestsPerSecond",
        "at least 1",
    );
    has(
        &outbound_errors("{rateLimit: {requestsPerSecond: 5, burst: 0}}"),
        "spec.outbound.rateLimit.burst",
        "at least 1",
    );
    has(
        &outbound_errors("{concurrency: {maxInFlight: 0}}"),
        "spec.outbound.concurrency.maxInFlight",
        "at least 1",
    );
    has(
        &outbound_errors("{circuitBreaker: {consecutiveFailures: 0}}"),
        "spec.outbound.circuitBreaker.consecutiveFailures",
        "at least 1",
    );
    has(
        &outbound_errors("{circuitBreaker: {halfOpenProbes: 0}}"),
        "spec.outbound.circuitBreaker.halfOpenProbes",
        "at least 1",
    );
    has(
        &outbound_errors("{circuitBreaker: {failureRate: {minRequests: 0}}}"),
        "spec.outbound.circuitBreaker.failureRate.minRequests",
        "at least 1",
    );
    has(
        &outbound_errors("{circuitBreaker: {failureRate: {window: 0s}}}"),
        "spec.outbound.circuitBreaker.failureRate.window",
        "more than 0s",
    );
    has(
        &outbound_errors("{circuitBreaker: {slowCall: {duration: 0s}}}"),
        "spec.outbound.circuitBreaker.slowCall.duration",
        "more than 0s",
    );
    has(
        &outbound_errors("{timeouts: {connect: 0s}}"),
        "spec.outbound.timeouts.connect",
        "more than 0s",
    );
    has(
        &outbound_errors("{timeouts: {idle: 0s}}"),
        "spec.outbound.timeouts.idle",
        "more than 0s",
    );
    has(
        &outbound_errors("{retry: {budget: {window: 0s}}}"),
        "spec.outbound.retry.budget.window",
        "more than 0s",
    );
    has(
        &outbound_errors("{retry: {budget: {percent: 0, minPerSecond: 0}}}"),
        "spec.outbound.retry.budget",
        "allow no retry",
    );
    has(
        &outbound_errors("{concurrency: {maxInFlight: -3}}"),
        "spec.outbound.concurrency.maxInFlight",
        "expected u32",
    );
    has(
        &errors_of(&policy(
            "{target: {service: payments}, inbound: {rateLimit: {requestsPerSecond: 0}, concurrency: {maxInFlight: 0}}}",
        )),
        "spec.inbound.concurrency.maxInFlight",
        "at least 1",
    );
}

#[test]
fn breaker_shapes() {
    has(
        &outbound_errors("{circuitBreaker: {failureOn: []}}"),
        "spec.outbound.circuitBreaker.failureOn",
        "empty",
    );
    has(
        &outbound_errors("{circuitBreaker: {open: {base: 2m, max: 1m}}}"),
        "spec.outbound.circuitBreaker.open",
        "base 2m is longer than max 1m",
    );
    has(
        &outbound_errors("{circuitBreaker: {slowCall: {percent: 50}}}"),
        "spec.outbound.circuitBreaker.slowCall",
        "missing field `duration`",
    );
}

#[test]
fn retry_conditions_and_grpc_codes() {
    has(
        &outbound_errors("{retry: {on: [connect-failure, retry-everything]}}"),
        "spec.outbound.retry.on[1]",
        "not a failure condition",
    );
    has(
        &outbound_errors("{retry: {on: [\"200\"]}}"),
        "spec.outbound.retry.on[0]",
        "not a 4xx or 5xx",
    );
    has(
        &outbound_errors("{retry: {on: [5031]}}"),
        "spec.outbound.retry.on[0]",
        "not a failure condition",
    );
    has(
        &outbound_errors("{retry: {on: [reset, reset]}}"),
        "spec.outbound.retry.on[1]",
        "listed twice",
    );
    has(
        &outbound_errors("{retry: {grpcOn: [unavaliable]}}"),
        "spec.outbound.retry.grpcOn[0]",
        "not a gRPC status code name",
    );
    has(
        &outbound_errors("{retry: {grpcOn: [unavailable, ok]}}"),
        "spec.outbound.retry.grpcOn[1]",
        "ok is a success",
    );
    has(
        &outbound_errors("{retry: {grpcOn: [unavailable, UNAVAILABLE]}}"),
        "spec.outbound.retry.grpcOn[1]",
        "listed twice",
    );
    ok_outbound(
        "{retry: {on: [503, \"429\", 5xx, gateway-error, timeout], grpcOn: [unavailable, resource-exhausted]}}",
    );
}

#[test]
fn per_client_is_inbound_only() {
    has(
        &outbound_errors("{rateLimit: {requestsPerSecond: 5, perClient: true}}"),
        "spec.outbound.rateLimit.perClient",
        "inbound",
    );
    ok(&policy(
        "{target: {service: payments}, inbound: {rateLimit: {requestsPerSecond: 5, perClient: true}}}",
    ));
}

fn endpoints(spec_extra: &str) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\nmetadata: {{name: payments}}\n\
         spec: {{service: payments, port: 8080, addresses: [\"10.0.0.7:8080\"]{spec_extra}}}\n"
    )
}

#[test]
fn virtual_ips_and_app_protocol_are_checked_with_their_paths() {
    ok(&endpoints(
        ", virtualIPs: [10.96.0.10, \"fd00:96::10\"], appProtocol: kubernetes.io/h2c",
    ));
    has(
        &errors_of(&endpoints(", virtualIPs: [\"10.96.0.10:80\"]")),
        "spec.virtualIPs[0]",
        "invalid IP address syntax",
    );
    has(
        &errors_of(&endpoints(", virtualIPs: [0.0.0.0, 224.0.0.1]")),
        "spec.virtualIPs[1]",
        "an unspecified or multicast address",
    );
    has(
        &errors_of(&endpoints(", virtualIPs: [10.96.0.10, 10.96.0.10]")),
        "spec.virtualIPs[1]",
        "is listed twice",
    );
    let many: Vec<String> = (1..=17).map(|i| format!("10.96.0.{i}")).collect();
    has(
        &errors_of(&endpoints(&format!(", virtualIPs: [{}]", many.join(", ")))),
        "spec.virtualIPs",
        "17 virtual IPs; at most 16",
    );
    has(
        &errors_of(&endpoints(", appProtocol: h2")),
        "spec.appProtocol",
        "\"h2\" is not an appProtocol Levee knows",
    );
    // The Kubernetes spelling, not the Rust field name.
    has(
        &errors_of(&endpoints(", virtualIps: [10.96.0.10]")),
        "spec.virtualIps",
        "unknown field `virtualIps`",
    );
}
