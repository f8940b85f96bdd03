//! `levee-demo`: a whole local mesh on loopback (see `levee_tests::demo`).
//! README's first command: `cargo run -p levee-tests --bin levee-demo`.

use clap::Parser;
use levee_tests::demo::{self, DemoOptions};

/// Runs a local Levee mesh and shows what resilience policy changes.
#[derive(Debug, Parser)]
#[command(name = "levee-demo", version, about)]
struct Args {
    /// Requests per second the client sends.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Seconds before the resilience policy is applied.
    #[arg(long, default_value_t = 10)]
    apply_after: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(error) = build_workspace_binaries() {
        eprintln!("levee-demo: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("levee-demo: starting the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let options = DemoOptions {
        rate: args.rate,
        apply_after: args.apply_after,
        duration: args.duration,
    };
    match runtime.block_on(demo::run(options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("levee-demo: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Under `cargo run`, make sure the proxy and control-plane binaries next to
/// this one are built and current (`cargo run -p levee-tests` builds only
/// this package's binaries).
fn build_workspace_binaries() -> Result<(), String> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "levee-proxy",
        "-p",
        "levee-control-plane",
        "--bins",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build of the Levee binaries failed ({status})"
        ))
    }
}
