//! Scenario 6, control-plane convergence: runs the control plane's own
//! convergence benchmark (`control-plane/examples/convergence.rs`, time from
//! `Apply` answered to every watching proxy's ACK) when it has been built
//! next to `levee-bench`, and keeps its result lines for the report.

use std::time::Duration;

use tokio::process::Command;

/// One run's result line, e.g. `streams=1000 rounds=20 per-proxy p50=…`.
pub type Line = String;

/// Where the example binary is expected.
pub fn binary() -> std::path::PathBuf {
    crate::harness::bin_dir()
        .join("examples")
        .join("convergence")
}

/// Runs the example for each `(streams, rounds)`; `Err` says why not.
pub async fn run(sizes: &[(usize, u32)], cpus: Option<&str>) -> Result<Vec<Line>, String> {
    let exe = binary();
    if !exe.is_file() {
        let profile = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        return Err(format!(
            "{} not found; build it with `cargo build{profile} -p levee-control-plane --example convergence`",
            exe.display()
        ));
    }
    let mut lines = Vec::new();
    for (streams, rounds) in sizes {
        eprintln!("convergence: {streams} streams, {rounds} rounds");
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args([streams.to_string(), rounds.to_string()])
            .env_remove("LEVEE_SERVER")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
            .await
            .map_err(|_| format!("{streams} streams: no result within 180 s"))?
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().rev().find(|l| l.starts_with("streams=")) {
            Some(line) if out.status.success() => lines.push(line.to_owned()),
            _ => {
                return Err(format!(
                    "{streams} streams: exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(lines)
}
