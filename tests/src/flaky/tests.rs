//! The flaky upstream, driven directly (no proxy) with the harness clients.

use std::time::{Duration, Instant};

use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Faults, FlakyUpstream};
use crate::harness::{self, Http2Conn, empty, full, get_http1, get_http2, send_http1};
use crate::pb::{EchoRequest, StreamRequest, flaky_client::FlakyClient};

#[tokio::test]
async fn answers_http1_and_http2_with_its_instance_id() {
    let up = FlakyUpstream::start("a").await.unwrap();
    let r1 = get_http1(up.addr(), "svc", "/").await.unwrap();
    assert_eq!(r1.status, 200);
    assert_eq!(r1.header("x-flaky-instance"), "a");
    assert_eq!(r1.text(), "flaky a\n");
    assert_eq!(r1.version, http::Version::HTTP_11);
    let r2 = get_http2(up.addr(), "svc", "/").await.unwrap();
    assert_eq!(r2.status, 200);
    assert_eq!(r2.version, http::Version::HTTP_2);
    assert_eq!(r2.header("x-flaky-instance"), "a");
    let stats = up.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.by_path.get("/"), Some(&2));
    let json = get_http1(up.addr(), "svc", "/__flaky/stats")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        json["requests"], 2,
        "the stats endpoint does not count itself"
    );
}

#[tokio::test]
async fn per_request_headers_inject_status_and_body() {
    let up = FlakyUpstream::start("b").await.unwrap();
    let req = Request::get("/")
        .header("x-flaky-status", "503")
        .body(empty())
        .unwrap();
    let r = send_http1(up.addr(), req).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-flaky-instance"), "b");
    let req = Request::get("/")
        .header("x-flaky-body-bytes", "1024")
        .body(empty())
        .unwrap();
    assert_eq!(send_http1(up.addr(), req).await.unwrap().body.len(), 1024);
    let req = Request::get("/")
        .header("x-flaky-status", "five")
        .body(empty())
        .unwrap();
    assert_eq!(send_http1(up.addr(), req).await.unwrap().status, 400);
    assert_eq!(up.stats().injected_failures, 1);
}

#[tokio::test]
async fn instance_faults_change_at_runtime() {
    let up = FlakyUpstream::start("c").await.unwrap();
    assert_eq!(get_http1(up.addr(), "svc", "/").await.unwrap().status, 200);
    up.set_faults(Faults {
        status: Some(500),
        ..Default::default()
    });
    assert_eq!(get_http1(up.addr(), "svc", "/").await.unwrap().status, 500);
    up.set_faults(Faults::default());
    assert_eq!(get_http1(up.addr(), "svc", "/").await.unwrap().status, 200);
}

#[tokio::test]
async fn delays_and_slow_bodies_take_time() {
    let up = FlakyUpstream::start("d").await.unwrap();
    let start = Instant::now();
    let req = Request::get("/")
        .header("x-flaky-delay", "150ms")
        .body(empty())
        .unwrap();
    assert_eq!(send_http1(up.addr(), req).await.unwrap().status, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );

    let start = Instant::now();
    let req = Request::get("/")
        .header("x-flaky-slow-body", "4x50ms")
        .header("x-flaky-body-bytes", "400")
        .body(empty())
        .unwrap();
    let r = send_http1(up.addr(), req).await.unwrap();
    assert_eq!(r.body.len(), 400);
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn reset_fault_resets_the_connection() {
    let up = FlakyUpstream::start("e").await.unwrap();
    let req = Request::get("/")
        .header("x-flaky-reset", "true")
        .body(empty())
        .unwrap();
    let err = send_http1(up.addr(), req)
        .await
        .expect_err("a reset, not a response");
    assert!(
        !err.to_string().contains("no response within"),
        "a reset, not a hang: {err}"
    );
    assert_eq!(up.stats().resets, 1);
    // The instance keeps serving other connections.
    assert_eq!(get_http1(up.addr(), "svc", "/").await.unwrap().status, 200);
}

#[tokio::test]
async fn echo_reports_the_request_and_sends_trailers() {
    let up = FlakyUpstream::start("f").await.unwrap();
    let req = Request::post("/echo?q=1")
        .header("host", "example.test")
        .header("x-custom", "1")
        .body(full("hello"))
        .unwrap();
    let json = send_http1(up.addr(), req).await.unwrap().json().unwrap();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["uri"], "/echo?q=1");
    assert_eq!(json["body"], "hello");
    assert_eq!(json["headers"]["host"][0], "example.test");
    assert_eq!(json["headers"]["x-custom"][0], "1");

    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-req-trailer", "t".parse().unwrap());
    let req = Request::post(format!("http://{}/echo", up.addr()))
        .header("x-flaky-trailers", "true")
        .body(harness::with_trailers("data", trailers))
        .unwrap();
    let mut conn = Http2Conn::connect(up.addr()).await.unwrap();
    let r = conn.send(req).await.unwrap();
    assert_eq!(r.json().unwrap()["trailers"]["x-req-trailer"][0], "t");
    let trailers = r.trailers.expect("response trailers");
    assert_eq!(trailers["x-flaky-trailer"], "f");
}

