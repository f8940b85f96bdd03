//! The HTTP port under abuse: a connection cap and a header-read timeout.

use std::time::Duration;

use crate::common::{TestControlPlane, http_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; fails after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration, what: &str) {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: still open after {within:?}");
}

#[tokio::test]
async fn connections_are_capped_and_slow_heads_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = TestControlPlane::start(
        dir.path(),
        &[
            "--http-max-connections",
            "2",
            "--http-header-read-timeout",
            "500ms",
        ],
    )
    .await;
    // Two clients hold both slots: one never finishes its request head, one
    // sends nothing at all.
    let mut slow = Vec::new();
    for head in [b"GET /live HTTP/1.1\r\nHost: x\r\n".as_slice(), b""] {
        let mut stream = TcpStream::connect(cp.addrs.http).await.expect("connect");
        stream.write_all(head).await.expect("partial head");
        slow.push(stream);
    }
    // A third is closed at once.
    let mut third = TcpStream::connect(cp.addrs.http).await.expect("connect");
    let _ = third
        .write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    closed_within(
        &mut third,
        Duration::from_secs(2),
        "the connection over the cap",
    )
    .await;

    // The slow heads are cut off by the header-read timeout (not waited on forever).
    for (i, stream) in slow.iter_mut().enumerate() {
        closed_within(stream, Duration::from_secs(5), &format!("slow head {i}")).await;
    }
    // Their slots are free again: a normal request is served.
    let (status, metrics) = http_get(cp.addrs.http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("levee_cp_http_connections_refused_total 1\n"),
        "{metrics}"
    );
    cp.stop().await;
}
