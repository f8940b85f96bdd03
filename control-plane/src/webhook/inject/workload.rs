//! Who the injected proxy works for, and where it sends its traces: read
//! from the pod's labels and annotations at admission time, handed to the
//! proxy as environment variables.
//!
//! - **Service** (`LEVEE_SERVICE`, the proxy's `--service`): the name of the
//!   Kubernetes Service whose `ResiliencePolicy` `spec.inbound` this pod's
//!   inbound side enforces, and its `service` metric label. From the
//!   annotation `levee.dev/service`, else the label
//!   `app.kubernetes.io/name`, else the label `app`. Without any of them the
//!   proxy still forwards, but no inbound policy applies (label `unknown`).
//! - **Traces**: the control plane's `--proxy-trace-collector`, or the
//!   pod's `levee.dev/trace-collector` (`none` turns it off for the pod),
//!   becomes `OTEL_EXPORTER_OTLP_ENDPOINT`, with `OTEL_SERVICE_NAME` the
//!   service and `levee.dev/trace-sample-ratio` as
//!   `OTEL_TRACES_SAMPLER_ARG`.
//! - **Access log**: the control plane's `--proxy-access-log`, or the pod's
//!   `levee.dev/access-log` (`json` or `off`), becomes `LEVEE_ACCESS_LOG`
//!   (one JSON line per request on the proxy's stdout).
//!
//! A value the proxy would refuse at start-up is a [`Refusal`] here (the
//! pod is admitted uninjected with a warning), never a crash-looping sidecar.

use std::collections::BTreeMap;

use super::Refusal;

/// Names the Service whose inbound policy the pod's proxy enforces.
pub const SERVICE: &str = "levee.dev/service";
/// An OTLP/gRPC collector URL for this pod's proxy, or `none`.
pub const TRACE_COLLECTOR: &str = "levee.dev/trace-collector";
/// The sampling ratio (0 to 1) of this pod's proxy.
pub const TRACE_SAMPLE_RATIO: &str = "levee.dev/trace-sample-ratio";
/// `json`: this pod's proxy writes an access log; `off`: it does not.
pub const ACCESS_LOG: &str = "levee.dev/access-log";
/// The labels read, in order, when the annotation is absent.
pub const SERVICE_LABELS: [&str; 2] = ["app.kubernetes.io/name", "app"];

