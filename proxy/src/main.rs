//! `levee-proxy`: parses flags, sets up logging, turns SIGTERM/SIGINT into a
//! graceful shutdown, and runs the proxy (see the library's `run`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use levee_proxy::config::{LogFormat, ProxyConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = ProxyConfig::parse();
    init_logging(config.log_format);

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match levee_proxy::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "levee-proxy failed");
            eprintln!("levee-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Levels from `LEVEE_LOG`, else `RUST_LOG`, else `info`.
fn init_logging(format: LogFormat) {
    let directives = std::env::var("LEVEE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|error| {
        eprintln!("levee-proxy: ignoring bad log filter {directives:?}: {error}");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for people; logs collected from a pipe stay plain.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot listen for SIGTERM/SIGINT; stop with SIGKILL");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
    // A second signal means "now": skip the rest of the grace period.
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting without waiting for in-flight requests");
    std::process::exit(1);
}
