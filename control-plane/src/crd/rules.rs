//! The schema bounds and CEL rules (`x-kubernetes-validations`) of the CRD,
//! so the API server itself refuses what levee-proto's validator refuses
//! wherever a schema can say it. Each [`Rule`] names the validator check it
//! repeats by its field path and carries two values: one the validator
//! accepts at the bound and one just past it. The tests hold every rule to
//! both (the Rust validator here; the CEL text itself, in a CEL engine, in
//! the e2e module `kubernetes_crd`), so a rule and its validator check
//! cannot drift apart.
//!
//! Not here, left to the validating webhook (it runs the validator): which
//! failure-condition and gRPC-status names exist, duplicates in lists,
//! route names being unique, `grpcOn: [ok]`, a backoff or open time whose
//! `base` exceeds the *default* `max` (the rules compare only what is
//! written), and a route's timeouts merged over the service's.

use std::sync::LazyLock;

use levee_proto::policy::Duration;
use levee_proto::policy::caps;
use serde_json::{Value, json};

/// What a rule adds to the schema node of its field.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// `maximum`.
    Maximum(u64),
    /// `minimum`.
    Minimum(i64),
    /// `minimum: 0` with `exclusiveMinimum: true`.
    AboveZero,
    /// `pattern` (RE2).
    Pattern(&'static str),
    /// `minItems`.
    MinItems(u64),
    /// An `x-kubernetes-validations` entry.
    Cel {
        /// The CEL expression, with `self` the field's value.
        rule: String,
        /// What the API server says when it is false.
        message: String,
    },
}

/// One bound of the schema, tied to the validator check it repeats.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The field under `spec`, `.`-separated, `[]` for every list item
    /// (`outbound.routes[].retry.maxRetries`).
    pub field: &'static str,
    /// What the schema says.
    pub check: Check,
    /// A value of the field (YAML) that the rule and the validator accept.
    pub accept: &'static str,
    /// A value of the field (YAML) that both refuse, at the field's path.
    pub reject: &'static str,
}

