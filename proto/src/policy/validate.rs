//! Semantic validation (what serde's types cannot say): names (`names`,
//! also for wire references and Discovery hellos), ranges,
//! durations that contradict each other, values over their caps (`caps`),
//! route matches, duplicates across documents. Every problem is recorded with its field path; nothing stops at
//! the first one.

use super::document::{Document, EndpointsSpec, MAX_VIRTUAL_IPS, PolicySpec};
use super::duration::Duration;
use super::effective::{default_backoff_max, defaults};
use super::error::{FieldError, Problems};
use super::grpc_status::GrpcStatus;
use super::mtls::MAX_ALLOWED_CLIENTS;
use super::outbound::{CircuitBreaker, Concurrency, InboundPolicy, OutboundPolicy, RateLimit};
use super::retry::RetryPolicy;
use super::target;

pub mod caps;
pub(super) mod names;
mod route;

use names::service_name;

/// Validates one document, recording problems.
pub(crate) fn document(doc: &Document, p: &mut Problems) {
    names::metadata(doc.metadata(), p);
    match doc {
        Document::Policy(policy) => policy_spec(&policy.spec, p),
        Document::Endpoints(endpoints) => endpoints_spec(&endpoints.spec, p),
    }
}

fn port(path: &str, port: u16, p: &mut Problems) {
    if port == 0 {
        p.add(path, "port 0 is outside 1-65535");
    }
}

fn policy_spec(spec: &PolicySpec, p: &mut Problems) {
    service_name("spec.target.service", &spec.target.service, p);
    if let Some(n) = spec.target.port {
        port("spec.target.port", n, p);
    }
    outbound(&spec.outbound, p);
    inbound(&spec.inbound, p);
    caps::policy(spec, p);
}

fn outbound(o: &OutboundPolicy, p: &mut Problems) {
    let t = &o.timeouts;
    positive("spec.outbound.timeouts.connect", t.connect, p);
    positive("spec.outbound.timeouts.idle", t.idle, p);
    if let Some((per_try, request)) = longer(t.per_try, t.request) {
        p.add(
            "spec.outbound.timeouts.perTry",
            format!(
                "{per_try} is longer than request ({request}), which bounds all attempts \
                 together"
            ),
        );
    }
    if let Some(r) = &o.retry {
        retry("spec.outbound.retry", r, true, p);
    }
    if let Some(b) = &o.circuit_breaker {
        breaker("spec.outbound.circuitBreaker", b, p);
    }
    if let Some(rl) = &o.rate_limit {
        rate_limit("spec.outbound.rateLimit", rl, false, p);
    }
    if let Some(c) = &o.concurrency {
        concurrency("spec.outbound.concurrency", c, p);
    }
    route::routes(o, p);
}

fn inbound(i: &InboundPolicy, p: &mut Problems) {
    if let Some(rl) = &i.rate_limit {
        rate_limit("spec.inbound.rateLimit", rl, true, p);
    }
    if let Some(c) = &i.concurrency {
        concurrency("spec.inbound.concurrency", c, p);
    }
    if let Some(allowed) = i.mtls.as_ref().and_then(|m| m.allowed_clients.as_ref()) {
        let path = "spec.inbound.mtls.allowedClients";
        if allowed.len() > MAX_ALLOWED_CLIENTS {
            p.add(
                path,
                format!(
                    "{} identities is more than the maximum of {MAX_ALLOWED_CLIENTS}",
                    allowed.len()
                ),
            );
        } else {
            no_duplicates(path, allowed, p);
        }
    }
}

/// `Some((per_try, request))` when both are on and `per_try > request`.
pub(super) fn longer(
    per_try: Option<Duration>,
    request: Option<Duration>,
) -> Option<(Duration, Duration)> {
    match (per_try, request) {
        (Some(t), Some(r)) if !t.is_zero() && !r.is_zero() && t > r => Some((t, r)),
        _ => None,
    }
}

fn positive(path: &str, d: Option<Duration>, p: &mut Problems) {
    if d.is_some_and(Duration::is_zero) {
        p.add(path, "must be more than 0s");
    }
}

fn at_least_one(path: &str, n: Option<u32>, p: &mut Problems) {
    if n == Some(0) {
        p.add(path, "must be at least 1");
    }
}

/// A percentage: finite, 0–100, and above 0 unless `zero_ok`.
fn percent(path: &str, value: Option<f64>, zero_ok: bool, p: &mut Problems) {
    let Some(v) = value else { return };
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        p.add(path, format!("{v} is outside 0-100"));
    } else if v == 0.0 && !zero_ok {
        p.add(path, "must be more than 0");
    }
}

fn no_duplicates<T: PartialEq + std::fmt::Display>(path: &str, items: &[T], p: &mut Problems) {
    for (i, item) in items.iter().enumerate() {
        if let Some(first) = items[..i].iter().position(|x| x == item) {
            p.add(
                format!("{path}[{i}]"),
                format!("{item} is listed twice (also [{first}])"),
            );
        }
    }
}

