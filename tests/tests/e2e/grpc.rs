//! gRPC through the proxy with tonic clients: unary and all streaming shapes,
//! outbound (by `:authority`) and inbound, with statuses and trailers kept.

use bytes::{BufMut, Bytes, BytesMut};
use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Http2Conn, Proxy, full, grpc_channel},
    pb::{EchoRequest, StreamRequest, flaky_client::FlakyClient},
};
use prost::Message;
use tonic::{Code, transport::Channel};

async fn setup() -> (FlakyUpstream, Proxy) {
    let up = FlakyUpstream::start("grpc-1").await.unwrap();
    let proxy = Proxy::builder().fronting(up.addr()).start().await;
    (up, proxy)
}

async fn client(proxy: &Proxy) -> FlakyClient<Channel> {
    FlakyClient::new(grpc_channel(proxy.outbound(), "web:80").await.unwrap())
}

#[tokio::test]
async fn unary() {
    let (up, proxy) = setup().await;
    let mut client = client(&proxy).await;
    let r = client
        .echo(EchoRequest {
            message: "hello".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.metadata().get("x-flaky-instance").unwrap(), "grpc-1");
    let r = r.into_inner();
    assert_eq!(
        (r.message.as_str(), r.instance.as_str()),
        ("hello", "grpc-1")
    );
    for i in 0..4 {
        let r = client
            .echo(EchoRequest {
                message: format!("again {i}"),
            })
            .await
            .unwrap();
        assert_eq!(r.into_inner().message, format!("again {i}"));
    }
    assert_eq!(up.stats().grpc_requests, 5);
    assert_eq!(
        up.stats().connections,
        1,
        "calls share one pooled HTTP/2 connection"
    );
}

#[tokio::test]
async fn server_streaming_with_final_status_in_trailers() {
    let (_up, proxy) = setup().await;
    let mut client = client(&proxy).await;
    let req = StreamRequest {
        message: "m".into(),
        count: 5,
        interval_ms: 20,
        final_code: 0,
    };
    let mut stream = client.server_stream(req).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push((m.message, m.sequence));
    }
    let want: Vec<_> = (0..5).map(|i| (format!("m {i}"), i)).collect();
    assert_eq!(got, want);

    // A status after messages travels in the trailers.
    let req = StreamRequest {
        message: "m".into(),
        count: 2,
        interval_ms: 0,
        final_code: 9,
    };
    let mut stream = client.server_stream(req).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert!(stream.message().await.unwrap().is_some());
    let status = stream
        .message()
        .await
        .expect_err("FAILED_PRECONDITION after 2 messages");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), "flaky: stream failed");
}

#[tokio::test]
async fn client_streaming() {
    let (_up, proxy) = setup().await;
    let mut client = client(&proxy).await;
    let msgs: Vec<_> = (0..50)
        .map(|i| EchoRequest {
            message: i.to_string(),
        })
        .collect();
    let want = (0..50).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let r = client
        .client_stream(futures_util::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.message, r.sequence), (want, 50));
}

#[tokio::test]
async fn bidi_streaming_interleaves() {
    let (_up, proxy) = setup().await;
    let mut client = client(&proxy).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let outbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    tx.send(EchoRequest {
        message: "ping 0".into(),
    })
    .await
    .unwrap();
    let mut inbound = client.bidi_stream(outbound).await.unwrap().into_inner();
    // Each answer arrives before the next message is sent: a real full-duplex stream.
    for i in 0..5u32 {
        let m = inbound.message().await.unwrap().expect("an answer");
        assert_eq!((m.message, m.sequence), (format!("ping {i}"), i));
        tx.send(EchoRequest {
            message: format!("ping {}", i + 1),
        })
        .await
        .unwrap();
    }
    assert_eq!(inbound.message().await.unwrap().unwrap().message, "ping 5");
    drop(tx);
    assert!(
        inbound.message().await.unwrap().is_none(),
        "the stream ends with OK"
    );
}

#[tokio::test]
async fn upstream_error_status_and_message_are_preserved() {
    let (_up, proxy) = setup().await;
    let mut client = client(&proxy).await;
    let mut req = tonic::Request::new(EchoRequest {
        message: "x".into(),
    });
    req.metadata_mut()
        .insert("x-flaky-grpc-status", "5".parse().unwrap());
    let status = client
        .echo(req)
        .await
        .expect_err("NOT_FOUND from the upstream");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "flaky: injected");
    assert!(
        status.metadata().get("x-levee-error").is_none(),
        "not a proxy-made error"
    );
}

/// gRPC framing of one message: flag, length, bytes.
fn grpc_frame(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut buf = BytesMut::with_capacity(5 + body.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(body.len()).unwrap());
    buf.put_slice(&body);
    buf.freeze()
}

#[tokio::test]
async fn unary_response_trailers_seen_on_the_wire() {
    let (_up, proxy) = setup().await;
    let req = Request::post("http://web:80/levee.testing.v1.Flaky/Echo")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(grpc_frame(&EchoRequest {
            message: "raw".into(),
        })))
        .unwrap();
    let mut conn = Http2Conn::connect(proxy.outbound()).await.unwrap();
    let r = conn.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/grpc");
    let trailers = r
        .trailers
        .as_ref()
        .expect("grpc-status arrives in trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    let reply = levee_tests::pb::EchoResponse::decode(&r.body[5..]).unwrap();
    assert_eq!(reply.message, "raw");
}

#[tokio::test]
async fn inbound_grpc_reaches_the_app() {
    let (_up, proxy) = setup().await;
    let channel = grpc_channel(proxy.inbound(), "test-svc.default:4143")
        .await
        .unwrap();
    let mut client = FlakyClient::new(channel);
    let r = client
        .echo(EchoRequest {
            message: "in".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.message.as_str(), r.instance.as_str()), ("in", "grpc-1"));
    let req = StreamRequest {
        message: "s".into(),
        count: 3,
        interval_ms: 0,
        final_code: 0,
    };
    let mut stream = client.server_stream(req).await.unwrap().into_inner();
    let mut n = 0;
    while stream.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
}
