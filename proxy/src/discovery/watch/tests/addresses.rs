//! Subscriptions by address: a destination address met on a redirected
//! connection is subscribed on the stream, its answer reaches the waiting
//! connection, a changed answer replaces it, and a new stream subscribes
//! every address again right after hello.

use std::net::SocketAddr;

use super::*;
use crate::subscriptions::addresses::Lookup;

fn answer(addr: SocketAddr, owner: Option<&ServiceKey>) -> Result<pb::WatchResponse, Status> {
    Ok(pb::WatchResponse {
        kind: Some(Response::Address(pb::AddressUpdate {
            address: addr.to_string(),
            service: owner.map(pb::ServiceRef::from),
        })),
    })
}

#[tokio::test]
async fn an_address_is_subscribed_answered_and_subscribed_again_after_a_reconnect() {
    let (url, mut sessions) = fake_server().await;
    let shared = Arc::new(Shared::new("shop".into(), Metrics::new()));
    let (shutdown, tasks) = start_plain(&shared, url, None).await;
    let mut session = sessions.recv().await.expect("a watch call");
    let Request::Hello(_) = session.next().await else {
        panic!("hello first");
    };
    until("the stream is up", || shared.subscriptions.is_connected()).await;

    let vip: SocketAddr = "10.96.0.10:8080".parse().expect("addr");
    let waiter = {
        let shared = shared.clone();
        tokio::spawn(async move {
            shared
                .subscriptions
                .address_owner(vip, Duration::from_secs(10))
                .await
        })
    };
    let Request::Subscribe(subscribe) = session.next().await else {
        panic!("subscribe");
    };
    assert_eq!(subscribe.addresses, ["10.96.0.10:8080"]);
    assert!(subscribe.services.is_empty());
    session
        .responses
        .send(answer(vip, Some(&payments())))
        .expect("client listening");
    let owner = waiter.await.expect("the connection goes on");
    assert_eq!(owner.as_deref(), Some(&payments()));

    // The owner changes: the cached answer follows.
    session
        .responses
        .send(answer(vip, None))
        .expect("client listening");
    until("the address is unknown now", || {
        matches!(
            shared.subscriptions.addresses.lookup(&vip),
            Lookup::Answered(None)
        )
    })
    .await;

    // A new stream: hello, then every address again.
    drop(session);
    let mut session = sessions.recv().await.expect("a second watch call");
    let Request::Hello(_) = session.next().await else {
        panic!("hello first");
    };
    let Request::Subscribe(subscribe) = session.next().await else {
        panic!("the addresses again");
    };
    assert_eq!(subscribe.addresses, ["10.96.0.10:8080"]);
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}
