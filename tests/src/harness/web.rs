//! The `web:80` fixture the resilience tests share: flaky upstreams, a
//! proxy whose policy file gives `web:80` those endpoints and an outbound
//! policy (or none), an upstream that is down but counts connects, and the
//! one-line report of a measured run.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::Request;
use tokio::task::JoinHandle;

use super::{Body, HttpResponse, Proxy, Tally, load, yaml};
use crate::flaky::{Faults, FlakyUpstream};

/// The authority every resilience test calls.
pub const AUTHORITY: &str = "web:80";

/// The `service` label of [`AUTHORITY`].
pub const SERVICE: &str = "web.default:80";

/// Deadline for anything the resilience tests poll for.
pub const POLL: Duration = Duration::from_secs(15);

/// A flaky upstream with id `id` and default `faults` on 127.0.0.1:0.
pub async fn upstream(id: &str, faults: Faults) -> FlakyUpstream {
    FlakyUpstream::builder()
        .id(id)
        .faults(faults)
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting upstream {id}: {e}"))
}

/// Always answers `status`.
pub fn always(status: u16) -> Faults {
    Faults {
        status: Some(status),
        ..Faults::default()
    }
}

/// The policy file: `outbound` (YAML indented by four spaces, `None`: no
/// policy at all) for `web:80`, whose endpoints are `addrs`.
pub fn policy_file(outbound: Option<&str>, addrs: &[SocketAddr]) -> String {
    yaml::service_in(yaml::NAMESPACE, "web", 80, outbound, addrs)
}

/// A proxy started with [`policy_file`].
pub async fn proxy(outbound: Option<&str>, addrs: &[SocketAddr]) -> Proxy {
    Proxy::builder()
        .policy(policy_file(outbound, addrs))
        .start()
        .await
}

/// `GET path` for `web:80`, with extra headers.
pub fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    load::get(AUTHORITY, path, headers)
}

/// `x-levee-error` of a response.
pub fn levee_error(r: &HttpResponse) -> &str {
    r.header("x-levee-error")
}

/// `Retry-After` in whole seconds, if present and numeric.
pub fn retry_after(r: &HttpResponse) -> Option<u64> {
    r.header("retry-after").parse().ok()
}

/// An upstream that is down but observable: it accepts each connection and
/// closes it at once, counting connects. [`Closer::stop`] frees the port.
pub struct Closer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Closer {
    pub async fn start() -> Closer {
        let (listener, addr) = super::upstream::bind().await;
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Closer {
            addr,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening (the port is free when this returns); returns the count.
    pub async fn stop(self) -> u64 {
        self.task.abort();
        let _ = self.task.await;
        self.accepted.load(Ordering::SeqCst)
    }
}

/// One line per measured run, easy to grep from `--nocapture` output.
pub fn report(scenario: &str, policy: &str, tally: &Tally, upstream_attempts: u64) {
    let requests = tally.total();
    eprintln!(
        "MEASURED {scenario} policy={policy}: requests {requests}, success {:.4} ({} ok), \
         upstream attempts {upstream_attempts}, amplification {:.3}, answers {:?}, errors {}",
        tally.success_rate(),
        tally.count(200),
        upstream_attempts as f64 / requests.max(1) as f64,
        tally.by_status(),
        tally.errors,
    );
}
