//! Rust policy model → `levee.v1` protobuf messages (infallible).

use crate::v1 as pb;

use super::document::{Document, EndpointsSpec, ObjectMeta, ResiliencePolicy, ServiceEndpoints};
use super::duration::Duration;
use super::outbound::{
    CircuitBreaker, Concurrency, InboundPolicy, OutboundPolicy, RateLimit, Timeouts,
};
use super::retry::{RetryBackoff, RetryBudget, RetryPolicy};
use super::route::{Route, RouteMatch};

pub(super) fn duration(d: Duration) -> prost_types::Duration {
    let d = d.get();
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Always < 1e9.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn dur(d: Option<Duration>) -> Option<prost_types::Duration> {
    d.map(duration)
}

fn list<T: ToString>(items: &Option<Vec<T>>) -> Option<pb::StringList> {
    items.as_ref().map(|items| pb::StringList {
        items: items.iter().map(ToString::to_string).collect(),
    })
}

impl From<&ObjectMeta> for pb::ObjectMeta {
    fn from(m: &ObjectMeta) -> Self {
        pb::ObjectMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
        }
    }
}

impl From<&ResiliencePolicy> for pb::ResiliencePolicy {
    fn from(p: &ResiliencePolicy) -> Self {
        let s = &p.spec;
        pb::ResiliencePolicy {
            metadata: Some((&p.metadata).into()),
            spec: Some(pb::PolicySpec {
                target: Some(pb::Target {
                    service: s.target.service.clone(),
                    port: s.target.port.map(u32::from),
                }),
                outbound: Some((&s.outbound).into()),
                inbound: Some((&s.inbound).into()),
            }),
        }
    }
}

impl From<ResiliencePolicy> for pb::ResiliencePolicy {
    fn from(p: ResiliencePolicy) -> Self {
        (&p).into()
    }
}

impl From<&OutboundPolicy> for pb::OutboundPolicy {
    fn from(o: &OutboundPolicy) -> Self {
        pb::OutboundPolicy {
            timeouts: Some(timeouts(&o.timeouts)),
            retry: o.retry.as_ref().map(retry),
            circuit_breaker: o.circuit_breaker.as_ref().map(breaker),
            rate_limit: o.rate_limit.as_ref().map(rate_limit),
            concurrency: o.concurrency.as_ref().map(concurrency),
            routes: o.routes.iter().map(route).collect(),
        }
    }
}

impl From<&InboundPolicy> for pb::InboundPolicy {
    fn from(i: &InboundPolicy) -> Self {
        pb::InboundPolicy {
            rate_limit: i.rate_limit.as_ref().map(rate_limit),
            concurrency: i.concurrency.as_ref().map(concurrency),
            timeouts: Some(pb::InboundTimeouts {
                request: dur(i.timeouts.request),
            }),
            mtls: i.mtls.as_ref().map(|m| pb::InboundMtls {
                mode: m.mode.map(|mode| mode.as_str().to_owned()),
                allowed_clients: m.allowed_clients.as_ref().map(|ids| pb::StringList {
                    items: ids.iter().map(ToString::to_string).collect(),
                }),
            }),
        }
    }
}

fn timeouts(t: &Timeouts) -> pb::Timeouts {
    pb::Timeouts {
        request: dur(t.request),
        per_try: dur(t.per_try),
        connect: dur(t.connect),
        idle: dur(t.idle),
    }
}

fn retry(r: &RetryPolicy) -> pb::RetryPolicy {
    pb::RetryPolicy {
        max_retries: r.max_retries,
        on: list(&r.on),
        grpc_on: list(&r.grpc_on),
        backoff: r.backoff.as_ref().map(|b: &RetryBackoff| pb::Backoff {
            base: dur(b.base),
            max: dur(b.max),
        }),
        budget: r.budget.as_ref().map(|b: &RetryBudget| pb::RetryBudget {
            percent: b.percent,
            min_per_second: b.min_per_second,
            window: dur(b.window),
        }),
        retry_non_idempotent: r.retry_non_idempotent,
        max_replay_bytes: r.max_replay_bytes,
        honor_retry_after: r.honor_retry_after,
    }
}

fn breaker(b: &CircuitBreaker) -> pb::CircuitBreaker {
    pb::CircuitBreaker {
        failure_on: list(&b.failure_on),
        consecutive_failures: b.consecutive_failures,
        failure_rate: b.failure_rate.as_ref().map(|f| pb::FailureRate {
            percent: f.percent,
            min_requests: f.min_requests,
            window: dur(f.window),
        }),
        slow_call: b.slow_call.as_ref().map(|s| pb::SlowCall {
            duration: Some(duration(s.duration)),
            percent: s.percent,
        }),
        open: b.open.as_ref().map(|o| pb::OpenDuration {
            base: dur(o.base),
            max: dur(o.max),
        }),
        half_open_probes: b.half_open_probes,
        max_ejected_percent: b.max_ejected_percent,
    }
}

fn rate_limit(r: &RateLimit) -> pb::RateLimit {
    pb::RateLimit {
        requests_per_second: r.requests_per_second,
        burst: r.burst,
        per_client: r.per_client,
    }
}

fn concurrency(c: &Concurrency) -> pb::Concurrency {
    pb::Concurrency {
        max_in_flight: c.max_in_flight,
        max_queued: c.max_queued,
    }
}

fn route(r: &Route) -> pb::Route {
    let m: &RouteMatch = &r.r#match;
    pb::Route {
        name: r.name.clone(),
        r#match: Some(pb::RouteMatch {
            path_prefix: m.path_prefix.clone(),
            path: m.path.clone(),
            methods: m.methods.clone(),
            headers: m
                .headers
                .iter()
                .map(|h| pb::HeaderMatch {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            grpc: m.grpc.as_ref().map(|g| pb::GrpcMatch {
                service: g.service.clone(),
                method: g.method.clone(),
            }),
        }),
        timeouts: Some(pb::RouteTimeouts {
            request: dur(r.timeouts.request),
            per_try: dur(r.timeouts.per_try),
        }),
        retry: r.retry.as_ref().map(retry),
    }
}

impl From<&ServiceEndpoints> for pb::ServiceEndpoints {
    fn from(e: &ServiceEndpoints) -> Self {
        let s: &EndpointsSpec = &e.spec;
        pb::ServiceEndpoints {
            metadata: Some((&e.metadata).into()),
            spec: Some(pb::EndpointsSpec {
                service: s.service.clone(),
                port: u32::from(s.port),
                addresses: s.addresses.iter().map(ToString::to_string).collect(),
                virtual_ips: s.virtual_ips.iter().map(ToString::to_string).collect(),
                app_protocol: s
                    .app_protocol
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_default(),
                identity: s
                    .identity
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            }),
        }
    }
}

impl From<ServiceEndpoints> for pb::ServiceEndpoints {
    fn from(e: ServiceEndpoints) -> Self {
        (&e).into()
    }
}

impl From<&Document> for pb::Document {
    fn from(d: &Document) -> Self {
        pb::Document {
            kind: Some(match d {
                Document::Policy(p) => pb::document::Kind::Policy(p.into()),
                Document::Endpoints(e) => pb::document::Kind::Endpoints(e.into()),
            }),
        }
    }
}

impl From<Document> for pb::Document {
    fn from(d: Document) -> Self {
        (&d).into()
    }
}
