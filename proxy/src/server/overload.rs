//! Connections over the listener's limit: answered `503 overloaded` (or
//! gRPC UNAVAILABLE) on the first request, then closed. The whole exchange
//! is bounded in time so a rejected client cannot hold the slot.

use std::convert::Infallible;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use crate::errors::{self, ErrorKind, ProxyError};

pub(super) async fn reject(stream: TcpStream, timeout: Duration) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false);
    let service = service_fn(|req: Request<Incoming>| async move {
        let grpc = errors::is_grpc(req.headers());
        let err = ProxyError::new(
            ErrorKind::Overloaded,
            "",
            "the proxy's connection limit is reached",
        );
        Ok::<_, Infallible>(errors::to_response(&err, grpc))
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    // HTTP/2 clients would keep the connection for more streams: the bound
    // closes it after they have had their answer.
    if let Ok(Err(error)) = tokio::time::timeout(timeout, conn).await {
        tracing::debug!(%error, "rejected connection ended with an error");
    }
}
