//! One test (at least) per validation rule.

use crate::policy::{FieldError, parse_documents};

fn errors_of(src: &str) -> Vec<FieldError> {
    match parse_documents(src) {
        Ok(docs) => panic!("expected errors, parsed {docs:?}"),
        Err(e) => e.0,
    }
}

/// A policy for `payments` in `shop` with the given flow-style `spec`.
fn policy(spec: &str) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\n\
         metadata: {{name: payments, namespace: shop}}\nspec: {spec}\n"
    )
}

/// Errors of a policy whose spec is `{target: {service: payments}, outbound: <outbound>}`.
fn outbound_errors(outbound: &str) -> Vec<FieldError> {
    errors_of(&policy(&format!(
        "{{target: {{service: payments}}, outbound: {outbound}}}"
    )))
}

fn ok(src: &str) {
    if let Err(e) = parse_documents(src) {
        panic!("expected valid, got:\n{e}\n---\n{src}");
    }
}

fn ok_outbound(outbound: &str) {
    ok(&policy(&format!(
        "{{target: {{service: payments}}, outbound: {outbound}}}"
    )));
}

#[track_caller]
fn has(errors: &[FieldError], path: &str, needle: &str) {
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
fn per_try_longer_than_request_after_merging_a_route() {
    // The route shortens request below the service perTry.
    has(
        &outbound_errors(
            "{timeouts: {request: 2s, perTry: 500ms}, routes: [{name: a, match: {path: /a}, timeouts: {request: 100ms}}]}",
        ),
        "spec.outbound.routes[0].timeouts.request",
        "shorter than perTry 500ms",
    );
    // The route lengthens perTry beyond the service request.
    has(
        &outbound_errors(
            "{timeouts: {request: 2s}, routes: [{name: a, match: {path: /a}, timeouts: {perTry: 3s}}]}",
        ),
        "spec.outbound.routes[0].timeouts.perTry",
        "longer than request 2s (spec.outbound.timeouts.request)",
    );
    // Turning request off on the route is fine.
    ok_outbound(
        "{timeouts: {request: 2s, perTry: 1s}, routes: [{name: a, match: {path: /a}, timeouts: {request: 0s, perTry: 5s}}]}",
    );
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
fn route_matches_must_say_something_sensible() {
    let route = |m: &str| outbound_errors(&format!("{{routes: [{{name: a, match: {m}}}]}}"));
    has(&route("{}"), "spec.outbound.routes[0].match", "empty match");
    has(
        &route("{path: /a, pathPrefix: /a}"),
        "spec.outbound.routes[0].match",
        "not both",
    );
    has(
        &route("{pathPrefix: payments}"),
        "spec.outbound.routes[0].match.pathPrefix",
        "must start with '/'",
    );
    has(
        &route("{path: \"/a?b=c\"}"),
        "spec.outbound.routes[0].match.path",
        "no query",
    );
    has(
        &route("{pathPrefix: /a, grpc: {service: a.B}}"),
        "spec.outbound.routes[0].match.grpc",
        "cannot be combined",
    );
    has(
        &route("{grpc: {}}"),
        "spec.outbound.routes[0].match.grpc",
        "set service and/or method",
    );
    has(
        &route("{grpc: {service: shop/Payments}}"),
        "spec.outbound.routes[0].match.grpc.service",
        "not a fully-qualified",
    );
    has(
        &route("{grpc: {method: Charge/X}}"),
        "spec.outbound.routes[0].match.grpc.method",
        "not a gRPC method",
    );
    has(
        &route("{headers: [{name: \"bad header\"}]}"),
        "spec.outbound.routes[0].match.headers[0].name",
        "not a header name",
    );
    has(
        &route("{headers: [{name: x-a, value: \"a\\nb\"}]}"),
        "spec.outbound.routes[0].match.headers[0].value",
        "not a header value",
    );
}

#[test]
fn methods_must_be_http_methods() {
    let route = |m: &str| {
        outbound_errors(&format!(
            "{{routes: [{{name: a, match: {{methods: {m}}}}}]}}"
        ))
    };
    has(
        &route("[get]"),
        "spec.outbound.routes[0].match.methods[0]",
        "upper case: GET",
    );
    has(
        &route("[GET, \"PO ST\"]"),
        "spec.outbound.routes[0].match.methods[1]",
        "not an HTTP method",
    );
    has(
        &route("[GET, GET]"),
        "spec.outbound.routes[0].match.methods[1]",
        "listed twice",
    );
}

#[test]
fn route_names_are_unique_labels() {
    let errs = outbound_errors(
        "{routes: [{name: a, match: {path: /a}}, {name: b, match: {path: /b}}, {name: a, match: {path: /c}}]}",
    );
    has(
        &errs,
        "spec.outbound.routes[2].name",
        "duplicate route name \"a\" (also routes[0])",
    );
    has(
        &outbound_errors("{routes: [{name: default, match: {path: /a}}]}"),
        "spec.outbound.routes[0].name",
        "reserved",
    );
    has(
        &outbound_errors("{routes: [{name: Create_Payment, match: {path: /a}}]}"),
        "spec.outbound.routes[0].name",
        "not a route name",
    );
    has(
        &outbound_errors("{routes: [{match: {path: /a}}]}"),
        "spec.outbound.routes[0]",
        "missing field `name`",
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
        &outbound_errors("{retry: {grpcOn: [unavailable, UNAVAILABLE]}}"),
        "spec.outbound.retry.grpcOn[1]",
        "listed twice",
    );
    ok_outbound(
        "{retry: {on: [503, \"429\", 5xx, gateway-error, timeout], grpcOn: [unavailable, resource-exhausted]}}",
    );
}

#[test]
fn retry_budget_is_service_level_only() {
    has(
        &outbound_errors("{routes: [{name: a, match: {path: /a}, retry: {budget: {percent: 5}}}]}"),
        "spec.outbound.routes[0].retry.budget",
        "per service",
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

fn endpoints(spec: &str) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\nmetadata: {{name: payments}}\nspec: {spec}\n"
    )
}

#[test]
fn ports_must_be_in_range() {
    has(
        &errors_of(&policy("{target: {service: payments, port: 0}}")),
        "spec.target.port",
        "outside 1-65535",
    );
    has(
        &errors_of(&policy("{target: {service: payments, port: 70000}}")),
        "spec.target.port",
        "invalid value",
    );
    has(
        &errors_of(&endpoints("{service: payments, port: 0}")),
        "spec.port",
        "outside 1-65535",
    );
}

#[test]
fn endpoint_addresses_must_be_dialable_socket_addresses() {
    has(
        &errors_of(&endpoints(
            "{service: payments, port: 80, addresses: [\"localhost:80\"]}",
        )),
        "spec.addresses[0]",
        "invalid socket address",
    );
    has(
        &errors_of(&endpoints(
            "{service: payments, port: 80, addresses: [\"127.0.0.1\"]}",
        )),
        "spec.addresses[0]",
        "invalid socket address",
    );
    let errs = errors_of(&endpoints(
        "{service: payments, port: 80, addresses: [\"127.0.0.1:0\", \"0.0.0.0:80\", \"[::1]:81\", \"[::1]:81\"]}",
    ));
    has(&errs, "spec.addresses[0]", "port 0");
    has(&errs, "spec.addresses[1]", "unspecified");
    has(&errs, "spec.addresses[3]", "listed twice");
    has(
        &errors_of(&endpoints("{service: Payments, port: 80}")),
        "spec.service",
        "not a service name",
    );
    ok(&endpoints(
        "{service: payments, port: 80, addresses: [\"127.0.0.1:9001\", \"[::1]:9002\"]}",
    ));
}

#[test]
fn all_problems_are_collected_with_one_based_document_numbers() {
    let src = [
        policy("{target: {service: payments}, outbound: {rateLimit: {requestsPerSecond: 0}, concurrency: {maxInFlight: 0}, timeouts: {request: 1s, perTry: 2s}}}"),
        endpoints("{service: payments, port: 80}"),
        endpoints("{service: payments, port: 0}").replace("name: payments", "name: other"),
    ]
    .join("---\n");
    let errs = errors_of(&src);
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(errs[..3].iter().all(|e| e.document == 1));
    assert_eq!(errs[3].document, 3);
    assert_eq!(errs[3].object.as_deref(), Some("ServiceEndpoints other"));
    assert_eq!(
        errs[0].object.as_deref(),
        Some("ResiliencePolicy shop/payments")
    );
}

#[test]
fn duplicates_across_documents_are_rejected() {
    let p = policy("{target: {service: payments, port: 80}}");
    let errs = errors_of(&format!("{p}---\n{p}"));
    has(
        &errs,
        "metadata.name",
        "document 1 has the same kind, namespace and name",
    );
    has(
        &errs,
        "spec.target",
        "document 1 already is the ResiliencePolicy of this service port 80",
    );
    assert!(errs.iter().all(|e| e.document == 2));
    let other = p.replace("name: payments,", "name: payments-2,");
    has(
        &errors_of(&format!("{p}---\n{other}")),
        "spec.target",
        "already",
    );
    // Same service, different ports: fine.
    ok(&format!(
        "{p}---\n{}",
        other.replace("port: 80", "port: 81")
    ));
    let e = endpoints("{service: payments, port: 80}");
    has(
        &errors_of(&format!(
            "{e}---\n{}",
            e.replace("name: payments", "name: b")
        )),
        "spec",
        "already is the ServiceEndpoints",
    );
}
