//! The recorded LIST + watch exchanges replayed through kube's mock client:
//! after the LIST and after each watch event (in the order the API server
//! saw the writes), the ServiceUpdate a subscribed proxy would get.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use levee_proto::policy::ServiceKey;
use levee_proto::v1;
use tokio::sync::watch;

use super::mock::{MockApi, fixture, kind_of, lines};
use crate::discovery::registry::Registry;
use crate::discovery::session::to_update;
use crate::kubernetes::reflect::{self, Reflectors};

const WAIT: Duration = Duration::from_secs(10);

fn key(name: &str, port: u16) -> ServiceKey {
    ServiceKey {
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        port,
    }
}

/// What a proxy subscribed to `key` would be sent now.
fn update(registry: &Registry, key: &ServiceKey) -> v1::ServiceUpdate {
    // Subscribing is what a proxy's stream does: the snapshot then follows.
    let rx = registry.subscribe(key);
    let snapshot = rx.borrow().clone();
    to_update(&snapshot, 1)
}

fn endpoints(registry: &Registry, key: &ServiceKey) -> Vec<String> {
    update(registry, key).endpoints
}

/// Forces a sync that sees at least the current caches, and waits for it.
async fn synced(reflectors: &Reflectors) {
    let mut rx = reflectors.synced.clone();
    let before = rx.borrow_and_update().0;
    reflectors.resync();
    tokio::time::timeout(WAIT, rx.wait_for(|(n, _)| *n > before))
        .await
        .expect("a sync within 10s")
        .expect("sync loop alive");
}

