//! `POST /mutate-pods` and `POST /mutate-pods-opt-in`: the sidecar injector.
//!
//! - `annotations`: the `levee.dev/…` annotations a pod may carry, checked.
//! - `probes`: the ports the kubelet probes, which bypass the proxy.
//! - `sidecar`: the `levee-init` and `levee-proxy` containers.
//! - `workload`: the pod's service and trace settings, from its labels and
//!   annotations.
//!
//! Who is injected: `/mutate-pods` is called for pods of namespaces labelled
//! `levee.dev/inject=enabled` (the webhook's namespaceSelector), and injects
//! them unless the pod says `levee.dev/inject: disabled`;
//! `/mutate-pods-opt-in` is called for the other namespaces and injects only
//! pods annotated `levee.dev/inject: enabled`. A pod that already carries
//! `levee.dev/injected` is returned unchanged (no patch): injection is
//! idempotent. A pod the injector cannot handle (hostNetwork, a bad
//! annotation, a probe on an undeclared port, the proxy's uid) is admitted
//! uninjected with a warning the client sees (`kubectl` prints it), never
//! refused: a missing sidecar is visible and fixable, a refused pod stops
//! a rollout.
//!
//! The answer is pure: no side effects, so dry-run requests need no special
//! case (`sideEffects: None`).

pub mod annotations;
pub mod probes;
pub mod sidecar;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::{Value, json};

use self::annotations::Choice;
use self::sidecar::{IDENTITY_TOKEN, INIT_NAME, PROXY_NAME, PROXY_UID, SidecarSpec, TRUST_BUNDLE};
use self::workload::Workload;

/// Why a pod is admitted without a sidecar; becomes the warning
/// `levee.dev: <reason>; sidecar not injected`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Refusal {
    /// The warning the client sees.
    pub fn warning(&self) -> String {
        format!("levee.dev: {}; sidecar not injected", self.0)
    }
}

/// Which webhook entry called: it decides what an unset `levee.dev/inject` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The namespace is labelled for injection: inject unless disabled.
    Namespace,
    /// Any other namespace: inject only when the pod asks.
    OptIn,
}

/// Installation-wide settings (flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injector {
    /// `--proxy-image`.
    pub image: String,
    /// `--proxy-control-plane`.
    pub control_plane: String,
    /// `--token-review-audience`: the audience of the proxy's projected token.
    pub token_audience: String,
    /// `--proxy-trace-collector`: where injected proxies send traces.
    pub trace_collector: Option<String>,
    /// `--proxy-access-log json`: injected proxies write an access log.
    pub access_log: bool,
}

/// What the injector does with one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Admitted unchanged and silently (opted out, not opted in, already injected).
    Unchanged,
    /// Admitted unchanged with a warning.
    Refused(Refusal),
    /// Admitted with this JSONPatch.
    Inject(Vec<Value>),
}

impl Injector {
    /// Answers one review.
    pub fn review(&self, request: &AdmissionRequest<Pod>, scope: Scope) -> AdmissionResponse {
        let mut response = AdmissionResponse::from(request);
        let decision = match (&request.operation, &request.object) {
            (Operation::Create, Some(pod)) => self.decide(pod, scope),
            // The configuration asks for CREATE only; nothing else is changed.
            (Operation::Create, None) => {
                Decision::Refused(Refusal("the review carries no pod".to_owned()))
            }
            _ => Decision::Unchanged,
        };
        match decision {
            Decision::Unchanged => {}
            Decision::Refused(refusal) => response.warnings = Some(vec![refusal.warning()]),
            Decision::Inject(patch) => {
                response.patch = Some(Value::Array(patch).to_string().into_bytes());
            }
        }
        response
    }

    /// The decision for one pod.
    pub fn decide(&self, pod: &Pod, scope: Scope) -> Decision {
        let empty = BTreeMap::new();
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        if annotations.contains_key(annotations::INJECTED) {
            return Decision::Unchanged;
        }
        let choice = match annotations::choice(annotations) {
            Ok(choice) => choice,
            Err(refusal) => return Decision::Refused(refusal),
        };
        match (choice, scope) {
            (Choice::Disabled, _) | (Choice::Unset, Scope::OptIn) => Decision::Unchanged,
            (Choice::Enabled, _) | (Choice::Unset, Scope::Namespace) => {
                match self.patch(pod, annotations) {
                    Ok(patch) => Decision::Inject(patch),
                    Err(refusal) => Decision::Refused(refusal),
                }
            }
        }
    }

