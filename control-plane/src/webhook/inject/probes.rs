//! The app's kubelet probes and the sidecar: their ports bypass the proxy.
//!
//! The kubelet probes the pod's IP from the node. Redirected through the
//! proxy, a probe would be subject to the inbound policy (rate limits,
//! concurrency limits) and to the proxy's own health: a busy or restarting
//! proxy would fail the app's liveness probe and get a healthy app killed.
//! So every port an httpGet, tcpSocket or gRPC probe targets is passed to
//! `init-iptables --skip-inbound-ports`, and the kubelet reaches the app
//! directly, exactly as without a sidecar. (The alternative, rewriting the
//! probes to a proxy endpoint that forwards them, changes the user's pod
//! spec and needs a probe-forwarding endpoint the proxy does not have.)
//! The cost, documented in docs/kubernetes.md: inbound calls to a port that
//! is also a probe port bypass the inbound proxy too (the callers' sidecars
//! still apply their outbound policy); a separate health port avoids it.

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Refusal;

/// The sorted, distinct ports the kubelet probes, over the app containers and
/// any sidecar (restartPolicy Always) init containers.
pub fn probed_ports(spec: &PodSpec) -> Result<Vec<u16>, Refusal> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut ports = Vec::new();
    for container in spec.containers.iter().chain(sidecars) {
        let probes = [
            &container.liveness_probe,
            &container.readiness_probe,
            &container.startup_probe,
        ];
        for probe in probes.into_iter().flatten() {
            if let Some(port) = probe_port(container, probe)? {
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// The port one probe targets; `None` for an exec probe.
fn probe_port(container: &Container, probe: &Probe) -> Result<Option<u16>, Refusal> {
    let target = if let Some(http) = &probe.http_get {
        &http.port
    } else if let Some(tcp) = &probe.tcp_socket {
        &tcp.port
    } else if let Some(grpc) = &probe.grpc {
        return number(container, grpc.port).map(Some);
    } else {
        return Ok(None);
    };
    match target {
        IntOrString::Int(port) => number(container, *port).map(Some),
        // A named port is looked up in the container's own ports, as the
        // kubelet does.
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| number(container, p.container_port).map(Some))
            .unwrap_or_else(|| {
                Err(Refusal(format!(
                    "container {:?} probes port {name:?}, which it does not declare",
                    container.name
                )))
            }),
    }
}

fn number(container: &Container, port: i32) -> Result<u16, Refusal> {
    u16::try_from(port).ok().filter(|&p| p != 0).ok_or_else(|| {
        Refusal(format!(
            "container {:?} probes port {port}, which is not a port",
            container.name
        ))
    })
}
