//! Discovery.Watch limits: streams per peer IP, subscriptions per stream,
//! message size; each refusal is RESOURCE_EXHAUSTED (or tonic's
//! OUT_OF_RANGE for size) with a message naming the flag, and counted.

use std::time::Duration;

use crate::common::{TestControlPlane, hello_request, http_get, service};
use levee_proto::v1;
use levee_proto::v1::discovery_client::DiscoveryClient;
use levee_tests::harness::eventually;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

fn hello(subscriptions: Vec<v1::ServiceRef>) -> v1::Hello {
    v1::Hello {
        service: "web".into(),
        namespace: "shop".into(),
        proxy_version: "test/1".into(),
        subscriptions,
        ..Default::default()
    }
}

/// Opens a Watch with `hello`; the call's own result (not the first message).
async fn open(
    cp: &TestControlPlane,
    hello: v1::Hello,
) -> Result<
    (
        mpsc::Sender<v1::WatchRequest>,
        tonic::Streaming<v1::WatchResponse>,
    ),
    tonic::Status,
> {
    let mut client = DiscoveryClient::connect(cp.url()).await.expect("connect");
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello_request(hello)).await.expect("queue hello");
    let responses = client.watch(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, responses))
}

/// The stream's next message must be the end with an error.
async fn refused(responses: &mut tonic::Streaming<v1::WatchResponse>) -> tonic::Status {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("an answer within 5 s");
        match next {
            Err(status) => return status,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
        }
    }
}

async fn metric(cp: &TestControlPlane, reason: &str) -> String {
    let (_, text) = http_get(cp.addrs.http, "/metrics").await;
    let line = format!("levee_cp_watch_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line).map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn streams_per_peer_are_capped_and_freed_when_a_stream_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &["--max-watch-streams-per-peer", "2"]).await;
    let subs = || vec![service("payments", "shop", 8080)];
    let mut first = cp.watch(hello(subs())).await;
    let mut second = cp.watch(hello(subs())).await;
    first.next_update().await;
    second.next_update().await;

    let status = open(&cp, hello(subs()))
        .await
        .expect_err("a third is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-watch-streams-per-peer 2"),
        "{status:?}"
    );
    assert_eq!(metric(&cp, "streams_per_peer").await, "1");

    // One ends: a new stream gets its place.
    drop(first);
    let (_tx, mut responses) = eventually(Duration::from_secs(5), "a freed slot", || async {
        open(&cp, hello(subs())).await.map_err(|s| s.to_string())
    })
    .await;
    let message = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("an update");
    assert!(matches!(message, Ok(Some(_))), "{message:?}");
    drop((second, _tx, responses));
    cp.stop().await;
}

#[tokio::test]
async fn subscriptions_per_stream_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &["--max-subscriptions-per-stream", "2"]).await;
    let two = vec![service("a", "shop", 80), service("b", "shop", 80)];

    // At the cap in the hello: served; one more by Subscribe: refused.
    let (tx, mut responses) = open(&cp, hello(two.clone())).await.expect("open");
    tx.send(v1::WatchRequest {
        kind: Some(v1::watch_request::Kind::Subscribe(v1::Subscribe {
            services: vec![service("c", "shop", 80)],
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let status = refused(&mut responses).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("--max-subscriptions-per-stream 2"),
        "{status:?}"
    );

    // Over the cap in the hello itself.
    let mut three = two;
    three.push(service("c", "shop", 80));
    let (_tx, mut responses) = open(&cp, hello(three)).await.expect("open");
    let status = refused(&mut responses).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(metric(&cp, "subscriptions").await, "2");
    drop((tx, _tx));
    cp.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(dir.path(), &["--grpc-max-message-size", "1024"]).await;
    let mut big = hello(vec![service("payments", "shop", 8080)]);
    big.proxy_version = "x".repeat(4096);
    let status = match open(&cp, big).await {
        Ok((_tx, mut responses)) => refused(&mut responses).await,
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    eventually(Duration::from_secs(5), "the refusal counted", || async {
        match metric(&cp, "message_too_large").await.as_str() {
            "1" => Ok(()),
            other => Err(format!("counter {other:?}")),
        }
    })
    .await;

    // An Apply over the limit too.
    let mut admin = cp.admin(None).await;
    let err = admin
        .apply(crate::common::apply(
            format!("# {}\n", "y".repeat(4096)),
            None,
        ))
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // A normal stream still works.
    let mut watch = cp
        .watch(hello(vec![service("payments", "shop", 8080)]))
        .await;
    watch.next_update().await;
    drop((admin, watch));
    cp.stop().await;
}
