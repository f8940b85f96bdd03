//! Unsubscribing: a destination the outbound table dropped is unsubscribed
//! on the stream and its policy, endpoints and cache entry are forgotten;
//! an update that crosses the `Unsubscribe` is ignored quietly (no NACK, no
//! state); met again, the service is subscribed anew and its fresh first
//! update is taken.

use super::*;

#[tokio::test]
async fn a_dropped_destination_is_unsubscribed_and_its_state_forgotten() {
    let (url, mut sessions) = fake_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_path = dir.path().join("cache.json");
    let shared = Arc::new(Shared::new("shop".into(), Metrics::new()));
    let (shutdown, tasks) = start_plain(&shared, url, Some(cache_path.clone())).await;
    let mut session = sessions.recv().await.expect("a watch call");
    let Request::Hello(_) = session.next().await else {
        panic!("hello first");
    };

    // Met: subscribed, answered, installed and cached.
    let waiter = {
        let shared = shared.clone();
        tokio::spawn(async move { shared.discovered(&payments()).await })
    };
    let Request::Subscribe(_) = session.next().await else {
        panic!("subscribe");
    };
    session.send(update("3-a", "n1", Some(policy("2s"))));
    let Request::Ack(_) = session.next().await else {
        panic!("ack");
    };
    let first = waiter.await.expect("the first request goes on");
    until("payments installed", || {
        shared.policy_for(&payments()).is_some()
            && shared.snapshot.load().endpoints.contains_key(&payments())
    })
    .await;
    let cached = || std::fs::read_to_string(&cache_path).unwrap_or_default();
    until("payments cached", || cached().contains("payments")).await;

    // Dropped by the outbound table: unsubscribed, everything forgotten.
    shared.subscriptions.unsubscribe([&payments()]);
    assert!(!first.is_live());
    let Request::Unsubscribe(unsubscribe) = session.next().await else {
        panic!("unsubscribe");
    };
    assert_eq!(
        unsubscribe.services,
        vec![pb::ServiceRef::from(&payments())]
    );
    until("payments forgotten", || {
        let snapshot = shared.snapshot.load();
        snapshot.policy_for(&payments()).is_none()
            && !snapshot.endpoints.contains_key(&payments())
            && snapshot.documents.is_empty()
    })
    .await;
    until("payments out of the cache", || {
        !cached().contains("payments")
    })
    .await;

    // An update already on its way crosses the unsubscribe: ignored, not
    // NACKed. The next answer is the NACK of a later unsolicited update.
    session.send(update("3-b", "n2", Some(policy("3s"))));
    let mut other = update("1-x", "n3", None);
    other.service = Some(pb::ServiceRef {
        name: "other".into(),
        namespace: "shop".into(),
        port: 80,
    });
    session.send(other);
    let Request::Nack(nack) = session.next().await else {
        panic!("only the never-subscribed update is answered");
    };
    assert_eq!(nack.nonce, "n3");
    assert_eq!(shared.metrics.policy_updates(false), 1, "one refusal");
    assert!(
        shared.policy_for(&payments()).is_none(),
        "no state re-added"
    );

    // Met again: subscribed anew; its fresh first update is taken.
    let again = first_request_to_payments(&shared, &mut session, ("3-b", "n4"), "3s").await;
    assert!(again.is_live() && again.is_done());
    until("payments back", || shared.policy_for(&payments()).is_some()).await;

    shutdown.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .expect("the watch task stops on shutdown");
}
