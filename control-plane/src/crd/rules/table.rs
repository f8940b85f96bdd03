//! The rule table: every bound and CEL rule of the schema, with the
//! validator check it repeats and the two values that hold it to that
//! check (see the parent module).

use levee_proto::policy::Duration;
use levee_proto::policy::caps;

use super::{Check, Rule};

fn rule(field: &'static str, check: Check, accept: &'static str, reject: &'static str) -> Rule {
    Rule {
        field,
        check,
        accept,
        reject,
    }
}

fn cel(rule: impl Into<String>, message: impl Into<String>) -> Check {
    Check::Cel {
        rule: rule.into(),
        message: message.into(),
    }
}

/// `self` (a duration string) is at most `cap`.
fn at_most(cap: Duration) -> Check {
    cel(
        format!("duration(self) <= duration('{cap}')"),
        format!("must be at most {cap}"),
    )
}

fn positive() -> Check {
    cel("duration(self) > duration('0s')", "must be more than 0s")
}

/// The table, in schema order.
pub(super) fn all_rules() -> Vec<Rule> {
    let timeout = caps::TIMEOUT;
    let mut rules = vec![
        rule("target.service", Check::Pattern(DNS_LABEL), "a-1", "A_1"),
        rule("target.port", Check::Minimum(1), "1", "0"),
        // Timeouts.
        rule("outbound.timeouts.request", at_most(timeout), "1h", "3601s"),
        rule(
            "outbound.timeouts.perTry",
            at_most(timeout),
            "60m",
            "1h0.5s",
        ),
        rule("outbound.timeouts.idle", at_most(timeout), "1h", "61m"),
        rule("outbound.timeouts.idle", positive(), "1ms", "0s"),
        rule(
            "outbound.timeouts.connect",
            at_most(caps::CONNECT),
            "5m",
            "301s",
        ),
        rule("outbound.timeouts.connect", positive(), "1us", "0ms"),
        rule(
            "outbound.timeouts",
            cel(
                PER_TRY_WITHIN_REQUEST,
                "perTry is longer than request, which bounds all attempts together",
            ),
            "{request: 2s, perTry: 2s}",
            "{request: 2s, perTry: 2001ms}",
        ),
        rule("inbound.timeouts.request", at_most(timeout), "1h", "2h"),
        rule(
            "outbound.routes[].timeouts.request",
            at_most(timeout),
            "1h",
            "90m",
        ),
        rule(
            "outbound.routes[].timeouts.perTry",
            at_most(timeout),
            "1h",
            "3600.001s",
        ),
        rule(
            "outbound.routes[].timeouts",
            cel(PER_TRY_WITHIN_REQUEST, "perTry is longer than request"),
            "{request: 1s, perTry: 0s}",
            "{request: 1s, perTry: 1.5s}",
        ),
        // Circuit breaker.
        rule(
            "outbound.circuitBreaker.failureOn",
            Check::MinItems(1),
            "[reset]",
            "[]",
        ),
        rule(
            "outbound.circuitBreaker.consecutiveFailures",
            Check::Minimum(1),
            "1",
            "0",
        ),
        rule(
            "outbound.circuitBreaker.halfOpenProbes",
            Check::Minimum(1),
            "1",
            "0",
        ),
        rule(
            "outbound.circuitBreaker.maxEjectedPercent",
            Check::Minimum(0),
            "0",
            "-1",
        ),
        rule(
            "outbound.circuitBreaker.maxEjectedPercent",
            Check::Maximum(100),
            "100",
            "100.5",
        ),
        rule(
            "outbound.circuitBreaker.failureRate.percent",
            Check::AboveZero,
            "0.5",
            "0",
        ),
        rule(
            "outbound.circuitBreaker.failureRate.percent",
            Check::Maximum(100),
            "100",
            "101",
        ),
        rule(
            "outbound.circuitBreaker.failureRate.minRequests",
            Check::Minimum(1),
            "1",
            "0",
        ),
        rule(
            "outbound.circuitBreaker.failureRate.window",
            at_most(caps::BREAKER),
            "1h",
            "2h",
        ),
        rule(
            "outbound.circuitBreaker.failureRate.window",
            positive(),
            "1s",
            "0s",
        ),
        rule(
            "outbound.circuitBreaker.slowCall.duration",
            at_most(caps::BREAKER),
            "3600s",
            "3601s",
        ),
        rule(
            "outbound.circuitBreaker.slowCall.duration",
            positive(),
            "1ms",
            "0s",
        ),
        rule(
            "outbound.circuitBreaker.slowCall.percent",
            Check::AboveZero,
            "1",
            "0",
        ),
        rule(
            "outbound.circuitBreaker.slowCall.percent",
            Check::Maximum(100),
            "100",
            "100.01",
        ),
        rule(
            "outbound.circuitBreaker.open.base",
            at_most(caps::BREAKER),
            "1h",
            "2h",
        ),
        rule("outbound.circuitBreaker.open.base", positive(), "1s", "0s"),
        rule(
            "outbound.circuitBreaker.open.max",
            at_most(caps::BREAKER),
            "1h",
            "3h",
        ),
        rule(
            "outbound.circuitBreaker.open",
            cel(BASE_WITHIN_MAX, "base is longer than max"),
            "{base: 10s, max: 10s}",
            "{base: 10s, max: 9s}",
        ),
        // Rate limits and concurrency.
        rule(
            "outbound.rateLimit",
            cel(
                "!has(self.perClient)",
                "only inbound rate limits can be per client",
            ),
            "{requestsPerSecond: 5}",
            "{requestsPerSecond: 5, perClient: false}",
        ),
    ];
    for side in ["outbound", "inbound"] {
        rules.extend(side_rules(side));
    }
    for retry in ["outbound.retry", "outbound.routes[].retry"] {
        rules.extend(retry_rules(retry));
    }
    rules.extend(route_rules());
    rules
}

