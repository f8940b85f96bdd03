use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::respond;
use super::super::tests::{get, start_with};
use super::*;
use crate::metrics::Metrics;
use crate::state::Shared;

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

#[test]
fn topology_is_for_loopback_callers_unless_the_flag_allows_everyone() {
    let loopback_only = AdminLimits::default();
    for peer in [
        "127.0.0.1:5000",
        "127.9.8.7:1",
        "[::1]:5000",
        "[::ffff:127.0.0.1]:5000",
    ] {
        assert!(loopback_only.shows_topology_to(addr(peer)), "{peer}");
    }
    for peer in ["10.1.2.3:5000", "[fd00::1]:5000", "[::ffff:10.0.0.1]:5000"] {
        assert!(!loopback_only.shows_topology_to(addr(peer)), "{peer}");
    }
    let anyone = AdminLimits {
        topology: AdminTopology::Any,
        ..AdminLimits::default()
    };
    assert!(anyone.shows_topology_to(addr("10.1.2.3:5000")));
}

#[test]
fn other_callers_get_403_for_topology_but_probes_and_metrics() {
    let shared = Shared::new("default".into(), Metrics::new());
    shared.set_ready(true);
    let status = |path: &str, topology: bool| {
        let request = Request::get(path).body(()).expect("request");
        respond(&shared, &request, topology).status().as_u16()
    };
    for path in ["/config", "/endpoints"] {
        assert_eq!(status(path, false), 403, "{path}");
        assert_eq!(status(path, true), 200, "{path}");
    }
    for path in ["/live", "/ready", "/metrics"] {
        assert_eq!(status(path, false), 200, "{path}");
    }
}

/// Reads until the peer closes (or `limit` passes): the bytes read.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut raw = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut raw)).await {
        Ok(_) => Some(String::from_utf8_lossy(&raw).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_slots_come_back() {
    let admin = start_with(AdminLimits {
        max_connections: 2,
        ..AdminLimits::default()
    })
    .await;
    // Two idle connections hold both slots (each proven served once).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(admin.addr).await.expect("connect");
        stream
            .write_all(b"GET /live HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        held.push(stream);
    }
    let over = get(admin.addr, "/live").await;
    assert_eq!(over.status, 503, "a third connection is over the cap");
    drop(held.pop());
    // The slot is released when the server sees the close: poll for it.
    levee_tests::harness::eventually(Duration::from_secs(5), "a freed admin slot", || async {
        match get(admin.addr, "/live").await.status {
            200 => Ok(()),
            other => Err(format!("status {other}")),
        }
    })
    .await;
    admin.shutdown.cancel();
}

#[tokio::test]
async fn a_slow_head_is_dropped_after_the_header_read_timeout() {
    let admin = start_with(AdminLimits {
        header_read_timeout: Duration::from_millis(300),
        ..AdminLimits::default()
    })
    .await;
    let mut stream = TcpStream::connect(admin.addr).await.expect("connect");
    stream
        .write_all(b"GET /live HTTP/1.1\r\n")
        .await
        .expect("write");
    let closed = read_to_close(&mut stream, Duration::from_secs(5)).await;
    let text = closed.expect("the server closes a connection whose head never completes");
    assert!(!text.contains("200 OK"), "{text}");
    admin.shutdown.cancel();
}
