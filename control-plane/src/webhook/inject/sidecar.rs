//! The two containers the injector adds, in this order, in front of the
//! pod's own init containers (so an app init container's traffic is already
//! captured and proxied):
//!
//! - `levee-init`: `levee-proxy init-iptables`, the pod's NAT rules. Root
//!   with only NET_ADMIN and NET_RAW (every other capability dropped, no
//!   privilege escalation, not privileged). Its root filesystem stays
//!   writable: the legacy iptables backend takes its lock in /run.
//! - `levee-proxy`: the proxy as a native sidecar (`restartPolicy: Always`
//!   on an init container, Kubernetes ≥ 1.29): the kubelet starts the app
//!   only once its startupProbe (`/ready` on the admin port) passes, and
//!   stops it before the proxy, so the app never runs without its proxy.
//!   uid 2102 (init-iptables' `--proxy-uid`: its own connections are not
//!   captured), non-root, read-only root filesystem, no privilege
//!   escalation, no capability.
//!
//! With an `https://` control plane the proxy proves who it is with a
//! projected service-account token (audience `levee.dev`, an hour, volume
//! `levee-identity-token`) and verifies the control plane against the
//! `ca.crt` of the pod namespace's ConfigMap `levee-trust-bundle` (volume
//! `levee-trust-bundle`); both are mounted read-only. Its service account
//! and namespace come from the downward API. With `http://` it gets
//! `--insecure-plaintext` and neither volume.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::annotations::Resources;
use super::workload::Workload;

/// Name of the init container that installs the NAT rules.
pub const INIT_NAME: &str = "levee-init";
/// Name of the proxy's (native sidecar) container.
pub const PROXY_NAME: &str = "levee-proxy";
/// The uid the proxy runs as, and init-iptables' `--proxy-uid`.
pub const PROXY_UID: i64 = 2102;
/// The proxy's listeners, as init-iptables redirects to them.
pub const OUTBOUND_PORT: u16 = 4140;
pub const INBOUND_PORT: u16 = 4143;
pub const ADMIN_PORT: u16 = 4191;
/// The trust bundle: volume and ConfigMap (in the pod's namespace) name,
/// the key holding the CA certificates (PEM), and where it is mounted.
pub const TRUST_BUNDLE: &str = "levee-trust-bundle";
pub const TRUST_BUNDLE_KEY: &str = "ca.crt";
pub const TRUST_BUNDLE_DIR: &str = "/var/run/levee/trust";
/// The projected service-account token: volume name, where it is mounted,
/// the file name, its lifetime (the kubelet renews it at 80%).
pub const IDENTITY_TOKEN: &str = "levee-identity-token";
pub const IDENTITY_TOKEN_DIR: &str = "/var/run/levee/identity";
pub const IDENTITY_TOKEN_PATH: &str = "token";
pub const IDENTITY_TOKEN_SECONDS: i64 = 3600;

/// What varies between pods and installations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarSpec {
    /// `--proxy-image`.
    pub image: String,
    /// `--proxy-control-plane`: the URL the proxy watches.
    pub control_plane: String,
    /// The audience of the projected token (the control plane's
    /// `--token-review-audience`).
    pub token_audience: String,
    /// Requests and limits of the proxy (and of the init step).
    pub resources: Resources,
    /// Ports the kubelet probes plus the pod's `levee.dev/skip-inbound-ports`.
    pub skip_inbound: Vec<(u16, u16)>,
    /// The pod's `levee.dev/skip-outbound-ports`.
    pub skip_outbound: Vec<(u16, u16)>,
    /// Its service and trace settings (`workload`).
    pub workload: Workload,
}

impl SidecarSpec {
    /// The `levee-init` container.
    pub fn init_container(&self) -> Container {
        let mut args = vec![
            "init-iptables".to_owned(),
            "--proxy-uid".to_owned(),
            PROXY_UID.to_string(),
            "--inbound-port".to_owned(),
            INBOUND_PORT.to_string(),
            "--outbound-port".to_owned(),
            OUTBOUND_PORT.to_string(),
            "--admin-port".to_owned(),
            ADMIN_PORT.to_string(),
        ];
        for (flag, ranges) in [
            ("--skip-inbound-ports", &self.skip_inbound),
            ("--skip-outbound-ports", &self.skip_outbound),
        ] {
            if !ranges.is_empty() {
                args.push(flag.to_owned());
                args.push(port_list(ranges));
            }
        }
        Container {
            name: INIT_NAME.to_owned(),
            image: Some(self.image.clone()),
            args: Some(args),
            resources: Some(self.resource_requirements()),
            security_context: Some(SecurityContext {
                run_as_user: Some(0),
                run_as_non_root: Some(false),
                privileged: Some(false),
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                    drop: Some(vec!["ALL".to_owned()]),
                }),
                seccomp_profile: Some(runtime_default()),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }
    }

