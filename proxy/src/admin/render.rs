//! The JSON bodies of `/config` and `/endpoints`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use levee_proto::policy::ResiliencePolicy;
use serde::Serialize;
use serde_json::{Value, json};

use crate::state::Shared;

/// `/config`: the snapshot in force. Each policy appears as written and
/// effective (defaults filled in, each route merged over the service policy).
pub(super) fn config(shared: &Shared) -> Value {
    let snapshot = shared.snapshot.load();
    let policies: Vec<Value> = snapshot
        .documents
        .iter()
        .map(|p| policy(p, &shared.namespace))
        .collect();
    let endpoints: BTreeMap<String, Vec<String>> = snapshot
        .endpoints
        .iter()
        .map(|(service, addresses)| (service.to_string(), addresses_text(addresses)))
        .collect();
    json!({
        "version": snapshot.version,
        "source": snapshot.source,
        "loadedAt": snapshot.loaded_at.map(rfc3339),
        "namespace": shared.namespace,
        "policies": policies,
        "endpoints": endpoints,
    })
}

fn policy(policy: &ResiliencePolicy, namespace: &str) -> Value {
    let service = match policy.service_key(namespace) {
        Some(key) => key.to_string(),
        None => format!(
            "{}.{}:*",
            policy.spec.target.service,
            policy.metadata.namespace_or(namespace)
        ),
    };
    let outbound = &policy.spec.outbound;
    let routes: Vec<Value> = outbound
        .routes
        .iter()
        .map(|route| to_json(&outbound.effective_for(Some(route))))
        .collect();
    json!({
        "service": service,
        "policy": to_json(policy),
        "effective": {
            "outbound": { "default": to_json(&outbound.effective_for(None)), "routes": routes },
            "inbound": to_json(&policy.spec.inbound.effective()),
        },
    })
}

/// `/endpoints`: per service, where its endpoints come from and what they are.
pub(super) fn endpoints(shared: &Shared) -> Value {
    let snapshot = shared.snapshot.load();
    let mut services: BTreeMap<String, Value> = BTreeMap::new();
    for answer in shared.dns.answers() {
        let mut entry = json!({
            "source": "dns",
            "host": answer.host,
            "expiresInMs": u64::try_from(answer.expires_in.as_millis()).unwrap_or(u64::MAX),
        });
        match &answer.answer {
            Ok(addresses) => entry["addresses"] = json!(addresses_text(addresses)),
            Err(why) => entry["error"] = json!(why),
        }
        services.insert(answer.service.to_string(), entry);
    }
    // Static endpoints win over DNS, here as in `endpoints::resolve`.
    for (service, addresses) in &snapshot.endpoints {
        services.insert(
            service.to_string(),
            json!({"source": "static", "addresses": addresses_text(addresses)}),
        );
    }
    json!({ "services": services })
}

fn addresses_text(addresses: &[SocketAddr]) -> Vec<String> {
    addresses.iter().map(SocketAddr::to_string).collect()
}

fn to_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|error| json!({ "error": error.to_string() }))
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
