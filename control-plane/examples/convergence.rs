//! Convergence benchmark: N simulated proxies watch one service through an
//! in-process control plane; each round applies a policy change and measures
//! the time from `Apply` answered to every proxy having received (and ACKed)
//! the new version.
//!
//! ```text
//! cargo run -p levee-control-plane --example convergence -- 1000 [ROUNDS]
//! ```
//!
//! Proxies share HTTP/2 connections (100 streams each). A proxy's time is
//! taken when it has received the update and queued its ACK. `rss` is this
//! whole process (control plane + simulated proxies), an upper bound for the
//! control plane alone. To measure the control plane by itself, start the
//! binary and set `LEVEE_SERVER=http://ADDR` and `LEVEE_SERVER_PID=PID`:
//! `server-rss` is then its `VmRSS` with every stream open, after the rounds.

use std::time::{Duration, Instant};

use clap::Parser;
use levee_control_plane::config::ControlPlaneConfig;
use levee_control_plane::ctl::client::connect;
use levee_proto::v1;
use levee_proto::v1::discovery_client::DiscoveryClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const STREAMS_PER_CONNECTION: usize = 100;

fn policy(round: u32) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: payments, namespace: shop}}\n\
         spec:\n  target: {{service: payments, port: 8080}}\n  outbound:\n    timeouts: {{request: {}ms}}\n",
        1000 + round
    )
}

/// One simulated proxy: ACKs everything and reports when it saw `policy_revision`.
async fn proxy(
    channel: Channel,
    seen: mpsc::UnboundedSender<(u64, Instant)>,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    let hello = v1::Hello {
        service: "web".into(),
        namespace: "shop".into(),
        subscriptions: vec![v1::ServiceRef {
            name: "payments".into(),
            namespace: "shop".into(),
            port: 8080,
        }],
        ..Default::default()
    };
    let _ = tx
        .send(v1::WatchRequest {
            kind: Some(v1::watch_request::Kind::Hello(hello)),
        })
        .await;
    let mut responses = DiscoveryClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(response) = responses.message().await? {
        let Some(v1::watch_response::Kind::Update(update)) = response.kind else {
            continue;
        };
        let revision = update.policy_revision;
        let ack = v1::Ack {
            service: update.service,
            version: update.version,
            nonce: update.nonce,
        };
        let _ = tx
            .send(v1::WatchRequest {
                kind: Some(v1::watch_request::Kind::Ack(ack)),
            })
            .await;
        let _ = seen.send((revision, Instant::now()));
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// `VmRSS` of `pid` (`self`: this process) in MiB; 0 when unreadable.
fn rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir()?;
    let (_stop, stop_rx) = watch::channel(false);
    // LEVEE_SERVER: measure a separately started control plane (e.g. to read
    // its own RSS); otherwise start one in this process.
    let url = match std::env::var("LEVEE_SERVER") {
        Ok(url) => url,
        Err(_) => {
            let dir_arg = dir.path().to_str().ok_or("temp dir is not UTF-8")?;
            let config = ControlPlaneConfig::try_parse_from([
                "levee-control-plane",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--data-dir",
                dir_arg,
                // Every simulated proxy shares 127.0.0.1.
                "--max-watch-streams-per-peer",
                "0",
                // Simulated proxies speak plaintext and have no certificates.
                "--insecure-plaintext",
            ])?;
            let (addrs, _serving) = levee_control_plane::start(config, stop_rx).await?;
            format!("http://{}", addrs.grpc)
        }
    };
    let mut admin = connect(&url, None).await?;
    admin
        .apply(v1::ApplyRequest {
            yaml: policy(0),
            ..Default::default()
        })
        .await?;

    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    for chunk in 0..n.div_ceil(STREAMS_PER_CONNECTION) {
        let channel = Channel::from_shared(url.clone())?.connect().await?;
        for _ in 0..STREAMS_PER_CONNECTION.min(n - chunk * STREAMS_PER_CONNECTION) {
            tokio::spawn(proxy(channel.clone(), seen_tx.clone()));
        }
    }
    // Wait until every proxy has its first update.
    for _ in 0..n {
        seen_rx.recv().await.ok_or("proxies ended")?;
    }
    let mut per_proxy = Vec::new();
    let mut per_round = Vec::new();
    for round in 1..=rounds {
        let answered = admin
            .apply(v1::ApplyRequest {
                yaml: policy(round),
                ..Default::default()
            })
            .await?;
        let (revision, at) = (answered.into_inner().revision, Instant::now());
        let mut got = 0;
        let mut last = Duration::ZERO;
        while got < n {
            let (seen_revision, when) =
                tokio::time::timeout(Duration::from_secs(30), seen_rx.recv())
                    .await?
                    .ok_or("proxies ended")?;
            if seen_revision == revision {
                got += 1;
                let latency = when.saturating_duration_since(at);
                last = last.max(latency);
                per_proxy.push(latency);
            }
        }
        per_round.push(last);
    }
    per_proxy.sort();
    per_round.sort();
    let server_rss = match std::env::var("LEVEE_SERVER_PID") {
        Ok(pid) => format!(" server-rss={:.1} MiB", rss_mib(pid.trim())),
        Err(_) => String::new(),
    };
    println!(
        "streams={n} rounds={rounds} per-proxy p50={:?} p99={:?} | all-converged p50={:?} p99={:?} max={:?} | rss={:.1} MiB{server_rss}",
        percentile(&per_proxy, 0.5),
        percentile(&per_proxy, 0.99),
        percentile(&per_round, 0.5),
        percentile(&per_round, 0.99),
        per_round.last().copied().unwrap_or_default(),
        rss_mib("self"),
    );
    Ok(())
}
