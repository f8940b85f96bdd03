//! Validation of `spec.outbound.routes`: names, matches, and the timeouts
//! and backoff that result from merging each route over the service policy.

use std::collections::HashMap;

use super::super::effective::{DEFAULT_ROUTE, merge_retry};
use super::super::error::Problems;
use super::super::outbound::OutboundPolicy;
use super::super::route::{Route, RouteMatch};
use super::super::service_key::is_dns_label;
use super::{backoff_order, longer, retry};

pub(super) fn routes(o: &OutboundPolicy, p: &mut Problems) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, r) in o.routes.iter().enumerate() {
        let path = format!("spec.outbound.routes[{i}]");
        route_name(&path, r, i, &mut names, p);
        route_match(&format!("{path}.match"), &r.r#match, p);
        merged_timeouts(&path, o, r, p);
        if let Some(rr) = &r.retry {
            let rp = format!("{path}.retry");
            retry(&rp, rr, false, p);
            if rr.budget.is_some() {
                p.add(
                    format!("{rp}.budget"),
                    "the retry budget is per service: set spec.outbound.retry.budget",
                );
            }
            if let Some(b) = &rr.backoff {
                let merged = merge_retry(o.retry.as_ref(), Some(rr));
                let mb = merged.backoff.unwrap_or_default();
                let note = if b.base.is_some() && b.max.is_some() {
                    ""
                } else {
                    " (after merging with spec.outbound.retry.backoff)"
                };
                backoff_order(&format!("{rp}.backoff"), mb.base, mb.max, note, p);
            }
        }
    }
}

fn route_name<'a>(
    path: &str,
    r: &'a Route,
    i: usize,
    names: &mut HashMap<&'a str, usize>,
    p: &mut Problems,
) {
    let np = format!("{path}.name");
    if r.name.is_empty() {
        p.add(np, "missing");
        return;
    }
    if !is_dns_label(&r.name) {
        p.add(
            &np,
            format!(
                "{:?} is not a route name ({})",
                r.name,
                super::names::LABEL_RULE
            ),
        );
    } else if r.name == DEFAULT_ROUTE {
        p.add(
            &np,
            "\"default\" is reserved for requests that match no route",
        );
    }
    if let Some(first) = names.insert(&r.name, i) {
        // Keep pointing at the first occurrence.
        names.insert(&r.name, first);
        p.add(
            np,
            format!("duplicate route name {:?} (also routes[{first}])", r.name),
        );
    }
}

fn route_match(path: &str, m: &RouteMatch, p: &mut Problems) {
    if m.is_empty() {
        p.add(
            path,
            "empty match: set path, pathPrefix, methods, headers or grpc \
             (pathPrefix: / matches everything)",
        );
        return;
    }
    if m.path.is_some() && m.path_prefix.is_some() {
        p.add(path, "set either path or pathPrefix, not both");
    }
    for (field, value) in [("path", &m.path), ("pathPrefix", &m.path_prefix)] {
        if let Some(v) = value
            && (!v.starts_with('/') || v.contains(['?', '#']) || v.contains(char::is_whitespace))
        {
            p.add(
                format!("{path}.{field}"),
                format!("{v:?} must start with '/' and hold no query, fragment or spaces"),
            );
        }
    }
    for (i, method) in m.methods.iter().enumerate() {
        if !is_method(method) {
            let hint = if is_method(&method.to_ascii_uppercase()) {
                format!(" (methods are upper case: {})", method.to_ascii_uppercase())
            } else {
                String::new()
            };
            p.add(
                format!("{path}.methods[{i}]"),
                format!("{method:?} is not an HTTP method{hint}"),
            );
        } else if m.methods[..i].contains(method) {
            p.add(
                format!("{path}.methods[{i}]"),
                format!("{method} is listed twice"),
            );
        }
    }
    for (i, h) in m.headers.iter().enumerate() {
        let hp = format!("{path}.headers[{i}]");
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            p.add(
                format!("{hp}.name"),
                format!("{:?} is not a header name", h.name),
            );
        }
        if let Some(v) = &h.value
            && http::HeaderValue::from_str(v).is_err()
        {
            p.add(
                format!("{hp}.value"),
                format!("{v:?} is not a header value"),
            );
        }
    }
    if let Some(g) = &m.grpc {
        let gp = format!("{path}.grpc");
        if m.path.is_some() || m.path_prefix.is_some() {
            p.add(
                &gp,
                "grpc cannot be combined with path or pathPrefix (it matches the path itself)",
            );
        }
        if g.service.is_none() && g.method.is_none() {
            p.add(&gp, "empty: set service and/or method");
        }
        if let Some(s) = &g.service
            && !is_grpc_ident(s, true)
        {
            p.add(
                format!("{gp}.service"),
                format!("{s:?} is not a fully-qualified gRPC service name (e.g. shop.v1.Payments)"),
            );
        }
        if let Some(meth) = &g.method
            && !is_grpc_ident(meth, false)
        {
            p.add(
                format!("{gp}.method"),
                format!("{meth:?} is not a gRPC method name (e.g. Charge)"),
            );
        }
    }
}

/// Upper-case token: `GET`, `POST`, `PURGE`, `MKCOL`…
fn is_method(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 32
        && m.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// Protobuf identifiers (`a-zA-Z0-9_`, not starting with a digit), dot-separated when `dotted`.
fn is_grpc_ident(s: &str, dotted: bool) -> bool {
    let ident = |part: &str| {
        part.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if dotted {
        s.split('.').all(ident)
    } else {
        ident(s)
    }
}

/// `perTry > request` once the route's timeouts are merged over the service's.
fn merged_timeouts(path: &str, o: &OutboundPolicy, r: &Route, p: &mut Problems) {
    let request = r.timeouts.request.or(o.timeouts.request);
    let per_try = r.timeouts.per_try.or(o.timeouts.per_try);
    if r.timeouts.is_empty() {
        return; // nothing new: the service-level check covers it
    }
    if let Some((t, req)) = longer(per_try, request) {
        let (field, from) = if r.timeouts.per_try.is_some() {
            let from = if r.timeouts.request.is_some() {
                ""
            } else {
                " (spec.outbound.timeouts.request)"
            };
            ("perTry", from)
        } else {
            ("request", " (spec.outbound.timeouts.perTry)")
        };
        let msg = if field == "perTry" {
            format!("perTry {t} is longer than request {req}{from}")
        } else {
            format!("request {req} is shorter than perTry {t}{from}")
        };
        p.add(format!("{path}.timeouts.{field}"), msg);
    }
}

#[cfg(test)]
mod tests;