/// A DNS label (RFC 1123), as levee-proto's `is_dns_label`.
const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

const PER_TRY_WITHIN_REQUEST: &str = "!has(self.perTry) || !has(self.request) \
     || duration(self.perTry) == duration('0s') || duration(self.request) == duration('0s') \
     || duration(self.perTry) <= duration(self.request)";

const BASE_WITHIN_MAX: &str =
    "!has(self.base) || !has(self.max) || duration(self.base) <= duration(self.max)";

/// Rate limit and concurrency rules shared by both directions.
fn side_rules(side: &'static str) -> Vec<Rule> {
    let f = |rest: &str| -> &'static str { leak(format!("{side}.{rest}")) };
    vec![
        rule(
            f("rateLimit.requestsPerSecond"),
            Check::Minimum(1),
            "1",
            "0",
        ),
        rule(f("rateLimit.burst"), Check::Minimum(1), "1", "0"),
        rule(f("concurrency.maxInFlight"), Check::Minimum(1), "1", "0"),
        rule(
            f("concurrency.maxQueued"),
            Check::Maximum(u64::from(caps::MAX_QUEUED)),
            "10000",
            "10001",
        ),
    ]
}

/// Retry rules shared by the service's policy and route overrides.
fn retry_rules(retry: &'static str) -> Vec<Rule> {
    let f = |rest: &str| -> &'static str { leak(format!("{retry}.{rest}")) };
    let mut rules = vec![
        rule(
            f("maxRetries"),
            Check::Maximum(u64::from(caps::MAX_RETRIES)),
            "10",
            "11",
        ),
        rule(
            f("maxReplayBytes"),
            Check::Maximum(caps::MAX_REPLAY_BYTES),
            "67108864",
            "67108865",
        ),
        rule(f("backoff.base"), at_most(caps::BACKOFF), "1m", "61s"),
        rule(f("backoff.base"), positive(), "1ms", "0s"),
        rule(f("backoff.max"), at_most(caps::BACKOFF), "60s", "2m"),
        rule(f("backoff.max"), positive(), "25ms", "0s"),
        rule(
            f("backoff"),
            cel(BASE_WITHIN_MAX, "base is longer than max"),
            "{base: 100ms, max: 100ms}",
            "{base: 101ms, max: 100ms}",
        ),
    ];
    if retry == "outbound.retry" {
        rules.extend([
            rule(
                "outbound.retry.budget.window",
                at_most(caps::BUDGET_WINDOW),
                "1m",
                "61s",
            ),
            rule("outbound.retry.budget.window", positive(), "1s", "0s"),
            rule(
                "outbound.retry.budget.percent",
                Check::Minimum(0),
                "0",
                "-0.5",
            ),
            rule(
                "outbound.retry.budget.percent",
                Check::Maximum(100),
                "100",
                "100.1",
            ),
            rule(
                "outbound.retry.budget",
                cel(
                    "!(has(self.percent) && self.percent == 0.0 && has(self.minPerSecond) \
                     && self.minPerSecond == 0)",
                    "percent 0 and minPerSecond 0 allow no retry at all (set maxRetries: 0 to \
                     turn retries off)",
                ),
                "{percent: 0, minPerSecond: 1}",
                "{percent: 0, minPerSecond: 0}",
            ),
        ]);
    } else {
        rules.push(rule(
            "outbound.routes[].retry",
            cel(
                "!has(self.budget)",
                "the retry budget is per service: set spec.outbound.retry.budget",
            ),
            "{maxRetries: 1}",
            "{budget: {percent: 10}}",
        ));
    }
    rules
}

