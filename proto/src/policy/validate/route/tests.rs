//! Tests of the route rules: names, matches, merged timeouts, route-level retry.

use crate::policy::validate::tests::{has, ok_outbound, outbound_errors};

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
fn retry_budget_is_service_level_only() {
    has(
        &outbound_errors("{routes: [{name: a, match: {path: /a}, retry: {budget: {percent: 5}}}]}"),
        "spec.outbound.routes[0].retry.budget",
        "per service",
    );
}
