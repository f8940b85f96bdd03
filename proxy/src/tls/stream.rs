//! [`Stream`]: a TCP connection, plain or wrapped in TLS (either side), so
//! the HTTP code above it has one type whatever the hop speaks.
//!
//! An outbound mTLS connection ([`ClientTls`]) fails closed once this
//! proxy's current certificate has expired (not renewed in time): from then
//! on every read and write is an error, so a pooled connection is not used
//! past it (a new one needs a valid certificate: [`super::Origination`]).
//! Renewals keep it going: it is the current certificate that counts, not
//! the one the connection was made with.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::TlsConfigs;

/// A connection as the HTTP layers see it.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    /// Outbound mTLS (this proxy is the client).
    Client(Box<ClientTls>),
    /// Inbound mTLS (this proxy is the server).
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Client(s) => {
                s.check()?;
                Pin::new(&mut s.tls).poll_read(cx, buf)
            }
            Stream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Client(s) => {
                s.check()?;
                Pin::new(&mut s.tls).poll_write(cx, buf)
            }
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Client(s) => {
                s.check()?;
                Pin::new(&mut s.tls).poll_write_vectored(cx, bufs)
            }
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Client(s) => s.tls.is_write_vectored(),
            Stream::Server(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Client(s) => Pin::new(&mut s.tls).poll_flush(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(&mut s.tls).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An outbound mTLS connection, and whose certificate it depends on.
pub struct ClientTls {
    pub(super) tls: tokio_rustls::client::TlsStream<TcpStream>,
    /// This proxy's TLS settings: their current certificate must be valid.
    configs: Arc<TlsConfigs>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// `tls`, usable while the current certificate of `configs` is valid.
    pub fn new(tls: tokio_rustls::client::TlsStream<TcpStream>, configs: Arc<TlsConfigs>) -> Self {
        ClientTls { tls, configs }
    }

    /// An error once this proxy's current certificate has expired.
    fn check(&self) -> io::Result<()> {
        if self.configs.expired(SystemTime::now()) {
            return Err(io::Error::other(
                "mTLS connection closed: this proxy's workload certificate expired and was not renewed",
            ));
        }
        Ok(())
    }
}
