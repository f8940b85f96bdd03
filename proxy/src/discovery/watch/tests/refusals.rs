//! What the watch task refuses: updates for services it never subscribed
//! to (NACKed, no state), and names the control plane would refuse (at start).

use super::*;

#[tokio::test]
async fn updates_for_services_never_subscribed_are_refused_and_leave_no_state() {
    let (url, mut sessions) = fake_server().await;
    let shared = Arc::new(Shared::new("shop".into(), Metrics::new()));
    let (shutdown, tasks) = start_plain(&shared, url, None).await;
    let mut session = sessions.recv().await.expect("a watch call");
    let Request::Hello(hello) = session.next().await else {
        panic!("hello first");
    };
    assert!(hello.subscriptions.is_empty(), "{hello:?}");

    // payments was never asked for: a policy and an endpoint for it.
    session.send(update("3-a", "n1", Some(policy("2s"))));
    let Request::Nack(nack) = session.next().await else {
        panic!("an unsolicited update is NACKed");
    };
    assert_eq!(nack.nonce, "n1");
    assert!(nack.reason.contains("never subscribed"), "{}", nack.reason);
    assert_eq!(shared.metrics.policy_updates(false), 1);
    let after = shared.snapshot.load();
    assert!(shared.policy_for(&payments()).is_none());
    assert!(after.policies.is_empty() && after.documents.is_empty());
    assert!(after.endpoints.is_empty(), "{:?}", after.endpoints);

    // Once the proxy asks for it, the same update is taken.
    first_request_to_payments(&shared, &mut session, ("3-a", "n2"), "2s").await;
    assert!(shared.policy_for(&payments()).is_some());

    shutdown.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .expect("the watch task stops on shutdown");
}

#[tokio::test]
async fn names_the_control_plane_would_refuse_fail_at_start() {
    let shared = Arc::new(Shared::new("shop".into(), Metrics::new()));
    let config = DiscoveryConfig {
        identity: Identity::new(
            Some("Payments_v1"),
            "shop",
            8080,
            "127.0.0.1:4143".parse().expect("addr"),
        ),
        ..plain("http://127.0.0.1:1".into(), None)
    };
    let tasks = TaskTracker::new();
    let error = crate::discovery::start(shared, config, CancellationToken::new(), &tasks)
        .await
        .expect_err("a bad --service");
    let text = error.to_string();
    assert!(
        text.contains("hello.service: \"Payments_v1\" is not a service name"),
        "{text}"
    );
    assert!(tasks.is_empty(), "no watch task started");
}