/// `n` routes, as YAML.
fn routes(n: usize) -> &'static str {
    let items: Vec<String> = (0..n)
        .map(|i| format!("{{name: r{i}, match: {{methods: [GET]}}}}"))
        .collect();
    leak(format!("[{}]", items.join(", ")))
}

/// Route names and matches.
fn route_rules() -> Vec<Rule> {
    let max = caps::MAX_ROUTES;
    vec![
        rule(
            "outbound.routes",
            Check::MaxItems(max as u64),
            routes(max),
            routes(max + 1),
        ),
        rule(
            "outbound.routes[].name",
            Check::Pattern(DNS_LABEL),
            "create-1",
            "Create",
        ),
        rule(
            "outbound.routes[].name",
            cel(
                "self != 'default'",
                "\"default\" is reserved for requests that match no route",
            ),
            "defaults",
            "default",
        ),
        rule(
            "outbound.routes[].match",
            cel(
                "has(self.path) || has(self.pathPrefix) || (has(self.methods) && size(self.methods) > 0) \
                 || (has(self.headers) && size(self.headers) > 0) || has(self.grpc)",
                "empty match: set path, pathPrefix, methods, headers or grpc (pathPrefix: / matches \
                 everything)",
            ),
            "{methods: [GET]}",
            "{methods: []}",
        ),
        rule(
            "outbound.routes[].match",
            cel(
                "!(has(self.path) && has(self.pathPrefix))",
                "set either path or pathPrefix, not both",
            ),
            "{path: /a}",
            "{path: /a, pathPrefix: /a}",
        ),
        rule(
            "outbound.routes[].match",
            cel(
                "!has(self.grpc) || !(has(self.path) || has(self.pathPrefix))",
                "grpc cannot be combined with path or pathPrefix (it matches the path itself)",
            ),
            "{grpc: {method: Charge}}",
            "{grpc: {method: Charge}, pathPrefix: /}",
        ),
        rule(
            "outbound.routes[].match.grpc",
            cel(
                "has(self.service) || has(self.method)",
                "empty: set service and/or method",
            ),
            "{service: a.B}",
            "{}",
        ),
        rule(
            "outbound.routes[].match.path",
            Check::Pattern(HTTP_PATH),
            "/a/b",
            "/a?b",
        ),
        rule(
            "outbound.routes[].match.pathPrefix",
            Check::Pattern(HTTP_PATH),
            "/",
            "a",
        ),
        rule(
            "outbound.routes[].match.methods[]",
            Check::Pattern(METHOD),
            "M-SEARCH",
            "get",
        ),
    ]
}

/// A request path: starts with `/`, no query, fragment or whitespace.
const HTTP_PATH: &str = r"^/[^?#\s]*$";
/// An HTTP method as written in policies: upper case, `-`, `_`, 1-32 characters.
const METHOD: &str = "^[A-Z_-]{1,32}$";

/// Field names are built once per process (the rules are a `LazyLock`);
/// leaking them keeps [`Rule`] a plain value with `&'static str` fields.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
