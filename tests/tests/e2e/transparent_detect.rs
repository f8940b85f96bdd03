//! Transparent mode, protocol detection: in pods with `init-iptables`
//! applied ([`TwoPods`]), an unmodified client's HTTP to an unknown
//! destination goes through the proxy's HTTP path (the server sees the
//! `x-levee-hops` the proxy adds; the request is counted under
//! `passthrough:<ip:port>`), while non-HTTP bytes and a server-speaks-first
//! protocol pass byte for byte (counted in `levee_tcp_*`), and
//! `--opaque-ports` skips detection; a `Host` naming a known service routes
//! to it as an explicit call would. Inbound, a connection redirected to the
//! inbound listener reaches the workload's original port on loopback, with
//! the same detection.

use std::{net::SocketAddr, time::Duration};

use levee_tests::harness::netns::{B_V4, B_V6, Netns};
use levee_tests::harness::pods::TwoPods;
use levee_tests::harness::upstream::{echo_head, greeting, reversing};
use levee_tests::harness::yaml;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(10);

/// A plain HTTP/1.1 GET of `/hello` with `host`, as an unmodified client
/// sends it.
async fn get(ns: &Netns, target: SocketAddr, host: &str) -> String {
    let mut conn = ns.connect(target).expect("connect");
    let request = format!("GET /hello HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&got).into_owned()
}

/// `levee_tcp_connections_total` of `direction`'s opaque `target` with
/// `outcome`.
const CONNECTIONS: &str = "levee_tcp_connections_total";

#[tokio::test]
async fn outbound_http_takes_the_http_path_and_other_bytes_pass_through() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    echo_head(server.listen(SocketAddr::from(([0u16; 8], 9080))));
    reversing(server.listen(SocketAddr::from(([0u16; 8], 9001))));
    greeting(server.listen(SocketAddr::from(([0u16; 8], 9002))));
    let _proxy = pods.client_sidecar(&[], &[], &[]).await;

    // HTTP: detected, served by the HTTP path (one hop added), sent to the
    // original destination since `b-web` names no service the proxy knows.
    for ip in [B_V4, B_V6] {
        let answer = get(client, SocketAddr::new(ip, 9080), "b-web:9080").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{ip}: {answer}");
        assert!(
            answer.contains("x-levee-hops: 1"),
            "{ip}: the request did not go through the HTTP path: {answer}"
        );
        assert!(answer.contains("GET /hello HTTP/1.1"), "{answer}");
    }

    // A TLS-like binary first flight: opaque at once, byte for byte.
    let sent: Vec<u8> = [0x16, 0x03, 0x01, 0x02, 0x00]
        .into_iter()
        .chain((0..200_000u32).map(|i| (i % 251) as u8))
        .collect();
    client
        .assert_reversed(SocketAddr::new(B_V4, 9001), &sent)
        .await;

    // Server speaks first: the client sends nothing, the detect timeout
    // (1 s) gives up and the greeting comes through.
    client.assert_greeted(SocketAddr::new(B_V4, 9002)).await;

    let m = client.admin_metrics().await;
    let requests = m.value(
        "levee_requests_total",
        &[
            ("direction", "outbound"),
            ("service", "passthrough:10.213.0.2:9080"),
            ("code", "200"),
        ],
    );
    assert_eq!(requests, 1.0, "{}", m.text);
    let outbound = [("direction", "outbound"), ("target", "passthrough")];
    let to_target = m.value(
        "levee_tcp_bytes_total",
        &[outbound[0], outbound[1], ("flow", "to_target")],
    );
    assert!(to_target >= sent.len() as f64, "{to_target}\n{}", m.text);
    // The binary exchange and the greeting; the HTTP calls are not opaque.
    let connected = m.value(
        CONNECTIONS,
        &[outbound[0], outbound[1], ("outcome", "connected")],
    );
    assert_eq!(connected, 2.0, "{}", m.text);
}

#[tokio::test]
async fn opaque_ports_skip_detection() {
    let pods = TwoPods::create();
    let client = &pods.client;
    echo_head(pods.server.listen(SocketAddr::from(([0u16; 8], 9080))));
    let _proxy = pods
        .client_sidecar(&[], &[], &["--opaque-ports", "25,9080"])
        .await;

    let answer = get(client, SocketAddr::new(B_V4, 9080), "b-web:9080").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.contains("x-levee-hops"),
        "an opaque port's HTTP went through the HTTP path: {answer}"
    );
    let m = client.admin_metrics().await;
    let connected = m.value(
        CONNECTIONS,
        &[("direction", "outbound"), ("outcome", "connected")],
    );
    assert_eq!(connected, 1.0, "{}", m.text);
}

#[tokio::test]
async fn inbound_reaches_the_original_port_on_loopback() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    // The workload listens on loopback only: only the proxy reaches it.
    echo_head(server.listen(SocketAddr::from(([127, 0, 0, 1], 9080))));
    reversing(server.listen(SocketAddr::from(([127, 0, 0, 1], 9001))));
    // --app-port names another port: the original port decides.
    let _proxy = pods.server_sidecar(&[], &[], &["--app-port", "7000"]).await;

    let answer = get(client, pods.server_addr(9080), "b-web:9080").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-levee-hops: 1"),
        "the inbound HTTP path was not taken: {answer}"
    );

    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    client.assert_reversed(pods.server_addr(9001), &sent).await;

    // A peer dialling the pod's outbound port lands on the inbound listener
    // and must not reach the outbound one (an open proxy) through it.
    let answer = get(client, pods.server_addr(4140), "b-web:9080").await;
    assert!(answer.starts_with("HTTP/1.1 508"), "{answer}");
    assert!(answer.contains("loop-detected"), "{answer}");
    let mut conn = client.connect(pods.server_addr(4140)).expect("connect");
    conn.write_all(&[0x16, 0x03, 0x01, 0x00, 0x01, 0x01])
        .await
        .expect("send");
    let mut got = Vec::new();
    // Closed (a reset, since the proxy did not read the bytes): never an answer.
    let read = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got))
        .await
        .expect("closed in time");
    assert!(
        read.is_err() || got.is_empty(),
        "opaque bytes reached the outbound listener: {got:?}"
    );

    let m = server.admin_metrics().await;
    let inbound = [("direction", "inbound"), ("target", "workload")];
    let connected = m.value(
        CONNECTIONS,
        &[inbound[0], inbound[1], ("outcome", "connected")],
    );
    assert_eq!(connected, 1.0, "{}", m.text);
    let refused = m.value(
        CONNECTIONS,
        &[inbound[0], inbound[1], ("outcome", "loop-detected")],
    );
    assert_eq!(refused, 1.0, "{}", m.text);
}

#[tokio::test]
async fn a_host_naming_a_known_service_routes_as_an_explicit_call() {
    let pods = TwoPods::create();
    let client = &pods.client;
    // The service's endpoint listens on 9081; nothing listens on the
    // address the app dialled (9080): only routing by `Host` reaches it.
    echo_head(pods.server.listen(SocketAddr::from(([0u16; 8], 9081))));
    let endpoints = yaml::endpoints("b-web", 9080, &[pods.server_addr(9081)]);
    let _proxy = pods.client_sidecar(&[], &[endpoints], &[]).await;

    let answer = get(client, pods.server_addr(9080), "b-web:9080").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-levee-hops: 1"), "{answer}");
    let m = client.admin_metrics().await;
    let routed = m.value(
        "levee_requests_total",
        &[
            ("direction", "outbound"),
            ("service", "b-web.default:9080"),
            ("code", "200"),
        ],
    );
    assert_eq!(routed, 1.0, "{}", m.text);
}
