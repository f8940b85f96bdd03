//! Transparent mode, protocol detection: in namespaces with `init-iptables`
//! applied, an unmodified client's HTTP to an unknown destination goes
//! through the proxy's HTTP path (the server sees the `x-levee-hops` the
//! proxy adds; the request is counted under `passthrough:<ip:port>`), while
//! non-HTTP bytes and a server-speaks-first protocol pass byte for byte
//! (counted in `levee_tcp_*`), and `--opaque-ports` skips detection; a
//! `Host` naming a known service routes to it as an explicit call would.
//! Inbound, a connection redirected to the inbound listener reaches the
//! workload's original port on loopback, with the same detection.

use std::{net::SocketAddr, time::Duration};

use levee_tests::harness::netns::{A_V4, B_V4, B_V6, Netns, NetnsPair};
use levee_tests::harness::pods::PROXY_UID;
use levee_tests::harness::upstream::{GREETING, echo_head, exchange, greeting, reversing};
use levee_tests::harness::yaml;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(10);

/// A plain HTTP/1.1 GET of `/hello` with `host`, as an unmodified client
/// sends it.
async fn get(ns: &Netns, target: SocketAddr, host: &str) -> String {
    get_path(ns, target, host, "/hello").await
}

async fn get_path(ns: &Netns, target: SocketAddr, host: &str, path: &str) -> String {
    let mut conn = ns.connect(target).expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut got))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&got).into_owned()
}

/// The value of the sample `name{labels}` (labels in exposition order).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[tokio::test]
async fn outbound_http_takes_the_http_path_and_other_bytes_pass_through() {
    let NetnsPair { a, b } = NetnsPair::create();
    echo_head(b.listen(SocketAddr::from(([0u16; 8], 9080))));
    reversing(b.listen(SocketAddr::from(([0u16; 8], 9001))));
    greeting(b.listen(SocketAddr::from(([0u16; 8], 9002))));
    a.init_iptables(&[]).await;
    let _proxy = a.start_proxy(PROXY_UID, &[]).await;

    // HTTP: detected, served by the HTTP path (one hop added), sent to the
    // original destination since `b-web` names no service the proxy knows.
    for ip in [B_V4, B_V6] {
        let answer = get(&a, SocketAddr::new(ip, 9080), "b-web:9080").await;
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
    let mut reversed = sent.clone();
    reversed.reverse();
    let conn = a.connect(SocketAddr::new(B_V4, 9001)).expect("connect");
    let got = exchange(conn, &sent, DEADLINE).await;
    assert!(
        got == reversed,
        "{} bytes back of {}",
        got.len(),
        sent.len()
    );

    // Server speaks first: the client sends nothing, the detect timeout
    // (1 s) gives up and the greeting comes through.
    let mut conn = a.connect(SocketAddr::new(B_V4, 9002)).expect("connect");
    let mut greeting = vec![0u8; GREETING.len()];
    tokio::time::timeout(DEADLINE, conn.read_exact(&mut greeting))
        .await
        .expect("the server's first words in time")
        .expect("read");
    assert_eq!(greeting, GREETING);
    drop(conn);

    let page = a.admin_metrics().await.text;
    let requests = sample(
        &page,
        "levee_requests_total{direction=\"outbound\",service=\"passthrough:10.213.0.2:9080\",route=\"default\",code=\"200\",outcome=\"success\"}",
    );
    assert_eq!(requests, Some(1.0), "{page}");
    let to_target = sample(
        &page,
        "levee_tcp_bytes_total{direction=\"outbound\",target=\"passthrough\",flow=\"to_target\"}",
    );
    assert!(
        to_target.is_some_and(|b| b >= sent.len() as f64),
        "{to_target:?}\n{page}"
    );
    let connected = sample(
        &page,
        "levee_tcp_connections_total{direction=\"outbound\",target=\"passthrough\",outcome=\"connected\"}",
    );
    // The binary exchange and the greeting; the HTTP calls are not opaque.
    assert_eq!(connected, Some(2.0), "{page}");
}

#[tokio::test]
async fn opaque_ports_skip_detection() {
    let NetnsPair { a, b } = NetnsPair::create();
    echo_head(b.listen(SocketAddr::from(([0u16; 8], 9080))));
    a.init_iptables(&[]).await;
    let _proxy = a
        .start_proxy(PROXY_UID, &["--opaque-ports", "25,9080"])
        .await;

    let answer = get(&a, SocketAddr::new(B_V4, 9080), "b-web:9080").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.contains("x-levee-hops"),
        "an opaque port's HTTP went through the HTTP path: {answer}"
    );
    let page = a.admin_metrics().await.text;
    let connected = sample(
        &page,
        "levee_tcp_connections_total{direction=\"outbound\",target=\"passthrough\",outcome=\"connected\"}",
    );
    assert_eq!(connected, Some(1.0), "{page}");
}

