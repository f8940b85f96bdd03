//! Tests of ServiceEndpoints rules, ports, and problems across documents.

use crate::policy::validate::tests::{errors_of, has, ok, policy};

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
        "document 1 (ResiliencePolicy shop/payments) already is the ResiliencePolicy of payments.shop:80",
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
        "already is the ServiceEndpoints of payments:80",
    );
}

#[test]
fn inbound_mtls_fields_are_checked_with_their_paths() {
    let errs = errors_of(&policy(
        "{target: {service: payments}, inbound: {mtls: {mode: lenient}}}",
    ));
    has(&errs, "spec.inbound.mtls.mode", "lenient");
    let errs = errors_of(&policy(
        "{target: {service: payments}, inbound: {mtls: {allowedClients: [\"spiffe://td/sa/a\", \"spiffe://td/sa/a\"]}}}",
    ));
    has(&errs, "spec.inbound.mtls.allowedClients[1]", "listed twice");
    let errs = errors_of(&policy(
        "{target: {service: payments}, inbound: {mtls: {allowedClients: [\"web\"]}}}",
    ));
    has(&errs, "spec.inbound.mtls.allowedClients[0]", "SPIFFE");
    let many: Vec<String> = (0..=crate::policy::MAX_ALLOWED_CLIENTS)
        .map(|i| format!("\"spiffe://td/sa/c{i}\""))
        .collect();
    let errs = errors_of(&policy(&format!(
        "{{target: {{service: payments}}, inbound: {{mtls: {{allowedClients: [{}]}}}}}}",
        many.join(", ")
    )));
    has(&errs, "spec.inbound.mtls.allowedClients", "maximum");
    ok(&policy(
        "{target: {service: payments}, inbound: {mtls: {mode: strict, allowedClients: [\"spiffe://td/sa/a\"]}}}",
    ));
}

#[test]
fn endpoint_identities_must_be_spiffe_ids() {
    let errs = errors_of(&endpoints(
        "{service: payments, port: 80, addresses: [\"127.0.0.1:9001\"], identity: \"https://x/y\"}",
    ));
    has(&errs, "spec.identity", "SPIFFE");
    ok(&endpoints(
        "{service: payments, port: 80, addresses: [\"127.0.0.1:9001\"], identity: \"spiffe://td/ns/a/sa/b\"}",
    ));
}
