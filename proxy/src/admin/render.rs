//! The JSON bodies of `/config` and `/endpoints` (typed views, so fields
//! keep their order in the output).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use levee_proto::policy::{EffectiveInbound, EffectiveOutbound, ResiliencePolicy};
use serde::Serialize;

use crate::state::Shared;

/// `/config`: the snapshot in force.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConfigView<'a> {
    version: u64,
    source: &'a str,
    loaded_at: Option<String>,
    namespace: &'a str,
    policies: Vec<PolicyView<'a>>,
    endpoints: BTreeMap<String, Vec<String>>,
    /// The workload certificate (never its key); absent without identity flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<IdentityView>,
}

/// `/config` `identity`: who the proxy is to its peers and the control plane.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdentityView {
    /// `pending` until the first certificate, then `certified`.
    state: &'static str,
    /// `control-plane` (`Identity.Certify`) or `files` (`--identity-cert-file`).
    source: &'static str,
    spiffe_id: Option<String>,
    /// The service the certificate may register (control plane only).
    service: Option<String>,
    not_after: Option<String>,
    /// The certificate's issuer (distinguished name).
    issuer: Option<String>,
}

/// The workload certificate from the control plane, else the identity
/// files' certificate; never a key.
fn identity(shared: &Shared) -> Option<IdentityView> {
    let Some(watch) = shared.identity.get() else {
        let files = shared.tls.credentials()?;
        return Some(IdentityView {
            state: "certified",
            source: "files",
            spiffe_id: Some(files.identity.to_string()),
            service: None,
            not_after: Some(rfc3339(files.not_after)),
            issuer: Some(files.issuer.clone()),
        });
    };
    let current = watch.borrow().clone();
    Some(match current {
        None => IdentityView {
            state: "pending",
            source: "control-plane",
            spiffe_id: None,
            service: None,
            not_after: None,
            issuer: None,
        },
        Some(c) => IdentityView {
            state: "certified",
            source: "control-plane",
            spiffe_id: Some(c.spiffe_id.clone()),
            service: Some(c.service.clone()),
            not_after: Some(rfc3339(c.not_after)),
            issuer: c
                .cert_chain
                .first()
                .and_then(|leaf| crate::tls::verify::issuer(leaf).ok()),
        },
    })
}

/// One policy as written and effective (defaults filled in, each route
/// merged over the service policy).
#[derive(Serialize)]
struct PolicyView<'a> {
    service: String,
    policy: &'a ResiliencePolicy,
    effective: EffectiveView,
}

#[derive(Serialize)]
struct EffectiveView {
    outbound: OutboundView,
    inbound: EffectiveInbound,
}

#[derive(Serialize)]
struct OutboundView {
    default: EffectiveOutbound,
    routes: Vec<EffectiveOutbound>,
}

/// Builds the `/config` view of `shared`'s current snapshot and passes it to `write`.
pub(super) fn config<T>(shared: &Shared, write: impl FnOnce(&ConfigView<'_>) -> T) -> T {
    let snapshot = shared.snapshot.load();
    let policies = snapshot
        .documents
        .iter()
        .map(|p| policy(p, &shared.namespace))
        .collect();
    let endpoints = snapshot
        .endpoints
        .iter()
        .map(|(service, addresses)| (service.to_string(), addresses_text(addresses)))
        .collect();
    write(&ConfigView {
        version: snapshot.version,
        source: &snapshot.source,
        loaded_at: snapshot.loaded_at.map(rfc3339),
        namespace: &shared.namespace,
        policies,
        endpoints,
        identity: identity(shared),
    })
}

fn policy<'a>(policy: &'a ResiliencePolicy, namespace: &str) -> PolicyView<'a> {
    let target = policy.target(namespace);
    let service = match target.service_key() {
        Some(key) => key.to_string(),
        None => format!("{}.{}:*", target.service, target.namespace),
    };
    let outbound = &policy.spec.outbound;
    PolicyView {
        service,
        policy,
        effective: EffectiveView {
            outbound: OutboundView {
                default: outbound.effective_for(None),
                routes: outbound
                    .routes
                    .iter()
                    .map(|r| outbound.effective_for(Some(r)))
                    .collect(),
            },
            inbound: policy.spec.inbound.effective(),
        },
    }
}

/// `/endpoints`: per service, where its endpoints come from and what they are.
#[derive(Serialize)]
pub(super) struct EndpointsView {
    services: BTreeMap<String, ServiceEndpointsView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceEndpointsView {
    /// `static` (a policy file), `control-plane`, `policy-cache` or `dns`.
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    addresses: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_ms: Option<u64>,
}

pub(super) fn endpoints(shared: &Shared) -> EndpointsView {
    let snapshot = shared.snapshot.load();
    let mut services = BTreeMap::new();
    for answer in shared.dns.answers() {
        let (addresses, error) = match &answer.answer {
            Ok(addresses) => (Some(addresses_text(addresses)), None),
            Err(why) => (None, Some(why.clone())),
        };
        let view = ServiceEndpointsView {
            source: "dns",
            host: Some(answer.host),
            addresses,
            error,
            expires_in_ms: Some(u64::try_from(answer.expires_in.as_millis()).unwrap_or(u64::MAX)),
        };
        services.insert(answer.service.to_string(), view);
    }
    // Snapshot endpoints win over DNS, here as in `endpoints::resolve`.
    let source = snapshot_endpoints_source(&snapshot.source);
    for (service, addresses) in &snapshot.endpoints {
        let view = ServiceEndpointsView {
            source,
            host: None,
            addresses: Some(addresses_text(addresses)),
            error: None,
            expires_in_ms: None,
        };
        services.insert(service.to_string(), view);
    }
    EndpointsView { services }
}

/// Where a snapshot's endpoints come from, by the snapshot's `source`
/// (`control-plane:URL`, `policy-cache:FILE …`, else a policy file).
fn snapshot_endpoints_source(snapshot_source: &str) -> &'static str {
    if snapshot_source.starts_with("control-plane:") {
        "control-plane"
    } else if snapshot_source.starts_with("policy-cache:") {
        "policy-cache"
    } else {
        "static"
    }
}

fn addresses_text(addresses: &[SocketAddr]) -> Vec<String> {
    addresses.iter().map(SocketAddr::to_string).collect()
}

/// `2026-11-26T12:40:05Z` (UTC, whole seconds).
pub(super) fn rfc3339(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_696_805), "2026-11-26T12:40:05Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