/// What the proxy container's environment says about its workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// `LEVEE_SERVICE`.
    pub service: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub trace_collector: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG`.
    pub trace_sample_ratio: Option<String>,
    /// `LEVEE_ACCESS_LOG=json`.
    pub access_log: bool,
}

impl Workload {
    /// Reads the pod's labels and annotations; `collector` is the control
    /// plane's `--proxy-trace-collector`, `access_log` its
    /// `--proxy-access-log`.
    pub fn of_pod(
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
        collector: Option<&str>,
        access_log: bool,
    ) -> Result<Workload, Refusal> {
        let service = match annotations.get(SERVICE) {
            Some(name) if is_service_name(name) => Some(name.clone()),
            Some(name) => {
                return Err(Refusal(format!(
                    "annotation {SERVICE}: {name:?} is not a Service name (a DNS-1035 label)"
                )));
            }
            // A label that is not a Service name is someone else's
            // convention: ignored rather than refused.
            None => SERVICE_LABELS
                .iter()
                .filter_map(|label| labels.get(*label))
                .find(|name| is_service_name(name))
                .cloned(),
        };
        let trace_collector = match annotations.get(TRACE_COLLECTOR).map(String::as_str) {
            Some("none") => None,
            Some(url) if is_collector_url(url) => Some(url.to_owned()),
            Some(url) => {
                return Err(Refusal(format!(
                    "annotation {TRACE_COLLECTOR}: {url:?} is not an http:// or https:// URL, or none"
                )));
            }
            None => collector.map(str::to_owned),
        };
        let trace_sample_ratio = match annotations.get(TRACE_SAMPLE_RATIO) {
            Some(ratio) if ratio.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)) => {
                Some(ratio.clone())
            }
            Some(ratio) => {
                return Err(Refusal(format!(
                    "annotation {TRACE_SAMPLE_RATIO}: {ratio:?} is not a number from 0 to 1"
                )));
            }
            None => None,
        };
        let access_log = match annotations.get(ACCESS_LOG).map(String::as_str) {
            Some("json") => true,
            Some("off") => false,
            Some(other) => {
                return Err(Refusal(format!(
                    "annotation {ACCESS_LOG}: {other:?} is not json or off"
                )));
            }
            None => access_log,
        };
        Ok(Workload {
            service,
            trace_collector,
            trace_sample_ratio,
            access_log,
        })
    }

    /// The proxy's environment variables for this workload, in a fixed order.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(service) = &self.service {
            env.push(("LEVEE_SERVICE", service.clone()));
        }
        if let Some(collector) = &self.trace_collector {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", collector.clone()));
            if let Some(service) = &self.service {
                env.push(("OTEL_SERVICE_NAME", service.clone()));
            }
            if let Some(ratio) = &self.trace_sample_ratio {
                env.push(("OTEL_TRACES_SAMPLER_ARG", ratio.clone()));
            }
        }
        if self.access_log {
            env.push(("LEVEE_ACCESS_LOG", "json".to_owned()));
        }
        env
    }
}

/// A Service's name: a DNS-1035 label (lower case letters, digits and `-`,
/// starting with a letter, ending with a letter or digit, ≤ 63 bytes).
fn is_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// An `http://` or `https://` URL with a host, of a sane length.
pub fn is_collector_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with('/')
            && url.len() <= 512
            && !url
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_service_comes_from_the_annotation_then_the_usual_labels() {
        let labels = map(&[("app", "web"), ("app.kubernetes.io/name", "catalog")]);
        let from = |labels: &BTreeMap<String, String>, annotations: &[(&str, &str)]| {
            Workload::of_pod(labels, &map(annotations), None, false)
                .unwrap()
                .service
        };
        assert_eq!(from(&labels, &[]).as_deref(), Some("catalog"));
        assert_eq!(
            from(&labels, &[(SERVICE, "payments")]).as_deref(),
            Some("payments")
        );
        assert_eq!(from(&map(&[("app", "web")]), &[]).as_deref(), Some("web"));
        // A label that is no Service name is skipped, not refused.
        assert_eq!(
            from(
                &map(&[("app.kubernetes.io/name", "My_App"), ("app", "web")]),
                &[]
            )
            .as_deref(),
            Some("web")
        );
        assert_eq!(from(&BTreeMap::new(), &[]), None);
    }

    #[test]
    fn bad_annotations_are_refusals_that_name_them() {
        let none = BTreeMap::new();
        for (key, value, says) in [
            (SERVICE, "Payments", "is not a Service name"),
            (SERVICE, "-x", "is not a Service name"),
            (
                TRACE_COLLECTOR,
                "otel:4317",
                "is not an http:// or https:// URL",
            ),
            (
                TRACE_COLLECTOR,
                "http://",
                "is not an http:// or https:// URL",
            ),
            (TRACE_SAMPLE_RATIO, "2", "is not a number from 0 to 1"),
            (TRACE_SAMPLE_RATIO, "NaN", "is not a number from 0 to 1"),
            (ACCESS_LOG, "true", "is not json or off"),
        ] {
            let refusal = Workload::of_pod(&none, &map(&[(key, value)]), None, false).unwrap_err();
            assert!(
                refusal.0.starts_with(&format!("annotation {key}: ")) && refusal.0.contains(says),
                "{key}={value}: {}",
                refusal.0
            );
        }
    }

    #[test]
    fn traces_follow_the_flag_unless_the_pod_says_otherwise() {
        let labels = map(&[("app", "catalog")]);
        let flag = Some("http://otel.observability:4317");
        let env = |annotations: &[(&str, &str)]| {
            Workload::of_pod(&labels, &map(annotations), flag, false)
                .unwrap()
                .env()
        };
        assert_eq!(
            env(&[(TRACE_SAMPLE_RATIO, "0.25")]),
            vec![
                ("LEVEE_SERVICE", "catalog".to_owned()),
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "http://otel.observability:4317".to_owned()
                ),
                ("OTEL_SERVICE_NAME", "catalog".to_owned()),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25".to_owned()),
            ]
        );
        assert_eq!(
            env(&[(TRACE_COLLECTOR, "none")]),
            vec![("LEVEE_SERVICE", "catalog".to_owned())]
        );
        assert_eq!(
            env(&[(TRACE_COLLECTOR, "https://collector:4317")])[1],
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector:4317".to_owned()
            )
        );
        // No collector anywhere: no tracing variables at all.
        let plain =
            Workload::of_pod(&labels, &map(&[(TRACE_SAMPLE_RATIO, "1")]), None, false).unwrap();
        assert_eq!(plain.env(), vec![("LEVEE_SERVICE", "catalog".to_owned())]);
    }

    #[test]
    fn the_access_log_follows_the_flag_unless_the_pod_says_otherwise() {
        let labels = map(&[("app", "catalog")]);
        let logs = |annotations: &[(&str, &str)], flag: bool| {
            Workload::of_pod(&labels, &map(annotations), None, flag)
                .unwrap()
                .env()
                .contains(&("LEVEE_ACCESS_LOG", "json".to_owned()))
        };
        assert!(!logs(&[], false));
        assert!(logs(&[], true));
        assert!(logs(&[(ACCESS_LOG, "json")], false));
        assert!(!logs(&[(ACCESS_LOG, "off")], true));
    }
}
