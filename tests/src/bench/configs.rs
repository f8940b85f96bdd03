//! The contenders' configuration files, rendered from the addresses of one
//! run: HAProxy and nginx as keep-alive reverse proxies in front of the
//! upstream, and Levee's policy files (endpoints only, or the full policy).

use std::net::SocketAddr;
use std::path::Path;

use crate::harness::yaml;

/// The service name Levee's clients put in `Host`.
pub const SERVICE: &str = "bench";
/// The service port (`Host: bench` means port 80).
pub const SERVICE_PORT: u16 = 80;

/// HAProxy: one thread, HTTP mode, keep-alive on both sides, idle server
/// connections reused by any client (`http-reuse always`).
pub fn haproxy(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "global\n\
         \x20 nbthread 1\n\
         \x20 maxconn 5000\n\
         defaults\n\
         \x20 mode http\n\
         \x20 option http-keep-alive\n\
         \x20 http-reuse always\n\
         \x20 timeout connect 1s\n\
         \x20 timeout client 300s\n\
         \x20 timeout server 300s\n\
         \x20 timeout http-keep-alive 300s\n\
         frontend bench\n\
         \x20 bind {listen}\n\
         \x20 default_backend upstream\n\
         backend upstream\n\
         \x20 server up1 {upstream}\n"
    )
}

