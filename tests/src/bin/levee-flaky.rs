//! `levee-flaky`: the flaky test upstream as a process, for demos, benchmarks
//! and manual testing. Requests may override every fault with `x-flaky-*`
//! headers; see `levee_tests::flaky`.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use levee_tests::flaky::{Delay, Faults, FlakyUpstream, SlowBody, parse_rate};

/// A test upstream (HTTP/1.1, HTTP/2, gRPC) with injectable faults.
#[derive(Parser, Debug)]
#[command(name = "levee-flaky", version, about)]
struct Args {
    /// Listen address.
    #[arg(long, env = "LEVEE_FLAKY_ADDR", default_value = "127.0.0.1:0")]
    addr: SocketAddr,

    /// Instance id, sent in every response's `x-flaky-instance` header.
    #[arg(long, env = "LEVEE_FLAKY_ID", default_value = "flaky")]
    id: String,

    /// After binding, write `{"addr":"IP:PORT"}` here (atomically).
    #[arg(long, env = "LEVEE_FLAKY_ADDR_FILE")]
    addr_file: Option<PathBuf>,

    /// Answer with this HTTP status (at `--fail-rate`).
    #[arg(long)]
    status: Option<u16>,

    /// Answer gRPC calls with this code (at `--fail-rate`).
    #[arg(long)]
    grpc_status: Option<i32>,

    /// Probability (0..=1) of `--status` / `--grpc-status`; 1 when unset.
    #[arg(long, value_parser = parse_rate)]
    fail_rate: Option<f64>,

    /// Delay before answering: `200ms`, or a random range `100ms-300ms`.
    #[arg(long)]
    delay: Option<Delay>,

    /// Probability (0..=1) of resetting the connection instead of answering.
    #[arg(long, value_parser = parse_rate, default_value = "0")]
    reset_rate: f64,

    /// Size of the default response body in bytes.
    #[arg(long)]
    body_bytes: Option<usize>,

    /// Send bodies slowly: `CHUNKSxINTERVAL`, e.g. `10x50ms`.
    #[arg(long)]
    slow_body: Option<SlowBody>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let faults = Faults {
        status: args.status,
        grpc_status: args.grpc_status,
        fail_rate: args.fail_rate,
        delay: args.delay,
        reset_rate: args.reset_rate,
        body_bytes: args.body_bytes,
        slow_body: args.slow_body,
    };
    let upstream = FlakyUpstream::builder()
        .id(args.id)
        .addr(args.addr)
        .faults(faults)
        .start()
        .await?;
    if let Some(path) = &args.addr_file {
        let json = serde_json::json!({ "addr": upstream.addr().to_string() }).to_string();
        levee_tests::harness::write_atomically(path, &json)?;
    }
    tracing::info!(addr = %upstream.addr(), id = upstream.id(), faults = ?upstream.faults(), "levee-flaky listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("levee-flaky stopping");
    Ok(())
}
