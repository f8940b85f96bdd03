//! Expected identities from pods: which pods are meshed, the reflector's
//! strip, the join of EndpointSlice endpoints to pods, and the whole path
//! through the mock API server to a ServiceUpdate.
//!
//! Recorded vs constructed: the fixtures have no Pod LIST or watch (the
//! capture ran no kubelet, and recorded no pod collection). The pod
//! *objects* are recorded: `admission/pod-inject.after.json` (pod
//! `shop/payments`, injected, service account `payments`, uid
//! `949df267…`, the targetRef uid of its endpoints 10.244.1.5 and
//! fd00:10:244:1::5 in the recorded slices) and
//! `admission/pod-from-deployment.after.json` (`reviews-v1-6b647ccccc-jld2d`,
//! injected, service account `default`, the targetRef of 10.244.1.9). What
//! is constructed: the `PodList` envelope around them (its
//! resourceVersion, 290, that of the recorded lists), an uninjected pod
//! (the recorded `legacy-batch` object of
//! `admission/pod-inject-disabled.review-request.json`, renamed and given
//! the uid of the recorded slices' `payments-7c9d8f6b5d-q2x7p`, 10.244.2.7),
//! the pod IPs in `status` (no kubelet assigned any), and the watch events.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use levee_proto::policy::{ServiceKey, SpiffeId};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::mock::{MockApi, fixture, kind_of};
use crate::discovery::registry::Registry;
use crate::discovery::session::to_update;
use crate::kubernetes::pods::{PodIdentities, digest, endpoint_identities, meshed, strip};
use crate::kubernetes::reflect::{self, Reflectors};

const WAIT: Duration = Duration::from_secs(10);
const PAYMENTS_ID: &str = "spiffe://cluster.local/ns/shop/sa/payments";
const REVIEWS_ID: &str = "spiffe://cluster.local/ns/shop/sa/default";

fn json_fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("JSON")
}

/// The recorded injected pods, with constructed pod IPs.
fn injected_pods() -> [Value; 2] {
    let mut payments = json_fixture("admission/pod-inject.after.json");
    payments["status"]["podIP"] = json!("10.244.1.5");
    payments["status"]["podIPs"] = json!([{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}]);
    let mut reviews = json_fixture("admission/pod-from-deployment.after.json");
    reviews["status"]["podIPs"] = json!([{"ip": "10.244.1.9"}]);
    [payments, reviews]
}

/// The recorded uninjected pod `legacy-batch`, as the pod behind the
/// recorded endpoint 10.244.2.7.
fn uninjected_pod() -> Value {
    let review = json_fixture("admission/pod-inject-disabled.review-request.json");
    let mut pod = review["request"]["object"].clone();
    pod["metadata"]["name"] = json!("payments-7c9d8f6b5d-q2x7p");
    pod["metadata"]["uid"] = json!("3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b");
    pod["metadata"]["resourceVersion"] = json!("250");
    pod["status"] = json!({"phase": "Running", "podIP": "10.244.2.7",
        "podIPs": [{"ip": "10.244.2.7"}, {"ip": "fd00:10:244:2::7"}]});
    pod
}

fn pod(value: &Value) -> Pod {
    serde_json::from_value(value.clone()).expect("a Pod")
}

fn all_pods() -> Vec<Pod> {
    let [a, b] = injected_pods();
    vec![pod(&a), pod(&b), pod(&uninjected_pod())]
}

fn recorded_slices() -> Vec<EndpointSlice> {
    let list = json_fixture("watch/endpointslices.list.json");
    serde_json::from_value(list["items"].clone()).expect("slices")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP")
}

fn ids(map: &BTreeMap<IpAddr, SpiffeId>) -> Vec<(String, String)> {
    map.iter()
        .map(|(ip, id)| (ip.to_string(), id.as_str().to_owned()))
        .collect()
}

#[test]
fn the_injectors_marker_and_sidecar_make_a_pod_meshed() {
    let [payments, reviews] = injected_pods();
    assert!(meshed(&pod(&payments)));
    assert!(meshed(&pod(&reviews)));
    assert!(!meshed(&pod(&uninjected_pod())));
    // The marker without the sidecar (a hand-set annotation) is not enough.
    let mut annotated = uninjected_pod();
    annotated["metadata"]["annotations"] = json!({"levee.dev/injected": "true"});
    assert!(!meshed(&pod(&annotated)));
    // Nor the sidecar without the marker.
    let mut unmarked = payments.clone();
    unmarked["metadata"]["annotations"] = json!({});
    assert!(!meshed(&pod(&unmarked)));
}

