//! HTTP/1.1 `Upgrade` (WebSocket) passthrough: the proxy forwards the 101
//! and then carries raw bytes both ways, outbound and inbound.

use std::net::SocketAddr;

use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, read_head, yaml},
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
