//! HTTP/2 protocol limits, applied to both sides of the proxy: the listeners'
//! server connections ([`crate::server`]) and the upstream client connections
//! ([`crate::forward::pool`]). hyper's defaults are tuned for throughput, not
//! for a process every byte of which is untrusted: 1,024 concurrent streams,
//! adaptive (BDP-probed) flow-control windows that grow to 16 MiB, a 400 KiB
//! to 1 MiB send buffer per stream. Here every one of them is fixed and small
//! enough that one peer's connection pins a bounded amount of memory:
//! buffered request (or response) body ≤ the connection window, queued
//! outgoing body ≤ streams × send buffer. docs/protocol-limits.md lists each
//! value and what the proxy does when a peer exceeds it.

use std::time::Duration;

use hyper::{client, server};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Default `--h2-max-concurrent-streams`, as Go's HTTP/2 server (hyper's is
/// 200 unless set; Envoy's edge guidance 100). Not lower: a peer proxy sends
/// all its HTTP/2 calls to this one over a single connection (one per
/// endpoint), so this is also the concurrency of a mesh hop; the windows,
/// not the stream count, bound the memory one connection pins.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 250;
/// Default `--h2-stream-window`: body bytes a peer may send on one stream
/// before the proxy has passed them on.
pub const DEFAULT_STREAM_WINDOW: u32 = 256 * 1024;
/// Default `--h2-connection-window`: the same for all streams of a connection.
pub const DEFAULT_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// The largest window HTTP/2 allows (RFC 9113 §6.9.1); h2 panics above it.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The window every HTTP/2 peer starts with (RFC 9113 §6.9.2); the floor of
/// the window flags so a fixed window is never smaller than the protocol's.
pub const MIN_WINDOW: u32 = 65_535;

/// Streams a client may open and reset before the server has accepted them,
/// after which the connection gets GOAWAY `ENHANCE_YOUR_CALM` (the HTTP/2
/// rapid reset attack, CVE-2023-44487). h2's own default, pinned here.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the proxy may reset because the peer broke the protocol on them
/// (malformed headers, flow-control errors) before the whole connection gets
/// GOAWAY `ENHANCE_YOUR_CALM` (hyper's default is 1,024).
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 128;
/// Outgoing body bytes queued per stream before the writer waits (hyper:
/// 400 KiB as a server, 1 MiB as a client).
pub const MAX_SEND_BUF: usize = 64 * 1024;
/// Listener side: a PING every this long on an idle connection...
const SERVER_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Upstream side: a PING every this long...
const CLIENT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// ...and the connection is closed when its answer takes longer than this.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The per-connection HTTP/2 settings of one proxy (flags `--h2-*`, and
/// `--max-header-bytes` for the header list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Settings {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` advertised by the listeners.
    pub max_concurrent_streams: u32,
    /// `SETTINGS_INITIAL_WINDOW_SIZE` advertised on both sides (fixed).
    pub stream_window: u32,
    /// Connection-level receive window on both sides (fixed).
    pub connection_window: u32,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`: a larger request head gets 431, a
    /// larger upstream response head fails the call.
    pub max_header_list_size: u32,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            max_header_list_size: 64 * 1024,
        }
    }
}

impl H2Settings {
    /// Windows clamped to what HTTP/2 allows, so no flag value reaches the
    /// assertions inside h2.
    fn windows(&self) -> (u32, u32) {
        let clamp = |w: u32| w.clamp(MIN_WINDOW, MAX_WINDOW);
        (clamp(self.stream_window), clamp(self.connection_window))
    }

    /// Applies these limits to a listener's HTTP/2 server builder.
    pub fn apply_to_server(&self, builder: &mut server::conn::http2::Builder<TokioExecutor>) {
        let (stream, connection) = self.windows();
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            // Setting a window turns hyper's adaptive window off; say so anyway.
            .adaptive_window(false)
            .initial_stream_window_size(stream)
            .initial_connection_window_size(connection)
            .max_header_list_size(self.max_header_list_size)
            .max_send_buf_size(MAX_SEND_BUF)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
            .keep_alive_interval(SERVER_PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT);
    }

    /// Applies these limits to an upstream connection's HTTP/2 client builder.
    pub fn apply_to_client(&self, builder: &mut client::conn::http2::Builder<TokioExecutor>) {
        let (stream, connection) = self.windows();
        builder
            .timer(TokioTimer::new())
            .adaptive_window(false)
            .initial_stream_window_size(stream)
            .initial_connection_window_size(connection)
            .max_header_list_size(self.max_header_list_size)
            .max_send_buf_size(MAX_SEND_BUF)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
            .keep_alive_interval(CLIENT_PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_stay_within_what_http2_allows() {
        let wild = H2Settings {
            stream_window: 1,
            connection_window: u32::MAX,
            ..H2Settings::default()
        };
        assert_eq!(wild.windows(), (MIN_WINDOW, MAX_WINDOW));
        assert_eq!(
            H2Settings::default().windows(),
            (DEFAULT_STREAM_WINDOW, DEFAULT_CONNECTION_WINDOW)
        );
    }
}
