use super::*;

fn key(name: &str) -> ServiceKey {
    ServiceKey {
        name: name.into(),
        namespace: "default".into(),
        port: 80,
    }
}

#[tokio::test]
async fn static_mode_never_subscribes() {
    let subs = Subscriptions::default();
    subs.discovered(&key("a")).await;
    assert!(subs.is_empty());
}

#[tokio::test(start_paused = true)]
async fn first_sight_subscribes_once_and_waits_for_the_answer() {
    let subs = Arc::new(Subscriptions::default());
    let mut rx = subs.enable().expect("first enable");
    assert!(subs.enable().is_none());
    subs.set_connected(true);
    let waiter = {
        let subs = subs.clone();
        tokio::spawn(async move { subs.discovered(&key("a")).await })
    };
    assert_eq!(rx.recv().await, Some(Change::Subscribe(key("a"))));
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "waits for the first update");
    subs.settle(&key("a"));
    waiter.await.expect("waiter");
    subs.discovered(&key("a")).await;
    assert!(rx.try_recv().is_err(), "a known destination is not resent");
    // IP literals have no namespace and are not subscribed.
    let ip = ServiceKey {
        name: "127.0.0.1".into(),
        namespace: String::new(),
        port: 80,
    };
    subs.discovered(&ip).await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn before_a_first_config_a_cached_destination_waits_while_disconnected() {
    let subs = Arc::new(Subscriptions::default());
    let _rx = subs.enable();
    subs.preload([key("cached")]);
    // Starting, not connected yet: waits for the cache (or the control
    // plane) to settle it instead of running on no config.
    let waiter = {
        let subs = subs.clone();
        tokio::spawn(async move { subs.discovered_while(&key("cached"), true).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "waits while starting");
    subs.settle(&key("cached"));
    waiter.await.expect("waiter");
    // Still bounded when nothing answers.
    let start = tokio::time::Instant::now();
    subs.discovered_while(&key("nobody"), true).await;
    assert_eq!(start.elapsed(), FIRST_UPDATE_WAIT);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_first_update_stops_waiting_after_the_bound() {
    let subs = Subscriptions::default();
    let _rx = subs.enable();
    subs.set_connected(true);
    let start = tokio::time::Instant::now();
    subs.discovered(&key("slow")).await;
    assert_eq!(start.elapsed(), FIRST_UPDATE_WAIT);
    // Disconnected: no waiting at all.
    subs.set_connected(false);
    let start = tokio::time::Instant::now();
    subs.discovered(&key("other")).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_unsubscribed_destination_is_dropped_and_subscribed_anew_when_met_again() {
    let subs = Subscriptions::default();
    let mut rx = subs.enable().expect("enable");
    let first = subs.discovered(&key("a")).await;
    assert_eq!(rx.try_recv(), Ok(Change::Subscribe(key("a"))));
    subs.settle(&key("a"));
    assert!(first.is_live());

    subs.unsubscribe([&key("a"), &key("never-met")]);
    assert_eq!(rx.try_recv(), Ok(Change::Unsubscribe(key("a"))));
    assert!(rx.try_recv().is_err(), "unknown keys are left alone");
    assert!(!first.is_live(), "its holder sees it dropped");
    assert!(subs.is_empty());

    // Met again: a new subscription, waiting for a fresh first answer.
    subs.set_connected(true);
    let start = tokio::time::Instant::now();
    let again = subs.discovered(&key("a")).await;
    assert_eq!(rx.try_recv(), Ok(Change::Subscribe(key("a"))));
    assert_eq!(
        start.elapsed(),
        FIRST_UPDATE_WAIT,
        "the old answer does not count"
    );
    assert!(again.is_live() && !again.is_done());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_first_request_goes_on_when_its_subscription_is_dropped() {
    let subs = Arc::new(Subscriptions::default());
    let _rx = subs.enable();
    subs.set_connected(true);
    let waiter = {
        let subs = subs.clone();
        tokio::spawn(async move { subs.discovered(&key("a")).await })
    };
    tokio::task::yield_now().await;
    let start = tokio::time::Instant::now();
    subs.unsubscribe([&key("a")]);
    let dropped = waiter.await.expect("waiter");
    assert!(!dropped.is_live());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn a_full_set_drops_its_oldest_instead_of_refusing_newcomers() {
    let subs = Subscriptions::default();
    let mut rx = subs.enable().expect("enable");
    let evictions = Counter::default();
    subs.limit(16, evictions.clone());
    subs.pin(key("own"));
    let mut held = Vec::new();
    for n in 0..15 {
        held.push(subs.discovered(&key(&format!("svc-{n}"))).await);
    }
    assert_eq!(subs.len(), 16);
    while rx.try_recv().is_ok() {}

    // The 17th: the oldest eighth (two) goes, the newcomer is subscribed.
    let newcomer = subs.discovered(&key("late")).await;
    assert!(newcomer.is_live());
    let mut dropped = [rx.try_recv(), rx.try_recv()].map(|c| match c {
        Ok(Change::Unsubscribe(key)) => key.name,
        other => panic!("expected an unsubscribe, got {other:?}"),
    });
    dropped.sort();
    assert_eq!(dropped, ["svc-0", "svc-1"]);
    assert_eq!(
        rx.try_recv(),
        Ok(Change::Subscribe(key("late"))),
        "after the drops"
    );
    assert_eq!(evictions.get(), 2);
    assert!(!held[0].is_live() && !held[1].is_live() && held[2].is_live());
    assert_eq!(subs.len(), 15);

    // The proxy's own service is never dropped, also when asked to.
    subs.unsubscribe([&key("own")]);
    for n in 0..64 {
        subs.discovered(&key(&format!("more-{n}"))).await;
    }
    assert!(subs.len() <= 16);
    assert!(subs.read().services.contains_key(&key("own")));
}

#[test]
fn the_subscription_bound_follows_the_destination_table() {
    assert_eq!(subscription_capacity(4096), 8192);
    assert_eq!(subscription_capacity(64), 128);
    assert_eq!(subscription_capacity(1), 64);
    assert_eq!(subscription_capacity(usize::MAX), usize::MAX);
}

#[tokio::test]
async fn another_port_of_the_own_service_is_subscribed_once_and_never_dropped() {
    let subs = Subscriptions::default();
    subs.pin_own_port(key("own"));
    assert!(subs.is_empty(), "static mode: nothing to subscribe");

    let mut rx = subs.enable().expect("enable");
    subs.limit(8, Counter::default());
    let port = ServiceKey {
        port: 9090,
        ..key("own")
    };
    subs.pin_own_port(port.clone());
    subs.pin_own_port(port.clone());
    assert_eq!(rx.try_recv(), Ok(Change::Subscribe(port.clone())));
    assert!(rx.try_recv().is_err(), "subscribed once");
    subs.unsubscribe([&port]);
    for n in 0..32 {
        subs.discovered(&key(&format!("svc-{n}"))).await;
    }
    assert!(subs.read().services.contains_key(&port), "pinned");
}

#[tokio::test(start_paused = true)]
async fn an_address_waits_a_bounded_time_for_its_first_answer_then_is_cached() {
    let wait = Duration::from_millis(500);
    let vip: SocketAddr = "10.96.0.10:8080".parse().expect("addr");
    // Static mode: nothing to ask.
    let static_mode = Subscriptions::default();
    assert_eq!(static_mode.address_owner(vip, wait).await, None);
    assert!(static_mode.addresses.is_empty());

    let subs = Arc::new(Subscriptions::default());
    let mut rx = subs.enable().expect("enable");
    // Disconnected: subscribed for later, passthrough now, no wait.
    let started = tokio::time::Instant::now();
    assert_eq!(subs.address_owner(vip, wait).await, None);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(rx.try_recv(), Ok(Change::SubscribeAddress(vip)));

    // Connected, no answer: waits the deadline, then passthrough.
    subs.set_connected(true);
    let other: SocketAddr = "10.96.0.11:8080".parse().expect("addr");
    let started = tokio::time::Instant::now();
    assert_eq!(subs.address_owner(other, wait).await, None);
    assert_eq!(started.elapsed(), wait);

    // Connected, answered while waiting: the owner at once.
    let waiter = {
        let subs = subs.clone();
        tokio::spawn(async move { subs.address_owner(vip, Duration::from_secs(5)).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "waits for the answer");
    subs.addresses.answer(&vip, Some(key("payments")));
    let owner = waiter.await.expect("waiter");
    assert_eq!(owner.as_deref(), Some(&key("payments")));
    // Cached: no new subscription, no wait.
    assert_eq!(
        subs.address_owner(vip, wait).await.as_deref(),
        Some(&key("payments"))
    );
    assert_eq!(rx.try_recv(), Ok(Change::SubscribeAddress(other)));
    assert!(rx.try_recv().is_err());
}