/// Checks a retry policy's own fields. `service_level` adds the checks that
/// need the defaults (a route's backoff is checked after merging instead).
pub(super) fn retry(path: &str, r: &RetryPolicy, service_level: bool, p: &mut Problems) {
    if let Some(on) = &r.on {
        no_duplicates(&format!("{path}.on"), on, p);
    }
    if let Some(codes) = &r.grpc_on {
        no_duplicates(&format!("{path}.grpcOn"), codes, p);
        if let Some(i) = codes.iter().position(|c| *c == GrpcStatus::Ok) {
            p.add(
                format!("{path}.grpcOn[{i}]"),
                "ok is a success, not a status to retry",
            );
        }
    }
    if let Some(b) = &r.backoff {
        positive(&format!("{path}.backoff.base"), b.base, p);
        positive(&format!("{path}.backoff.max"), b.max, p);
        if service_level {
            backoff_order(&format!("{path}.backoff"), b.base, b.max, "", p);
        }
    }
    if let Some(b) = &r.budget {
        let bp = format!("{path}.budget");
        percent(&format!("{bp}.percent"), b.percent, true, p);
        positive(&format!("{bp}.window"), b.window, p);
        if b.percent == Some(0.0) && b.min_per_second == Some(0) {
            p.add(
                bp,
                "percent 0 and minPerSecond 0 allow no retry at all (set maxRetries: 0 to \
                 turn retries off)",
            );
        }
    }
}

/// Reports `base > max` (unset fields take their defaults).
pub(super) fn backoff_order(
    path: &str,
    base: Option<Duration>,
    max: Option<Duration>,
    note: &str,
    p: &mut Problems,
) {
    let base_v = base.unwrap_or(defaults::BACKOFF_BASE);
    let max_v = max.unwrap_or_else(|| default_backoff_max(base_v));
    if base_v > max_v {
        let base_s = if base.is_some() { "" } else { " (default)" };
        let max_s = if max.is_some() { "" } else { " (default)" };
        p.add(
            path,
            format!("base {base_v}{base_s} is longer than max {max_v}{max_s}{note}"),
        );
    }
}

fn breaker(path: &str, b: &CircuitBreaker, p: &mut Problems) {
    if let Some(on) = &b.failure_on {
        if on.is_empty() {
            p.add(
                format!("{path}.failureOn"),
                "empty: nothing would count as a failure",
            );
        }
        no_duplicates(&format!("{path}.failureOn"), on, p);
    }
    at_least_one(
        &format!("{path}.consecutiveFailures"),
        b.consecutive_failures,
        p,
    );
    if let Some(rate) = &b.failure_rate {
        percent(
            &format!("{path}.failureRate.percent"),
            rate.percent,
            false,
            p,
        );
        at_least_one(
            &format!("{path}.failureRate.minRequests"),
            rate.min_requests,
            p,
        );
        positive(&format!("{path}.failureRate.window"), rate.window, p);
    }
    if let Some(slow) = &b.slow_call {
        positive(&format!("{path}.slowCall.duration"), Some(slow.duration), p);
        percent(&format!("{path}.slowCall.percent"), slow.percent, false, p);
    }
    if let Some(open) = &b.open {
        positive(&format!("{path}.open.base"), open.base, p);
        let base = open.base.unwrap_or(defaults::OPEN_BASE);
        let max = open.max.unwrap_or(defaults::OPEN_MAX);
        if base > max {
            p.add(
                format!("{path}.open"),
                format!("base {base} is longer than max {max}"),
            );
        }
    }
    at_least_one(&format!("{path}.halfOpenProbes"), b.half_open_probes, p);
    percent(
        &format!("{path}.maxEjectedPercent"),
        b.max_ejected_percent,
        true,
        p,
    );
}

fn rate_limit(path: &str, rl: &RateLimit, inbound: bool, p: &mut Problems) {
    at_least_one(
        &format!("{path}.requestsPerSecond"),
        Some(rl.requests_per_second),
        p,
    );
    at_least_one(&format!("{path}.burst"), rl.burst, p);
    if !inbound && rl.per_client.is_some() {
        p.add(
            format!("{path}.perClient"),
            "only inbound rate limits can be per client",
        );
    }
}

fn concurrency(path: &str, c: &Concurrency, p: &mut Problems) {
    at_least_one(&format!("{path}.maxInFlight"), Some(c.max_in_flight), p);
}

fn endpoints_spec(spec: &EndpointsSpec, p: &mut Problems) {
    service_name("spec.service", &spec.service, p);
    port("spec.port", spec.port, p);
    for (i, addr) in spec.addresses.iter().enumerate() {
        let path = format!("spec.addresses[{i}]");
        if addr.port() == 0 {
            p.add(&path, format!("{addr}: port 0 is outside 1-65535"));
        }
        if addr.ip().is_unspecified() {
            p.add(
                &path,
                format!("{addr}: an unspecified address cannot be dialled"),
            );
        }
    }
    no_duplicates("spec.addresses", &spec.addresses, p);
    if spec.virtual_ips.len() > MAX_VIRTUAL_IPS {
        p.add(
            "spec.virtualIPs",
            format!(
                "{} virtual IPs; at most {MAX_VIRTUAL_IPS}",
                spec.virtual_ips.len()
            ),
        );
    }
    for (i, ip) in spec.virtual_ips.iter().enumerate() {
        let path = format!("spec.virtualIPs[{i}]");
        if ip.is_unspecified() || ip.is_multicast() {
            p.add(
                &path,
                format!(
                    "{ip}: an unspecified or multicast address cannot be a service's virtual IP"
                ),
            );
        }
    }
    no_duplicates("spec.virtualIPs", &spec.virtual_ips, p);
}

/// Problems between documents of one file: the same object twice, or two
/// documents of a kind for one target. The file does not say the reader's
/// default namespace, so an unset namespace matches only another unset one
/// here; readers check the whole batch again with theirs
/// ([`super::check_batch`]).
pub(crate) fn across_documents(docs: &[(usize, Document)]) -> Vec<FieldError> {
    // "" is never a valid namespace, so it stands for "not written".
    target::batch_problems(docs.iter().map(|(n, d)| (*n, d)), "")
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod file_tests;