#[tokio::test]
async fn upgrade_echoes_raw_bytes() {
    let up = FlakyUpstream::start("g").await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            tcp.read(&mut byte).await.unwrap(),
            1,
            "closed before the 101 head ended"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("x-flaky-instance: g"), "{head}");
    tcp.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tcp.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn grpc_calls_in_all_four_shapes() {
    let up = FlakyUpstream::start("h").await.unwrap();
    let mut client = FlakyClient::connect(up.url("")).await.unwrap();
    let r = client
        .echo(EchoRequest {
            message: "hi".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.metadata().get("x-flaky-instance").unwrap(), "h");
    assert_eq!(r.into_inner().message, "hi");

    let req = StreamRequest {
        message: "s".into(),
        count: 3,
        interval_ms: 1,
        ..Default::default()
    };
    let mut stream = client.server_stream(req).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push(m.message);
    }
    assert_eq!(got, ["s 0", "s 1", "s 2"]);

    let msgs = ["a", "b", "c"].map(|m| EchoRequest { message: m.into() });
    let r = client
        .client_stream(futures_util::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.message.as_str(), r.sequence), ("a,b,c", 3));

    let (tx, mut rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let outbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    tx.send(EchoRequest {
        message: "x".into(),
    })
    .await
    .unwrap();
    let mut inbound = client.bidi_stream(outbound).await.unwrap().into_inner();
    assert_eq!(inbound.message().await.unwrap().unwrap().message, "x");
    tx.send(EchoRequest {
        message: "y".into(),
    })
    .await
    .unwrap();
    let second = inbound.message().await.unwrap().unwrap();
    assert_eq!((second.message.as_str(), second.sequence), ("y", 1));
    drop(tx);
    assert!(inbound.message().await.unwrap().is_none());
    assert_eq!(up.stats().grpc_requests, 4);
}

#[tokio::test]
async fn grpc_metadata_injects_status_codes() {
    let up = FlakyUpstream::start("i").await.unwrap();
    let channel = harness::grpc_channel(up.addr(), "flaky.test:80")
        .await
        .unwrap();
    let mut client = FlakyClient::new(channel);
    let mut req = tonic::Request::new(EchoRequest {
        message: "hi".into(),
    });
    req.metadata_mut()
        .insert("x-flaky-grpc-status", "14".parse().unwrap());
    let status = client.echo(req).await.expect_err("injected UNAVAILABLE");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "flaky: injected");
    // The authority the channel was given is the one sent.
    let mut req = tonic::Request::new(EchoRequest {
        message: "hi".into(),
    });
    req.metadata_mut()
        .insert("x-flaky-delay", "1ms".parse().unwrap());
    assert_eq!(client.echo(req).await.unwrap().into_inner().instance, "i");
    assert_eq!(up.stats().injected_failures, 1);
}

#[tokio::test]
async fn curl_runner_speaks_http1_and_http2() {
    let up = FlakyUpstream::start("j").await.unwrap();
    let out = harness::curl(&[&up.url("/echo")]).await.unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.http_version, "1.1");
    assert_eq!(out.header("x-flaky-instance"), Some("j"));
    let out = harness::curl(&["--http2-prior-knowledge", &up.url("/")])
        .await
        .unwrap();
    assert_eq!(
        (out.status, out.http_version.as_str()),
        (200, "2"),
        "{out:?}"
    );
    assert_eq!(out.body, "flaky j\n");
}

#[tokio::test]
async fn http1_response_trailers_when_te_trailers() {
    let up = FlakyUpstream::start("k").await.unwrap();
    let req = Request::get("/echo")
        .header("te", "trailers")
        .header("x-flaky-trailers", "true")
        .body(empty())
        .unwrap();
    let r = send_http1(up.addr(), req).await.unwrap();
    assert_eq!(r.version, http::Version::HTTP_11);
    let trailers = r.trailers.expect("chunked trailers over HTTP/1.1");
    assert_eq!(trailers["x-flaky-trailer"], "k");
}
