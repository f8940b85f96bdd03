//! Learning whether an endpoint speaks HTTP/2: the rule, the I/O wrapper
//! that applies it to a fresh connection, and the per-endpoint memory.
//!
//! An HTTP/2 server's first frame is SETTINGS (RFC 9113 §3.4). A fresh
//! HTTP/2 connection is used only once the first 9 bytes the server sent
//! are a SETTINGS frame header. Anything else — an HTTP/1.x answer to the
//! preface, another frame — means the endpoint speaks HTTP/1.x only. A
//! connection closed (or reset) before 9 bytes came is [`Verdict::Closed`]:
//! an HTTP/1.x server may do that, but so may an HTTP/2 server that is
//! overloaded or stopping, so it is not proof; the caller may try HTTP/1.1
//! and learn from its success. No request has been sent on the connection
//! in any case, so sending it again is safe. What was learned is
//! remembered for [`HTTP1_ONLY_TTL`] in the endpoint's pool entry (so it is
//! bounded with the pool), then HTTP/2 is tried again (an app may be
//! replaced by one that speaks HTTP/2 at the same address).

use std::io;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// How long an endpoint learned to be HTTP/1.x-only is spoken to in
/// HTTP/1.1 without trying HTTP/2 again.
pub const HTTP1_ONLY_TTL: Duration = Duration::from_secs(60);

/// Length of an HTTP/2 frame header.
const FRAME_HEADER: usize = 9;
/// The SETTINGS frame type.
const SETTINGS: u8 = 0x4;
/// The ACK flag: a server's first SETTINGS is never an acknowledgement.
const ACK: u8 = 0x1;

/// What the server's first bytes said about the protocol it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The first frame was SETTINGS.
    Http2,
    /// Something else came first: the server does not speak HTTP/2.
    Http1Only,
    /// The connection ended before a frame header: not proof either way.
    Closed,
}

/// The verdict on the first bytes a server sent on a connection where we
/// spoke the HTTP/2 preface, or `None` while more bytes are needed.
/// `ended`: the server closed (or reset) the connection after `first`.
pub fn classify(first: &[u8], ended: bool) -> Option<Verdict> {
    if first.len() < FRAME_HEADER {
        return ended.then_some(Verdict::Closed);
    }
    let stream = u32::from_be_bytes([first[5], first[6], first[7], first[8]]) & 0x7fff_ffff;
    let settings = first[3] == SETTINGS && first[4] & ACK == 0 && stream == 0;
    Some(if settings {
        Verdict::Http2
    } else {
        Verdict::Http1Only
    })
}

pin_project_lite::pin_project! {
    /// A connection whose first bytes from the server are [`classify`]d;
    /// the verdict goes to the channel, then bytes pass untouched.
    pub struct Probed<T> {
        #[pin]
        io: T,
        first: [u8; FRAME_HEADER],
        seen: usize,
        tell: Option<oneshot::Sender<Verdict>>,
    }
}

impl<T> Probed<T> {
    /// `io` and the receiver of its verdict. A dropped sender (the
    /// connection given up before a verdict) is no verdict.
    pub fn new(io: T) -> (Self, oneshot::Receiver<Verdict>) {
        let (tell, verdict) = oneshot::channel();
        let probed = Probed {
            io,
            first: [0; FRAME_HEADER],
            seen: 0,
            tell: Some(tell),
        };
        (probed, verdict)
    }
}

impl<T: AsyncRead> AsyncRead for Probed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = ready!(this.io.poll_read(cx, buf));
        if this.tell.is_some() {
            let fresh = &buf.filled()[before..];
            let take = fresh.len().min(FRAME_HEADER - *this.seen);
            this.first[*this.seen..*this.seen + take].copy_from_slice(&fresh[..take]);
            *this.seen += take;
            let ended = result.is_err() || fresh.is_empty();
            if let Some(verdict) = classify(&this.first[..*this.seen], ended)
                && let Some(tell) = this.tell.take()
            {
                // The dialler may have given up waiting: nobody to tell.
                let _ = tell.send(verdict);
            }
        }
        Poll::Ready(result)
    }
}

