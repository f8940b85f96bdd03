//! Chaos: SIGTERM while under steady load (`shutdown.rs` covers one request
//! at a time). Clients that retry only connect errors and never-sent
//! requests ([`RetryingLoad`]) lose nothing: every request the proxy had
//! accepted completes, the listener stops accepting at once (clients see
//! clean connect refusals, never a reset request), the process exits 0
//! well within `--shutdown-grace`, and a replacement proxy started on the
//! same address (a restarted sidecar) takes the retried requests. Before
//! the HTTP/1 drain fix (`proxy/src/server/conn.rs`: idle keep-alive
//! connections were closed at once, racing the client's next request) about
//! one restart in three lost a request (`IncompleteMessage`).

use std::time::{Duration, Instant};

use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, eventually, retrying::RetryingLoad, yaml},
};

const GRACE: Duration = Duration::from_secs(5);

fn proxy(up: &FlakyUpstream) -> levee_tests::harness::ProxyBuilder {
    Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg("--shutdown-grace")
        .arg(format!("{}s", GRACE.as_secs()))
}

async fn wait_requests(up: &FlakyUpstream, at_least: u64, what: &str) {
    eventually(Duration::from_secs(15), what, || async {
        match up.requests() {
            n if n >= at_least => Ok(()),
            n => Err(format!("{n} of {at_least}")),
        }
    })
    .await;
}

/// How many times the sidecar is restarted under the same load (each
/// restart is one chance to lose a request in the keep-alive race).
const RESTARTS: usize = 3;

#[tokio::test]
async fn sigterm_under_load_fails_no_request_and_a_restarted_proxy_takes_over() {
    let up = FlakyUpstream::start("s").await.expect("flaky");
    let mut current = proxy(&up).start().await;
    let addr = current.outbound();
    // Every request takes 1–50 ms upstream: many are in flight at any time.
    let load = RetryingLoad::start(addr, "web:80", &[("x-flaky-delay", "1ms-50ms")], 24);
    wait_requests(&up, 100, "load through the first proxy").await;

    let mut slowest = Duration::ZERO;
    for _ in 0..RESTARTS {
        let start = Instant::now();
        current.process.terminate().expect("SIGTERM");
        eventually(
            Duration::from_secs(5),
            "new connections to be refused",
            || async move {
                match tokio::net::TcpStream::connect(addr).await {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
                    Err(e) => Err(format!("not a clean refusal: {e}")),
                    Ok(_) => Err("still accepting".to_owned()),
                }
            },
        )
        .await;
        let exit = current
            .process
            .wait_exit(GRACE + Duration::from_secs(5))
            .await
            .expect("exits");
        let drained = start.elapsed();
        slowest = slowest.max(drained);
        assert_eq!(exit.code(), Some(0), "{exit}");
        assert!(
            drained < GRACE,
            "drained in-flight requests (at most 50 ms each, plus the 1 s drain idle) within the {GRACE:?} grace: {drained:?}"
        );

        // The restarted sidecar, on the same address.
        let before = up.requests();
        current = proxy(&up).outbound_addr(addr).start().await;
        assert_eq!(current.outbound(), addr);
        wait_requests(&up, before + 100, "load through the replacement").await;
    }

    let tally = load.stop().await;
    assert_eq!(
        tally.failed, 0,
        "no request that reached a proxy was lost: {tally:?}"
    );
    assert_eq!(tally.not_ok(), 0, "every answer is 200: {tally:?}");
    assert!(
        tally.refused > 0,
        "the clients saw the stopped listener refuse connections: {tally:?}"
    );
    assert!(tally.count(200) >= 400, "{tally:?}");
    eprintln!(
        "MEASURED sigterm-under-load: {RESTARTS} restarts, {} ok, {} connects refused and retried, {} unsent and retried, slowest drain {slowest:?}",
        tally.count(200),
        tally.refused,
        tally.unsent
    );
}