/// Waits until the cache of `kind` holds resourceVersion `rv` (or, for a
/// DELETED event, no longer holds the object), then syncs.
async fn applied(reflectors: &Reflectors, line: &[u8]) {
    let event: serde_json::Value = serde_json::from_slice(line).expect("a JSON event");
    let kind = event["object"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = event["object"]["metadata"]["name"]
        .as_str()
        .map(str::to_owned);
    let rv = event["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let deleted = event["type"] == "DELETED";
    let start = tokio::time::Instant::now();
    if let Some(name) = name {
        loop {
            let current: Option<String> = match kind.as_str() {
                "Service" => reflectors
                    .services
                    .find(|o| o.metadata.name.as_deref() == Some(&name))
                    .and_then(|o| o.metadata.resource_version.clone()),
                "EndpointSlice" => reflectors
                    .slices
                    .find(|o| o.metadata.name.as_deref() == Some(&name))
                    .and_then(|o| o.metadata.resource_version.clone()),
                _ => reflectors
                    .policies
                    .find(|o| o.metadata.name.as_deref() == Some(&name))
                    .and_then(|o| o.metadata.resource_version.clone()),
            };
            let done = if deleted {
                current.is_none()
            } else {
                current.as_deref() == Some(rv.as_str())
            };
            if done {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "{kind} {name} never reached rv {rv}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    synced(reflectors).await;
}

fn start(client: kube::Client) -> (Arc<Registry>, Reflectors, watch::Sender<bool>) {
    let registry = Arc::new(Registry::new());
    let (stop, shutdown) = watch::channel(false);
    let reflectors = reflect::start(
        client,
        registry.clone(),
        Duration::from_secs(3600),
        shutdown,
    );
    (registry, reflectors, stop)
}

#[tokio::test]
async fn every_recorded_state_reaches_discovery() {
    let (client, api) = MockApi::client();
    api.recorded_lists();
    let (registry, reflectors, _stop) = start(client);
    synced(&reflectors).await;

    let payments80 = key("payments", 80);
    let payments8080 = key("payments", 8080);
    let payments9090 = key("payments", 9090);
    let reviews = key("reviews", 9080);
    let ratings = key("ratings", 9090);

    // After the LIST: both families of the dual-stack Service, at the
    // slice's port of the same name (8080 behind service port 80).
    assert_eq!(
        endpoints(&registry, &payments80),
        [
            "10.244.1.5:8080",
            "10.244.2.7:8080",
            "[fd00:10:244:1::5]:8080",
            "[fd00:10:244:2::7]:8080"
        ]
    );
    assert_eq!(
        endpoints(&registry, &payments9090),
        [
            "10.244.1.5:9090",
            "10.244.2.7:9090",
            "[fd00:10:244:1::5]:9090",
            "[fd00:10:244:2::7]:9090"
        ]
    );
    // Named targetPort: 9080 in one slice, 9081 in the other; the
    // not-ready 10.244.2.12 is left out.
    assert_eq!(
        endpoints(&registry, &reviews),
        ["10.244.1.9:9080", "10.244.3.4:9081"]
    );
    // The payments policy (generation 3) targets port 8080.
    let p = update(&registry, &payments8080);
    assert_eq!(p.policy_revision, 3);
    let policy = p.policy.expect("the payments policy");
    assert_eq!(
        policy.metadata.as_ref().map(|m| m.name.as_str()),
        Some("payments")
    );
    assert!(p.version.starts_with("3-"), "{}", p.version);
    assert!(update(&registry, &payments80).policy.is_none());
    assert!(update(&registry, &reviews).policy.is_none());
    assert!(endpoints(&registry, &ratings).is_empty());

    // The watches resume from the LIST's resourceVersion, with bookmarks.
    for kind in ["services", "endpointslices", "resiliencepolicies"] {
        let watch = api
            .seen()
            .into_iter()
            .find(|s| kind_of(&s.uri) == kind && s.uri.contains("watch=true"))
            .unwrap_or_else(|| panic!("no {kind} watch"));
        assert!(watch.uri.contains("resourceVersion=290"), "{}", watch.uri);
        assert!(
            watch.uri.contains("allowWatchBookmarks=true"),
            "{}",
            watch.uri
        );
    }

    let services = lines("watch/services.watch.jsonl");
    let slices = lines("watch/endpointslices.watch.jsonl");
    let policies = lines("watch/resiliencepolicies.watch.jsonl");
    let step = |kind: &'static str, line: &bytes::Bytes| {
        let api = api.clone();
        let line = line.clone();
        let reflectors = reflectors.clone();
        async move {
            api.push(kind, line.clone()).await;
            applied(&reflectors, &line).await;
        }
    };

    // 1. Service ratings added: no slice yet, no endpoints.
    step("services", &services[0]).await;
    assert!(endpoints(&registry, &ratings).is_empty());
    // 2. Its slice: named port grpc → 9191.
    step("endpointslices", &slices[0]).await;
    assert_eq!(endpoints(&registry, &ratings), ["10.244.2.20:9191"]);
    // 3. Policy reviews created (generation 1): its `retry.on` arrived as
    // `"true"` (kubectl's YAML 1.1) and is read as `on`.
    step("resiliencepolicies", &policies[0]).await;
    let r = update(&registry, &reviews);
    assert_eq!(r.policy_revision, 1);
    let retry = r
        .policy
        .as_ref()
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.outbound.as_ref())
        .and_then(|o| o.retry.as_ref())
        .expect("reviews' retry");
    assert_eq!(
        retry.on.as_ref().map(|l| l.items.clone()),
        Some(vec!["connect-failure".to_owned(), "503".to_owned()])
    );
    let version = r.version.clone();
    // 4. A label on Service reviews: nothing a proxy sees changes.
    step("services", &services[1]).await;
    assert_eq!(update(&registry, &reviews).version, version);
    // 5. 10.244.1.9 terminating (still serving), 10.244.2.12 ready: only
    // ready endpoints are used while there are some.
    step("endpointslices", &slices[1]).await;
    assert_eq!(
        endpoints(&registry, &reviews),
        ["10.244.2.12:9080", "10.244.3.4:9081"]
    );
    // 6. A status write on payments: generation unchanged, same version.
    let before = update(&registry, &payments8080).version;
    step("resiliencepolicies", &policies[1]).await;
    assert_eq!(update(&registry, &payments8080).version, before);
    // 7. reviews' spec changed (generation 2): the new timeout is pushed.
    step("resiliencepolicies", &policies[2]).await;
    let r = update(&registry, &reviews);
    assert_eq!(r.policy_revision, 2);
    assert_ne!(r.version, version);
    // 8. A third IPv6 endpoint for payments.
    step("endpointslices", &slices[2]).await;
    assert_eq!(endpoints(&registry, &payments80).len(), 5);
    assert!(endpoints(&registry, &payments80).contains(&"[fd00:10:244:3::9]:8080".to_owned()));
    // 9. Slice reviews-j4kft deleted: its 9081 endpoint goes.
    step("endpointslices", &slices[3]).await;
    assert_eq!(endpoints(&registry, &reviews), ["10.244.2.12:9080"]);
    // 10. Service ratings deleted: its port is gone with it.
    step("services", &services[2]).await;
    assert!(endpoints(&registry, &ratings).is_empty());
    // 11. The garbage collector deletes its slice.
    step("endpointslices", &slices[4]).await;
    assert!(endpoints(&registry, &ratings).is_empty());
    // 12. Policy reviews deleted.
    step("resiliencepolicies", &policies[3]).await;
    let r = update(&registry, &reviews);
    assert!(r.policy.is_none());
    assert_eq!(r.policy_revision, 0);

    // Bookmarks (skeletons; the slice one has `endpoints: null`) change
    // nothing, and the next watch resumes from them without a re-list.
    let lists_before = api
        .seen()
        .iter()
        .filter(|s| !s.uri.contains("watch=true"))
        .count();
    let state_before: Vec<String> = [&payments80, &reviews, &ratings]
        .iter()
        .map(|k| update(&registry, k).version)
        .collect();
    for (kind, line, rv) in [
        ("services", &services[3], "305"),
        ("endpointslices", &slices[5], "308"),
        ("resiliencepolicies", &policies[4], "309"),
    ] {
        api.push(kind, line.clone()).await;
        api.end_watch(kind);
        let wanted = format!("resourceVersion={rv}");
        let start = tokio::time::Instant::now();
        while !api.seen().iter().any(|s| {
            kind_of(&s.uri) == kind && s.uri.contains("watch=true") && s.uri.contains(&wanted)
        }) {
            assert!(
                start.elapsed() < WAIT,
                "no {kind} watch from the bookmark {rv}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    synced(&reflectors).await;
    let lists_after = api
        .seen()
        .iter()
        .filter(|s| !s.uri.contains("watch=true"))
        .count();
    assert_eq!(lists_before, lists_after, "a bookmark caused a re-list");
    let state_after: Vec<String> = [&payments80, &reviews, &ratings]
        .iter()
        .map(|k| update(&registry, k).version)
        .collect();
    assert_eq!(state_before, state_after);
}

#[tokio::test]
async fn a_410_gone_watch_relists_and_an_expired_list_is_retried() {
    let (client, api) = MockApi::client();
    api.list(
        "services",
        StatusCode::OK,
        fixture("watch/services.list.json"),
    );
    api.list(
        "endpointslices",
        StatusCode::OK,
        fixture("watch/endpointslices.list.json"),
    );
    // The first policy LIST is refused with 410 Expired, the next works.
    api.list(
        "resiliencepolicies",
        StatusCode::GONE,
        fixture("watch/resiliencepolicies.list-410-gone.json"),
    );
    api.list(
        "resiliencepolicies",
        StatusCode::OK,
        fixture("watch/resiliencepolicies.list.json"),
    );
    let (registry, reflectors, _stop) = start(client);
    // Discovery is fed once every kind has listed: after the retried LIST.
    synced(&reflectors).await;
    let payments = key("payments", 8080);
    assert_eq!(update(&registry, &payments).policy_revision, 3);
    let policy_lists = |api: &MockApi| {
        api.seen()
            .iter()
            .filter(|s| kind_of(&s.uri) == "resiliencepolicies" && !s.uri.contains("watch=true"))
            .count()
    };
    assert_eq!(policy_lists(&api), 2);

    // The watch answers with the recorded 410 ERROR event: kube re-lists.
    for line in lines("watch/resiliencepolicies.watch-410-gone.jsonl") {
        api.push("resiliencepolicies", line).await;
    }
    let start = tokio::time::Instant::now();
    while policy_lists(&api) < 3 {
        assert!(start.elapsed() < WAIT, "no re-list after 410 Gone");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    synced(&reflectors).await;
    // The state survives the re-list unchanged.
    assert_eq!(update(&registry, &payments).policy_revision, 3);
    assert_eq!(
        endpoints(&registry, &key("reviews", 9080)),
        ["10.244.1.9:9080", "10.244.3.4:9081"]
    );
}

/// A policy's status writes (every replica's heartbeat) do not wake the
/// translation; a spec change (a new generation) and a deletion do.
#[test]
fn only_spec_changes_of_a_policy_wake_the_translation() {
    use kube::api::DynamicObject;
    use kube::runtime::watcher::Event;

    let list: serde_json::Value =
        serde_json::from_slice(&fixture("watch/resiliencepolicies.list.json")).expect("JSON");
    let recorded: DynamicObject =
        serde_json::from_value(list["items"][0].clone()).expect("a recorded policy");
    assert!(
        recorded.metadata.generation.is_some(),
        "recorded with a generation"
    );
    let mut changes = reflect::Changes::new(reflect::policy_digest);
    assert!(!changes.wakes(&Event::Init));
    assert!(!changes.wakes(&Event::InitApply(recorded.clone())));
    assert!(changes.wakes(&Event::InitDone), "the list's end wakes once");

    let mut status_write = recorded.clone();
    status_write.data["status"] = serde_json::json!({"proxies": {"acked": 1, "total": 1}});
    status_write.metadata.resource_version = Some("999999".to_owned());
    assert!(!changes.wakes(&Event::Apply(status_write)), "status only");

    let mut spec_change = recorded.clone();
    spec_change.metadata.generation = recorded.metadata.generation.map(|g| g + 1);
    assert!(
        changes.wakes(&Event::Apply(spec_change.clone())),
        "new generation"
    );
    assert!(
        !changes.wakes(&Event::Apply(spec_change.clone())),
        "seen already"
    );
    assert!(changes.wakes(&Event::Delete(spec_change)), "deleted");
}
