use std::time::Duration;

use tokio::sync::oneshot;
use tower::{BoxError, Layer, ServiceExt, service_fn};

use super::*;

fn cfg(max_in_flight: u32, max_queued: u32) -> EffectiveConcurrency {
    EffectiveConcurrency {
        max_in_flight,
        max_queued,
    }
}

#[tokio::test(start_paused = true)]
async fn queues_up_to_the_bound_then_rejects() {
    let metrics = Metrics::new();
    let bulkhead = Arc::new(Bulkhead::new(
        &cfg(2, 1),
        Direction::Outbound,
        "payments.shop:8080",
        &metrics,
    ));
    // Each call waits for its own release signal.
    let svc = ConcurrencyLayer::new(bulkhead.clone()).layer(service_fn(
        |release: oneshot::Receiver<u32>| async move { release.await.map_err(BoxError::from) },
    ));
    let mut releases = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = oneshot::channel();
        releases.push(tx);
        calls.push(tokio::spawn(svc.clone().oneshot(rx)));
    }
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.in_flight(), 2);
    assert_eq!(bulkhead.queued(), 1);

    // The fourth call finds both slots and the queue taken: 503 overloaded.
    let (_tx, rx) = oneshot::channel();
    let error = svc.clone().oneshot(rx).await.expect_err("overloaded");
    let error = error.downcast::<ProxyError>().expect("ProxyError");
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert_eq!(error.kind.status(), http::StatusCode::SERVICE_UNAVAILABLE);

    // Finishing the first call lets the queued one in.
    let mut releases = releases.into_iter();
    let first = releases.next().expect("first");
    first.send(1).expect("first still waits");
    assert_eq!(calls.remove(0).await.expect("join").expect("first"), 1);
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.queued(), 0);
    assert_eq!(bulkhead.in_flight(), 2);
    for (n, tx) in releases.enumerate() {
        tx.send(n as u32 + 2).expect("waiting");
    }
    for call in calls {
        call.await.expect("join").expect("served");
    }
    assert_eq!(bulkhead.in_flight(), 0);
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"levee_rejected_total{direction="outbound",service="payments.shop:8080",reason="overloaded"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_in_the_queue_frees_its_place() {
    let metrics = Metrics::new();
    let bulkhead = Bulkhead::new(&cfg(1, 1), Direction::Inbound, "app", &metrics);
    let held = bulkhead.acquire().await.expect("slot");
    let waiting = tokio::time::timeout(Duration::from_millis(10), bulkhead.acquire()).await;
    assert!(waiting.is_err(), "queued until the slot frees");
    assert_eq!(bulkhead.queued(), 0, "the timed-out waiter left the queue");
    // Without queue room the answer is immediate.
    let no_queue = Bulkhead::new(&cfg(1, 0), Direction::Inbound, "app", &metrics);
    let _slot = no_queue.acquire().await.expect("slot");
    let error = no_queue.acquire().await.expect_err("no queue");
    assert_eq!(error.kind, ErrorKind::Overloaded);
    drop(held);
    let _again = bulkhead.acquire().await.expect("slot again");
}
