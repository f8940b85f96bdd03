//! Several control-plane replicas (`--control-plane A,B`): a replica that
//! does not answer is skipped for the next one, and a stream that ends
//! moves to the next replica in the list, which gets the full hello.

use super::*;

#[tokio::test]
async fn an_unreachable_replica_is_skipped_and_a_lost_stream_moves_on() {
    // A port nothing listens on, then a working replica.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let (url, mut sessions) = fake_server().await;
    let shared = Arc::new(Shared::new("shop".into(), Metrics::new()));
    let config = DiscoveryConfig {
        identity: orders_identity(),
        backoff: FAST_BACKOFF,
        ..plain(format!("http://{unused}, {url}"), None)
    };
    let (shutdown, tasks) = start(&shared, config).await;
    let orders = ServiceKey {
        name: "orders".into(),
        namespace: "shop".into(),
        port: 8080,
    };
    let answer = |session: &Session, nonce: &str| {
        session.send(pb::ServiceUpdate {
            service: Some(pb::ServiceRef::from(&orders)),
            version: "0-empty".into(),
            nonce: nonce.into(),
            ..pb::ServiceUpdate::default()
        });
    };
    let mut first = sessions
        .recv()
        .await
        .expect("a watch call on the second replica");
    let Request::Hello(_) = first.next().await else {
        panic!("hello first");
    };
    answer(&first, "n1");
    until("ready", || shared.is_ready()).await;
    assert_eq!(
        shared.snapshot.load().source,
        format!("control-plane:{url}")
    );

    // The stream ends: the next try is the first replica (still down),
    // then this one again, with a full hello.
    drop(first);
    let mut again = tokio::time::timeout(Duration::from_secs(10), sessions.recv())
        .await
        .expect("reconnected within 10s")
        .expect("a watch call");
    let Request::Hello(hello) = again.next().await else {
        panic!("hello first");
    };
    assert_eq!(hello.subscriptions, vec![pb::ServiceRef::from(&orders)]);
    answer(&again, "n2");
    assert!(shared.is_ready(), "the last good config served throughout");
    shutdown.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .expect("the watch task stops on shutdown");
}
