//! gRPC through the resilience stack (HTTP/2, in-process proxy): a
//! trailers-only UNAVAILABLE is retried, deadlines travel as `grpc-timeout`
//! and end in DEADLINE_EXCEEDED, and a streaming call passes the retry
//! layer untouched.

use std::time::{Duration, Instant};

use crate::support::upstream::{Behaviour, scripted};
use crate::support::{full, h2, header};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use levee_proxy::body::{BoxBody, BoxError};
use levee_proxy::resilience::timeout::grpc;

const OUTBOUND: &str = "    retry: {maxRetries: 2, grpcOn: [unavailable], backoff: {base: 1ms, max: 5ms}, maxReplayBytes: 16}\n";

fn call(body: BoxBody, timeout: Option<&str>) -> Request<BoxBody> {
    let mut req = Request::post("http://svc:8080/pkg.Echo/Say")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", t);
    }
    req.body(body).expect("request")
}

/// The body and the `grpc-status` (trailers, or the head when trailers-only).
async fn finish(r: http::Response<hyper::body::Incoming>) -> (HeaderMap, Bytes, String) {
    let head = r.headers().clone();
    let collected = r.into_body().collect().await.expect("body");
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned())
        .or_else(|| head.get("grpc-status").cloned())
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    (head, collected.to_bytes(), status)
}

#[tokio::test]
async fn unavailable_is_retried() {
    let upstream = scripted(Behaviour {
        fail_first: 1,
        ..Behaviour::default()
    })
    .await;
    let proxy = crate::support::start_proxy(
        &crate::support::service("svc", Some(OUTBOUND), &[upstream.addr]),
        &[],
    )
    .await;
    let mut client = h2(proxy.addrs.outbound).await;
    let r = client
        .send_request(call(full("hello"), None))
        .await
        .expect("response");
    let (_, body, status) = finish(r).await;
    assert_eq!(status, "0", "hits {}", upstream.hits());
    assert_eq!(body, "hello");
    assert_eq!(upstream.hits(), 2);
    proxy.stop().await.expect("stop");
}

#[tokio::test]
async fn the_deadline_travels_and_ends_in_deadline_exceeded() {
    let fast = scripted(Behaviour::default()).await;
    let proxy = crate::support::start_proxy(
        &crate::support::service("svc", Some(OUTBOUND), &[fast.addr]),
        &[],
    )
    .await;
    let mut client = h2(proxy.addrs.outbound).await;
    let r = client
        .send_request(call(full("x"), Some("300m")))
        .await
        .expect("response");
    let seen = r
        .headers()
        .get("x-seen-grpc-timeout")
        .and_then(grpc::parse)
        .expect("grpc-timeout sent on");
    assert!(
        seen <= Duration::from_millis(300) && seen > Duration::from_millis(200),
        "{seen:?}"
    );
    proxy.stop().await.expect("stop");

    let slow = scripted(Behaviour {
        delay: Duration::from_secs(5),
        ..Behaviour::default()
    })
    .await;
    let proxy = crate::support::start_proxy(
        &crate::support::service("svc", Some(OUTBOUND), &[slow.addr]),
        &[],
    )
    .await;
    let mut client = h2(proxy.addrs.outbound).await;
    let start = Instant::now();
    let r = client
        .send_request(call(full("x"), Some("300m")))
        .await
        .expect("response");
    assert_eq!(r.status(), 200, "gRPC errors are trailers-only 200s");
    let (head, _, status) = finish(r).await;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    assert_eq!(
        head.get("x-levee-error").map(|v| v.as_bytes()),
        Some(&b"timeout"[..])
    );
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    proxy.stop().await.expect("stop");
}

#[tokio::test]
async fn a_streaming_call_is_not_held_back_by_the_retry_layer() {
    let upstream = scripted(Behaviour::default()).await;
    let proxy = crate::support::start_proxy(
        &crate::support::service("svc", Some(OUTBOUND), &[upstream.addr]),
        &[],
    )
    .await;
    let mut client = h2(proxy.addrs.outbound).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    let r = client
        .send_request(call(StreamBody::new(frames).boxed(), None))
        .await
        .expect("response head before the request ends");
    assert_eq!(header(&r, "content-type"), "application/grpc");
    let mut body = r.into_body();
    // Each message comes back before the next is sent: nothing is buffered
    // until the end, though the messages exceed maxReplayBytes together.
    for i in 0..5u8 {
        let message = Bytes::from(vec![b'a' + i; 10]);
        tx.send(message.clone()).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("echo in time")
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        assert_eq!(echoed, message);
    }
    drop(tx);
    let rest = body.collect().await.expect("end");
    assert_eq!(
        rest.trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(upstream.hits(), 1);
    proxy.stop().await.expect("stop");
}
