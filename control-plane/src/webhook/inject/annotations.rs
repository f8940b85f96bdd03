//! The pod annotations the injector reads, and their checks. A value the
//! injector cannot use is a [`Refusal`]: the pod is admitted uninjected with
//! a warning that names the annotation, rather than created with a sidecar
//! the API server or the kubelet would then reject.

use std::collections::BTreeMap;

use super::Refusal;

/// `enabled` or `disabled`: opts a pod in (in a namespace without the label)
/// or out (`disabled` always wins).
pub const INJECT: &str = "levee.dev/inject";
/// Set on every injected pod; a pod carrying it is returned unchanged.
pub const INJECTED: &str = "levee.dev/injected";
/// The proxy's resources (Kubernetes quantities).
pub const CPU_REQUEST: &str = "levee.dev/proxy-cpu-request";
pub const CPU_LIMIT: &str = "levee.dev/proxy-cpu-limit";
pub const MEMORY_REQUEST: &str = "levee.dev/proxy-memory-request";
pub const MEMORY_LIMIT: &str = "levee.dev/proxy-memory-limit";
/// Extra ports or ranges (`9000,9100-9199`) that bypass the proxy, passed to
/// `init-iptables --skip-inbound-ports` / `--skip-outbound-ports`.
pub const SKIP_INBOUND_PORTS: &str = "levee.dev/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "levee.dev/skip-outbound-ports";

/// Defaults: enough for an idle proxy, a memory limit that catches a leak;
/// no CPU limit (throttling a proxy adds latency to every call).
pub const DEFAULT_CPU_REQUEST: &str = "10m";
pub const DEFAULT_MEMORY_REQUEST: &str = "16Mi";
pub const DEFAULT_MEMORY_LIMIT: &str = "64Mi";

/// What the pod's `levee.dev/inject` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Enabled,
    Disabled,
    Unset,
}

/// Reads `levee.dev/inject`; any other value is a refusal (a typo should
/// not silently decide).
pub fn choice(annotations: &BTreeMap<String, String>) -> Result<Choice, Refusal> {
    match annotations.get(INJECT).map(String::as_str) {
        None => Ok(Choice::Unset),
        Some("enabled") => Ok(Choice::Enabled),
        Some("disabled") => Ok(Choice::Disabled),
        Some(other) => Err(Refusal(format!(
            "annotation {INJECT}: {other:?} is not enabled or disabled"
        ))),
    }
}

/// The proxy's requests and limits: `(requests, limits)` by resource name.
pub type Resources = (BTreeMap<String, String>, BTreeMap<String, String>);

/// Requests and limits from the annotations, defaults filled in.
pub fn resources(annotations: &BTreeMap<String, String>) -> Result<Resources, Refusal> {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for (key, resource, default, is_limit) in [
        (CPU_REQUEST, "cpu", Some(DEFAULT_CPU_REQUEST), false),
        (
            MEMORY_REQUEST,
            "memory",
            Some(DEFAULT_MEMORY_REQUEST),
            false,
        ),
        (CPU_LIMIT, "cpu", None, true),
        (MEMORY_LIMIT, "memory", Some(DEFAULT_MEMORY_LIMIT), true),
    ] {
        let value = match annotations.get(key) {
            Some(value) if is_quantity(value) => value.as_str(),
            Some(value) => {
                return Err(Refusal(format!(
                    "annotation {key}: {value:?} is not a Kubernetes quantity (e.g. 100m, 64Mi)"
                )));
            }
            None => match default {
                Some(default) => default,
                None => continue,
            },
        };
        let into = if is_limit { &mut limits } else { &mut requests };
        into.insert(resource.to_owned(), value.to_owned());
    }
    Ok((requests, limits))
}

/// Kubernetes' quantity grammar: a decimal number and an optional binary
/// (`Ki`…`Ei`), decimal (`m`, `k`, `M`…`E`) or exponent (`e3`) suffix.
fn is_quantity(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let digits_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && !text.starts_with('-');
    let suffix_ok = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    number_ok && suffix_ok && text.len() <= 64
}

/// A skip-ports annotation as `(first, last)` ranges; absent is empty.
pub fn port_ranges(
    annotations: &BTreeMap<String, String>,
    key: &str,
) -> Result<Vec<(u16, u16)>, Refusal> {
    let Some(text) = annotations.get(key) else {
        return Ok(Vec::new());
    };
    let bad = || {
        Refusal(format!(
            "annotation {key}: {text:?} is not a list of ports or ranges (e.g. 9000,9100-9199)"
        ))
    };
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p != 0);
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (first, last) = match part.split_once('-') {
                Some((first, last)) => (port(first).ok_or_else(bad)?, port(last).ok_or_else(bad)?),
                None => {
                    let p = port(part).ok_or_else(bad)?;
                    (p, p)
                }
            };
            if first > last {
                return Err(bad());
            }
            Ok((first, last))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for ok in [
            "10m", "1", "0.5", "64Mi", "1Gi", "2k", "1e3", "1.5E-2", "+3",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in [
            "", "m", "ten", "64MB", "1..2", "-1", ".", "1Mi ", "1e", "5mi",
        ] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn resources_take_annotations_over_defaults_and_refuse_garbage() {
        let (requests, limits) = resources(&with(&[(CPU_LIMIT, "500m")])).unwrap();
        assert_eq!(requests, with(&[("cpu", "10m"), ("memory", "16Mi")]));
        assert_eq!(limits, with(&[("cpu", "500m"), ("memory", "64Mi")]));
        let refused = resources(&with(&[(MEMORY_LIMIT, "lots")])).unwrap_err();
        assert_eq!(
            refused.0,
            "annotation levee.dev/proxy-memory-limit: \"lots\" is not a Kubernetes quantity (e.g. 100m, 64Mi)"
        );
    }

    #[test]
    fn port_ranges_parse_and_refuse() {
        let key = SKIP_INBOUND_PORTS;
        assert_eq!(
            port_ranges(&with(&[(key, "9000, 9100-9199")]), key).unwrap(),
            vec![(9000, 9000), (9100, 9199)]
        );
        for bad in ["0", "70000", "9-1", "http", "1-"] {
            assert!(port_ranges(&with(&[(key, bad)]), key).is_err(), "{bad}");
        }
        assert_eq!(port_ranges(&with(&[]), key).unwrap(), vec![]);
    }
}
