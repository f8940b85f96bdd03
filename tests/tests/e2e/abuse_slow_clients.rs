//! Abuse: slow clients on both listeners (outbound and inbound).
//!
//! - Slow request bodies: clients that declare a 1 MB body and trickle it a
//!   byte at a time. The upstream waits for the whole body, so no response
//!   head comes: the default response-head timeout answers each with 504
//!   `timeout`.
//! - Slow readers: clients that ask for a 16 MiB response and never read it.
//!   The proxy's writes block, it stops pulling the upstream body (memory
//!   stays bounded), and after the stall timeout (the default stream idle
//!   timeout) it closes the connection and drops the upstream call: the
//!   client keeps a 200 head and a truncated body.
//!
//! Meanwhile the proxy serves a normal request at once, and its RSS and
//! open fds stay bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, eventually, get_http1, resources, yaml},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SLOW_BODIES: usize = 50;
const SLOW_READERS: usize = 8;
const LARGE: usize = 16 * 1024 * 1024;

/// A proxy in front of `up` on both listeners with these default timeouts.
async fn proxy_for(up: &FlakyUpstream, request: &str, stream_idle: &str) -> Proxy {
    Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .app_port(up.addr().port())
        .arg("--default-request-timeout")
        .arg(request)
        .arg("--default-stream-idle-timeout")
        .arg(stream_idle)
        .start()
        .await
}

/// Both listeners of `proxy`, with the `Host` each expects.
fn listeners(proxy: &Proxy) -> [(SocketAddr, &'static str); 2] {
    [
        (proxy.outbound(), "web:80"),
        (proxy.inbound(), "test-svc:4143"),
    ]
}

/// A normal request answers promptly (the bound leaves room for a loaded
/// machine; the slow clients' timeouts are 1 s).
async fn served_at_once(addr: SocketAddr, host: &str) {
    let start = Instant::now();
    let r = get_http1(addr, host, "/").await.unwrap();
    assert_eq!(r.status, 200, "{addr}: {r:?}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{addr}: a normal request took {:?}",
        start.elapsed()
    );
}

/// Reads until the end of the response head (lower-cased).
async fn head(tcp: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(0) | Err(_) => break,
            Ok(_) => head.push(byte[0]),
        }
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

#[tokio::test]
async fn slow_request_bodies_get_504_after_the_default_request_timeout() {
    let up = FlakyUpstream::start("slow-bodies").await.unwrap();
    let proxy = proxy_for(&up, "1s", "5m").await;
    let pid = proxy.process.pid().expect("pid");
    let base_rss = resources::rss_kib(pid).unwrap();
    let sampler = resources::Sampler::start(pid);
    for (addr, host) in listeners(&proxy) {
        let start = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..SLOW_BODIES {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (mut read, mut write) = tcp.into_split();
            let request =
                format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n\r\n");
            write.write_all(request.as_bytes()).await.unwrap();
            let trickle = tokio::spawn(async move {
                loop {
                    if write.write_all(b"x").await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            let answer = tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), head(&mut read)).await
            });
            clients.push((trickle, answer));
        }
        // While they trickle, others are served.
        served_at_once(addr, host).await;
        for (trickle, answer) in clients {
            let head = answer.await.unwrap().expect("an answer within 10 s");
            trickle.abort();
            assert!(head.starts_with("http/1.1 504"), "{addr}: {head:?}");
            assert!(head.contains("x-levee-error: timeout"), "{addr}: {head:?}");
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(900), "{addr}: {elapsed:?}");
        assert!(elapsed < Duration::from_secs(6), "{addr}: {elapsed:?}");
        served_at_once(addr, host).await;
    }
    let peak = sampler.peak_rss_kib();
    eprintln!("slow bodies: RSS {base_rss} KiB -> peak {peak} KiB");
    assert!(peak < base_rss + 32 * 1024, "RSS peaked at {peak} KiB");
}

#[tokio::test]
async fn slow_readers_are_disconnected_after_the_stall_timeout_with_bounded_memory() {
    let up = FlakyUpstream::start("slow-readers").await.unwrap();
    // Only the stall timeout is short here.
    let proxy = proxy_for(&up, "15s", "1s").await;
    let pid = proxy.process.pid().expect("pid");
    let base_rss = resources::rss_kib(pid).unwrap();
    let base_fds = resources::open_fds(pid).unwrap();
    let sampler = resources::Sampler::start(pid);
    for (addr, host) in listeners(&proxy) {
        let start = Instant::now();
        let mut readers = Vec::new();
        for _ in 0..SLOW_READERS {
            let socket = TcpSocket::new_v4().unwrap();
            // A small receive window: the proxy's writes block early.
            socket.set_recv_buffer_size(16 * 1024).unwrap();
            let mut tcp = socket.connect(addr).await.unwrap();
            let request =
                format!("GET / HTTP/1.1\r\nHost: {host}\r\nx-flaky-body-bytes: {LARGE}\r\n\r\n");
            tcp.write_all(request.as_bytes()).await.unwrap();
            readers.push(tcp);
        }
        // While they do not read, others are served.
        served_at_once(addr, host).await;
        // The stalled connections are closed (and their upstream calls
        // dropped): the proxy's fds come back down.
        eventually(
            Duration::from_secs(10),
            "stalled readers disconnected",
            || async {
                let fds = resources::open_fds(pid).map_err(|e| e.to_string())?;
                if fds <= base_fds + 2 {
                    Ok(())
                } else {
                    Err(format!("{fds} fds open (from {base_fds})"))
                }
            },
        )
        .await;
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(900),
            "{addr}: closed after {elapsed:?}"
        );
        // Each had its response head (the body was cut: its connection is
        // gone from the proxy). Reading the rest is left out: through a
        // 16 KiB window the kernel hands it over at zero-window-probe pace.
        for mut tcp in readers {
            let mut head = [0u8; 12];
            tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head))
                .await
                .expect("the head in time")
                .unwrap();
            assert_eq!(&head, b"HTTP/1.1 200", "{addr}");
        }
        served_at_once(addr, host).await;
    }
    let peak = sampler.peak_rss_kib();
    eprintln!("slow readers: RSS {base_rss} KiB -> peak {peak} KiB");
    // 16 slow readers of 16 MiB each: buffered, that would be 256 MiB.
    assert!(peak < base_rss + 48 * 1024, "RSS peaked at {peak} KiB");
}
