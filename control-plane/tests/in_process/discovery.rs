//! Discovery.Watch over a real socket: updates, ACK/NACK in Status,
//! coalescing, endpoint registration and its grace period.

use std::time::{Duration, Instant};

use crate::common::{TestControlPlane, endpoints, policy_yaml, service};
use levee_proto::policy::ResiliencePolicy;
use levee_proto::v1;
use levee_proto::v1::watch_request::Kind;
use levee_tests::harness::{eventually, yaml};
use tonic::Code;

fn apply(yaml: String) -> v1::ApplyRequest {
    v1::ApplyRequest {
        yaml,
        expected_revision: None,
        dry_run: false,
        documents: Vec::new(),
    }
}

fn caller() -> v1::Hello {
    v1::Hello {
        service: "web".into(),
        namespace: "shop".into(),
        proxy_version: "test/1".into(),
        subscriptions: vec![service("payments", "shop", 8080)],
        ..Default::default()
    }
}

fn payments_proxy(address: &str, inbound_port: u32) -> v1::Hello {
    v1::Hello {
        service: "payments".into(),
        namespace: "shop".into(),
        service_port: 8080,
        address: address.into(),
        inbound_port,
        proxy_version: "test/1".into(),
        subscriptions: Vec::new(),
    }
}

async fn subscription(cp: &TestControlPlane, service_name: &str) -> Option<v1::SubscriptionStatus> {
    let mut admin = cp.admin(None).await;
    let status = admin.status(v1::StatusRequest {}).await.ok()?.into_inner();
    status
        .proxies
        .iter()
        .filter(|p| p.hello.as_ref().is_some_and(|h| h.service == "web"))
        .flat_map(|p| p.subscriptions.clone())
        .find(|s| s.service.as_ref().is_some_and(|r| r.name == service_name))
}

#[tokio::test]
async fn updates_are_pushed_and_acks_and_nacks_show_in_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    admin
        .apply(apply(policy_yaml("payments", "payments", "2s")))
        .await
        .expect("apply");

    let mut watch = cp.watch(caller()).await;
    let first = watch.next_update().await;
    assert_eq!(first.service, Some(service("payments", "shop", 8080)));
    assert_eq!(first.policy_revision, 1);
    assert!(!first.version.is_empty() && !first.nonce.is_empty());
    let policy = ResiliencePolicy::try_from(first.policy.clone().expect("typed policy"))
        .expect("valid policy");
    assert_eq!(policy.metadata.name, "payments");
    assert_eq!(
        policy.spec.outbound.timeouts.request,
        Some("2s".parse().expect("duration"))
    );
    watch.ack(&first).await;
    let acked = eventually(Duration::from_secs(5), "the ACK in Status", || async {
        subscription(&cp, "payments")
            .await
            .filter(|s| !s.acked_version.is_empty())
            .ok_or_else(|| "no acked version yet".to_owned())
    })
    .await;
    assert_eq!(acked.acked_version, first.version);
    assert_eq!(acked.sent_version, first.version);

    // A change is pushed at once; the proxy NACKs it and Status says why.
    let started = Instant::now();
    admin
        .apply(apply(policy_yaml("payments", "payments", "3s")))
        .await
        .expect("apply");
    let second = watch.next_update().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "push took {:?}",
        started.elapsed()
    );
    assert_eq!(second.policy_revision, 2);
    let policy = ResiliencePolicy::try_from(second.policy.clone().expect("typed policy"))
        .expect("valid policy");
    assert_eq!(
        policy.spec.outbound.timeouts.request,
        Some("3s".parse().expect("duration"))
    );
    assert_ne!(second.version, first.version);
    assert_ne!(second.nonce, first.nonce);
    watch.nack(&second, "timeouts.request: cannot apply").await;
    let nacked = eventually(Duration::from_secs(5), "the NACK in Status", || async {
        subscription(&cp, "payments")
            .await
            .filter(|s| !s.nack_reason.is_empty())
            .ok_or_else(|| "no NACK reason yet".to_owned())
    })
    .await;
    assert_eq!(nacked.nacked_version, second.version);
    assert_eq!(nacked.nack_reason, "timeouts.request: cannot apply");
    assert_eq!(
        nacked.acked_version, first.version,
        "still on the last good version"
    );

    // Deleting the policy pushes "no policy".
    let reference = v1::DocumentRef {
        kind: "ResiliencePolicy".into(),
        namespace: "shop".into(),
        name: "payments".into(),
    };
    admin
        .delete(v1::DeleteRequest {
            r#ref: Some(reference),
            expected_revision: None,
        })
        .await
        .expect("delete");
    let third = watch.next_update().await;
    assert_eq!(third.policy_revision, 0);
    assert!(third.policy.is_none());

    let (_, metrics) = crate::common::http_get(cp.addrs.http, "/metrics").await;
    assert!(
        metrics.contains("levee_cp_updates_total{result=\"ack\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("levee_cp_updates_total{result=\"nack\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("levee_cp_connected_proxies 1"),
        "{metrics}"
    );
    drop((admin, watch));
    cp.stop().await;
}

#[tokio::test]
async fn dynamic_subscriptions_get_the_current_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    admin
        .apply(apply(policy_yaml("orders", "orders", "1s")))
        .await
        .expect("apply");
    let mut watch = cp
        .watch(v1::Hello {
            service: "web".into(),
            ..Default::default()
        })
        .await;
    watch
        .send(Kind::Subscribe(v1::Subscribe {
            services: vec![service("orders", "shop", 8080)],
            ..Default::default()
        }))
        .await;
    let update = watch.next_update().await;
    assert_eq!(update.service, Some(service("orders", "shop", 8080)));
    assert_eq!(update.policy_revision, 1);
    // An unknown service still gets an (empty) answer, so the proxy knows it is settled.
    watch
        .send(Kind::Subscribe(v1::Subscribe {
            services: vec![service("nobody", "", 80)],
            ..Default::default()
        }))
        .await;
    let empty = watch.next_update().await;
    assert_eq!(empty.service, Some(service("nobody", "default", 80)));
    assert!(empty.policy.is_none() && empty.endpoints.is_empty());
    drop((admin, watch));
    cp.stop().await;
}

