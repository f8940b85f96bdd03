//! Protective limits: a slow request head, or a connection that sends
//! nothing, is cut off after `--header-read-timeout`, an oversized head gets
//! 431, and a connection beyond `--max-connections` gets a clear 503 and is
//! closed — never a hang.

use std::time::{Duration, Instant};

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Http1Conn, Proxy, empty, eventually, get_http1, send_http1, yaml},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A flaky upstream as `web:80` behind a proxy started with `flag value`.
async fn limited(flag: &str, value: &str) -> (FlakyUpstream, Proxy) {
    let up = FlakyUpstream::start("l-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg(flag)
        .arg(value)
        .start()
        .await;
    (up, proxy)
}

#[tokio::test]
async fn slowloris_head_is_cut_off_after_the_header_read_timeout() {
    let (up, proxy) = limited("--header-read-timeout", "500ms").await;
    let tcp = TcpStream::connect(proxy.outbound()).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    let start = Instant::now();
    // Trickle a header line every 100 ms and never finish the head.
    let trickle = tokio::spawn(async move {
        writer
            .write_all(b"GET / HTTP/1.1\r\nHost: web:80\r\n")
            .await?;
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer
                .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut got)).await;
    let elapsed = start.elapsed();
    trickle.abort();
    assert!(
        read.is_ok(),
        "the connection was still open after 5 s (timeout is 500ms)"
    );
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "closed too late: {elapsed:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "either a 408 or a plain close, got {text:?}"
    );
    assert_eq!(up.requests(), 0, "the incomplete request was not forwarded");
}

#[tokio::test]
async fn a_silent_connection_is_cut_off_after_the_header_read_timeout() {
    let proxy = Proxy::builder()
        .arg("--header-read-timeout")
        .arg("300ms")
        .start()
        .await;
    let start = Instant::now();
    let mut silent = TcpStream::connect(proxy.outbound()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "a connection that never sent a byte was open after 5 s (timeout 300ms)"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let (up, proxy) = limited("--max-header-bytes", "8192").await;
    let req = Request::get("/")
        .header("host", "web:80")
        .header("x-big", "a".repeat(16 * 1024))
        .body(empty())
        .unwrap();
    let r = send_http1(proxy.outbound(), req)
        .await
        .expect("a response, not a reset");
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(up.requests(), 0);
    // A normal request still works.
    let req = Request::get("/")
        .header("host", "web:80")
        .header("x-small", "a".repeat(1024))
        .body(empty())
        .unwrap();
    assert_eq!(send_http1(proxy.outbound(), req).await.unwrap().status, 200);
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503() {
    let (up, proxy) = limited("--max-connections", "2").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = Http1Conn::connect(proxy.outbound()).await.unwrap();
        let req = Request::get("/")
            .header("host", "web:80")
            .body(empty())
            .unwrap();
        assert_eq!(conn.send(req).await.unwrap().status, 200);
        held.push(conn);
    }
    // The extra connection gets an answer, then the proxy closes it.
    let start = Instant::now();
    let mut extra = TcpStream::connect(proxy.outbound()).await.unwrap();
    extra
        .write_all(b"GET / HTTP/1.1\r\nHost: web:80\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the extra connection was left open");
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("x-levee-error: overloaded"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(up.requests(), 2);
    // The held connections still work.
    let req = Request::get("/")
        .header("host", "web:80")
        .body(empty())
        .unwrap();
    assert_eq!(held[0].send(req).await.unwrap().status, 200);

    // Closing a held connection frees a slot.
    drop(held.pop());
    eventually(
        Duration::from_secs(10),
        "a freed connection slot",
        || async {
            let r = get_http1(proxy.outbound(), "web:80", "/")
                .await
                .map_err(|e| e.to_string())?;
            match r.status.as_u16() {
                200 => Ok(()),
                code => Err(format!("still {code}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn idle_client_connections_are_closed() {
    let (_up, proxy) = limited("--idle-timeout", "500ms").await;
    let mut tcp = TcpStream::connect(proxy.outbound()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: web:80\r\n\r\n")
        .await
        .unwrap();
    let head = levee_tests::harness::read_head(&mut tcp).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let start = Instant::now();
    // Read the rest (the body), then wait for the proxy to close the idle connection.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the idle connection was still open after 5 s (idle timeout 500ms)"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "closed too late: {elapsed:?}"
    );
}