#[tokio::test]
async fn inbound_reaches_the_original_port_on_loopback() {
    let NetnsPair { a, b } = NetnsPair::create();
    // The workload listens on loopback only: only the proxy reaches it.
    echo_head(a.listen(SocketAddr::from(([127, 0, 0, 1], 9080))));
    reversing(a.listen(SocketAddr::from(([127, 0, 0, 1], 9001))));
    a.init_iptables(&[]).await;
    // --app-port names another port: the original port decides.
    let _proxy = a.start_proxy(PROXY_UID, &["--app-port", "7000"]).await;

    let answer = get(&b, SocketAddr::new(A_V4, 9080), "a-web:9080").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-levee-hops: 1"),
        "the inbound HTTP path was not taken: {answer}"
    );

    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    let mut reversed = sent.clone();
    reversed.reverse();
    let conn = b.connect(SocketAddr::new(A_V4, 9001)).expect("connect");
    let got = exchange(conn, &sent, DEADLINE).await;
    assert!(
        got == reversed,
        "{} bytes back of {}",
        got.len(),
        sent.len()
    );

    // A peer dialling the pod's outbound port lands on the inbound listener
    // and must not reach the outbound one (an open proxy) through it.
    let answer = get(&b, SocketAddr::new(A_V4, 4140), "b-web:9080").await;
    assert!(answer.starts_with("HTTP/1.1 508"), "{answer}");
    assert!(answer.contains("loop-detected"), "{answer}");
    let mut conn = b.connect(SocketAddr::new(A_V4, 4140)).expect("connect");
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

    let page = a.admin_metrics().await.text;
    let connected = sample(
        &page,
        "levee_tcp_connections_total{direction=\"inbound\",target=\"workload\",outcome=\"connected\"}",
    );
    assert_eq!(connected, Some(1.0), "{page}");
    let refused = sample(
        &page,
        "levee_tcp_connections_total{direction=\"inbound\",target=\"workload\",outcome=\"loop-detected\"}",
    );
    assert_eq!(refused, Some(1.0), "{page}");
}

#[tokio::test]
async fn a_host_naming_a_known_service_routes_as_an_explicit_call() {
    let NetnsPair { a, b } = NetnsPair::create();
    // The service's endpoint listens on 9081; nothing listens on the
    // address the app dialled (9080): only routing by `Host` reaches it.
    echo_head(b.listen(SocketAddr::from(([0u16; 8], 9081))));
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    a.init_iptables(&[]).await;
    let endpoints = yaml::endpoints("b-web", 9080, &[SocketAddr::new(B_V4, 9081)]);
    let _proxy = a.sidecar(dir.path(), &[endpoints], &[]).await;

    let answer = get(&a, SocketAddr::new(B_V4, 9080), "b-web:9080").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-levee-hops: 1"), "{answer}");
    let page = a.admin_metrics().await.text;
    let routed = sample(
        &page,
        "levee_requests_total{direction=\"outbound\",service=\"b-web.default:9080\",route=\"default\",code=\"200\",outcome=\"success\"}",
    );
    assert_eq!(routed, Some(1.0), "{page}");
}