#[tokio::test]
async fn a_burst_of_changes_ends_on_the_latest_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    let mut watch = cp.watch(caller()).await;
    assert_eq!(watch.next_update().await.policy_revision, 0);
    for ms in 1..=40 {
        admin
            .apply(apply(policy_yaml(
                "payments",
                "payments",
                &format!("{ms}ms"),
            )))
            .await
            .expect("apply");
    }
    // Read until the latest arrives: every change is reflected, and a slow
    // reader is not sent one update per change (at most one per change).
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "latest version never arrived");
        let update = watch.next_update().await;
        received += 1;
        if update.policy_revision == 40 {
            break;
        }
    }
    assert!(received <= 40, "{received} updates for 40 changes");
    drop((admin, watch));
    cp.stop().await;
}

#[tokio::test]
async fn the_first_message_must_be_hello() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut client = v1::discovery_client::DiscoveryClient::connect(cp.url())
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let subscribe = v1::WatchRequest {
        kind: Some(Kind::Subscribe(v1::Subscribe::default())),
    };
    tx.send(subscribe).await.expect("queue");
    let mut responses = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let err = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("answer within 5s")
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("hello"), "{}", err.message());
    drop((client, tx));
    cp.stop().await;
}

#[tokio::test]
async fn a_proxy_is_an_endpoint_while_connected_and_for_the_grace_period_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grace = Duration::from_millis(300);
    let cp = TestControlPlane::start(dir.path(), &["--endpoint-grace", "300ms"]).await;
    let mut admin = cp.admin(None).await;
    admin
        .apply(apply(yaml::documents(&[endpoints(&["127.0.0.1:9001"])])))
        .await
        .expect("static endpoints");

    let mut watch = cp.watch(caller()).await;
    assert_eq!(watch.next_update().await.endpoints, ["127.0.0.1:9001"]);

    let server = cp.watch(payments_proxy("127.0.0.1", 4143)).await;
    let joined = watch.update_where(|u| u.endpoints.len() == 2).await;
    assert_eq!(joined.endpoints, ["127.0.0.1:4143", "127.0.0.1:9001"]);
    // Plaintext (`--insecure-plaintext`): nothing proved who registered,
    // so callers are told to expect no identity there.
    assert!(joined.identities.is_empty(), "{:?}", joined.identities);

    // A second replica without an address is registered at its peer IP.
    let replica = cp.watch(payments_proxy("", 4144)).await;
    let three = watch.update_where(|u| u.endpoints.len() == 3).await;
    assert!(
        three.endpoints.contains(&"127.0.0.1:4144".to_owned()),
        "{:?}",
        three.endpoints
    );

    let closed_at = Instant::now();
    drop(server);
    let left = watch
        .update_where(|u| !u.endpoints.contains(&"127.0.0.1:4143".to_owned()))
        .await;
    let waited = closed_at.elapsed();
    assert!(
        waited >= grace - Duration::from_millis(50),
        "removed after {waited:?}, before the grace period"
    );
    assert_eq!(left.endpoints, ["127.0.0.1:4144", "127.0.0.1:9001"]);
    drop((admin, watch, replica));
    cp.stop().await;
}

