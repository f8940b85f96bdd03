use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::endpoints::{DnsCache, DnsConfig, Lookup};
use crate::forward::pool::PoolSettings;
use crate::metrics::Metrics;

/// Shared state whose DNS knows no name (tests never leave the machine).
fn shared() -> Arc<Shared> {
    let mut shared = Shared::new("default".into(), Metrics::new());
    let lookup: Lookup = Arc::new(|host, _port| {
        Box::pin(async move { Err(std::io::Error::other(format!("{host}: unknown"))) })
    });
    shared.dns = DnsCache::with_lookup(DnsConfig::default(), lookup);
    Arc::new(shared)
}

fn destinations(shared: &Arc<Shared>) -> Destinations {
    destinations_of(shared, MAX_DESTINATIONS)
}

fn destinations_of(shared: &Arc<Shared>, capacity: usize) -> Destinations {
    let forwarder = Forwarder::new(
        PoolSettings::default(),
        TaskTracker::new(),
        CancellationToken::new(),
    );
    Destinations::new(shared.clone(), Arc::new(forwarder), capacity)
}

fn web() -> ServiceKey {
    ServiceKey::from_authority("web", "default", 80).expect("key")
}

fn endpoints(ports: &[u16]) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let addrs: Arc<[SocketAddr]> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    snapshot.endpoints.insert(web(), addrs);
    snapshot
}

#[test]
fn spellings_of_one_service_share_one_entry() {
    let shared = shared();
    let table = destinations(&shared);
    let a = table.get("web").expect("entry");
    let b = table.get("web.default:80").expect("entry");
    let c = table.get("web").expect("entry");
    assert!(Arc::ptr_eq(&a, &b), "one state per service");
    assert!(Arc::ptr_eq(&a, &c));
    assert_eq!(&*a.destination.label, "web.default:80");
    let other = table.get("api").expect("entry");
    assert!(!Arc::ptr_eq(&a, &other));
    assert!(table.get("web:notaport").is_err());
}

#[tokio::test]
async fn the_view_is_rebuilt_only_when_the_snapshot_changes() {
    let shared = shared();
    shared.install(endpoints(&[9001]));
    let table = destinations(&shared);
    let entry = table.get("web").expect("entry");
    let first = entry.view(&shared).await;
    assert_eq!(first.version, 1);
    assert!(first.recheck_at.is_none(), "static endpoints do not age");
    assert_eq!(
        entry.destination.balancer.addrs(),
        [SocketAddr::from(([127, 0, 0, 1], 9001))]
    );
    let again = entry.view(&shared).await;
    assert!(Arc::ptr_eq(&first, &again), "same version: the same view");

    shared.install(endpoints(&[9002, 9003]));
    let next = entry.view(&shared).await;
    assert_eq!(next.version, 2);
    assert_eq!(entry.destination.balancer.addrs().len(), 2);
    assert!(
        Arc::ptr_eq(&first.routes, &next.routes),
        "no policy change: the routes and their stacks are kept"
    );

    // No static endpoints any more: DNS answers (here: fails), and that
    // answer is asked for again later; the balancer keeps its last set.
    shared.install(Snapshot::default());
    let gone = entry.view(&shared).await;
    assert!(gone.endpoints.is_err());
    assert!(gone.recheck_at.is_some(), "a DNS answer ages");
    assert_eq!(entry.destination.balancer.addrs().len(), 2);
}

/// The `levee_state_evictions_total{table="destinations"}` value.
fn evictions(shared: &Shared) -> u64 {
    shared
        .metrics
        .state_evictions(crate::metrics::StateTable::Destinations)
        .get()
}

#[test]
fn a_full_table_evicts_the_least_recently_used_and_keeps_hot_ones() {
    let shared = shared();
    let table = destinations_of(&shared, 16);
    let hot = table.get("10.0.0.1:80").expect("entry");
    for i in 0..1000u32 {
        let authority = format!("127.1.{}.{}:1", i / 256, i % 256);
        table.get(&authority).expect("entry");
        // The app keeps calling its real destination meanwhile.
        let again = table.get("10.0.0.1:80").expect("entry");
        assert!(Arc::ptr_eq(&hot, &again), "the hot entry survives ({i})");
    }
    assert!(table.len() <= 16, "{}", table.len());
    let spellings = table
        .table
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .by_authority
        .len();
    assert!(spellings <= 32, "{spellings}");
    // 1001 destinations met, at most 16 kept: every other one was evicted.
    assert!(evictions(&shared) >= 1001 - 16, "{}", evictions(&shared));
}

