//! Graceful shutdown on SIGTERM: in-flight requests finish, new connections
//! are refused, and the process exits 0 within the grace period.

use std::time::{Duration, Instant};

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, empty, eventually, send_http1, yaml},
};

async fn slow_request(proxy: &Proxy, delay: &str) -> tokio::task::JoinHandle<Result<u16, String>> {
    let outbound = proxy.outbound();
    let req = Request::get("/")
        .header("host", "web:80")
        .header("x-flaky-delay", delay)
        .body(empty())
        .unwrap();
    tokio::spawn(async move {
        send_http1(outbound, req)
            .await
            .map(|r| r.status.as_u16())
            .map_err(|e| e.to_string())
    })
}

async fn wait_in_flight(up: &FlakyUpstream) {
    eventually(
        Duration::from_secs(10),
        "the slow request to reach the upstream",
        || async {
            match up.stats().in_flight {
                1 => Ok(()),
                n => Err(format!("{n} in flight")),
            }
        },
    )
    .await;
}

/// A proxy with `--shutdown-grace grace` and a request in flight that the
/// upstream answers after `delay`; returns when the upstream holds it. The
/// upstream is returned to be kept alive.
async fn in_flight_at_shutdown(
    grace: &str,
    delay: &str,
) -> (
    FlakyUpstream,
    Proxy,
    tokio::task::JoinHandle<Result<u16, String>>,
) {
    let up = FlakyUpstream::start("s-1").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg("--shutdown-grace")
        .arg(grace)
        .start()
        .await;
    let in_flight = slow_request(&proxy, delay).await;
    wait_in_flight(&up).await;
    (up, proxy, in_flight)
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let (_up, mut proxy, in_flight) = in_flight_at_shutdown("10s", "1500ms").await;

    let start = Instant::now();
    proxy.process.terminate().unwrap();
    let outbound = proxy.outbound();
    eventually(
        Duration::from_secs(5),
        "new connections to be refused",
        || async move {
            match tokio::net::TcpStream::connect(outbound).await {
                Err(_) => Ok(()),
                Ok(_) => Err("still accepting".to_owned()),
            }
        },
    )
    .await;

    let status = in_flight.await.unwrap();
    assert_eq!(status, Ok(200), "the in-flight request completes");
    let exit = proxy
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "exits once the last request is done, not at the end of the grace: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn sigterm_gives_up_on_requests_after_the_grace() {
    let (_up, mut proxy, in_flight) = in_flight_at_shutdown("500ms", "30s").await;

    let start = Instant::now();
    proxy.process.terminate().unwrap();
    let exit = proxy
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "exits after the 500ms grace: {:?}",
        start.elapsed()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the client is not left hanging")
        .unwrap();
    assert!(outcome != Ok(200), "{outcome:?}");
}
