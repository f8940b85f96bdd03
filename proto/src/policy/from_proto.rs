//! `levee.v1` protobuf messages → Rust policy model. Fallible: the message is
//! decoded (condition names, durations, ports, addresses) and then validated
//! exactly like a YAML document, with the same field paths.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::v1 as pb;

use super::app_protocol::AppProtocol;
use super::document::{
    Document, EndpointsSpec, KIND_ENDPOINTS, KIND_POLICY, ObjectMeta, PolicySpec, ResiliencePolicy,
    ServiceEndpoints, Target,
};
use super::duration::Duration;
use super::error::{PolicyErrors, Problems};
use super::mtls::{InboundMtls, MtlsMode};
use super::outbound::{
    CircuitBreaker, Concurrency, FailureRate, InboundPolicy, InboundTimeouts, OpenDuration,
    OutboundPolicy, RateLimit, SlowCall, Timeouts,
};
use super::retry::{RetryBackoff, RetryBudget, RetryPolicy};
use super::route::{GrpcMatch, HeaderMatch, Route, RouteMatch, RouteTimeouts};
use super::spiffe::SpiffeId;
use super::validate;

fn dur(path: &str, d: Option<prost_types::Duration>, p: &mut Problems) -> Option<Duration> {
    let d = d?;
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(s), Ok(n)) if n < 1_000_000_000 => Some(std::time::Duration::new(s, n).into()),
        _ => {
            p.add(
                path,
                format!(
                    "{}s {}ns is not a valid non-negative duration",
                    d.seconds, d.nanos
                ),
            );
            None
        }
    }
}

fn list<T: FromStr<Err = String>>(
    path: &str,
    l: Option<pb::StringList>,
    p: &mut Problems,
) -> Option<Vec<T>> {
    let items = l?.items;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.parse() {
            Ok(v) => out.push(v),
            Err(e) => p.add(format!("{path}[{i}]"), e),
        }
    }
    Some(out)
}

fn port(path: &str, n: u32, p: &mut Problems) -> u16 {
    u16::try_from(n).unwrap_or_else(|_| {
        p.add(path, format!("port {n} is outside 1-65535"));
        0
    })
}

fn meta(m: Option<pb::ObjectMeta>, p: &mut Problems) -> ObjectMeta {
    let Some(m) = m else {
        p.add("metadata", "missing");
        return ObjectMeta::default();
    };
    ObjectMeta {
        name: m.name,
        namespace: m.namespace,
    }
}

fn label(kind: &str, m: Option<&pb::ObjectMeta>) -> Option<String> {
    let m = m?;
    Some(match &m.namespace {
        Some(ns) => format!("{kind} {ns}/{}", m.name),
        None => format!("{kind} {}", m.name),
    })
}

/// Validates a decoded document; `Ok` only when decoding and validation found nothing.
fn finish(doc: Document, mut p: Problems) -> Result<Document, PolicyErrors> {
    if p.errors.is_empty() {
        validate::document(&doc, &mut p);
    }
    if p.errors.is_empty() {
        Ok(doc)
    } else {
        Err(PolicyErrors(p.errors))
    }
}

impl TryFrom<pb::ResiliencePolicy> for ResiliencePolicy {
    type Error = PolicyErrors;

    fn try_from(m: pb::ResiliencePolicy) -> Result<Self, PolicyErrors> {
        let mut p = Problems::new(0, label(KIND_POLICY, m.metadata.as_ref()));
        let metadata = meta(m.metadata, &mut p);
        let spec = m.spec.unwrap_or_else(|| {
            p.add("spec", "missing");
            pb::PolicySpec::default()
        });
        let target = spec.target.unwrap_or_else(|| {
            p.add("spec.target", "missing");
            pb::Target::default()
        });
        let policy = ResiliencePolicy {
            metadata,
            spec: PolicySpec {
                target: Target {
                    service: target.service,
                    port: target.port.map(|n| port("spec.target.port", n, &mut p)),
                },
                outbound: outbound(spec.outbound.unwrap_or_default(), &mut p),
                inbound: inbound(spec.inbound.unwrap_or_default(), &mut p),
            },
        };
        match finish(Document::Policy(policy), p)? {
            Document::Policy(policy) => Ok(policy),
            Document::Endpoints(_) => Err(PolicyErrors::default()),
        }
    }
}

