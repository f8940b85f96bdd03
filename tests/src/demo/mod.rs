//! The local mesh demo (README's first command): a "payments" service of
//! three replicas — one healthy, one failing hard, one slow — each behind its
//! own Levee sidecar, and a client with its sidecar sending steady load.
//! Once a second it prints what the client sees; after a while it applies a
//! resilience policy and the numbers change.
//!
//! Layout: `mod.rs` sets the mesh up and runs the timeline, [`load`] sends
//! the traffic and keeps per-second statistics, [`report`] prints the table.
//!
//! Everything runs through a local `levee-control-plane` (embedded store in a
//! temporary directory): the replicas' sidecars register themselves as the
//! endpoints of `payments:8080`, and the policy is applied with `leveectl`.
//! The harness runs the control plane and the sidecars with
//! `--insecure-plaintext` (loopback only, nothing to set up from a fresh
//! clone); docs/identity.md shows the TLS and certificate setup.

pub mod load;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use crate::flaky::{Delay, Faults, FlakyUpstream};
use crate::harness::{ControlPlane, Proxy, yaml};

/// How the demo runs (from the command line).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Requests per second the client sends.
    pub rate: u32,
    /// Seconds before the resilience policy is applied.
    pub apply_after: u64,
    /// Stop after this many seconds (None: until Ctrl-C).
    pub duration: Option<u64>,
}

/// The port callers use for payments.
const PAYMENTS_PORT: u16 = 8080;

/// The policy the demo applies: bounded time per attempt, retries on
/// gateway errors within a budget, and outlier ejection of bad replicas.
pub const RESILIENCE_POLICY: &str = "  outbound:
    timeouts: {request: 1s, perTry: 150ms}
    retry:
      maxRetries: 2
      on: [connect-failure, refused-stream, reset, gateway-error]
      backoff: {base: 10ms, max: 50ms}
      budget: {percent: 50, minPerSecond: 10, window: 10s}
    circuitBreaker:
      failureOn: [5xx, connect-failure, timeout, reset]
      consecutiveFailures: 5
      open: {base: 5s, max: 30s}
      halfOpenProbes: 1
      maxEjectedPercent: 50
";

/// Runs the demo until Ctrl-C or `options.duration`.
pub async fn run(options: DemoOptions) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    println!(
        "Starting a local mesh: a control plane, 3 payments replicas with sidecars, and a client sidecar…"
    );
    let control_plane = ControlPlane::builder()
        .arg("--endpoint-grace")
        .arg("2s")
        .start()
        .await;
    let url = control_plane.grpc_url();
    let replicas = [
        ("payments-1", "healthy", Faults::default()),
        (
            "payments-2",
            "fails hard (503)",
            Faults {
                status: Some(503),
                ..Faults::default()
            },
        ),
        (
            "payments-3",
            "slow (200–400ms)",
            Faults {
                delay: Some(Delay::Random {
                    min: Duration::from_millis(200),
                    max: Duration::from_millis(400),
                }),
                ..Faults::default()
            },
        ),
    ];
    let mut upstreams = Vec::new();
    let mut sidecars = Vec::new();
    for (id, _, faults) in &replicas {
        let app = FlakyUpstream::builder()
            .id(*id)
            .faults(faults.clone())
            .start()
            .await?;
        // Each replica's sidecar registers its inbound address as an endpoint
        // of payments:8080 with the control plane.
        let sidecar = Proxy::builder()
            .service("payments")
            .app_port(app.addr().port())
            .arg("--service-port")
            .arg(PAYMENTS_PORT.to_string())
            .control_plane(&url)
            .start()
            .await;
        upstreams.push(app);
        sidecars.push(sidecar);
    }
    let client = Proxy::builder()
        .service("client")
        .control_plane(&url)
        .start()
        .await;

    println!(
        "  control plane: {url} (data in {})",
        control_plane.data_dir().display()
    );
    for ((id, what, _), sidecar) in replicas.iter().zip(&sidecars) {
        println!("  {id}: {what}, sidecar inbound {}", sidecar.inbound());
    }
    println!(
        "  client sidecar: outbound {} (admin: http://{}/metrics, http://{}/config)",
        client.outbound(),
        client.admin(),
        client.admin()
    );
    println!(
        "Sending {} req/s to payments:8080; the resilience policy is applied with leveectl after {}s. Ctrl-C stops.\n",
        options.rate, options.apply_after
    );

    let stats = Arc::new(load::Stats::default());
    let generator = tokio::spawn(load::run(
        client.outbound(),
        "payments:8080",
        options.rate,
        stats.clone(),
    ));
    let mut printer = report::Printer::new(&client, &stats);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut second = 0u64;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => break,
        }
        second += 1;
        printer.print_second(second).await;
        if second == options.apply_after {
            apply_policy(&control_plane).await;
        }
        if options.duration.is_some_and(|d| second >= d) {
            break;
        }
    }
    generator.abort();
    println!("\nStopping the mesh…");
    drop(client);
    drop(sidecars);
    drop(upstreams);
    drop(control_plane);
    Ok(())
}

/// `leveectl apply -f` of [`RESILIENCE_POLICY`], printing what leveectl said.
async fn apply_policy(control_plane: &ControlPlane) {
    let policy = yaml::documents(&[yaml::policy("payments", PAYMENTS_PORT, RESILIENCE_POLICY)]);
    let file = control_plane.dir().join("payments-policy.yaml");
    if let Err(error) = std::fs::write(&file, &policy) {
        println!("\n== could not write {}: {error}", file.display());
        return;
    }
    let path = file.display().to_string();
    println!("\n== leveectl apply -f {path}");
    match control_plane.leveectl(&["apply", "-f", &path]).await {
        Ok(out) => {
            print!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            println!(
                "== the policy (retries with a budget, per-try timeout, outlier ejection):\n{RESILIENCE_POLICY}"
            );
        }
        Err(error) => println!("== leveectl failed: {error}"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
