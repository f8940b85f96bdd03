//! Protective limits, graceful shutdown and `--addr-file`, in-process.

use std::time::{Duration, Instant};

use crate::support::*;
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until EOF; true when the peer closed within the deadline.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait).await.is_ok()
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let upstream = upstream::echo().await;
    let proxy = start_proxy(
        &endpoints("echo", 8080, &[upstream]),
        &["--max-header-bytes", "8192"],
    )
    .await;
    let big = "a".repeat(16 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: echo:8080\r\nX-Big: {big}\r\n\r\n");
    let response = raw(proxy.addrs.outbound, request.as_bytes(), "\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
}

#[tokio::test]
async fn over_the_connection_limit_gets_503_overloaded_then_close() {
    let upstream = upstream::echo().await;
    let proxy = start_proxy(
        &endpoints("echo", 8080, &[upstream]),
        &["--max-connections", "1"],
    )
    .await;
    let mut first = h1(proxy.addrs.outbound).await;
    let req = Request::get("/")
        .header("host", "echo:8080")
        .body(full(""))
        .expect("request");
    assert_eq!(
        first.send_request(req).await.expect("first").status(),
        StatusCode::OK
    );

    let mut second = TcpStream::connect(proxy.addrs.outbound)
        .await
        .expect("connect");
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: echo:8080\r\n\r\n")
        .await
        .expect("write");
    let response = read_until(&mut second, "").await; // until the proxy closes
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("x-levee-error: overloaded"), "{response}");

    // The first connection still works.
    let req = Request::get("/")
        .header("host", "echo:8080")
        .body(full(""))
        .expect("request");
    assert_eq!(
        first.send_request(req).await.expect("first again").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn slow_or_silent_clients_are_cut_off() {
    let proxy = start_proxy("", &["--header-read-timeout", "200ms"]).await;
    let started = Instant::now();
    let mut partial = TcpStream::connect(proxy.addrs.outbound)
        .await
        .expect("connect");
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: x")
        .await
        .expect("write");
    let mut silent = TcpStream::connect(proxy.addrs.outbound)
        .await
        .expect("connect");
    assert!(
        closed_by_peer(&mut partial).await,
        "partial head not cut off"
    );
    assert!(
        closed_by_peer(&mut silent).await,
        "silent connection not cut off"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let upstream = upstream::echo().await;
    let proxy = start_proxy(
        &endpoints("echo", 8080, &[upstream]),
        &["--idle-timeout", "200ms"],
    )
    .await;
    let mut client = h2(proxy.addrs.outbound).await;
    let req = Request::get("http://echo:8080/")
        .body(full(""))
        .expect("request");
    assert_eq!(
        client.send_request(req).await.expect("response").status(),
        StatusCode::OK
    );
    let deadline = Instant::now() + DEADLINE;
    while !client.is_closed() {
        assert!(Instant::now() < deadline, "idle connection still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_then_stops_listening() {
    // An upstream that answers only when the test says so.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let _head = read_until(&mut s, "\r\n\r\n").await;
        let _ = arrived_tx.send(());
        let _ = release_rx.await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone")
            .await;
    });
    let proxy = start_proxy(&endpoints("echo", 8080, &[upstream]), &[]).await;
    let outbound = proxy.addrs.outbound;
    let mut client = h1(outbound).await;
    let req = Request::get("/")
        .header("host", "echo:8080")
        .body(full(""))
        .expect("request");
    let in_flight = tokio::spawn(client.send_request(req));
    tokio::time::timeout(DEADLINE, arrived)
        .await
        .expect("request reaches upstream")
        .expect("arrived");

    proxy.shutdown.cancel();
    // New connections are refused once the listener has stopped.
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(outbound).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release.send(()).expect("release");
    let response = in_flight
        .await
        .expect("task")
        .expect("in-flight request completes");
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::timeout(DEADLINE, proxy.task)
        .await
        .expect("run returns")
        .expect("task")
        .expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_grace_bounds_the_wait() {
    // An upstream that never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    let _hold = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let _head = read_until(&mut s, "\r\n\r\n").await;
        let _ = arrived_tx.send(());
        std::future::pending::<()>().await;
        drop(s);
    });
    let proxy = start_proxy(
        &endpoints("stuck", 80, &[addr]),
        &["--shutdown-grace", "200ms"],
    )
    .await;
    let mut client = h1(proxy.addrs.outbound).await;
    let req = Request::get("/")
        .header("host", "stuck")
        .body(full(""))
        .expect("request");
    let stuck = tokio::spawn(client.send_request(req));
    tokio::time::timeout(DEADLINE, arrived)
        .await
        .expect("request reaches upstream")
        .expect("arrived");
    let started = Instant::now();
    proxy.shutdown.cancel();
    tokio::time::timeout(DEADLINE, proxy.task)
        .await
        .expect("run returns after the grace period")
        .expect("task")
        .expect("clean shutdown");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The stuck request is cut, not left hanging.
    let outcome = tokio::time::timeout(DEADLINE, stuck)
        .await
        .expect("client sees the end");
    assert!(outcome.expect("task").is_err());
}

#[tokio::test]
async fn addr_file_holds_the_bound_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("addrs.json");
    let path_text = path.to_str().expect("utf-8").to_owned();
    let proxy = start_proxy("", &["--addr-file", &path_text]).await;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("addr file")).expect("json");
    assert_eq!(json["outbound"], proxy.addrs.outbound.to_string());
    assert_eq!(json["inbound"], proxy.addrs.inbound.to_string());
    assert_eq!(json["admin"], proxy.addrs.admin.to_string());
    assert_ne!(proxy.addrs.outbound.port(), 0);
    proxy.stop().await.expect("clean stop");
}