/// nginx: one worker, no access log, an upstream keep-alive pool, HTTP/1.1
/// to the upstream; every path under `prefix` (pid, logs, temp files).
pub fn nginx(prefix: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let p = prefix.display();
    format!(
        "worker_processes 1;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {p}/client_body;\n\
         \x20 proxy_temp_path {p}/proxy;\n\
         \x20 fastcgi_temp_path {p}/fastcgi;\n\
         \x20 uwsgi_temp_path {p}/uwsgi;\n\
         \x20 scgi_temp_path {p}/scgi;\n\
         \x20 keepalive_timeout 300s;\n\
         \x20 keepalive_requests 100000000;\n\
         \x20 upstream up {{\n\
         \x20   server {upstream};\n\
         \x20   keepalive 256;\n\
         \x20   keepalive_requests 100000000;\n\
         \x20 }}\n\
         \x20 server {{\n\
         \x20   listen {listen};\n\
         \x20   location / {{\n\
         \x20     proxy_pass http://up;\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Levee's policy file when the service's endpoints are `addresses` and
/// nothing else is configured.
pub fn levee_endpoints(addresses: &[SocketAddr]) -> String {
    yaml::documents(&[yaml::endpoints(SERVICE, SERVICE_PORT, addresses)])
}

/// The full resilience policy of DESIGN.md §3 on the service: timeouts, a
/// retry budget, a circuit breaker, a rate limit and a concurrency limit far
/// above the benchmark's load, plus inbound limits, so every layer is on
/// the path but none ever rejects.
pub fn levee_full_policy(addresses: &[SocketAddr]) -> String {
    let spec = "  outbound:\n\
                \x20   timeouts: {request: 5s, perTry: 2s, connect: 1s, idle: 60s}\n\
                \x20   retry:\n\
                \x20     maxRetries: 2\n\
                \x20     on: [connect-failure, refused-stream, reset, gateway-error]\n\
                \x20     backoff: {base: 25ms, max: 250ms}\n\
                \x20     budget: {percent: 20, minPerSecond: 10, window: 10s}\n\
                \x20   circuitBreaker:\n\
                \x20     failureOn: [5xx, connect-failure, timeout, reset]\n\
                \x20     consecutiveFailures: 5\n\
                \x20     failureRate: {percent: 50, minRequests: 20, window: 10s}\n\
                \x20     open: {base: 5s, max: 60s}\n\
                \x20     halfOpenProbes: 3\n\
                \x20   rateLimit: {requestsPerSecond: 1000000, burst: 100000}\n\
                \x20   concurrency: {maxInFlight: 100000, maxQueued: 1000}\n\
                \x20 inbound:\n\
                \x20   rateLimit: {requestsPerSecond: 1000000, burst: 100000}\n\
                \x20   concurrency: {maxInFlight: 100000}\n\
                \x20   timeouts: {request: 10s}\n";
    yaml::documents(&[
        yaml::policy(SERVICE, SERVICE_PORT, spec),
        yaml::endpoints(SERVICE, SERVICE_PORT, addresses),
    ])
}

/// The per-try timeout both Levee and HAProxy use in the fault scenarios.
pub const FAULT_PER_TRY: &str = "100ms";

/// HAProxy with its own resilience for the fault scenarios: round robin
/// over `servers`, up to 2 retries on connect failures, timeouts and
/// 5xx (`retry-on all-retryable-errors`) with redispatch to another server,
/// and passive health (`observe layer7`) marking a failing server down.
pub fn haproxy_retrying(listen: SocketAddr, servers: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "global\n\
         \x20 nbthread 1\n\
         \x20 maxconn 5000\n\
         defaults\n\
         \x20 mode http\n\
         \x20 option http-keep-alive\n\
         \x20 http-reuse always\n\
         \x20 timeout connect 1s\n\
         \x20 timeout client 300s\n\
         \x20 timeout server {FAULT_PER_TRY}\n\
         \x20 timeout http-keep-alive 300s\n\
         \x20 retries 2\n\
         \x20 option redispatch 1\n\
         \x20 retry-on all-retryable-errors\n\
         frontend bench\n\
         \x20 bind {listen}\n\
         \x20 default_backend upstream\n\
         backend upstream\n\
         \x20 balance roundrobin\n\
         \x20 option httpchk GET /\n"
    );
    for (i, server) in servers.iter().enumerate() {
        cfg += &format!(
            "  server up{} {server} check inter 1s observe layer7 error-limit 5 on-error mark-down\n",
            i + 1
        );
    }
    cfg
}

/// Levee's policy for the fault scenarios: the same per-try timeout as
/// HAProxy, up to 2 retries (connect failures, resets, timeouts, 502/503/504)
/// within a 20 % budget, and the circuit breaker ejecting failing endpoints.
pub fn levee_fault_policy(addresses: &[SocketAddr]) -> String {
    let spec = format!(
        "  outbound:\n\
         \x20   timeouts: {{request: 2s, perTry: {FAULT_PER_TRY}}}\n\
         \x20   retry:\n\
         \x20     maxRetries: 2\n\
         \x20     on: [connect-failure, refused-stream, reset, timeout, gateway-error]\n\
         \x20     backoff: {{base: 5ms, max: 50ms}}\n\
         \x20     budget: {{percent: 20, minPerSecond: 10, window: 10s}}\n\
         \x20   circuitBreaker:\n\
         \x20     failureOn: [5xx, connect-failure, timeout, reset]\n\
         \x20     consecutiveFailures: 5\n\
         \x20     open: {{base: 5s, max: 60s}}\n\
         \x20     maxEjectedPercent: 50\n"
    );
    yaml::documents(&[
        yaml::policy(SERVICE, SERVICE_PORT, &spec),
        yaml::endpoints(SERVICE, SERVICE_PORT, addresses),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn haproxy_forwards_listen_to_upstream() {
        let cfg = haproxy(addr("127.0.0.1:4000"), addr("127.0.0.1:5000"));
        assert!(cfg.contains("\n  bind 127.0.0.1:4000\n"), "{cfg}");
        assert!(cfg.contains("\n  server up1 127.0.0.1:5000\n"), "{cfg}");
        assert!(cfg.contains("nbthread 1"), "{cfg}");
        assert!(cfg.contains("option http-keep-alive"), "{cfg}");
        // Every line is a section header or indented under one.
        for line in cfg.lines() {
            assert!(
                line.starts_with("  ")
                    || ["global", "defaults"].contains(&line)
                    || line.starts_with("frontend ")
                    || line.starts_with("backend "),
                "{line:?}"
            );
        }
    }

    #[test]
    fn nginx_keeps_upstream_connections_alive() {
        let cfg = nginx(
            Path::new("/tmp/b"),
            addr("127.0.0.1:4001"),
            addr("127.0.0.1:5001"),
        );
        assert!(cfg.contains("listen 127.0.0.1:4001;"), "{cfg}");
        assert!(cfg.contains("server 127.0.0.1:5001;"), "{cfg}");
        assert!(cfg.contains("keepalive 256;"), "{cfg}");
        assert!(cfg.contains("proxy_http_version 1.1;"), "{cfg}");
        assert!(cfg.contains("proxy_set_header Connection \"\";"), "{cfg}");
        assert!(cfg.contains("pid /tmp/b/nginx.pid;"), "{cfg}");
        let opens = cfg.matches('{').count();
        assert_eq!(opens, cfg.matches('}').count(), "{cfg}");
        assert_eq!(opens, 5, "{cfg}");
    }

    #[test]
    fn levee_files_name_the_service_and_endpoints() {
        use levee_proto::policy::{Document, parse_documents};
        // The files as the proxy reads them: typed documents.
        let parse = |text: &str| parse_documents(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let endpoints_of = |docs: &[Document]| -> Vec<SocketAddr> {
            docs.iter()
                .find_map(|d| match d {
                    Document::Endpoints(e) if e.spec.service == SERVICE => {
                        Some(e.spec.addresses.clone())
                    }
                    _ => None,
                })
                .unwrap_or_default()
        };
        let ups = [addr("127.0.0.1:5002")];
        let plain = parse(&levee_endpoints(&ups));
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert_eq!(endpoints_of(&plain), ups);
        let full = parse(&levee_full_policy(&ups));
        assert_eq!(endpoints_of(&full), ups);
        let Some(Document::Policy(policy)) = full.iter().find(|d| matches!(d, Document::Policy(_)))
        else {
            panic!("no policy in {full:?}");
        };
        assert_eq!(policy.spec.target.service, SERVICE);
        assert!(policy.spec.outbound.circuit_breaker.is_some(), "{policy:?}");
        let two = [addr("127.0.0.1:1"), addr("127.0.0.1:2")];
        let faults = levee_fault_policy(&two);
        assert!(faults.contains("perTry: 100ms"), "{faults}");
        assert_eq!(endpoints_of(&parse(&faults)), two);
    }

    #[test]
    fn haproxy_retrying_lists_every_server() {
        let cfg = haproxy_retrying(
            addr("127.0.0.1:4003"),
            &[addr("127.0.0.1:1"), addr("127.0.0.1:2")],
        );
        assert!(cfg.contains("\n  server up1 127.0.0.1:1 check "), "{cfg}");
        assert!(cfg.contains("\n  server up2 127.0.0.1:2 check "), "{cfg}");
        assert!(cfg.contains("retry-on all-retryable-errors"), "{cfg}");
        assert!(cfg.contains("timeout server 100ms"), "{cfg}");
        assert!(cfg.ends_with("on-error mark-down\n"), "{cfg}");
    }
}
