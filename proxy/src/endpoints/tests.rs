use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use levee_proto::policy::ServiceKey;

use super::*;
use crate::errors::ErrorKind;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::state::Shared;

/// A lookup that counts its calls and answers `127.0.0.1:<port>` (or fails when `fail`).
fn counting_lookup(fail: bool) -> (Lookup, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let lookup: Lookup = Arc::new(move |_host, port| {
        seen.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if fail {
                Err(std::io::Error::other("scripted failure"))
            } else {
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
            }
        })
    });
    (lookup, calls)
}

fn shared_with(lookup: Lookup, config: DnsConfig) -> Shared {
    let mut shared = Shared::new("test".into(), Metrics::new());
    shared.dns = DnsCache::with_lookup(config, lookup);
    shared
}

#[tokio::test]
async fn localhost_resolves_to_loopback_through_the_system_resolver() {
    let shared = Shared::new("test".into(), Metrics::new());
    let service = ServiceKey::new("localhost", "test", 8080);
    let addresses = shared.resolve(&service).await.expect("localhost resolves");
    assert!(!addresses.is_empty());
    for address in addresses.iter() {
        assert!(address.ip().is_loopback(), "{address}");
        assert_eq!(address.port(), 8080);
    }
    let text = shared.metrics.encode();
    assert!(
        text.contains(r#"levee_endpoints{service="localhost.test:8080",state="ready"}"#),
        "{text}"
    );
    let answers = shared.dns.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].host, "localhost");
}

#[tokio::test]
async fn static_endpoints_win_over_dns() {
    let (lookup, calls) = counting_lookup(false);
    let shared = shared_with(lookup, DnsConfig::default());
    let service = ServiceKey::new("localhost", "test", 80);
    let listed: Arc<[SocketAddr]> = Arc::from([SocketAddr::from(([127, 0, 0, 9], 9001))]);
    let mut snapshot = Snapshot::default();
    snapshot.endpoints.insert(service.clone(), listed.clone());
    shared.install(snapshot);

    assert_eq!(shared.resolve(&service).await.expect("static"), listed);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "DNS must not be asked");
}

#[tokio::test]
async fn empty_static_list_and_failed_dns_are_no_endpoints() {
    let (lookup, _) = counting_lookup(true);
    let shared = shared_with(lookup, DnsConfig::default());
    let listed = ServiceKey::new("payments", "shop", 8080);
    let mut snapshot = Snapshot::default();
    snapshot
        .endpoints
        .insert(listed.clone(), Arc::from(Vec::<SocketAddr>::new()));
    shared.install(snapshot);

    let error = shared.resolve(&listed).await.expect_err("empty list");
    assert_eq!(error.kind, ErrorKind::NoEndpoints);
    assert_eq!(error.service, "payments.shop:8080");

    let unknown = ServiceKey::new("nowhere", "shop", 80);
    let error = shared.resolve(&unknown).await.expect_err("DNS fails");
    assert_eq!(error.kind, ErrorKind::NoEndpoints);
    assert!(error.detail.contains("nowhere.shop"), "{}", error.detail);
    assert!(
        error.detail.contains("scripted failure"),
        "{}",
        error.detail
    );
}