#[test]
fn an_evicted_destination_takes_its_metric_series_along() {
    let shared = shared();
    let table = destinations_of(&shared, 4);
    let first = table.get("127.1.0.1:1").expect("entry");
    let route = first
        .destination
        .routes_for(None)
        .route(&levee_proto::policy::RouteRequest::new("GET", "/"))
        .requests
        .clone();
    route.record(
        "200",
        crate::metrics::outcome::SUCCESS,
        Duration::from_millis(1),
    );
    let text = shared.metrics.encode();
    assert!(text.contains(r#"service="127.1.0.1:1""#), "{text}");
    for i in 2..=8 {
        table.get(&format!("127.1.0.{i}:1")).expect("entry");
    }
    let text = shared.metrics.encode();
    assert!(
        !text.contains(r#"service="127.1.0.1:1""#),
        "evicted series are gone: {text}"
    );
    assert!(text.contains(r#"service="127.1.0.8:1""#), "{text}");
    // A request still in flight on the evicted entry counts, unexported.
    route.record(
        "503",
        crate::metrics::outcome::FAILURE,
        Duration::from_millis(1),
    );
    assert!(!shared.metrics.encode().contains(r#"service="127.1.0.1:1""#));
    // Met again: a fresh entry, exported again.
    let back = table.get("127.1.0.1:1").expect("entry");
    assert!(!Arc::ptr_eq(&first, &back));
    assert!(shared.metrics.encode().contains(r#"service="127.1.0.1:1""#));
}

#[tokio::test]
async fn an_evicted_destination_is_unsubscribed_and_subscribed_again_when_met() {
    use crate::subscriptions::Change;

    let shared = shared();
    let mut changes = shared.subscriptions.enable().expect("control-plane mode");
    // Ready and disconnected: subscribing waits for no answer.
    shared.set_ready(true);
    let table = destinations_of(&shared, 8);
    let key = |n: usize| ServiceKey::from_authority(&format!("svc-{n}"), "default", 80);
    let first = table.get("svc-0").expect("entry");
    first.discovered(&shared).await;
    assert_eq!(
        changes.try_recv(),
        Ok(Change::Subscribe(key(0).expect("key")))
    );
    // A flood of distinct hosts: each is subscribed, and each eviction
    // unsubscribes what it drops, so the set stays as small as the table.
    for n in 1..1000 {
        let entry = table.get(&format!("svc-{n}")).expect("entry");
        entry.discovered(&shared).await;
        assert!(shared.subscriptions.len() <= 8, "{n}");
    }
    assert!(table.len() <= 8);
    let mut subscribed = std::collections::HashSet::new();
    let mut unsubscribes = 0;
    subscribed.insert(key(0).expect("key"));
    while let Ok(change) = changes.try_recv() {
        match change {
            Change::Subscribe(k) => assert!(subscribed.insert(k), "subscribed twice"),
            Change::Unsubscribe(k) => {
                assert!(subscribed.remove(&k), "{k} unsubscribed unsubscribed");
                unsubscribes += 1;
            }
            other => panic!("no address is met here: {other:?}"),
        }
    }
    assert_eq!(subscribed.len(), table.len(), "{subscribed:?}");
    assert_eq!(unsubscribes as u64, evictions(&shared));
    assert!(!subscribed.contains(&key(0).expect("key")), "svc-0 went");

    // An entry still held by a request in flight sees its subscription
    // dropped; the destination met again is subscribed again.
    let again = table.get("svc-0").expect("entry");
    assert!(!Arc::ptr_eq(&first, &again));
    again.discovered(&shared).await;
    let mut resubscribed = false;
    while let Ok(change) = changes.try_recv() {
        resubscribed |= change == Change::Subscribe(key(0).expect("key"));
    }
    assert!(resubscribed);
}

#[tokio::test]
async fn an_original_destination_is_its_own_passthrough_endpoint() {
    let shared = shared();
    let table = destinations(&shared);
    let addr = SocketAddr::from(([10, 0, 0, 9], 8080));
    let entry = table.original(addr);
    assert_eq!(&*entry.destination.label, "passthrough:10.0.0.9:8080");
    // Its endpoint is the address itself: no DNS (which knows nothing here).
    let view = entry.view(&shared).await;
    assert_eq!(view.endpoints.as_deref().ok(), Some(&[addr][..]));
    assert!(Arc::ptr_eq(&entry, &table.original(addr)), "one entry");
    let v6 = SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 9], 80));
    assert_eq!(
        &*table.original(v6).destination.label,
        "passthrough:[fd00::9]:80"
    );
    assert_eq!(table.len(), 2);
}
