//! Policy-file documents for tests (DESIGN.md §3 and §7 shapes).

use std::net::SocketAddr;

/// A `ServiceEndpoints` document for `service` (namespace `default`).
pub fn endpoints(service: &str, port: u16, addresses: &[SocketAddr]) -> String {
    let addresses: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "apiVersion: levee.dev/v1alpha1\n\
         kind: ServiceEndpoints\n\
         metadata: {{name: {service}, namespace: default}}\n\
         spec: {{service: {service}, port: {port}, addresses: [{}]}}\n",
        addresses.join(", ")
    )
}

/// A `ResiliencePolicy` for `service` (namespace `default`) whose `spec`
/// continues with `spec_body`: YAML indented by two spaces, e.g.
/// `"  outbound:\n    timeouts: {request: 2s}\n"`.
pub fn policy(service: &str, port: u16, spec_body: &str) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\n\
         kind: ResiliencePolicy\n\
         metadata: {{name: {service}, namespace: default}}\n\
         spec:\n  target: {{service: {service}, port: {port}}}\n{spec_body}"
    )
}

/// Documents joined into one multi-document file.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}
