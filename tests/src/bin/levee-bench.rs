//! `levee-bench`: the benchmark runner of issue 6 (see `docs/benchmarks.md`).
//! Starts an upstream, Levee, HAProxy and nginx on loopback, loads each at
//! fixed rates, and prints a table (and JSON with `--json`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use levee_tests::bench::{self, Env, Plan, Scenario};

/// Levee side by side with a direct call, HAProxy and nginx.
#[derive(Parser, Debug)]
#[command(name = "levee-bench", version, about)]
struct Args {
    /// A reduced run (< 2 minutes) that checks the runner works; asserts nothing about speed.
    #[arg(long)]
    quick: bool,

    /// Run only these scenarios (comma-separated; default: all), e.g.
    /// `--scenarios tracing` or `--scenarios latency,tracing`.
    #[arg(long, alias = "only", value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,

    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Repetitions of every case (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,

    /// Measured seconds per case and repetition (after a 2 s warm-up).
    #[arg(long, default_value_t = 8.0)]
    duration: f64,

    /// Run as the benchmark's upstream (1 KiB answers) instead.
    #[arg(long, hide = true)]
    serve_upstream: bool,

    /// With --serve-upstream: listen address (repeat it for several).
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    addr: Vec<SocketAddr>,

    /// With --serve-upstream: write the bound address here as JSON.
    #[arg(long, hide = true)]
    addr_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = if args.serve_upstream {
        // Pinned to one CPU by the runner: one worker is enough.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("levee-bench: cannot start tokio: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = if args.serve_upstream {
        runtime.block_on(bench::upstream::serve(
            &args.addr,
            args.addr_file.as_deref(),
        ))
    } else {
        // On Ctrl-C or SIGTERM the run is dropped: what it started (processes,
        // the transparent scenario's network namespaces) is stopped and
        // deleted by its guards before the process exits.
        runtime.block_on(async {
            tokio::select! {
                result = run(args) => result,
                signal = interrupted() => Err(format!("interrupted by {signal}; stopped what it had started").into()),
            }
        })
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The first SIGINT or SIGTERM, by name (never, if they cannot be caught).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let levee_proxy = levee_tests::harness::bin_dir().join("levee-proxy");
    if !levee_proxy.is_file() {
        let profile = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        return Err(format!(
            "{} not found: build it first with `cargo build{profile} -p levee-proxy`",
            levee_proxy.display()
        )
        .into());
    }
    // Described before pinning ourselves, which hides the other CPUs.
    let machine = bench::machine();
    let pinning = bench::pinning();
    if let Some(cpus) = &pinning.load
        && !bench::pin_self(cpus)
    {
        eprintln!("levee-bench: could not pin the load generator to CPU {cpus}");
    }
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full(
            args.reps.max(1),
            Duration::from_secs_f64(args.duration.max(0.1)),
        )
    }
    .select(&args.scenarios);
    let env = Env {
        pinning,
        levee_proxy,
        ticks_per_sec: bench::procfs::ticks_per_sec(),
        dir: tempfile::Builder::new().prefix("levee-bench-").tempdir()?,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = bench::scenarios::run(&env, &plan, machine, command).await?;
    println!("{}", bench::report::render(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("levee-bench: JSON written to {}", path.display());
    }
    // Skipped (not root) is fine in a run of everything; asked for by name
    // with --scenarios, it is a failure.
    if args.scenarios.contains(&Scenario::Transparent)
        && plan.runs_transparent()
        && report.transparent.is_none()
    {
        return Err(
            "--scenarios transparent was asked for but skipped (see above: it needs root)".into(),
        );
    }
    Ok(())
}
