//! The benchmark's upstream: a minimal hyper server (HTTP/1.1 and h2c on one
//! port) answering every request with the same 1 KiB body. It runs as its
//! own process (`levee-bench --serve-upstream`) so its CPU is not the
//! load generator's.

use std::{convert::Infallible, net::SocketAddr, path::Path};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::harness::{BoxError, write_atomically};

/// Size of every response body.
pub const BODY_BYTES: usize = 1024;

/// Serves on every one of `addrs` (at least one) until the process is
/// stopped; writes `{"addr":"IP:PORT","addrs":[…]}` (`addr`: the first) to
/// `addr_file` once all are bound. The transparent scenario's app listens
/// on two ports: one its pod intercepts, one it does not (the direct call).
pub async fn serve(addrs: &[SocketAddr], addr_file: Option<&Path>) -> Result<(), BoxError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        listeners.push(TcpListener::bind(addr).await?);
    }
    let bound = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = bound.first() else {
        return Err("no listen address".into());
    };
    if let Some(path) = addr_file {
        write_atomically(
            path,
            &serde_json::json!({ "addr": first, "addrs": bound }).to_string(),
        )?;
    }
    let served = listeners.into_iter().map(|l| tokio::spawn(serve_on(l)));
    // Each listener serves until the process stops; the first to end ends it.
    let (first_ended, _, _) = futures_util::future::select_all(served).await;
    first_ended?
}

/// Serves connections accepted from `listener` until the task is dropped.
pub async fn serve_on(listener: TcpListener) -> Result<(), BoxError> {
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: back off a little and keep
            // serving the connections already open.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client closing its connection ends this task; nothing to report.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