    fn patch(
        &self,
        pod: &Pod,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, Refusal> {
        let Some(spec) = &pod.spec else {
            return Err(Refusal("the pod has no spec".to_owned()));
        };
        check_spec(spec)?;
        let mut skip_inbound: Vec<(u16, u16)> = probes::probed_ports(spec)?
            .into_iter()
            .map(|p| (p, p))
            .collect();
        skip_inbound.extend(annotations::port_ranges(
            annotations,
            annotations::SKIP_INBOUND_PORTS,
        )?);
        skip_inbound.sort_unstable();
        skip_inbound.dedup();
        let mut skip_outbound =
            annotations::port_ranges(annotations, annotations::SKIP_OUTBOUND_PORTS)?;
        skip_outbound.sort_unstable();
        skip_outbound.dedup();
        let sidecar = SidecarSpec {
            image: self.image.clone(),
            control_plane: self.control_plane.clone(),
            token_audience: self.token_audience.clone(),
            resources: annotations::resources(annotations)?,
            skip_inbound,
            skip_outbound,
            workload: Workload::of_pod(
                pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                annotations,
                self.trace_collector.as_deref(),
                self.access_log,
            )?,
        };
        let init = to_value(&sidecar.init_container())?;
        let proxy = to_value(&sidecar.proxy_container())?;
        let volumes = sidecar
            .volumes()
            .iter()
            .map(|volume| {
                serde_json::to_value(volume)
                    .map_err(|e| Refusal(format!("the sidecar's volumes cannot be written: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut patch = Vec::new();
        // In front of the pod's own init containers.
        if spec.init_containers.as_ref().is_none_or(Vec::is_empty) {
            patch
                .push(json!({"op": "add", "path": "/spec/initContainers", "value": [init, proxy]}));
        } else {
            patch.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": init}));
            patch.push(json!({"op": "add", "path": "/spec/initContainers/1", "value": proxy}));
        }
        if volumes.is_empty() {
        } else if spec.volumes.as_ref().is_none_or(Vec::is_empty) {
            patch.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes}));
        } else {
            for volume in volumes {
                patch.push(json!({"op": "add", "path": "/spec/volumes/-", "value": volume}));
            }
        }
        if annotations.is_empty() {
            patch.push(json!({"op": "add", "path": "/metadata/annotations",
                "value": {annotations::INJECTED: "true"}}));
        } else {
            // JSON Pointer escapes `/` as `~1`.
            let path = format!(
                "/metadata/annotations/{}",
                annotations::INJECTED.replace('~', "~0").replace('/', "~1")
            );
            patch.push(json!({"op": "add", "path": path, "value": "true"}));
        }
        Ok(patch)
    }
}

/// What makes a pod uninjectable whatever its annotations say.
fn check_spec(spec: &PodSpec) -> Result<(), Refusal> {
    if spec.host_network == Some(true) {
        // The rules would be installed in the node's network namespace.
        return Err(Refusal("pod uses hostNetwork".to_owned()));
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for volume in spec.volumes.iter().flatten() {
        if volume.name == TRUST_BUNDLE || volume.name == IDENTITY_TOKEN {
            return Err(Refusal(format!(
                "the pod already has a volume named {:?}",
                volume.name
            )));
        }
    }
    let pod_uid = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    for container in containers {
        if container.name == INIT_NAME || container.name == PROXY_NAME {
            return Err(Refusal(format!(
                "the pod already has a container named {:?}",
                container.name
            )));
        }
        let uid = container
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_uid);
        if uid == Some(PROXY_UID) {
            return Err(Refusal(format!(
                "container {:?} runs as uid {PROXY_UID}, the proxy's uid, whose traffic is never captured",
                container.name
            )));
        }
    }
    Ok(())
}

fn to_value(container: &k8s_openapi::api::core::v1::Container) -> Result<Value, Refusal> {
    serde_json::to_value(container)
        .map_err(|e| Refusal(format!("the sidecar cannot be written: {e}")))
}
