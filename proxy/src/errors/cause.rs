//! Why an exchange with the upstream failed, typed where it fails, and
//! what that means: where the error came from ([`Origin`]) and whether
//! another attempt may be sent ([`Retry`]).
//!
//! The causes are read from the errors themselves — an [`io::ErrorKind`]
//! from the connect, hyper's error kinds and the HTTP/2 reason code in its
//! source chain — never from their text.

use std::error::Error as StdError;
use std::io;

/// Why no connection to the upstream could be used. In every case the
/// request was never sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectCause {
    /// Nothing listens there: the endpoint refused the TCP connection.
    Refused,
    /// The TCP connect did not complete within the connect timeout.
    TimedOut,
    /// The HTTP handshake on the fresh connection failed.
    Handshake,
    /// The mTLS handshake failed (untrusted chain, alert, no certificate
    /// of this proxy's own).
    Tls,
    /// The endpoint proved another identity than the one expected there:
    /// its own `x-levee-error` (`upstream-identity`).
    Identity,
    /// Another connect failure (unreachable network, reset during the
    /// handshake, ...).
    Other(io::ErrorKind),
}

impl ConnectCause {
    /// The cause of a failed TCP connect.
    pub fn of_io(error: &io::Error) -> ConnectCause {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => ConnectCause::Refused,
            io::ErrorKind::TimedOut => ConnectCause::TimedOut,
            other => ConnectCause::Other(other),
        }
    }

    /// A short name, for logs and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectCause::Refused => "connect-refused",
            ConnectCause::TimedOut => "connect-timeout",
            ConnectCause::Handshake => "handshake",
            ConnectCause::Tls => "tls",
            ConnectCause::Identity => "identity-mismatch",
            ConnectCause::Other(_) => "connect-error",
        }
    }
}

/// Why an exchange failed after the request was handed to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// The upstream reset the HTTP/2 stream with REFUSED_STREAM: by RFC 9113
    /// §8.7 it did not process the request.
    RefusedStream,
    /// An HTTP/2 RST_STREAM or GOAWAY with another reason code (CANCEL,
    /// INTERNAL_ERROR, ENHANCE_YOUR_CALM, ...).
    H2(h2::Reason),
    /// The connection closed or was reset before the response was complete.
    Closed,
    /// The upstream's response is not valid HTTP (or HTTP/2 framing).
    Protocol,
    /// The request body coming from the downstream failed while it was
    /// being sent (the caller went away mid-upload): not the upstream's fault.
    RequestBody,
    /// Anything else (also errors that did not come from the forwarder).
    Other,
}

impl ResetCause {
    /// Reads the cause of a failed exchange from hyper's error and its
    /// source chain (an `h2::Error` with its reason, or an `io::Error`).
    pub fn of_hyper(error: &hyper::Error) -> ResetCause {
        if error.is_user() {
            // hyper's "user" is this proxy sending the downstream's request:
            // its body failed, or the request could not be written as is.
            // Decided first: the body's own error chain (an `io::Error` from
            // a malformed chunked body, say) says nothing about the upstream.
            return ResetCause::RequestBody;
        }
        let mut source: Option<&(dyn StdError + 'static)> = error.source();
        while let Some(cause) = source {
            if let Some(h2) = cause.downcast_ref::<h2::Error>() {
                if let Some(reason) = h2.reason() {
                    return of_h2(h2, reason);
                }
                if h2.is_io() {
                    return ResetCause::Closed;
                }
            }
            if cause.downcast_ref::<io::Error>().is_some() {
                return ResetCause::Closed;
            }
            source = cause.source();
        }
        if error.is_incomplete_message()
            || error.is_closed()
            || error.is_canceled()
            || error.is_timeout()
        {
            ResetCause::Closed
        } else if error.is_parse() || error.is_parse_status() {
            ResetCause::Protocol
        } else {
            ResetCause::Other
        }
    }

    /// A short name, for logs and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetCause::RequestBody => "request-body",
            ResetCause::RefusedStream => "refused-stream",
            ResetCause::H2(_) => "h2-reset",
            ResetCause::Closed => "connection-closed",
            ResetCause::Protocol => "protocol-error",
            ResetCause::Other => "other",
        }
    }
}

/// The cause an HTTP/2 error with a reason code stands for. A reset the
/// peer sent is the upstream's (REFUSED_STREAM: not processed); one h2 sent
/// itself is a protocol violation it saw; one hyper sent on the proxy's
/// behalf means the request body from the downstream failed.
fn of_h2(h2: &h2::Error, reason: h2::Reason) -> ResetCause {
    let local = (h2.is_reset() || h2.is_go_away()) && !h2.is_remote();
    if local && h2.is_library() {
        ResetCause::Protocol
    } else if local {
        ResetCause::RequestBody
    } else if reason == h2::Reason::REFUSED_STREAM && !h2.is_go_away() {
        ResetCause::RefusedStream
    } else {
        ResetCause::H2(reason)
    }
}

/// Where an error came from (pingora's error source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The upstream (or the way to it) failed: it counts against the upstream.
    Upstream,
    /// The downstream's request cannot be served as sent.
    Downstream,
    /// The proxy decided itself (breaker, limits, no endpoints): it says
    /// nothing about the upstream.
    Proxy,
}

/// Whether another attempt may follow an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The upstream never received (or never processed) the request:
    /// another attempt is safe whatever the method.
    Safe,
    /// The upstream may have acted on the request: only an idempotent
    /// request may be sent again.
    IfIdempotent,
    /// Another attempt cannot help, or would get round the proxy's own
    /// decision (an open breaker, a limit).
    Never,
}
