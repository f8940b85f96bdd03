//! Protocols through both sidecars, transparently: a client pod and a
//! server pod ([`TwoPods`]), `init-iptables` and a sidecar in each, apps
//! unmodified, the client dialling the server pod's IP:port.
//! - gRPC: the third-party Python grpcio client calls a Python grpcio
//!   server (unary, three kinds of streams, an error status, a stream that
//!   ends in an error), both sidecars counting every call;
//! - HTTP/2 prior knowledge (`curl --http2-prior-knowledge`) to an
//!   HTTP/2-only app, and to an HTTP/1.1-only app, which gets HTTP/1.1;
//! - opaque TCP: a 4 MB exchange and a server-speaks-first greeting pass
//!   byte for byte through the client's passthrough and the server's
//!   inbound forward.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use levee_tests::harness::{
    Body, full, netns::Netns, pods::TwoPods, python, python_grpc, upstream,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// A gRPC port of the server pod.
const GRPC_PORT: u16 = 50051;

#[tokio::test]
async fn python_grpc_through_both_sidecars() {
    let python = python::python().await;
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    let listen = SocketAddr::from(([127, 0, 0, 1], GRPC_PORT));
    let _app = python_grpc::serve(
        server.command(&python),
        listen,
        "py-server",
        &pods.path("grpc-server.log"),
    );
    server.wait_listening(listen).await;
    let _server_sidecar = pods
        .server_sidecar(&[], &[], &["--service", "grpc", "--app-port", "50051"])
        .await;
    let _client_sidecar = pods.client_sidecar(&[], &[], &[]).await;

    let target = pods.server_addr(GRPC_PORT).to_string();
    let got =
        python_grpc::call_every_method(client.command(&python), &target, &target, DEADLINE).await;
    python_grpc::assert_every_answer(&got, "py-server");

    // Six calls left the client through its sidecar and arrived through
    // the server's, with the app's gRPC statuses.
    let passthrough = format!("passthrough:{target}");
    let c = client.admin_metrics().await;
    let s = server.admin_metrics().await;
    for (m, direction, service) in [
        (&c, "outbound", passthrough.as_str()),
        (&s, "inbound", "grpc"),
    ] {
        let calls = m.sum(
            "levee_requests_total",
            &[("direction", direction), ("service", service)],
        );
        assert_eq!(
            calls,
            Some(python_grpc::CALLS as f64),
            "{direction}: {}",
            m.text
        );
        let unavailable = m.sum(
            "levee_requests_total",
            &[
                ("direction", direction),
                ("service", service),
                ("code", "14"),
            ],
        );
        assert_eq!(unavailable, Some(1.0), "{direction}: {}", m.text);
    }
}

/// An HTTP/2-only app (hyper's HTTP/2 server): answers with the version
/// and the `x-levee-hops` it saw.
fn h2_only_app(ns: &Netns, port: u16) {
    let listener = ns.listen(SocketAddr::from(([127, 0, 0, 1], port)));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let hops = req
                        .headers()
                        .get("x-levee-hops")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    let said = format!("{:?} hops={hops}", req.version());
                    Ok::<Response<Body>, Infallible>(Response::new(full(said)))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

#[tokio::test]
async fn http2_prior_knowledge_through_both_sidecars_and_to_an_http1_app() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    h2_only_app(server, 9090);
    upstream::echo_head(server.listen(SocketAddr::from(([127, 0, 0, 1], 9081))));
    let _server_sidecar = pods.server_sidecar(&[], &[], &[]).await;
    let _client_sidecar = pods.client_sidecar(&[], &[], &[]).await;

    let h2 = client
        .curl(&[
            "--http2-prior-knowledge",
            &format!("http://{}/hello", pods.server_addr(9090)),
        ])
        .await;
    assert_eq!((h2.status, h2.http_version.as_str()), (200, "2"), "{h2:?}");
    assert_eq!(h2.body, "HTTP/2.0 hops=2", "{h2:?}");

    // The caller speaks HTTP/2; the HTTP/1.1-only app gets HTTP/1.1.
    for i in 0..3 {
        let h1 = client
            .curl(&[
                "--http2-prior-knowledge",
                &format!("http://{}/hello", pods.server_addr(9081)),
            ])
            .await;
        assert_eq!(
            (h1.status, h1.http_version.as_str()),
            (200, "2"),
            "call {i}: {h1:?}"
        );
        assert!(
            h1.body.starts_with("GET /hello HTTP/1.1\r\n"),
            "call {i}: {}",
            h1.body
        );
        assert!(h1.body.contains("x-levee-hops: 2"), "call {i}: {}", h1.body);
    }
}

#[tokio::test]
async fn opaque_tcp_through_both_sidecars() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    upstream::reversing(server.listen(SocketAddr::from(([127, 0, 0, 1], 9001))));
    upstream::greeting(server.listen(SocketAddr::from(([127, 0, 0, 1], 9002))));
    let _server_sidecar = pods.server_sidecar(&[], &[], &[]).await;
    let _client_sidecar = pods.client_sidecar(&[], &[], &[]).await;

    let sent: Vec<u8> = [0x16, 0x03, 0x01, 0x02, 0x00]
        .into_iter()
        .chain((0..4_000_000u32).map(|i| (i % 251) as u8))
        .collect();
    client.assert_reversed(pods.server_addr(9001), &sent).await;

    // Neither the client nor its sidecar says a word: each sidecar's
    // detection times out, and the server's greeting comes through.
    client.assert_greeted(pods.server_addr(9002)).await;

    let c = client.admin_metrics().await;
    let s = server.admin_metrics().await;
    for (m, direction, target) in [(&c, "outbound", "passthrough"), (&s, "inbound", "workload")] {
        let labels = [("direction", direction), ("target", target)];
        let connected = m.sum(
            "levee_tcp_connections_total",
            &[labels[0], labels[1], ("outcome", "connected")],
        );
        assert_eq!(connected, Some(2.0), "{direction}: {}", m.text);
        let to_target = m.sum(
            "levee_tcp_bytes_total",
            &[labels[0], labels[1], ("flow", "to_target")],
        );
        assert!(
            to_target.is_some_and(|b| b >= sent.len() as f64),
            "{direction}: {to_target:?}\n{}",
            m.text
        );
    }
}