impl Rule {
    /// The validator's path of the field (`spec.outbound.routes[0].retry`).
    pub fn validator_path(&self) -> String {
        format!("spec.{}", self.field.replace("[]", "[0]"))
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

/// Every rule of the CRD's schema.
pub fn rules() -> &'static [Rule] {
    static RULES: LazyLock<Vec<Rule>> = LazyLock::new(all_rules);
    &RULES
}

fn all_rules() -> Vec<Rule> {
    let timeout = caps::TIMEOUT;
    let mut rules = vec![
        Rule {
            field: "target.service",
            check: Check::Pattern(DNS_LABEL),
            accept: "a-1",
            reject: "A_1",
        },
        Rule {
            field: "target.port",
            check: Check::Minimum(1),
            accept: "1",
            reject: "0",
        },
        // Timeouts.
        Rule {
            field: "outbound.timeouts.request",
            check: at_most(timeout),
            accept: "1h",
            reject: "3601s",
        },
        Rule {
            field: "outbound.timeouts.perTry",
            check: at_most(timeout),
            accept: "60m",
            reject: "1h0.5s",
        },
        Rule {
            field: "outbound.timeouts.idle",
            check: at_most(timeout),
            accept: "1h",
            reject: "61m",
        },
        Rule {
            field: "outbound.timeouts.idle",
            check: positive(),
            accept: "1ms",
            reject: "0s",
        },
        Rule {
            field: "outbound.timeouts.connect",
            check: at_most(caps::CONNECT),
            accept: "5m",
            reject: "301s",
        },
        Rule {
            field: "outbound.timeouts.connect",
            check: positive(),
            accept: "1us",
            reject: "0ms",
        },
        Rule {
            field: "outbound.timeouts",
            check: cel(
                PER_TRY_WITHIN_REQUEST,
                "perTry is longer than request, which bounds all attempts together",
            ),
            accept: "{request: 2s, perTry: 2s}",
            reject: "{request: 2s, perTry: 2001ms}",
        },
        Rule {
            field: "inbound.timeouts.request",
            check: at_most(timeout),
            accept: "1h",
            reject: "2h",
        },
        Rule {
            field: "outbound.routes[].timeouts.request",
            check: at_most(timeout),
            accept: "1h",
            reject: "90m",
        },
        Rule {
            field: "outbound.routes[].timeouts.perTry",
            check: at_most(timeout),
            accept: "1h",
            reject: "3600.001s",
        },
        Rule {
            field: "outbound.routes[].timeouts",
            check: cel(PER_TRY_WITHIN_REQUEST, "perTry is longer than request"),
            accept: "{request: 1s, perTry: 0s}",
            reject: "{request: 1s, perTry: 1.5s}",
        },
        // Circuit breaker.
        Rule {
            field: "outbound.circuitBreaker.failureOn",
            check: Check::MinItems(1),
            accept: "[reset]",
            reject: "[]",
        },
        Rule {
            field: "outbound.circuitBreaker.consecutiveFailures",
            check: Check::Minimum(1),
            accept: "1",
            reject: "0",
        },
        Rule {
            field: "outbound.circuitBreaker.halfOpenProbes",
            check: Check::Minimum(1),
            accept: "1",
            reject: "0",
        },
        Rule {
            field: "outbound.circuitBreaker.maxEjectedPercent",
            check: Check::Minimum(0),
            accept: "0",
            reject: "-1",
        },
        Rule {
            field: "outbound.circuitBreaker.maxEjectedPercent",
            check: Check::Maximum(100),
            accept: "100",
            reject: "100.5",
        },
        Rule {
            field: "outbound.circuitBreaker.failureRate.percent",
            check: Check::AboveZero,
            accept: "0.5",
            reject: "0",
        },
        Rule {
            field: "outbound.circuitBreaker.failureRate.percent",
            check: Check::Maximum(100),
            accept: "100",
            reject: "101",
        },
        Rule {
            field: "outbound.circuitBreaker.failureRate.minRequests",
            check: Check::Minimum(1),
            accept: "1",
            reject: "0",
        },
        Rule {
            field: "outbound.circuitBreaker.failureRate.window",
            check: at_most(caps::BREAKER),
            accept: "1h",
            reject: "2h",
        },
        Rule {
            field: "outbound.circuitBreaker.failureRate.window",
            check: positive(),
            accept: "1s",
            reject: "0s",
        },
        Rule {
            field: "outbound.circuitBreaker.slowCall.duration",
            check: at_most(caps::BREAKER),
            accept: "3600s",
            reject: "3601s",
        },
        Rule {
            field: "outbound.circuitBreaker.slowCall.duration",
            check: positive(),
            accept: "1ms",
            reject: "0s",
        },
        Rule {
            field: "outbound.circuitBreaker.slowCall.percent",
            check: Check::AboveZero,
            accept: "1",
            reject: "0",
        },
        Rule {
            field: "outbound.circuitBreaker.slowCall.percent",
            check: Check::Maximum(100),
            accept: "100",
            reject: "100.01",
        },
        Rule {
            field: "outbound.circuitBreaker.open.base",
            check: at_most(caps::BREAKER),
            accept: "1h",
            reject: "2h",
        },
        Rule {
            field: "outbound.circuitBreaker.open.base",
            check: positive(),
            accept: "1s",
            reject: "0s",
        },
        Rule {
            field: "outbound.circuitBreaker.open.max",
            check: at_most(caps::BREAKER),
            accept: "1h",
            reject: "3h",
        },
        Rule {
            field: "outbound.circuitBreaker.open",
            check: cel(BASE_WITHIN_MAX, "base is longer than max"),
            accept: "{base: 10s, max: 10s}",
            reject: "{base: 10s, max: 9s}",
        },
        // Rate limits and concurrency.
        Rule {
            field: "outbound.rateLimit",
            check: cel(
                "!has(self.perClient)",
                "only inbound rate limits can be per client",
            ),
            accept: "{requestsPerSecond: 5}",
            reject: "{requestsPerSecond: 5, perClient: false}",
        },
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
        Rule {
            field: f("rateLimit.requestsPerSecond"),
            check: Check::Minimum(1),
            accept: "1",
            reject: "0",
        },
        Rule {
            field: f("rateLimit.burst"),
            check: Check::Minimum(1),
            accept: "1",
            reject: "0",
        },
        Rule {
            field: f("concurrency.maxInFlight"),
            check: Check::Minimum(1),
            accept: "1",
            reject: "0",
        },
        Rule {
            field: f("concurrency.maxQueued"),
            check: Check::Maximum(u64::from(caps::MAX_QUEUED)),
            accept: "10000",
            reject: "10001",
        },
    ]
}

/// Retry rules shared by the service's policy and route overrides.
fn retry_rules(retry: &'static str) -> Vec<Rule> {
    let f = |rest: &str| -> &'static str { leak(format!("{retry}.{rest}")) };
    let mut rules = vec![
        Rule {
            field: f("maxRetries"),
            check: Check::Maximum(u64::from(caps::MAX_RETRIES)),
            accept: "10",
            reject: "11",
        },
        Rule {
            field: f("maxReplayBytes"),
            check: Check::Maximum(caps::MAX_REPLAY_BYTES),
            accept: "67108864",
            reject: "67108865",
        },
        Rule {
            field: f("backoff.base"),
            check: at_most(caps::BACKOFF),
            accept: "1m",
            reject: "61s",
        },
        Rule {
            field: f("backoff.base"),
            check: positive(),
            accept: "1ms",
            reject: "0s",
        },
        Rule {
            field: f("backoff.max"),
            check: at_most(caps::BACKOFF),
            accept: "60s",
            reject: "2m",
        },
        Rule {
            field: f("backoff.max"),
            check: positive(),
            accept: "25ms",
            reject: "0s",
        },
        Rule {
            field: f("backoff"),
            check: cel(BASE_WITHIN_MAX, "base is longer than max"),
            accept: "{base: 100ms, max: 100ms}",
            reject: "{base: 101ms, max: 100ms}",
        },
    ];
    if retry == "outbound.retry" {
        rules.extend([
            Rule {
                field: "outbound.retry.budget.window",
                check: at_most(caps::BUDGET_WINDOW),
                accept: "1m",
                reject: "61s",
            },
            Rule {
                field: "outbound.retry.budget.window",
                check: positive(),
                accept: "1s",
                reject: "0s",
            },
            Rule {
                field: "outbound.retry.budget.percent",
                check: Check::Minimum(0),
                accept: "0",
                reject: "-0.5",
            },
            Rule {
                field: "outbound.retry.budget.percent",
                check: Check::Maximum(100),
                accept: "100",
                reject: "100.1",
            },
            Rule {
                field: "outbound.retry.budget",
                check: cel(
                    "!(has(self.percent) && self.percent == 0.0 && has(self.minPerSecond) \
                     && self.minPerSecond == 0)",
                    "percent 0 and minPerSecond 0 allow no retry at all (set maxRetries: 0 to \
                     turn retries off)",
                ),
                accept: "{percent: 0, minPerSecond: 1}",
                reject: "{percent: 0, minPerSecond: 0}",
            },
        ]);
    } else {
        rules.push(Rule {
            field: "outbound.routes[].retry",
            check: cel(
                "!has(self.budget)",
                "the retry budget is per service: set spec.outbound.retry.budget",
            ),
            accept: "{maxRetries: 1}",
            reject: "{budget: {percent: 10}}",
        });
    }
    rules
}

/// Route names and matches.
fn route_rules() -> Vec<Rule> {
    vec![
        Rule {
            field: "outbound.routes[].name",
            check: Check::Pattern(DNS_LABEL),
            accept: "create-1",
            reject: "Create",
        },
        Rule {
            field: "outbound.routes[].name",
            check: cel(
                "self != 'default'",
                "\"default\" is reserved for requests that match no route",
            ),
            accept: "defaults",
            reject: "default",
        },
        Rule {
            field: "outbound.routes[].match",
            check: cel(
                "has(self.path) || has(self.pathPrefix) || (has(self.methods) && size(self.methods) > 0) \
                 || (has(self.headers) && size(self.headers) > 0) || has(self.grpc)",
                "empty match: set path, pathPrefix, methods, headers or grpc (pathPrefix: / matches \
                 everything)",
            ),
            accept: "{methods: [GET]}",
            reject: "{methods: []}",
        },
        Rule {
            field: "outbound.routes[].match",
            check: cel(
                "!(has(self.path) && has(self.pathPrefix))",
                "set either path or pathPrefix, not both",
            ),
            accept: "{path: /a}",
            reject: "{path: /a, pathPrefix: /a}",
        },
        Rule {
            field: "outbound.routes[].match",
            check: cel(
                "!has(self.grpc) || !(has(self.path) || has(self.pathPrefix))",
                "grpc cannot be combined with path or pathPrefix (it matches the path itself)",
            ),
            accept: "{grpc: {method: Charge}}",
            reject: "{grpc: {method: Charge}, pathPrefix: /}",
        },
        Rule {
            field: "outbound.routes[].match.grpc",
            check: cel(
                "has(self.service) || has(self.method)",
                "empty: set service and/or method",
            ),
            accept: "{service: a.B}",
            reject: "{}",
        },
        Rule {
            field: "outbound.routes[].match.path",
            check: Check::Pattern(HTTP_PATH),
            accept: "/a/b",
            reject: "/a?b",
        },
        Rule {
            field: "outbound.routes[].match.pathPrefix",
            check: Check::Pattern(HTTP_PATH),
            accept: "/",
            reject: "a",
        },
        Rule {
            field: "outbound.routes[].match.methods[]",
            check: Check::Pattern(METHOD),
            accept: "M-SEARCH",
            reject: "get",
        },
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

/// Adds every rule to `schema` (the CRD's `openAPIV3Schema`) and drops the
/// `format`s Kubernetes does not know (schemars writes `uint32` for a `u32`;
/// the API server would warn about each).
pub fn apply(schema: &mut Value) -> Result<(), String> {
    drop_unsigned_formats(schema);
    for rule in rules() {
        let node = node_mut(schema, rule.field)?;
        let object = node
            .as_object_mut()
            .ok_or_else(|| format!("{}: the schema is not an object", rule.field))?;
        match &rule.check {
            Check::Maximum(n) => {
                object.insert("maximum".into(), json!(n));
            }
            Check::Minimum(n) => {
                object.insert("minimum".into(), json!(n));
            }
            Check::AboveZero => {
                object.insert("minimum".into(), json!(0));
                object.insert("exclusiveMinimum".into(), json!(true));
            }
            Check::Pattern(p) => {
                object.insert("pattern".into(), json!(p));
            }
            Check::MinItems(n) => {
                object.insert("minItems".into(), json!(n));
            }
            Check::Cel { rule, message } => {
                let list = object
                    .entry("x-kubernetes-validations")
                    .or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.push(json!({"rule": rule, "message": message}));
                }
            }
        }
    }
    Ok(())
}

fn drop_unsigned_formats(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unsigned_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unsigned_formats),
        _ => {}
    }
}

/// The schema node of `field` under `spec`.
pub fn node_mut<'a>(schema: &'a mut Value, field: &str) -> Result<&'a mut Value, String> {
    let mut node = schema
        .pointer_mut("/properties/spec")
        .ok_or("the schema has no spec")?;
    for part in field.split('.') {
        let (name, item) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        node = node
            .get_mut("properties")
            .and_then(|p| p.get_mut(name))
            .ok_or_else(|| format!("{field}: no property {name:?} in the schema"))?;
        if item {
            node = node
                .get_mut("items")
                .ok_or_else(|| format!("{field}: {name:?} is not a list"))?;
        }
    }
    Ok(node)
}
