//! HTTP/1.1 `Upgrade` (WebSocket) passthrough: the proxy forwards the 101
//! and then carries raw bytes both ways, outbound and inbound. Tunnels stay
//! bounded: they keep their connection slot, close when idle, end with the
//! shutdown grace, and only allow-listed protocols become tunnels.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, eventually, get_http1, read_head, yaml},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn upgrade_and_echo(addr: SocketAddr, host: &str, instance: &str) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains(&format!("x-flaky-instance: {instance}")),
        "{head}"
    );

    // Raw bytes both ways: a small message, then 256 KiB written while read.
    tcp.write_all(b"hello").await.unwrap();
    let mut small = [0u8; 5];
    tcp.read_exact(&mut small).await.unwrap();
    assert_eq!(&small, b"hello");

    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = tcp.into_split();
    let sent = big.clone();
    let write = tokio::spawn(async move { writer.write_all(&sent).await.map(|()| writer) });
    let mut back = vec![0u8; big.len()];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read_exact(&mut back),
    )
    .await
    .expect("echoed bytes arrive")
    .unwrap();
    assert!(back == big, "bytes come back unchanged");
    write.await.unwrap().unwrap();
}

#[tokio::test]
async fn websocket_upgrade_passes_through_outbound() {
    let up = FlakyUpstream::start("ws-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .start()
        .await;
    upgrade_and_echo(proxy.outbound(), "web:80", "ws-1").await;
}

#[tokio::test]
async fn websocket_upgrade_passes_through_inbound() {
    let app = FlakyUpstream::start("ws-app").await.unwrap();
    let proxy = Proxy::builder().app_port(app.addr().port()).start().await;
    upgrade_and_echo(proxy.inbound(), "test-svc:4143", "ws-app").await;
}

/// Sends an upgrade request for `protocol` and returns the connection with
/// the response head read (lower-cased).
async fn offer(addr: SocketAddr, host: &str, protocol: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await.unwrap().to_ascii_lowercase();
    (tcp, head)
}

/// One echoed round trip through an open tunnel.
async fn round_trip(tcp: &mut TcpStream) {
    tcp.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test]
async fn an_upgraded_connection_keeps_its_slot_of_the_connection_limit() {
    let up = FlakyUpstream::start("ws-slots").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg("--max-connections")
        .arg("2")
        .start()
        .await;
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let (mut tcp, head) = offer(proxy.outbound(), "web:80", "websocket").await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        round_trip(&mut tcp).await;
        tunnels.push(tcp);
    }
    // Both slots are held by the tunnels: a third connection is refused.
    let refused = get_http1(proxy.outbound(), "web:80", "/").await.unwrap();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("x-levee-error"), "overloaded");
    // Closing a tunnel gives its slot back.
    drop(tunnels.pop());
    eventually(Duration::from_secs(5), "a freed slot", || async {
        match get_http1(proxy.outbound(), "web:80", "/").await {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    round_trip(&mut tunnels[0]).await;
}

#[tokio::test]
async fn a_tunnel_without_traffic_is_closed_after_the_tunnel_idle_timeout() {
    let up = FlakyUpstream::start("ws-idle").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg("--tunnel-idle-timeout")
        .arg("600ms")
        .start()
        .await;
    // A talking tunnel outlives the timeout several times over.
    let (mut busy, head) = offer(proxy.outbound(), "web:80", "websocket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let (mut quiet, head) = offer(proxy.outbound(), "web:80", "websocket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let start = Instant::now();
    let mut closed = Vec::new();
    let quiet_closed = tokio::time::timeout(Duration::from_secs(5), quiet.read_to_end(&mut closed));
    let talk = async {
        while start.elapsed() < Duration::from_millis(1800) {
            round_trip(&mut busy).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let (quiet_closed, ()) = tokio::join!(quiet_closed, talk);
    assert!(
        quiet_closed.is_ok(),
        "the silent tunnel was still open after 5 s"
    );
    assert!(closed.is_empty(), "{closed:?}");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500),
        "closed too early: {elapsed:?}"
    );
    // The busy one is still open and working after 3 timeouts.
    round_trip(&mut busy).await;
}

#[tokio::test]
async fn only_allowed_upgrades_are_tunnelled_outbound_and_inbound() {
    let up = FlakyUpstream::start("ws-allow").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .app_port(up.addr().port())
        .start()
        .await;
    for (addr, host) in [
        (proxy.outbound(), "web:80"),
        (proxy.inbound(), "test-svc:4143"),
    ] {
        let before = up.requests();
        let (_tcp, head) = offer(addr, host, "x-custom/1").await;
        assert!(head.starts_with("http/1.1 400"), "{head}");
        assert!(head.contains("x-levee-error: bad-request"), "{head}");
        assert_eq!(up.requests(), before, "a refused upgrade is not forwarded");

        // h2c is not tunnelled: the offer is dropped, the request served.
        let (_tcp, head) = offer(addr, host, "h2c").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("upgrade:"), "{head}");

        let (mut tcp, head) = offer(addr, host, "websocket").await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        round_trip(&mut tcp).await;
    }
}

#[tokio::test]
async fn the_upgrade_allow_list_is_a_flag() {
    let up = FlakyUpstream::start("ws-flag").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg("--allowed-upgrades")
        .arg("websocket,x-custom")
        .start()
        .await;
    let (mut tcp, head) = offer(proxy.outbound(), "web:80", "x-custom").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    round_trip(&mut tcp).await;
}

#[tokio::test]
async fn tunnels_are_cut_at_the_end_of_the_shutdown_grace() {
    let up = FlakyUpstream::start("ws-grace").await.unwrap();
    let mut proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg("--shutdown-grace")
        .arg("700ms")
        .start()
        .await;
    let (mut tcp, head) = offer(proxy.outbound(), "web:80", "websocket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    round_trip(&mut tcp).await;
    let start = Instant::now();
    proxy.process.terminate().unwrap();
    // Within the grace the tunnel still carries bytes.
    round_trip(&mut tcp).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the tunnel outlived the grace period");
    let exit = proxy
        .process
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{exit}");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600),
        "cut before the grace ended: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_connect_tunnel_holds_its_slot_until_it_goes_idle() {
    let up = FlakyUpstream::start("connect").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg("--max-connections")
        .arg("1")
        .arg("--tunnel-idle-timeout")
        .arg("600ms")
        .start()
        .await;
    let mut tcp = TcpStream::connect(proxy.outbound()).await.unwrap();
    tcp.write_all(b"CONNECT web:80 HTTP/1.1\r\nHost: web:80\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut tcp).await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // HTTP/1.1 to the upstream itself, through the tunnel.
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: inner\r\n\r\n")
        .await
        .unwrap();
    let inner = read_head(&mut tcp).await.unwrap().to_ascii_lowercase();
    assert!(inner.contains("x-flaky-instance: connect"), "{inner}");
    let start = Instant::now();
    // The tunnel holds the only slot.
    let refused = get_http1(proxy.outbound(), "web:80", "/").await.unwrap();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("x-levee-error"), "overloaded");
    // Silent, it is closed after the idle timeout, and its slot comes back.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        // The rest of the inner response body, then the close.
        let _ = tcp.read_to_end(&mut rest).await;
    })
    .await;
    assert!(closed.is_ok(), "the idle CONNECT tunnel stayed open");
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    eventually(Duration::from_secs(5), "the slot back", || async {
        match get_http1(proxy.outbound(), "web:80", "/").await {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn an_upgrade_the_upstream_does_not_answer_gets_504_after_the_default_request_timeout() {
    let up = FlakyUpstream::start("ws-silent").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .app_port(up.addr().port())
        .arg("--default-request-timeout")
        .arg("400ms")
        .start()
        .await;
    for (addr, host) in [
        (proxy.outbound(), "web:80"),
        (proxy.inbound(), "test-svc:4143"),
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             x-flaky-delay: 5s\r\n\r\n"
        );
        let start = Instant::now();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut tcp).await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 504"), "{addr}: {head}");
        assert!(head.contains("x-levee-error: timeout"), "{addr}: {head}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{addr}: {:?}",
            start.elapsed()
        );
    }
}
