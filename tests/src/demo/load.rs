//! The demo's client: a steady request rate through the client's sidecar,
//! with per-second statistics (outcomes, latency, which replica answered).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long the demo client waits for one answer before counting a failure.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the client saw during one second.
#[derive(Debug, Default, Clone)]
pub struct Window {
    pub ok: u64,
    pub failed: u64,
    /// Latencies of every answered request, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Answers per replica (`x-flaky-instance`), or per proxy error (`x-levee-error`).
    pub answered_by: BTreeMap<String, u64>,
}

impl Window {
    /// The `q` quantile (0..=1) of the latencies, if any request finished.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        if self.latencies_us.is_empty() {
            return None;
        }
        self.latencies_us.sort_unstable();
        let rank = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_us
            .get(rank)
            .map(|us| Duration::from_micros(*us))
    }
}

/// Shared between the load tasks and the printer.
#[derive(Debug, Default)]
pub struct Stats {
    window: Mutex<Window>,
}

impl Stats {
    fn record(&self, ok: bool, latency: Duration, by: String) {
        if let Ok(mut w) = self.window.lock() {
            if ok {
                w.ok += 1;
            } else {
                w.failed += 1;
            }
            w.latencies_us.push(latency.as_micros() as u64);
            *w.answered_by.entry(by).or_default() += 1;
        }
    }

    /// Takes the current window, starting a new one.
    pub fn take(&self) -> Window {
        self.window
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }
}

/// Sends `rate` requests per second to `authority` through the sidecar at
/// `proxy`, forever (the caller aborts the task).
pub async fn run(proxy: SocketAddr, authority: &'static str, rate: u32, stats: Arc<Stats>) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        ticker.tick().await;
        let client = client.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let request = Request::get(format!("http://{proxy}/pay"))
                .header(http::header::HOST, authority)
                .body(Empty::new());
            let Ok(request) = request else { return };
            let answer = tokio::time::timeout(CLIENT_TIMEOUT, async {
                let response = client.request(request).await?;
                let status = response.status();
                let by = header(&response, "x-flaky-instance")
                    .or_else(|| header(&response, "x-levee-error").map(|e| format!("levee:{e}")))
                    .unwrap_or_else(|| "?".into());
                response.into_body().collect().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status.is_success(), by))
            })
            .await;
            let (ok, by) = match answer {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => (false, "client-error".into()),
                Err(_) => (false, "client-timeout".into()),
            };
            stats.record(ok, start.elapsed(), by);
        });
    }
}

fn header<B>(response: &http::Response<B>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_window() {
        let mut w = Window {
            latencies_us: (1..=100).rev().collect(),
            ..Window::default()
        };
        assert_eq!(w.quantile(0.5), Some(Duration::from_micros(51)));
        assert_eq!(w.quantile(0.99), Some(Duration::from_micros(99)));
        assert_eq!(Window::default().quantile(0.5), None);
    }

    #[test]
    fn take_starts_a_new_window() {
        let stats = Stats::default();
        stats.record(true, Duration::from_millis(1), "a".into());
        stats.record(false, Duration::from_millis(2), "b".into());
        let w = stats.take();
        assert_eq!((w.ok, w.failed), (1, 1));
        assert_eq!(w.answered_by.get("a"), Some(&1));
        assert_eq!(stats.take().ok, 0);
    }
}
