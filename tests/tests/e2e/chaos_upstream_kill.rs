//! Chaos: an upstream process `kill -9`ed in the middle of a streamed
//! response (an HTTP/1.1 chunked body, an HTTP/2 stream, a gRPC server
//! stream). The client gets a clean error — the body ends with an error,
//! never a hang (each read has a deadline) and never a clean end that would
//! pass a truncated body off as whole — and the service breaker counts the
//! failure (with `consecutiveFailures: 1` it opens, and the next call fails
//! fast with `503 circuit-open`). The proxy keeps serving.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use levee_tests::{
    harness::{
        Http1Conn, Http2Conn, Proxy, empty, eventually, flaky_process::FlakyProcess, get_http1,
        grpc_channel, yaml,
    },
    pb::{StreamRequest, flaky_client::FlakyClient},
};

const AUTHORITY: &str = "web:80";
const SERVICE: &str = "web.default:80";

/// How long the client may wait for the end of a broken stream.
const CLEAN_ERROR_DEADLINE: Duration = Duration::from_secs(10);

/// One failure opens the service breaker, for long enough to look at it.
const BREAKER: &str = "  outbound:
    circuitBreaker:
      failureOn: [5xx, reset]
      consecutiveFailures: 1
      open: {base: 60s, max: 60s}
";

/// A slow body: 100 chunks 100 ms apart (10 s), killed after the first.
const SLOW_BODY: &str = "100x100ms";

async fn upstream_and_proxy() -> (FlakyProcess, Proxy) {
    let up = FlakyProcess::start("doomed", &[]).await;
    let proxy = Proxy::builder()
        .policy(yaml::documents(&[
            yaml::policy("web", 80, BREAKER),
            yaml::endpoints("web", 80, &[up.addr]),
        ]))
        .start()
        .await;
    // A whole call first: the path works and the breaker is closed.
    let r = get_http1(proxy.outbound(), AUTHORITY, "/")
        .await
        .expect("call");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(breaker_state(&proxy).await, 0.0);
    (up, proxy)
}

fn slow_get() -> Request<levee_tests::harness::Body> {
    Request::get("/")
        .header("host", AUTHORITY)
        .header("x-flaky-slow-body", SLOW_BODY)
        .body(empty())
        .expect("request")
}

async fn breaker_state(proxy: &Proxy) -> f64 {
    let m = proxy.metrics().await.expect("metrics");
    m.value(
        "levee_circuit_state",
        &[("service", SERVICE), ("endpoint", "")],
    )
}

/// Reads the first data frame, kills the upstream, then reads on: the body
/// must end in an error within the deadline.
async fn kill_mid_body(up: &mut FlakyProcess, body: &mut Incoming) {
    let first = tokio::time::timeout(CLEAN_ERROR_DEADLINE, body.frame())
        .await
        .expect("the first chunk within the deadline")
        .expect("a first frame")
        .expect("the first chunk arrives intact");
    assert!(first.is_data(), "{first:?}");
    up.kill9().await;
    let rest = tokio::time::timeout(CLEAN_ERROR_DEADLINE, async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the client is not left hanging: the broken body ends within the deadline");
    assert!(
        rest.is_err(),
        "a truncated body must end with an error, not a clean end"
    );
}

/// The breaker counted the broken stream: it opened, and fails fast now.
async fn assert_breaker_counted_it(proxy: &Proxy) {
    eventually(
        Duration::from_secs(5),
        "the service breaker to open",
        || async {
            let m = proxy.metrics().await.map_err(|e| e.to_string())?;
            let opened = m.value(
                "levee_circuit_transitions_total",
                &[("service", SERVICE), ("endpoint", ""), ("to", "open")],
            );
            if opened == 1.0 {
                Ok(())
            } else {
                Err(format!("opened {opened} times:\n{}", m.text))
            }
        },
    )
    .await;
    assert_eq!(breaker_state(proxy).await, 1.0, "OPEN");
    let r = get_http1(proxy.outbound(), AUTHORITY, "/")
        .await
        .expect("the proxy still answers");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("x-levee-error"), "circuit-open", "{r:?}");
    let live = proxy.admin_get("/live").await.expect("/live");
    assert_eq!(live.status, 200);
}

#[tokio::test]
async fn http1_chunked_body_cut_by_a_killed_upstream_is_a_clean_error_and_a_failure() {
    let (mut up, proxy) = upstream_and_proxy().await;
    let mut conn = Http1Conn::connect(proxy.outbound()).await.expect("connect");
    let response = conn.send_raw(slow_get()).await.expect("the head");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["transfer-encoding"],
        "chunked",
        "{response:?}"
    );
    let mut body = response.into_body();
    kill_mid_body(&mut up, &mut body).await;
    assert_breaker_counted_it(&proxy).await;
}

#[tokio::test]
async fn http2_stream_cut_by_a_killed_upstream_is_a_clean_error_and_a_failure() {
    let (mut up, proxy) = upstream_and_proxy().await;
    let mut conn = Http2Conn::connect(proxy.outbound()).await.expect("connect");
    let response = conn.send_raw(slow_get()).await.expect("the head");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let mut body = response.into_body();
    kill_mid_body(&mut up, &mut body).await;
    assert_breaker_counted_it(&proxy).await;
    // The connection itself survives: only the stream was reset.
    let r = conn
        .send(levee_tests::harness::load::get(AUTHORITY, "/", &[]))
        .await
        .expect("another stream on the same connection");
    assert_eq!(r.header("x-levee-error"), "circuit-open", "{r:?}");
}

#[tokio::test]
async fn grpc_server_stream_cut_by_a_killed_upstream_is_a_clean_error_and_a_failure() {
    let (mut up, proxy) = upstream_and_proxy().await;
    let channel = grpc_channel(proxy.outbound(), AUTHORITY)
        .await
        .expect("channel");
    let mut client = FlakyClient::new(channel);
    let req = StreamRequest {
        message: "s".into(),
        count: 100,
        interval_ms: 100,
        final_code: 0,
    };
    let mut stream = tokio::time::timeout(CLEAN_ERROR_DEADLINE, client.server_stream(req))
        .await
        .expect("the stream opens within the deadline")
        .expect("the stream opens")
        .into_inner();
    let first = tokio::time::timeout(CLEAN_ERROR_DEADLINE, stream.message())
        .await
        .expect("the first message within the deadline")
        .expect("the first message arrives")
        .expect("a first message");
    assert_eq!(first.message, "s 0");
    up.kill9().await;
    let end = tokio::time::timeout(CLEAN_ERROR_DEADLINE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the client is not left hanging: the broken stream ends within the deadline");
    let status = end.expect_err("a cut stream ends with a gRPC error, not OK");
    assert_ne!(status.code(), tonic::Code::Ok, "{status:?}");
    assert_breaker_counted_it(&proxy).await;
}
