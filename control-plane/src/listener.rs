//! What the control plane's hand-served HTTP/1.1 listeners share (`http` on
//! `--http-addr`, `webhook::server` on `--webhook-addr`): the accept loop
//! with its connection cap, and building a plain response.
//!
//! [`accept_capped`] accepts until shutdown; a failed accept (e.g. no file
//! descriptor left) waits [`ACCEPT_RETRY`] and tries again; at most
//! `max_connections` connections are open at once, and one more is closed
//! at once and reported to the caller; each accepted connection is served
//! on its own task, which holds its slot until the connection ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Pause after a failed accept before the next.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accepts on `listener` until `shutdown` becomes true, at most
/// `max_connections` open; `serve` runs each connection on a task of its
/// own, `refused` hears of each connection closed at once for the cap.
/// `name` names the listener in logs.
pub async fn accept_capped<S, F>(
    name: &'static str,
    listener: TcpListener,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
    refused: impl Fn(SocketAddr),
    mut serve: S,
) -> std::io::Result<()>
where
    S: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: the next accept may work.
            Err(error) => {
                tracing::warn!(%error, listener = name, "accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, listener = name, max = max_connections, "connection refused: max_connections already open");
            refused(peer);
            drop(stream);
            continue;
        };
        let conn = serve(stream, peer);
        tokio::spawn(async move {
            conn.await;
            drop(slot);
        });
    }
}

/// A response with `status`, `content_type` and `body`.
pub fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
