//! Making a connection to an endpoint: TCP with `TCP_NODELAY`, then, for
//! an endpoint with an expected identity, the mTLS handshake
//! ([`crate::tls::Origination`]) offering the caller's protocol in ALPN.
//! The connect timeout bounds both together.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use levee_proto::policy::SpiffeId;
use tokio::net::TcpStream;

use super::SendError;
use crate::tls::{Alpn, OriginateError, Origination, Stream};

/// A connection to `addr` (mTLS to the identity of `tls` when given), or
/// an error after `timeout`.
pub(super) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<(&Origination, &SpiffeId)>,
    alpn: Alpn,
) -> Result<Stream, SendError> {
    let started = tokio::time::Instant::now();
    let tcp = dial(addr, timeout).await?;
    let Some((origination, expected)) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let left = timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, origination.connect(tcp, addr, expected, alpn)).await {
        Ok(Ok(tls)) => Ok(Stream::Client(Box::new(tls))),
        Ok(Err(e)) => Err(SendError::Tls(e)),
        Err(_) => Err(SendError::Tls(OriginateError::Handshake(format!(
            "no TLS handshake within the connect timeout ({timeout:?})"
        )))),
    }
}

/// A TCP connection to `addr`, or `Connect` after `timeout`.
pub(super) async fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, SendError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(SendError::Connect(e)),
        Err(_) => {
            let msg = format!("connect timed out after {timeout:?}");
            return Err(SendError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                msg,
            )));
        }
    };
    // Latency matters more than packet count for request/response traffic.
    stream.set_nodelay(true).map_err(SendError::Connect)?;
    Ok(stream)
}
