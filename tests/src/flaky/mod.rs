//! The flaky test upstream: an HTTP/1.1 + HTTP/2 (prior knowledge) server with
//! a gRPC test service on the same port, whose faults (status codes at a rate,
//! delays, connection resets, slow bodies) are set per instance — and changed
//! at runtime — or per request with `x-flaky-*` headers.
//!
//! Layout:
//! - `mod.rs`: [`FlakyUpstream`] (a running instance), its builder, the accept
//!   loop and the connection-reset mechanism.
//! - `faults.rs`: fault descriptions, header overrides, per-request decisions.
//! - `http.rs`: the request handler (`/echo`, upgrades, stats, default body).
//! - `grpc.rs`: the `levee.testing.v1.Flaky` service.
//! - `stats.rs`: counters tests read to count upstream attempts.
//!
//! Every response carries `x-flaky-instance: <id>`.

mod faults;
mod grpc;
mod http;
mod stats;
#[cfg(test)]
mod tests;

use std::{
    io,
    net::SocketAddr,
    os::fd::AsFd,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
};

pub use faults::{Decision, Delay, Faults, SlowBody, parse_duration, parse_rate};
pub use stats::StatsSnapshot;

/// What every connection task shares with the [`FlakyUpstream`] handle.
pub(crate) struct Shared {
    /// Reported in `x-flaky-instance` so tests see which endpoint answered.
    pub(crate) id: String,
    /// The instance's faults; tests swap them at runtime.
    faults: Mutex<Faults>,
    pub(crate) stats: stats::Stats,
}

impl Shared {
    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Configures a [`FlakyUpstream`] before it starts.
#[derive(Debug, Clone)]
pub struct FlakyBuilder {
    id: String,
    addr: SocketAddr,
    faults: Faults,
}

impl FlakyBuilder {
    /// The instance id sent in `x-flaky-instance` (default `flaky`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Where to listen (default `127.0.0.1:0`).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The instance's default faults.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(self) -> io::Result<FlakyUpstream> {
        let listener = TcpListener::bind(self.addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            id: self.id,
            faults: Mutex::new(self.faults),
            stats: stats::Stats::default(),
        });
        let (stop, stopped) = watch::channel(());
        tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        Ok(FlakyUpstream {
            addr,
            shared,
            _stop: stop,
        })
    }
}

/// A running flaky upstream. Dropping it stops the listener and closes its
/// connections.
pub struct FlakyUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropped with the handle: every task watching it stops.
    _stop: watch::Sender<()>,
}

impl FlakyUpstream {
    pub fn builder() -> FlakyBuilder {
        FlakyBuilder {
            id: "flaky".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            faults: Faults::default(),
        }
    }

    /// A healthy instance with this id on 127.0.0.1:0.
    pub async fn start(id: &str) -> io::Result<FlakyUpstream> {
        Self::builder().id(id).start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the instance's faults; requests that arrive afterwards see them.
    pub fn set_faults(&self, faults: Faults) {
        *self
            .shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Counters since start.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Requests received (every path but `/__flaky/stats`).
    pub fn requests(&self) -> u64 {
        self.shared.stats.snapshot().requests
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stopped: watch::Receiver<()>) {
    let mut stop = stopped.clone();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of fds and the like: back off instead of spinning.
                    tracing::warn!(%error, "flaky: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        tokio::spawn(serve_connection(stream, shared.clone(), stopped.clone()));
    }
}

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<()>,
) {
    shared.stats.connection_opened();
    let _ = stream.set_nodelay(true);
    // A second descriptor of the same socket: after hyper's is dropped, setting
    // SO_LINGER 0 here and closing makes the kernel send RST (a real reset).
    let dup = stream
        .as_fd()
        .try_clone_to_owned()
        .map(socket2::Socket::from)
        .ok();
    let reset = Arc::new(Notify::new());
    let handler = {
        let (shared, reset) = (shared.clone(), reset.clone());
        hyper::service::service_fn(move |req| http::handle(shared.clone(), reset.clone(), req))
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), handler);
    tokio::select! {
        _ = conn => {}
        _ = reset.notified() => {
            if let Some(dup) = &dup {
                let _ = dup.set_linger(Some(Duration::ZERO));
            }
        }
        _ = stopped.changed() => {}
    }
}
