//! `levee-bench --scenarios transparent` (root: it creates network
//! namespaces): a brief run measures the direct, explicit and transparent
//! paths, each sidecar counts exactly the requests of the paths through
//! it, and the pods' namespaces are gone afterwards — also when the run is
//! interrupted with SIGINT in the middle of a measurement.

use std::{process::Stdio, time::Duration};

use levee_tests::harness::{Process, binary, eventually};
use serde_json::Value;
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(25);

/// `levee-bench args…` with the runner's own `LEVEE_*` settings hidden.
fn bench(args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("levee-bench"));
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEVEE_") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// The names `ip netns list` shows now.
async fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .await
        .expect("run ip netns list");
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn row<'a>(rows: &'a [Value], contender: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["contender"] == contender)
        .unwrap_or_else(|| panic!("no {contender} row in {rows:?}"))
}

#[tokio::test]
async fn a_brief_run_measures_all_three_paths_and_leaves_no_namespace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let json_arg = json.to_string_lossy().into_owned();
    let run = bench(&["--quick", "--scenarios", "transparent", "--json", &json_arg]).output();
    let out = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("levee-bench finished in time")
        .expect("run levee-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "levee-bench failed: {stderr}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON");
    let t = &report["transparent"];
    let latency = t["latency"].as_array().expect("latency rows");
    assert_eq!(latency.len(), 3, "{latency:?}");
    for name in ["direct", "levee-explicit", "levee-transparent"] {
        let r = row(latency, name);
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["achieved_rps"].as_f64().is_some_and(|a| a > 0.0), "{r}");
        assert!(r["latency"]["count"].as_u64().is_some_and(|c| c > 0), "{r}");
        let levee = name != "direct";
        assert_eq!(r["cpu_us_per_req"].is_number(), levee, "{r}");
        assert_eq!(r["added_p50_us"].is_number(), levee, "{r}");
    }
    assert_eq!(t["vs_explicit"].as_array().map(Vec::len), Some(1), "{t}");

    // The direct call bypassed both sidecars; the other two crossed both,
    // every request of theirs counted once by each.
    let paths = t["paths"].as_array().expect("path counts");
    let direct = row(paths, "direct");
    assert!(direct["sent"].as_u64().is_some_and(|s| s > 0), "{direct}");
    assert_eq!(direct["client_outbound"], 0, "{direct}");
    assert_eq!(direct["server_inbound"], 0, "{direct}");
    for name in ["levee-explicit", "levee-transparent"] {
        let p = row(paths, name);
        assert!(p["sent"].as_u64().is_some_and(|s| s > 0), "{p}");
        assert_eq!(p["client_outbound"], p["sent"], "{p}");
        assert_eq!(p["server_inbound"], p["sent"], "{p}");
    }

    let used: Vec<String> = t["namespaces"]
        .as_array()
        .expect("namespace names")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    assert_eq!(used.len(), 2, "{t}");
    let left = namespaces().await;
    assert!(
        used.iter().all(|n| !left.contains(n)),
        "{used:?} still listed: {left:?}"
    );
}

/// The pids in network namespace `name` (`ip netns pids`).
async fn pids_in(name: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .await
        .expect("run ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` is alive (a zombie waiting to be reaped is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

#[tokio::test]
async fn sigint_in_the_middle_of_a_measurement_removes_the_pods() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("bench.log");
    let cmd = bench(&[
        "--scenarios",
        "transparent",
        "--reps",
        "1",
        "--duration",
        "60",
    ]);
    let mut bench = Process::spawn("levee-bench", cmd, &log).expect("spawn levee-bench");

    // Measuring: the pods are up.
    let names = eventually(DEADLINE, "levee-bench measuring in its pods", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move {
            if !text.contains("transparent rep 1/1") {
                return Err(text);
            }
            let names: Vec<String> = text
                .split_whitespace()
                .filter(|w| w.starts_with("levee-t-"))
                .map(str::to_owned)
                .collect();
            Ok(names)
        }
    })
    .await;
    assert_eq!(names.len(), 2, "{}", bench.output());
    let listed = namespaces().await;
    assert!(names.iter().all(|n| listed.contains(n)), "{listed:?}");
    let mut pids = Vec::new();
    for n in &names {
        pids.extend(pids_in(n).await);
    }
    // The app and both sidecars.
    assert!(pids.len() >= 3, "{pids:?} in {names:?}");

    bench.signal(libc::SIGINT).expect("SIGINT");
    let status = bench
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", bench.output()));
    assert!(!status.success(), "an interrupted run reports failure");
    assert!(
        bench.output().contains("interrupted by SIGINT"),
        "{}",
        bench.output()
    );
    let left = namespaces().await;
    assert!(
        names.iter().all(|n| !left.contains(n)),
        "{names:?} still listed: {left:?}"
    );
    eventually(Duration::from_secs(5), "the pods' processes gone", || {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        async move {
            if alive.is_empty() {
                Ok(())
            } else {
                Err(format!("still alive: {alive:?}"))
            }
        }
    })
    .await;
}