    /// Whether the proxy talks TLS to the control plane (an `https://`
    /// URL; the proxy requires every replica's URL to share the scheme).
    pub fn tls(&self) -> bool {
        self.control_plane.trim_start().starts_with("https://")
    }

    /// The pod volumes the proxy mounts: the trust bundle and the token
    /// (none over plaintext).
    pub fn volumes(&self) -> Vec<Volume> {
        if !self.tls() {
            return Vec::new();
        }
        let trust_bundle = Volume {
            name: TRUST_BUNDLE.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: TRUST_BUNDLE.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        };
        let token = Volume {
            name: IDENTITY_TOKEN.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(self.token_audience.clone()),
                        expiration_seconds: Some(IDENTITY_TOKEN_SECONDS),
                        path: IDENTITY_TOKEN_PATH.to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        };
        vec![trust_bundle, token]
    }

    /// The `levee-proxy` native sidecar.
    pub fn proxy_container(&self) -> Container {
        let mut args = vec![
            ("--control-plane", self.control_plane.clone()),
            // `[::]` accepts IPv4 too: init-iptables redirects both families.
            ("--outbound-addr", format!("[::]:{OUTBOUND_PORT}")),
            ("--inbound-addr", format!("[::]:{INBOUND_PORT}")),
            ("--admin-addr", format!("[::]:{ADMIN_PORT}")),
        ];
        let mut volume_mounts = None;
        if self.tls() {
            args.push((
                "--trust-bundle-file",
                format!("{TRUST_BUNDLE_DIR}/{TRUST_BUNDLE_KEY}"),
            ));
            args.push((
                "--identity-sa-token-file",
                format!("{IDENTITY_TOKEN_DIR}/{IDENTITY_TOKEN_PATH}"),
            ));
            let mount = |name: &str, path: &str| VolumeMount {
                name: name.to_owned(),
                mount_path: path.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            };
            volume_mounts = Some(vec![
                mount(TRUST_BUNDLE, TRUST_BUNDLE_DIR),
                mount(IDENTITY_TOKEN, IDENTITY_TOKEN_DIR),
            ]);
        }
        let mut args: Vec<String> = args
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_owned(), value])
            .collect();
        if !self.tls() {
            args.push("--insecure-plaintext".to_owned());
        }
        let admin_get = |path: &str| HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(ADMIN_PORT)),
            ..HTTPGetAction::default()
        };
        Container {
            name: PROXY_NAME.to_owned(),
            image: Some(self.image.clone()),
            restart_policy: Some("Always".to_owned()),
            args: Some(args),
            ports: Some(vec![ContainerPort {
                name: Some("levee-admin".to_owned()),
                container_port: i32::from(ADMIN_PORT),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }]),
            env: Some(self.env()),
            // Up to a minute to reach the control plane and be ready; the
            // app containers start only after.
            startup_probe: Some(Probe {
                http_get: Some(admin_get("/ready")),
                period_seconds: Some(1),
                failure_threshold: Some(60),
                ..Probe::default()
            }),
            liveness_probe: Some(Probe {
                http_get: Some(admin_get("/live")),
                period_seconds: Some(10),
                failure_threshold: Some(3),
                ..Probe::default()
            }),
            resources: Some(self.resource_requirements()),
            security_context: Some(SecurityContext {
                run_as_user: Some(PROXY_UID),
                run_as_group: Some(PROXY_UID),
                run_as_non_root: Some(true),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    add: None,
                    drop: Some(vec!["ALL".to_owned()]),
                }),
                seccomp_profile: Some(runtime_default()),
                ..SecurityContext::default()
            }),
            volume_mounts,
            ..Container::default()
        }
    }

    /// The downward API's facts, then the workload's (`workload`), then
    /// JSON logs for the cluster's log collector.
    fn env(&self) -> Vec<EnvVar> {
        let mut env = vec![
            // LEVEE_NAMESPACE is also the proxy's --namespace.
            field_env("LEVEE_POD_NAME", "metadata.name"),
            field_env("LEVEE_NAMESPACE", "metadata.namespace"),
            field_env("LEVEE_POD_IP", "status.podIP"),
            field_env("LEVEE_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ];
        let fixed = self
            .workload
            .env()
            .into_iter()
            .chain([("LEVEE_LOG_FORMAT", "json".to_owned())]);
        env.extend(fixed.map(|(name, value)| EnvVar {
            name: name.to_owned(),
            value: Some(value),
            value_from: None,
        }));
        env
    }

    fn resource_requirements(&self) -> ResourceRequirements {
        let quantities = |map: &BTreeMap<String, String>| {
            (!map.is_empty()).then(|| {
                map.iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect()
            })
        };
        ResourceRequirements {
            requests: quantities(&self.resources.0),
            limits: quantities(&self.resources.1),
            claims: None,
        }
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field_path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// init-iptables' notation: `8080,9100-9199`.
fn port_list(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