fn outbound(o: pb::OutboundPolicy, p: &mut Problems) -> OutboundPolicy {
    let t = o.timeouts.unwrap_or_default();
    let path = "spec.outbound";
    OutboundPolicy {
        timeouts: Timeouts {
            request: dur(&format!("{path}.timeouts.request"), t.request, p),
            per_try: dur(&format!("{path}.timeouts.perTry"), t.per_try, p),
            connect: dur(&format!("{path}.timeouts.connect"), t.connect, p),
            idle: dur(&format!("{path}.timeouts.idle"), t.idle, p),
        },
        retry: o.retry.map(|r| retry(&format!("{path}.retry"), r, p)),
        circuit_breaker: o
            .circuit_breaker
            .map(|b| breaker(&format!("{path}.circuitBreaker"), b, p)),
        rate_limit: o.rate_limit.map(rate_limit),
        concurrency: o.concurrency.map(concurrency),
        routes: o
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| route(&format!("{path}.routes[{i}]"), r, p))
            .collect(),
    }
}

fn inbound(i: pb::InboundPolicy, p: &mut Problems) -> InboundPolicy {
    let t = i.timeouts.unwrap_or_default();
    InboundPolicy {
        rate_limit: i.rate_limit.map(rate_limit),
        concurrency: i.concurrency.map(concurrency),
        timeouts: InboundTimeouts {
            request: dur("spec.inbound.timeouts.request", t.request, p),
        },
        mtls: i.mtls.map(|m| mtls(m, p)),
    }
}

fn mtls(m: pb::InboundMtls, p: &mut Problems) -> InboundMtls {
    let path = "spec.inbound.mtls";
    let mode = m.mode.and_then(|text| {
        let mode = MtlsMode::parse(&text);
        if mode.is_none() {
            p.add(
                format!("{path}.mode"),
                format!("{text:?} is not strict or permissive"),
            );
        }
        mode
    });
    let allowed_clients = m.allowed_clients.map(|list| {
        list.items
            .iter()
            .enumerate()
            .filter_map(|(i, text)| spiffe_id(&format!("{path}.allowedClients[{i}]"), text, p))
            .collect()
    });
    InboundMtls {
        mode,
        allowed_clients,
    }
}

/// `text` as a SPIFFE ID, or a problem at `path`.
fn spiffe_id(path: &str, text: &str, p: &mut Problems) -> Option<SpiffeId> {
    SpiffeId::parse(text).map_err(|why| p.add(path, why)).ok()
}

fn retry(path: &str, r: pb::RetryPolicy, p: &mut Problems) -> RetryPolicy {
    RetryPolicy {
        max_retries: r.max_retries,
        on: list(&format!("{path}.on"), r.on, p),
        grpc_on: list(&format!("{path}.grpcOn"), r.grpc_on, p),
        backoff: r.backoff.map(|b| RetryBackoff {
            base: dur(&format!("{path}.backoff.base"), b.base, p),
            max: dur(&format!("{path}.backoff.max"), b.max, p),
        }),
        budget: r.budget.map(|b| RetryBudget {
            percent: b.percent,
            min_per_second: b.min_per_second,
            window: dur(&format!("{path}.budget.window"), b.window, p),
        }),
        retry_non_idempotent: r.retry_non_idempotent,
        max_replay_bytes: r.max_replay_bytes,
        honor_retry_after: r.honor_retry_after,
    }
}

fn breaker(path: &str, b: pb::CircuitBreaker, p: &mut Problems) -> CircuitBreaker {
    CircuitBreaker {
        failure_on: list(&format!("{path}.failureOn"), b.failure_on, p),
        consecutive_failures: b.consecutive_failures,
        failure_rate: b.failure_rate.map(|f| FailureRate {
            percent: f.percent,
            min_requests: f.min_requests,
            window: dur(&format!("{path}.failureRate.window"), f.window, p),
        }),
        slow_call: b.slow_call.map(|s| {
            let sp = format!("{path}.slowCall.duration");
            let duration = dur(&sp, s.duration, p).unwrap_or_else(|| {
                p.add(&sp, "missing");
                Duration::ZERO
            });
            SlowCall {
                duration,
                percent: s.percent,
            }
        }),
        open: b.open.map(|o| OpenDuration {
            base: dur(&format!("{path}.open.base"), o.base, p),
            max: dur(&format!("{path}.open.max"), o.max, p),
        }),
        half_open_probes: b.half_open_probes,
        max_ejected_percent: b.max_ejected_percent,
    }
}

