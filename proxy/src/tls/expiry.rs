//! [`Expiring`]: an open mTLS connection, either side, depends on this
//! proxy's CURRENT workload certificate (docs/identity.md, "Expiry fails
//! closed").
//!
//! Origination ([`super::Origination`]) and termination
//! ([`super::Termination`]) both wrap the TLS stream they made in it, for
//! HTTP and opaque TCP alike. While the current certificate is valid,
//! reads and writes pass through; renewals keep the connection going (it
//! is the current certificate that counts, not the one the handshake
//! presented). Once the current certificate has expired unrenewed, every
//! read and write is an error, so the HTTP connection or the opaque
//! splice above it ends and drops the socket. A read waiting for bytes is
//! also woken at the expiry itself (a timer set to the current
//! certificate's `notAfter`, moved on by renewals), so an idle connection
//! is closed then, not at its next byte. Each cut connection is counted
//! once in `levee_tls_connections_expired_total{direction}`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::TlsConfigs;
use crate::deadline::deadline_after;
use crate::metrics::{Direction, TlsMetrics};

/// A TLS stream usable while this proxy's current certificate is valid.
pub struct Expiring<S> {
    io: S,
    /// This proxy's TLS settings: their current certificate must be valid.
    configs: Arc<TlsConfigs>,
    metrics: TlsMetrics,
    /// Which side of the connection this proxy is (the metric's label).
    direction: Direction,
    /// Wakes a pending read at the current certificate's expiry; made on
    /// the first read that waits.
    timer: Option<Pin<Box<Sleep>>>,
    /// The `notAfter` the timer is set for (`None`: not set).
    armed_for: Option<SystemTime>,
    /// The connection was cut (it is counted once).
    cut: bool,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Expiring<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expiring")
            .field("io", &self.io)
            .field("direction", &self.direction)
            .field("cut", &self.cut)
            .finish_non_exhaustive()
    }
}

impl<S> Expiring<S> {
    /// `io`, usable while the current certificate of `configs` is valid;
    /// a cut is counted under `direction`.
    pub fn new(io: S, configs: Arc<TlsConfigs>, metrics: TlsMetrics, direction: Direction) -> Self {
        Expiring {
            io,
            configs,
            metrics,
            direction,
            timer: None,
            armed_for: None,
            cut: false,
        }
    }

    /// The TLS stream inside.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// An error once this proxy's current certificate has expired (the
    /// first one counted).
    fn check(&mut self) -> io::Result<()> {
        if !self.configs.expired(SystemTime::now()) {
            return Ok(());
        }
        if !self.cut {
            self.cut = true;
            self.metrics.connection_expired(self.direction);
            tracing::debug!(direction = ?self.direction, "mTLS connection cut: this proxy's certificate expired");
        }
        Err(io::Error::other(
            "mTLS connection closed: this proxy's workload certificate expired and was not renewed",
        ))
    }

    /// Sets the timer to the current certificate's expiry and registers
    /// `cx` with it; an error when it fired and the certificate expired.
    fn poll_expiry(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // Twice at most: a timer that fired before the wall clock agrees
        // (the two clocks drift) is set once more for what is left.
        for _ in 0..2 {
            let Some(not_after) = self.configs.not_after() else {
                // No certificate: nothing expires (a new one is looked at
                // on the next read).
                return Ok(());
            };
            if self.armed_for != Some(not_after) {
                let left = not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                let at = deadline_after(Instant::now(), left);
                match self.timer.as_mut() {
                    Some(timer) => timer.as_mut().reset(at),
                    None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                self.armed_for = Some(not_after);
            }
            let Some(timer) = self.timer.as_mut() else {
                return Ok(());
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            self.check()?;
            self.armed_for = None;
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Expiring<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {
                this.poll_expiry(cx)?;
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Expiring<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
