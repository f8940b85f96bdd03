//! Upper bounds on the values a policy may set: durations the proxy adds to
//! a clock and counts that size memory. A value over its cap is refused with
//! the field's path and the cap, so no accepted policy can overflow a
//! deadline or allocate without bound. The caps are listed in
//! docs/policy.md ("Validation").

use super::super::document::PolicySpec;
use super::super::duration::Duration;
use super::super::error::Problems;
use super::super::outbound::{CircuitBreaker, Concurrency};
use super::super::retry::RetryPolicy;

/// `timeouts.request`, `timeouts.perTry`, `timeouts.idle` (outbound, routes, inbound).
pub const TIMEOUT: Duration = Duration::from_secs(3600);
/// `timeouts.connect`.
pub const CONNECT: Duration = Duration::from_secs(300);
/// `retry.backoff.base` and `retry.backoff.max`.
pub const BACKOFF: Duration = Duration::from_secs(60);
/// `retry.budget.window` (the budget's ring holds at most a minute).
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60);
/// `circuitBreaker.failureRate.window`, `slowCall.duration`, `open.base`, `open.max`.
pub const BREAKER: Duration = Duration::from_secs(3600);
/// `retry.maxRetries`.
pub const MAX_RETRIES: u32 = 10;
/// `retry.maxReplayBytes`: 64 MiB.
pub const MAX_REPLAY_BYTES: u64 = 64 * 1024 * 1024;
/// `concurrency.maxQueued`.
pub const MAX_QUEUED: u32 = 10_000;
/// `outbound.routes`: each route is matched in turn on every call. Also
/// what lets the Kubernetes API server bound the cost of the CRD's CEL
/// rules inside routes (it refuses a CRD whose rules could cost too much).
pub const MAX_ROUTES: usize = 64;

/// Records every field of `spec` over its cap.
pub(super) fn policy(spec: &PolicySpec, p: &mut Problems) {
    let o = &spec.outbound;
    let t = &o.timeouts;
    duration("spec.outbound.timeouts.request", t.request, TIMEOUT, p);
    duration("spec.outbound.timeouts.perTry", t.per_try, TIMEOUT, p);
    duration("spec.outbound.timeouts.idle", t.idle, TIMEOUT, p);
    duration("spec.outbound.timeouts.connect", t.connect, CONNECT, p);
    if let Some(r) = &o.retry {
        retry("spec.outbound.retry", r, p);
    }
    if let Some(b) = &o.circuit_breaker {
        breaker("spec.outbound.circuitBreaker", b, p);
    }
    if let Some(c) = &o.concurrency {
        concurrency("spec.outbound.concurrency", c, p);
    }
    if o.routes.len() > MAX_ROUTES {
        p.add(
            "spec.outbound.routes",
            format!(
                "{} routes is more than the maximum of {MAX_ROUTES}",
                o.routes.len()
            ),
        );
    }
    for (i, route) in o.routes.iter().enumerate() {
        let path = format!("spec.outbound.routes[{i}]");
        let t = &route.timeouts;
        duration(&format!("{path}.timeouts.request"), t.request, TIMEOUT, p);
        duration(&format!("{path}.timeouts.perTry"), t.per_try, TIMEOUT, p);
        if let Some(r) = &route.retry {
            retry(&format!("{path}.retry"), r, p);
        }
    }
    let i = &spec.inbound;
    duration(
        "spec.inbound.timeouts.request",
        i.timeouts.request,
        TIMEOUT,
        p,
    );
    if let Some(c) = &i.concurrency {
        concurrency("spec.inbound.concurrency", c, p);
    }
}

fn retry(path: &str, r: &RetryPolicy, p: &mut Problems) {
    count(
        &format!("{path}.maxRetries"),
        r.max_retries.map(u64::from),
        u64::from(MAX_RETRIES),
        p,
    );
    if r.max_replay_bytes.is_some_and(|n| n > MAX_REPLAY_BYTES) {
        p.add(
            format!("{path}.maxReplayBytes"),
            format!(
                "{} is more than the maximum of {MAX_REPLAY_BYTES} (64 MiB)",
                r.max_replay_bytes.unwrap_or_default()
            ),
        );
    }
    if let Some(b) = &r.backoff {
        duration(&format!("{path}.backoff.base"), b.base, BACKOFF, p);
        duration(&format!("{path}.backoff.max"), b.max, BACKOFF, p);
    }
    if let Some(b) = &r.budget {
        duration(&format!("{path}.budget.window"), b.window, BUDGET_WINDOW, p);
    }
}