#[tokio::test]
async fn a_reconnect_within_the_grace_period_keeps_the_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &["--endpoint-grace", "200ms"]).await;
    let mut watch = cp.watch(caller()).await;
    assert!(watch.next_update().await.endpoints.is_empty());
    let first = cp.watch(payments_proxy("127.0.0.1", 4143)).await;
    watch
        .update_where(|u| u.endpoints == ["127.0.0.1:4143"])
        .await;
    drop(first);
    let _second = cp.watch(payments_proxy("127.0.0.1", 4143)).await;
    // Proving that nothing is removed needs time to pass: wait past the
    // first stream's grace period, then check the endpoint is still there.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = cp
        .admin(None)
        .await
        .status(v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.proxies.len(), 2, "caller and the reconnected proxy");
    let mut check = cp.watch(caller()).await;
    assert_eq!(check.next_update().await.endpoints, ["127.0.0.1:4143"]);
    drop((watch, check));
    cp.stop().await;
}

#[tokio::test]
async fn stopping_ends_open_streams_with_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut watch = cp.watch(caller()).await;
    watch.next_update().await;
    // Stop while the stream is open: the server must not wait for it forever.
    cp.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.responses.message())
        .await
        .expect("the stream ends within 5s");
    match ended {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status}"),
        Ok(None) => {}
        Ok(Some(message)) => panic!("unexpected message {message:?}"),
    }
}

#[tokio::test]
async fn subscriptions_by_address_are_answered_then_follow_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &[]).await;
    let mut admin = cp.admin(None).await;
    let mut watch = cp.watch(caller()).await;
    // The hello's subscription answers first.
    let _ = watch.next_update().await;
    watch
        .send(Kind::Subscribe(v1::Subscribe {
            addresses: vec!["10.96.0.10:8080".into()],
            ..Default::default()
        }))
        .await;
    let unknown = watch.next_address().await;
    assert_eq!(unknown.address, "10.96.0.10:8080");
    assert_eq!(unknown.service, None);
    // A ServiceEndpoints document naming the virtual IP: the answer changes,
    // and the service's update carries the virtual IPs and appProtocol.
    let yaml = "apiVersion: levee.dev/v1alpha1\nkind: ServiceEndpoints\n\
                metadata: {name: payments, namespace: shop}\n\
                spec: {service: payments, port: 8080, addresses: [\"10.0.0.7:8080\"], \
                virtualIPs: [10.96.0.10], appProtocol: grpc}\n";
    admin.apply(apply(yaml.to_owned())).await.expect("apply");
    let mut known = None;
    let mut update = None;
    while known.is_none() || update.is_none() {
        match watch.next_message().await {
            v1::watch_response::Kind::Address(a) => known = Some(a),
            v1::watch_response::Kind::Update(u) => update = Some(u),
        }
    }
    let known = known.expect("address answer");
    assert_eq!(known.service, Some(service("payments", "shop", 8080)));
    let update = update.expect("service update");
    assert_eq!(update.app_protocol, "grpc");
    assert_eq!(update.virtual_ips, ["10.96.0.10"]);
    // A bad address ends the stream with INVALID_ARGUMENT.
    watch
        .send(Kind::Subscribe(v1::Subscribe {
            addresses: vec!["payments:8080".into()],
            ..Default::default()
        }))
        .await;
    let err = tokio::time::timeout(Duration::from_secs(5), watch.responses.message())
        .await
        .expect("an answer within 5s")
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("subscribe.addresses[0]"), "{err}");
    drop((admin, watch));
    cp.stop().await;
}
