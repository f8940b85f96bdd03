//! Abuse: 20,000 WebSocket upgrade attempts against a connection cap of 100.
//! 100 tunnels are opened and held (each keeps its connection slot while
//! it lives); every further attempt must get a clear `503 overloaded` and
//! never reach the upstream; the proxy's fds and RSS stay bounded; once the
//! tunnels close it serves a normal request at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, eventually, get_http1, resources, yaml},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CAP: usize = 100;
const ATTEMPTS: usize = 20_000;
/// Attempts in flight at once: well under the proxy's 256 concurrent
/// refusals, so every refused attempt gets its 503 (beyond that the proxy
/// closes at once, by design).
const PARALLEL: usize = 128;

const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: web:80\r\nConnection: Upgrade\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// One upgrade attempt: the response head, lower-cased ("" if the proxy
/// closed without one).
async fn attempt(addr: SocketAddr) -> Result<(TcpStream, String), String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.write_all(UPGRADE).await.map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Ok((tcp, String::from_utf8_lossy(&head).to_ascii_lowercase()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_upgrades_against_a_cap_of_100() {
    let up = FlakyUpstream::start("ws-abuse").await.unwrap();
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[up.addr()]))
        .arg("--max-connections")
        .arg(CAP.to_string())
        .start()
        .await;
    let pid = proxy.process.pid().expect("proxy pid");
    let addr = proxy.outbound();
    let base_fds = resources::open_fds(pid).unwrap();
    let base_rss = resources::rss_kib(pid).unwrap();
    let sampler = resources::Sampler::start(pid);
    let start = Instant::now();

    // Fill the cap with live tunnels.
    let mut tunnels = Vec::new();
    for _ in 0..CAP {
        let (mut tcp, head) = attempt(addr).await.unwrap();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        tcp.write_all(b"x").await.unwrap();
        let mut echo = [0u8; 1];
        tcp.read_exact(&mut echo).await.unwrap();
        tunnels.push(tcp);
    }
    let forwarded = up.requests();

    // The rest: every one is refused with a clear answer.
    let refused = Arc::new(AtomicU64::new(0));
    let other = Arc::new(std::sync::Mutex::new(Vec::new()));
    futures_util::stream::iter(0..ATTEMPTS - CAP)
        .for_each_concurrent(PARALLEL, |_| {
            let (refused, other) = (refused.clone(), other.clone());
            async move {
                let outcome = tokio::time::timeout(Duration::from_secs(10), attempt(addr)).await;
                match outcome {
                    Ok(Ok((_, head)))
                        if head.starts_with("http/1.1 503")
                            && head.contains("x-levee-error: overloaded") =>
                    {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome => {
                        let seen = format!("{:?}", outcome.map(|r| r.map(|(_, head)| head)));
                        other.lock().unwrap().push(seen);
                    }
                }
            }
        })
        .await;
    let flood = start.elapsed();
    let other = other.lock().unwrap().clone();
    assert!(
        other.is_empty(),
        "{} attempts without a 503 overloaded, e.g. {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
    assert_eq!(refused.load(Ordering::Relaxed) as usize, ATTEMPTS - CAP);
    assert_eq!(
        up.requests(),
        forwarded,
        "refused upgrades reached the upstream"
    );

    // Every tunnel survived the flood.
    for tcp in &mut tunnels {
        tcp.write_all(b"y").await.unwrap();
        let mut echo = [0u8; 1];
        tcp.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"y");
    }
    let (peak_fds, peak_rss) = (sampler.peak_fds(), sampler.peak_rss_kib());
    drop(sampler);
    eprintln!(
        "{ATTEMPTS} attempts in {flood:?} (proxy CPU {:?}); proxy fds {base_fds} -> peak {peak_fds}; \
         RSS {base_rss} KiB -> peak {peak_rss} KiB",
        resources::cpu_time(pid).ok()
    );
    // 100 tunnels × 2 sockets, the refusals in flight, some slack.
    assert!(
        peak_fds < base_fds + 2 * CAP as u64 + PARALLEL as u64 + 64,
        "fds peaked at {peak_fds} (from {base_fds})"
    );
    assert!(
        peak_rss < base_rss + 64 * 1024,
        "RSS peaked at {peak_rss} KiB (from {base_rss} KiB)"
    );

    // Closing the tunnels frees the slots; the proxy serves at once.
    drop(tunnels);
    eventually(
        Duration::from_secs(5),
        "a normal request served",
        || async {
            match get_http1(addr, "web:80", "/").await {
                Ok(r) if r.status == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the tunnels' fds released",
        || async {
            let fds = resources::open_fds(pid).map_err(|e| e.to_string())?;
            if fds <= base_fds + 8 {
                Ok(())
            } else {
                Err(format!("{fds} fds open (from {base_fds})"))
            }
        },
    )
    .await;
}