fn breaker(path: &str, b: &CircuitBreaker, p: &mut Problems) {
    if let Some(rate) = &b.failure_rate {
        duration(
            &format!("{path}.failureRate.window"),
            rate.window,
            BREAKER,
            p,
        );
    }
    if let Some(slow) = &b.slow_call {
        duration(
            &format!("{path}.slowCall.duration"),
            Some(slow.duration),
            BREAKER,
            p,
        );
    }
    if let Some(open) = &b.open {
        duration(&format!("{path}.open.base"), open.base, BREAKER, p);
        duration(&format!("{path}.open.max"), open.max, BREAKER, p);
    }
}

fn concurrency(path: &str, c: &Concurrency, p: &mut Problems) {
    count(
        &format!("{path}.maxQueued"),
        c.max_queued.map(u64::from),
        u64::from(MAX_QUEUED),
        p,
    );
}

fn duration(path: &str, d: Option<Duration>, cap: Duration, p: &mut Problems) {
    if let Some(d) = d.filter(|d| *d > cap) {
        p.add(path, format!("{d} is more than the maximum of {cap}"));
    }
}

fn count(path: &str, n: Option<u64>, cap: u64, p: &mut Problems) {
    if let Some(n) = n.filter(|n| *n > cap) {
        p.add(path, format!("{n} is more than the maximum of {cap}"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{has, ok_outbound, outbound_errors, policy};
    use crate::policy::parse_documents;

    #[test]
    fn a_huge_request_timeout_is_refused_naming_the_field_and_the_cap() {
        let errors = outbound_errors("{timeouts: {request: 1000000h}}");
        has(
            &errors,
            "spec.outbound.timeouts.request",
            "1000000h is more than the maximum of 1h",
        );
        ok_outbound("{timeouts: {request: 1h, perTry: 1h, idle: 1h, connect: 5m}}");
    }

    #[test]
    fn every_capped_duration_is_checked() {
        let errors = outbound_errors(
            "{timeouts: {perTry: 2h, idle: 61m, connect: 301s}, \
             retry: {backoff: {base: 2m, max: 2m}, budget: {window: 61s}}, \
             circuitBreaker: {failureRate: {window: 2h}, slowCall: {duration: 2h}, \
             open: {base: 2h, max: 3h}}, \
             routes: [{name: a, match: {pathPrefix: /a}, timeouts: {request: 90m}, \
             retry: {backoff: {max: 5m}}}]}",
        );
        for (path, cap) in [
            ("spec.outbound.timeouts.perTry", "maximum of 1h"),
            ("spec.outbound.timeouts.idle", "maximum of 1h"),
            ("spec.outbound.timeouts.connect", "maximum of 5m"),
            ("spec.outbound.retry.backoff.base", "maximum of 1m"),
            ("spec.outbound.retry.backoff.max", "maximum of 1m"),
            ("spec.outbound.retry.budget.window", "maximum of 1m"),
            (
                "spec.outbound.circuitBreaker.failureRate.window",
                "maximum of 1h",
            ),
            (
                "spec.outbound.circuitBreaker.slowCall.duration",
                "maximum of 1h",
            ),
            ("spec.outbound.circuitBreaker.open.base", "maximum of 1h"),
            ("spec.outbound.circuitBreaker.open.max", "maximum of 1h"),
            ("spec.outbound.routes[0].timeouts.request", "maximum of 1h"),
            ("spec.outbound.routes[0].retry.backoff.max", "maximum of 1m"),
        ] {
            has(&errors, path, cap);
        }
    }

    #[test]
    fn counts_that_size_memory_are_capped() {
        let errors = outbound_errors(
            "{retry: {maxRetries: 11, maxReplayBytes: 67108865}, \
             concurrency: {maxInFlight: 10, maxQueued: 10001}}",
        );
        has(&errors, "spec.outbound.retry.maxRetries", "maximum of 10");
        has(
            &errors,
            "spec.outbound.retry.maxReplayBytes",
            "maximum of 67108864 (64 MiB)",
        );
        has(
            &errors,
            "spec.outbound.concurrency.maxQueued",
            "maximum of 10000",
        );
        ok_outbound(
            "{retry: {maxRetries: 10, maxReplayBytes: 67108864}, \
             concurrency: {maxInFlight: 10, maxQueued: 10000}}",
        );
    }

    #[test]
    fn inbound_values_are_capped_too() {
        let src = policy(
            "{target: {service: payments}, inbound: {timeouts: {request: 2h}, \
             concurrency: {maxInFlight: 1, maxQueued: 20000}}}",
        );
        let errors = parse_documents(&src).expect_err("over the caps").0;
        has(&errors, "spec.inbound.timeouts.request", "maximum of 1h");
        has(
            &errors,
            "spec.inbound.concurrency.maxQueued",
            "maximum of 10000",
        );
    }
}