impl<T: AsyncWrite> AsyncWrite for Probed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// One endpoint's memory of having answered the HTTP/2 preface as an
/// HTTP/1.x server.
#[derive(Debug, Default)]
pub struct Http1Memory {
    learned: Mutex<Option<Instant>>,
}

impl Http1Memory {
    /// Remembers, as of `now`, that the endpoint speaks HTTP/1.x only.
    pub fn learn(&self, now: Instant) {
        *self.learned.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
    }

    /// Whether the endpoint is known, at `now`, to speak HTTP/1.x only.
    pub fn http1_only(&self, now: Instant) -> bool {
        let learned = *self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        learned.is_some_and(|at| now.saturating_duration_since(at) < HTTP1_ONLY_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A server's empty SETTINGS frame.
    const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, SETTINGS, 0, 0, 0, 0, 0];

    #[test]
    fn a_settings_frame_first_is_http2() {
        assert_eq!(classify(&EMPTY_SETTINGS, false), Some(Verdict::Http2));
        // With parameters (length 12), more bytes following.
        let mut settings = vec![0, 0, 12, SETTINGS, 0, 0, 0, 0, 0];
        settings.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        assert_eq!(classify(&settings, false), Some(Verdict::Http2));
    }

    #[test]
    fn an_http1_answer_or_another_frame_is_http1_only() {
        assert_eq!(
            classify(b"HTTP/1.1 400 Bad Request\r\n", false),
            Some(Verdict::Http1Only)
        );
        assert_eq!(classify(b"HTTP/1.0 505 ", true), Some(Verdict::Http1Only));
        // A SETTINGS acknowledgement, a SETTINGS on a stream, a GOAWAY.
        let ack = [0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0];
        let on_stream = [0, 0, 0, SETTINGS, 0, 0, 0, 0, 1];
        let goaway = [0, 0, 8, 0x7, 0, 0, 0, 0, 0];
        for frame in [ack, on_stream, goaway] {
            assert_eq!(classify(&frame, false), Some(Verdict::Http1Only));
        }
    }

    #[test]
    fn a_close_before_a_frame_header_is_no_proof_else_wait() {
        assert_eq!(classify(b"", true), Some(Verdict::Closed));
        assert_eq!(classify(&EMPTY_SETTINGS[..5], true), Some(Verdict::Closed));
        assert_eq!(classify(b"", false), None);
        assert_eq!(classify(&EMPTY_SETTINGS[..8], false), None);
    }

    #[tokio::test]
    async fn probed_io_judges_split_reads_and_passes_bytes_through() {
        let mut sent = EMPTY_SETTINGS.to_vec();
        sent.extend_from_slice(b"rest");
        let io = reader_of(&[&sent[..4], &sent[4..]]);
        let (mut probed, verdict) = Probed::new(io);
        let mut got = Vec::new();
        probed.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, sent);
        assert_eq!(verdict.await, Ok(Verdict::Http2));

        let (mut probed, verdict) = Probed::new(reader_of(&[b"HTTP/1.1 4", b"00"]));
        let mut got = Vec::new();
        probed.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"HTTP/1.1 400");
        assert_eq!(verdict.await, Ok(Verdict::Http1Only));

        let (mut probed, verdict) = Probed::new(reader_of(&[]));
        probed.read_to_end(&mut Vec::new()).await.expect("read");
        assert_eq!(verdict.await, Ok(Verdict::Closed));
    }

    /// A reader yielding `chunks` one read each, then end of stream.
    fn reader_of(chunks: &[&[u8]]) -> impl AsyncRead + Unpin + use<> {
        let (mut write, read) = tokio::io::duplex(64);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in chunks {
                if write.write_all(&chunk).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        read
    }

    #[test]
    fn memory_holds_for_its_ttl_then_http2_is_tried_again() {
        let memory = Http1Memory::default();
        let t0 = Instant::now();
        assert!(!memory.http1_only(t0));
        memory.learn(t0);
        assert!(memory.http1_only(t0));
        assert!(memory.http1_only(t0 + HTTP1_ONLY_TTL - Duration::from_millis(1)));
        assert!(!memory.http1_only(t0 + HTTP1_ONLY_TTL));
    }
}
