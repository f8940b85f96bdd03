//! `levee-proxy`: parses flags, sets up logging, turns SIGTERM/SIGINT into a
//! graceful shutdown, keeps SIGHUP from ending the process, and runs the
//! proxy (see the library's `run`). `levee-proxy init-iptables` instead
//! installs a pod's interception rules and exits (`init_iptables`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use levee_proxy::config::{Cli, Command, LogFormat, ProxyConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::InitIptables(args)) => match levee_proxy::init_iptables::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("levee-proxy init-iptables: {error}");
                ExitCode::FAILURE
            }
        },
        None => serve(cli.proxy),
    }
}

#[tokio::main]
async fn serve(config: ProxyConfig) -> ExitCode {
    init_logging(config.log_format);

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    survive_hangup(config.policy_file.is_none());
    tokio::spawn(trim::periodically(std::time::Duration::from_secs(10)));
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

/// SIGHUP's default action ends the process. With `--policy-file` the policy
/// source listens for it and reloads the file; without one (control-plane
/// mode, or no policy at all) there is nothing to reload, so it is only
/// logged. Installed before the proxy starts, so no SIGHUP is ever fatal.
fn survive_hangup(log_it: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; a SIGHUP would stop the proxy");
            return;
        }
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if log_it {
                tracing::info!("SIGHUP received: no --policy-file to reload, ignored");
            }
        }
    });
}

/// The allocator is glibc's, with `malloc_trim(0)` every 10 s. glibc keeps
/// what a burst of connections freed: `free` returns only the top of each
/// arena to the kernel, and a tokio worker's arena is rarely free at its
/// top. `malloc_trim(0)` also releases the free pages inside the arenas
/// (`MADV_DONTNEED`). Measured on the release build, 1,000 keep-alive
/// connections opened and closed (docs/benchmarks.md, "Memory after a
/// burst"; RSS over the pre-burst figure 60 s later): glibc without the trim
/// +17.7 MiB; with it +0.8 MiB, back within 2 MiB after 36 s; also with
/// `M_ARENA_MAX=1` +0.9 MiB (no gain); jemalloc 5.3 with background purging
/// +1.8 MiB, but 2.1 MiB more when idle, which the 8 MiB idle target cannot
/// spare.
#[allow(unsafe_code)]
mod trim {
    use std::time::Duration;

    pub async fn periodically(every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim has no preconditions; it takes each arena's
            // lock while it walks it, like malloc and free do.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}