#[tokio::test]
async fn ip_literals_need_no_lookup() {
    let (lookup, calls) = counting_lookup(false);
    let shared = shared_with(lookup, DnsConfig::default());
    let service = ServiceKey::new("::1", "", 9000);
    let addresses = shared.resolve(&service).await.expect("ip literal");
    assert_eq!(
        &*addresses,
        &[SocketAddr::new(
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            9000
        )]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn answers_are_cached_for_their_ttl() {
    let (lookup, calls) = counting_lookup(false);
    let config = DnsConfig {
        positive_ttl: Duration::from_secs(5),
        ..DnsConfig::default()
    };
    let shared = shared_with(lookup, config);
    let service = ServiceKey::new("payments", "test", 8080);

    shared.resolve(&service).await.expect("first");
    shared.resolve(&service).await.expect("cached");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    tokio::time::advance(Duration::from_secs(6)).await;
    shared.resolve(&service).await.expect("refreshed");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn failures_are_cached_briefly() {
    let (lookup, calls) = counting_lookup(true);
    let config = DnsConfig {
        negative_ttl: Duration::from_secs(1),
        ..DnsConfig::default()
    };
    let shared = shared_with(lookup, config);
    let service = ServiceKey::new("nowhere", "test", 80);

    shared.resolve(&service).await.expect_err("fails");
    let cached = shared.resolve(&service).await.expect_err("cached failure");
    assert_eq!(cached.kind, ErrorKind::NoEndpoints);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    tokio::time::advance(Duration::from_millis(1100)).await;
    shared.resolve(&service).await.expect_err("asked again");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn cache_is_bounded_and_evicts_the_entry_expiring_first() {
    let (lookup, _) = counting_lookup(false);
    let config = DnsConfig {
        capacity: 2,
        ..DnsConfig::default()
    };
    let shared = shared_with(lookup, config);
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        if i > 0 {
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        shared
            .resolve(&ServiceKey::new(name, "test", 80))
            .await
            .expect("resolves");
    }
    let names: Vec<String> = shared
        .dns
        .answers()
        .into_iter()
        .map(|a| a.service.name)
        .collect();
    assert_eq!(names, ["b", "c"]);
    let text = shared.metrics.encode();
    assert!(!text.contains(r#"service="a.test:80""#), "{text}");
    assert!(
        text.contains(r#"levee_state_evictions_total{table="dns"} 1"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_lookups_time_out() {
    let lookup: Lookup = Arc::new(|_, _| Box::pin(std::future::pending()));
    let config = DnsConfig {
        timeout: Duration::from_secs(2),
        ..DnsConfig::default()
    };
    let shared = shared_with(lookup, config);
    let error = shared
        .resolve(&ServiceKey::new("slow", "test", 80))
        .await
        .expect_err("times out");
    assert_eq!(error.kind, ErrorKind::NoEndpoints);
    assert!(error.detail.contains("timed out"), "{}", error.detail);
}

#[test]
fn dns_host_follows_the_namespace() {
    assert_eq!(
        dns_host(&ServiceKey::new("payments", "default", 80), "default"),
        "payments"
    );
    assert_eq!(
        dns_host(&ServiceKey::new("payments", "shop", 80), "default"),
        "payments.shop"
    );
    assert_eq!(
        dns_host(&ServiceKey::new("api.example.com", "", 443), "default"),
        "api.example.com"
    );
}

#[tokio::test(start_paused = true)]
async fn one_caller_refreshes_an_expired_answer_while_the_others_use_the_old_one() {
    // The first lookup answers port 8000 at once; later ones answer 8001
    // once the gate opens.
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let lookup: Lookup = {
        let (calls, gate) = (calls.clone(), gate.clone());
        Arc::new(move |_, _| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let gate = gate.clone();
            Box::pin(async move {
                if first {
                    return Ok(vec![SocketAddr::from(([127, 0, 0, 1], 8000))]);
                }
                let _open = gate.acquire().await.map_err(std::io::Error::other)?;
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], 8001))])
            })
        })
    };
    let shared = Arc::new(shared_with(lookup, DnsConfig::default()));
    let service = ServiceKey::new("payments", "test", 80);
    let port = |answer: Result<Arc<[SocketAddr]>, crate::errors::ProxyError>| {
        answer.expect("resolves")[0].port()
    };
    assert_eq!(port(shared.resolve(&service).await), 8000);

    tokio::time::advance(Duration::from_secs(6)).await;
    let refresher = tokio::spawn({
        let (shared, service) = (shared.clone(), service.clone());
        async move { shared.resolve(&service).await }
    });
    for _ in 0..1000 {
        if calls.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the refresh started");

    assert_eq!(
        port(shared.resolve(&service).await),
        8000,
        "old answer meanwhile"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no second lookup");

    gate.add_permits(1);
    assert_eq!(port(refresher.await.expect("task")), 8001);
    assert_eq!(port(shared.resolve(&service).await), 8001);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
