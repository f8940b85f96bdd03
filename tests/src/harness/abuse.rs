//! Tools of the abuse tests: what a process holds ([`Footprint`]: resident
//! memory and open file descriptors, from `/proc`) and an upstream that
//! records every request it receives ([`Recorder`]), so a test can prove a
//! smuggled request never reached it.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

use super::{Body, eventually, full, upstream::bind};

/// Resident memory and open file descriptors of one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub rss_bytes: u64,
    pub fds: usize,
}

impl Footprint {
    /// Reads `/proc/<pid>/status` and `/proc/<pid>/fd`; panics when the
    /// process is gone (a test that measures a dead proxy has failed anyway).
    pub fn of(pid: u32) -> Footprint {
        let rss_bytes = crate::bench::procfs::rss(pid)
            .unwrap_or_else(|| panic!("no VmRSS for pid {pid}: has it exited?"));
        let fds = crate::bench::procfs::open_fds(pid)
            .unwrap_or_else(|| panic!("no /proc/{pid}/fd: has it exited?"));
        Footprint { rss_bytes, fds }
    }

    /// Whether `self` (after) grew from `before` by at most `rss_growth`
    /// bytes and `fd_growth` descriptors; the error says by how much.
    pub fn within(
        &self,
        before: Footprint,
        rss_growth: u64,
        fd_growth: usize,
    ) -> Result<(), String> {
        if self.rss_bytes > before.rss_bytes + rss_growth {
            return Err(format!(
                "RSS grew from {} KiB to {} KiB (allowed: +{} KiB)",
                before.rss_bytes / 1024,
                self.rss_bytes / 1024,
                rss_growth / 1024
            ));
        }
        if self.fds > before.fds + fd_growth {
            return Err(format!(
                "open fds grew from {} to {} (allowed: +{fd_growth})",
                before.fds, self.fds
            ));
        }
        Ok(())
    }

    /// Waits (5 s at most) until process `pid` is back within the bounds of
    /// [`Footprint::within`] (closed connections take a moment to be
    /// dropped), or panics saying what grew. Returns the footprint reached.
    pub async fn settles(
        pid: u32,
        before: Footprint,
        rss_growth: u64,
        fd_growth: usize,
    ) -> Footprint {
        eventually(
            SETTLE_DEADLINE,
            "the proxy's RSS and fds to settle",
            || async {
                let now = Footprint::of(pid);
                now.within(before, rss_growth, fd_growth).map(|()| now)
            },
        )
        .await
    }
}

/// How long [`Footprint::settles`] waits.
const SETTLE_DEADLINE: Duration = Duration::from_secs(5);

/// An HTTP/1.1 + h2c upstream on 127.0.0.1:0 that reads every request body
/// to its end, answers `200 ok`, and records `METHOD path body-length` per
/// request (`body-length` is `error` when the body failed mid-way).
#[derive(Clone)]
pub struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let (listener, addr) = bind().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, log.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { addr, seen }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn answer(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Body>, Infallible> {
    let line = format!("{} {}", req.method(), req.uri().path());
    let index = {
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.push(format!("{line} ..."));
        log.len() - 1
    };
    let length = match req.into_body().collect().await {
        Ok(body) => body.to_bytes().len().to_string(),
        Err(_) => "error".to_owned(),
    };
    log.lock().unwrap_or_else(PoisonError::into_inner)[index] = format!("{line} {length}");
    Ok(Response::new(full("ok")))
}