fn rate_limit(r: pb::RateLimit) -> RateLimit {
    RateLimit {
        requests_per_second: r.requests_per_second,
        burst: r.burst,
        per_client: r.per_client,
    }
}

fn concurrency(c: pb::Concurrency) -> Concurrency {
    Concurrency {
        max_in_flight: c.max_in_flight,
        max_queued: c.max_queued,
    }
}

fn route(path: &str, r: pb::Route, p: &mut Problems) -> Route {
    let m = r.r#match.unwrap_or_default();
    let t = r.timeouts.unwrap_or_default();
    Route {
        name: r.name,
        r#match: RouteMatch {
            path_prefix: m.path_prefix,
            path: m.path,
            methods: m.methods,
            headers: m
                .headers
                .into_iter()
                .map(|h| HeaderMatch {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            grpc: m.grpc.map(|g| GrpcMatch {
                service: g.service,
                method: g.method,
            }),
        },
        timeouts: RouteTimeouts {
            request: dur(&format!("{path}.timeouts.request"), t.request, p),
            per_try: dur(&format!("{path}.timeouts.perTry"), t.per_try, p),
        },
        retry: r.retry.map(|rr| retry(&format!("{path}.retry"), rr, p)),
    }
}

impl TryFrom<pb::ServiceEndpoints> for ServiceEndpoints {
    type Error = PolicyErrors;

    fn try_from(m: pb::ServiceEndpoints) -> Result<Self, PolicyErrors> {
        let mut p = Problems::new(0, label(KIND_ENDPOINTS, m.metadata.as_ref()));
        let metadata = meta(m.metadata, &mut p);
        let spec = m.spec.unwrap_or_else(|| {
            p.add("spec", "missing");
            pb::EndpointsSpec::default()
        });
        let mut addresses = Vec::with_capacity(spec.addresses.len());
        for (i, a) in spec.addresses.iter().enumerate() {
            match a.parse::<SocketAddr>() {
                Ok(addr) => addresses.push(addr),
                Err(_) => p.add(
                    format!("spec.addresses[{i}]"),
                    format!("{a:?} is not an ip:port address"),
                ),
            }
        }
        let mut virtual_ips = Vec::with_capacity(spec.virtual_ips.len());
        for (i, ip) in spec.virtual_ips.iter().enumerate() {
            match ip.parse::<IpAddr>() {
                Ok(ip) => virtual_ips.push(ip),
                Err(_) => p.add(
                    format!("spec.virtualIPs[{i}]"),
                    format!("{ip:?} is not an IP address"),
                ),
            }
        }
        let app_protocol = match spec.app_protocol.as_str() {
            "" => None,
            text => match text.parse::<AppProtocol>() {
                Ok(a) => Some(a),
                Err(reason) => {
                    p.add("spec.appProtocol", reason);
                    None
                }
            },
        };
        let endpoints = ServiceEndpoints {
            metadata,
            spec: EndpointsSpec {
                service: spec.service,
                port: port("spec.port", spec.port, &mut p),
                addresses,
                virtual_ips,
                app_protocol,
                identity: (!spec.identity.is_empty())
                    .then(|| spiffe_id("spec.identity", &spec.identity, &mut p))
                    .flatten(),
            },
        };
        match finish(Document::Endpoints(endpoints), p)? {
            Document::Endpoints(e) => Ok(e),
            Document::Policy(_) => Err(PolicyErrors::default()),
        }
    }
}

impl TryFrom<pb::Document> for Document {
    type Error = PolicyErrors;

    fn try_from(m: pb::Document) -> Result<Self, PolicyErrors> {
        match m.kind {
            Some(pb::document::Kind::Policy(p)) => {
                ResiliencePolicy::try_from(p).map(Document::Policy)
            }
            Some(pb::document::Kind::Endpoints(e)) => {
                ServiceEndpoints::try_from(e).map(Document::Endpoints)
            }
            None => {
                let mut p = Problems::new(0, None);
                p.add("kind", "missing: a Document holds a policy or endpoints");
                Err(PolicyErrors(p.errors))
            }
        }
    }
}

#[cfg(test)]
mod tests;
