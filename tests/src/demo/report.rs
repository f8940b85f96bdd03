//! The demo's once-a-second line: what the client saw, and what its sidecar
//! says it did (retries, endpoint states, policy version) from `/metrics`.

use std::time::Duration;

use super::load::Stats;
use crate::harness::Proxy;

/// Prints one line per second, and the header every 20 lines.
pub struct Printer<'a> {
    client: &'a Proxy,
    stats: &'a Stats,
    last_retries: f64,
}

impl<'a> Printer<'a> {
    pub fn new(client: &'a Proxy, stats: &'a Stats) -> Self {
        Printer {
            client,
            stats,
            last_retries: 0.0,
        }
    }

    pub async fn print_second(&mut self, second: u64) {
        if second % 20 == 1 {
            println!(
                "{:>4} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}  answered by",
                "t(s)", "sent", "success", "p50", "p99", "retries", "ejected", "policy"
            );
        }
        let mut window = self.stats.take();
        let total = window.ok + window.failed;
        let success = if total == 0 {
            0.0
        } else {
            100.0 * window.ok as f64 / total as f64
        };
        let (retries, ejected, version) = match self.client.metrics().await {
            Ok(m) => {
                let retries = m.value("levee_retries_total", &[]);
                let ejected = m.value("levee_endpoints", &[("state", "ejected")]);
                let version = m.value("levee_policy_version", &[]);
                (retries, format!("{ejected}"), format!("v{version}"))
            }
            Err(_) => (self.last_retries, "?".into(), "?".into()),
        };
        let retries_per_second = retries - self.last_retries;
        self.last_retries = retries;
        let by: Vec<String> = window
            .answered_by
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{second:>4} {total:>6} {success:>7.1}% {:>8} {:>8} {retries_per_second:>8} {ejected:>9} {version:>7}  {}",
            ms(window.quantile(0.5)),
            ms(window.quantile(0.99)),
            by.join(" ")
        );
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0),
    )
}