#[test]
fn strip_keeps_what_identities_need_and_little_else() {
    let [payments, _] = injected_pods();
    let full = pod(&payments);
    let mut stripped = full.clone();
    strip(&mut stripped);
    assert!(meshed(&stripped));
    assert_eq!(digest(&stripped), digest(&full));
    let size = |p: &Pod| serde_json::to_vec(p).expect("JSON").len();
    // Measured: the recorded injected pod is 4.4 KB of JSON (more with
    // managed fields); stripped, a few hundred bytes.
    assert!(size(&stripped) < 600, "{} bytes", size(&stripped));
    assert!(size(&full) > 4 * size(&stripped), "{} bytes", size(&full));
    let meta = &stripped.metadata;
    assert_eq!(meta.name.as_deref(), Some("payments"));
    assert_eq!(
        meta.uid.as_deref(),
        Some("949df267-b40d-4a96-8920-8c8f998fbe4f")
    );
    assert!(meta.labels.is_none() && meta.managed_fields.is_none());
    let spec = stripped.spec.as_ref().expect("spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("payments"));
    assert!(spec.containers.is_empty() && spec.volumes.is_none());
    let status = stripped.status.as_ref().expect("status");
    assert_eq!(status.pod_ips.as_ref().map(Vec::len), Some(2));
    assert!(status.conditions.is_none() && status.phase.is_none());
    // Status churn leaves the digest alone; a new IP does not.
    let mut churned = full.clone();
    if let Some(status) = churned.status.as_mut() {
        status.phase = Some("Running".into());
    }
    assert_eq!(digest(&churned), digest(&full));
    if let Some(status) = churned.status.as_mut() {
        status.pod_ip = Some("10.244.1.6".into());
    }
    assert_ne!(digest(&churned), digest(&full));
}

#[test]
fn endpoints_are_joined_to_meshed_pods_by_target_ref_else_by_address() {
    let pods = all_pods();
    let index = PodIdentities::new("cluster.local", &pods);
    let slices = recorded_slices();
    assert_eq!(
        ids(&endpoint_identities(&slices, &index)),
        [
            ("10.244.1.5".to_owned(), PAYMENTS_ID.to_owned()),
            ("10.244.1.9".to_owned(), REVIEWS_ID.to_owned()),
            ("fd00:10:244:1::5".to_owned(), PAYMENTS_ID.to_owned()),
        ],
        "the uninjected pod's 10.244.2.7 and pod-less 10.244.2.12, 10.244.3.4 get none"
    );

    // A targetRef whose uid is not the pod's (a recreated pod): none.
    let mut stale = slices.clone();
    for slice in &mut stale {
        for endpoint in slice.endpoints.iter_mut().flatten() {
            if let Some(target) = endpoint.target_ref.as_mut() {
                target.uid = Some("00000000-0000-0000-0000-000000000000".into());
            }
        }
    }
    assert!(endpoint_identities(&stale, &index).is_empty());

    // No targetRef: joined by the pods' IPs.
    let mut bare = slices.clone();
    for slice in &mut bare {
        for endpoint in slice.endpoints.iter_mut().flatten() {
            endpoint.target_ref = None;
        }
    }
    let by_address = endpoint_identities(&bare, &index);
    assert_eq!(
        by_address.get(&ip("10.244.1.5")).map(SpiffeId::as_str),
        Some(PAYMENTS_ID)
    );
    assert_eq!(by_address.get(&ip("10.244.2.7")), None, "uninjected");

    // Two pods claiming one IP: no identity.
    let mut twin = pod(&uninjected_pod());
    twin.metadata.name = Some("twin".into());
    if let Some(status) = twin.status.as_mut() {
        status.pod_ips = None;
        status.pod_ip = Some("10.244.1.5".into());
    }
    let crowded: Vec<Pod> = pods.iter().cloned().chain([twin]).collect();
    let index = PodIdentities::new("cluster.local", &crowded);
    assert_eq!(
        endpoint_identities(&bare, &index).get(&ip("10.244.1.5")),
        None
    );
}

fn key(name: &str, port: u16) -> ServiceKey {
    ServiceKey {
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        port,
    }
}

fn identities(registry: &Registry, key: &ServiceKey) -> Vec<(String, String)> {
    let rx = registry.subscribe(key);
    let update = to_update(&rx.borrow(), 1);
    // A protobuf map: in address order for comparing.
    let sorted: BTreeMap<String, String> = update.identities.into_iter().collect();
    sorted.into_iter().collect()
}

async fn synced(reflectors: &Reflectors) {
    let mut rx = reflectors.synced.clone();
    let before = rx.borrow_and_update().0;
    reflectors.resync();
    tokio::time::timeout(WAIT, rx.wait_for(|(n, _)| *n > before))
        .await
        .expect("a sync within 10s")
        .expect("sync loop alive");
}

fn start(client: kube::Client) -> (Arc<Registry>, Reflectors, watch::Sender<bool>) {
    let registry = Arc::new(Registry::new());
    let (stop, shutdown) = watch::channel(false);
    let reflectors = reflect::start_with(
        client,
        registry.clone(),
        Duration::from_secs(3600),
        Some("cluster.local".into()),
        shutdown,
    );
    (registry, reflectors, stop)
}

/// Waits until the pod cache holds `name` at `rv` (`None`: gone), then syncs.
async fn pod_applied(reflectors: &Reflectors, name: &str, rv: Option<&str>) {
    let pods = reflectors.pods.as_ref().expect("pods watched");
    let start = tokio::time::Instant::now();
    loop {
        let current = pods
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .map(|p| p.metadata.resource_version.clone().unwrap_or_default());
        if current.as_deref() == rv {
            break;
        }
        assert!(start.elapsed() < WAIT, "pod {name} never reached {rv:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    synced(reflectors).await;
}

#[tokio::test]
async fn meshed_pods_endpoints_reach_discovery_with_their_identity() {
    let (client, api) = MockApi::client();
    for (kind, file) in [
        ("services", "watch/services.list.json"),
        ("endpointslices", "watch/endpointslices.list.json"),
        ("resiliencepolicies", "watch/resiliencepolicies.list.json"),
    ] {
        api.list(kind, StatusCode::OK, fixture(file));
    }
    let [payments, reviews] = injected_pods();
    let list = json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "290"},
        "items": [payments, reviews, uninjected_pod()]});
    api.list("pods", StatusCode::OK, Bytes::from(list.to_string()));
    let (registry, reflectors, _stop) = start(client);
    synced(&reflectors).await;

    // Service port 80 → targetPort 8080 on each pod IP; only the meshed
    // pod's addresses carry an identity (10.244.2.7 is uninjected).
    assert_eq!(
        identities(&registry, &key("payments", 80)),
        [
            ("10.244.1.5:8080".to_owned(), PAYMENTS_ID.to_owned()),
            ("[fd00:10:244:1::5]:8080".to_owned(), PAYMENTS_ID.to_owned()),
        ]
    );
    assert_eq!(
        identities(&registry, &key("payments", 9090)),
        [
            ("10.244.1.5:9090".to_owned(), PAYMENTS_ID.to_owned()),
            ("[fd00:10:244:1::5]:9090".to_owned(), PAYMENTS_ID.to_owned()),
        ]
    );
    assert_eq!(
        identities(&registry, &key("reviews", 9080)),
        [("10.244.1.9:9080".to_owned(), REVIEWS_ID.to_owned())]
    );
    // Pods are listed cluster-wide, like the other kinds.
    let pod_list = api
        .seen()
        .into_iter()
        .find(|s| kind_of(&s.uri) == "pods" && !s.uri.contains("watch=true"))
        .expect("a pod LIST");
    assert!(
        pod_list.uri.starts_with("/api/v1/pods?"),
        "{}",
        pod_list.uri
    );

    // A status-only change (the pod starts running): nothing a proxy sees.
    let version = |registry: &Registry| registry.current(&key("payments", 80)).version;
    let before = version(&registry);
    let mut running = payments.clone();
    running["metadata"]["resourceVersion"] = json!("300");
    running["status"]["phase"] = json!("Running");
    let event = json!({"type": "MODIFIED", "object": running});
    api.push("pods", Bytes::from(format!("{event}\n"))).await;
    pod_applied(&reflectors, "payments", Some("300")).await;
    assert_eq!(version(&registry), before);

    // The meshed pod is deleted: its endpoints lose their identity (the
    // slice still lists them until the EndpointSlice controller catches up).
    let mut deleted = running.clone();
    deleted["metadata"]["resourceVersion"] = json!("301");
    let event = json!({"type": "DELETED", "object": deleted});
    api.push("pods", Bytes::from(format!("{event}\n"))).await;
    pod_applied(&reflectors, "payments", None).await;
    assert!(identities(&registry, &key("payments", 80)).is_empty());
    assert_ne!(version(&registry), before);
    assert_eq!(
        identities(&registry, &key("reviews", 9080)),
        [("10.244.1.9:9080".to_owned(), REVIEWS_ID.to_owned())]
    );
}

#[test]
fn pod_identities_need_kubernetes_mode_and_tls() {
    use clap::Parser;
    let parse = |extra: &[&str]| {
        let args = ["levee-control-plane"].iter().chain(extra).copied();
        crate::config::ControlPlaneConfig::try_parse_from(args)
    };
    let on = parse(&["--kubernetes", "--kubernetes-pod-identities"]).expect("valid");
    assert!(on.kubernetes_pod_identities);
    assert!(
        !parse(&["--kubernetes"])
            .expect("valid")
            .kubernetes_pod_identities
    );
    assert!(parse(&["--kubernetes-pod-identities"]).is_err());
    assert!(
        parse(&[
            "--kubernetes",
            "--insecure-plaintext",
            "--kubernetes-pod-identities"
        ])
        .is_err()
    );
}
