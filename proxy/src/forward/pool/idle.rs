//! The idle HTTP/1.1 connections of one upstream endpoint: the newest is
//! reused first, and a connection idle for the pool's idle timeout is
//! closed by a reaper task that runs only while any connection is idle.
//!
//! Without the reaper, a burst's connections stayed open until a request
//! happened to pop them, and reuse takes the newest first: after a burst of
//! 64 concurrent requests, 64 upstream connections (about 18 KiB of hyper
//! buffers and task each) were kept for good.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::body::BoxBody;

/// Idle connections to one endpoint, oldest first.
pub struct IdleConns {
    timeout: Duration,
    max: usize,
    state: Mutex<State>,
}

struct State {
    /// In check-in order, so the oldest is first and expires first.
    conns: Vec<(SendRequest<BoxBody>, Instant)>,
    /// A reaper task is waiting for the oldest connection to expire.
    reaping: bool,
}

impl IdleConns {
    /// Keeps up to `max` connections, each for at most `timeout` idle.
    pub fn new(timeout: Duration, max: usize) -> Arc<Self> {
        Arc::new(IdleConns {
            timeout,
            max,
            state: Mutex::new(State {
                conns: Vec::new(),
                reaping: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently checked-in connection that is still open and not
    /// expired; the closed or expired ones passed over are dropped.
    pub fn checkout(&self) -> Option<SendRequest<BoxBody>> {
        let mut state = self.lock();
        while let Some((sender, since)) = state.conns.pop() {
            if !sender.is_closed() && since.elapsed() < self.timeout {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps `sender` for reuse (unless it is closed or `max` are kept), and
    /// starts the reaper if none is running.
    pub fn checkin(self: &Arc<Self>, sender: SendRequest<BoxBody>) {
        if sender.is_closed() {
            return;
        }
        let mut state = self.lock();
        if state.conns.len() >= self.max {
            return;
        }
        state.conns.push((sender, Instant::now()));
        if !state.reaping {
            // Outside a runtime (never the case in the proxy) connections
            // still expire, on checkout.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                state.reaping = true;
                runtime.spawn(reap(Arc::downgrade(self)));
            }
        }
    }

    /// Whether any idle connection is still open (`true` while another
    /// thread holds the list: it is in use).
    pub fn any_open(&self) -> bool {
        self.state.try_lock().map_or(true, |state| {
            state.conns.iter().any(|(sender, _)| !sender.is_closed())
        })
    }

    /// Drops the expired and closed connections. Returns when the oldest
    /// one left expires, or `None` when none is left (the reaper stops).
    fn expire(&self) -> Option<Instant> {
        let mut state = self.lock();
        let now = Instant::now();
        state
            .conns
            .retain(|(sender, since)| !sender.is_closed() && now - *since < self.timeout);
        match state.conns.first() {
            Some((_, oldest)) => Some(*oldest + self.timeout),
            None => {
                // The burst's capacity goes too.
                state.conns = Vec::new();
                state.reaping = false;
                None
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

/// Closes `idle`'s connections as they expire, until none is left or the
/// endpoint is gone.
async fn reap(idle: Weak<IdleConns>) {
    loop {
        let next = match idle.upgrade() {
            Some(idle) => idle.expire(),
            None => return,
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::client::conn::http1;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// A real HTTP/1.1 client connection over an in-memory pipe; the other
    /// end of the pipe reads EOF once hyper closes the connection.
    async fn connection() -> (SendRequest<BoxBody>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let (sender, conn) = http1::handshake(TokioIo::new(ours))
            .await
            .expect("handshake over a pipe");
        tokio::spawn(conn);
        (sender, theirs)
    }

    async fn assert_closed(mut peer: DuplexStream) {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(1), peer.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0))), "expected EOF, got {read:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_once_expired_without_a_checkout() {
        let idle = IdleConns::new(Duration::from_secs(30), 8);
        let (old, old_peer) = connection().await;
        idle.checkin(old);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let (new, new_peer) = connection().await;
        idle.checkin(new);

        // The first expires at 30 s, the second at 50 s.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(idle.len(), 1);
        assert_closed(old_peer).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(idle.len(), 0);
        assert!(!idle.any_open());
        assert_closed(new_peer).await;
        assert!(!idle.lock().reaping, "the reaper stops when none is left");

        // And starts again for the next connection.
        let (next, next_peer) = connection().await;
        idle.checkin(next);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(idle.len(), 0);
        assert_closed(next_peer).await;
    }

    #[tokio::test(start_paused = true)]
    async fn checkout_reuses_the_newest_open_connection() {
        let idle = IdleConns::new(Duration::from_secs(30), 8);
        let (first, _first_peer) = connection().await;
        let (second, second_peer) = connection().await;
        idle.checkin(first);
        idle.checkin(second);
        drop(idle.checkout().expect("an idle connection"));
        assert_closed(second_peer).await;
        assert_eq!(idle.len(), 1);

        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(idle.checkout().is_none(), "the first expired");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_are_kept() {
        let idle = IdleConns::new(Duration::from_secs(30), 1);
        let (first, _first_peer) = connection().await;
        let (second, second_peer) = connection().await;
        idle.checkin(first);
        idle.checkin(second);
        assert_eq!(idle.len(), 1);
        assert_closed(second_peer).await;
    }
}
