//! [`ReplayBody`]: a request body that can be sent again.
//!
//! The first attempt streams the caller's body through unchanged while a copy
//! of each chunk (and the trailers) is kept, up to `max_replay_bytes`. A
//! later attempt replays the copy, then continues with whatever the caller
//! has not sent yet. Past the limit the copy is dropped and the body is no
//! longer replayable; the first attempt keeps streaming. Bodies whose
//! declared length is over the limit are never wrapped.
//!
//! All clones share one state behind a mutex; only one attempt is live at a
//! time, so there is no contention in practice.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxBody, BoxError};

/// A replayable request body. Clone it for each attempt.
#[derive(Clone)]
pub struct ReplayBody {
    shared: Arc<Mutex<State>>,
    /// Index of the next chunk this clone yields.
    position: usize,
    /// Whether this clone has yielded the trailers.
    trailers_sent: bool,
    /// The caller's size hint, kept so every attempt declares the same length.
    hint: SizeHint,
}

struct State {
    /// The caller's body, not yet fully read (`None` once ended).
    rest: Option<BoxBody>,
    /// Copies of the chunks read so far, unless `overflowed`.
    chunks: Vec<Bytes>,
    /// Chunk count read from `rest` (equals `chunks.len()` until overflow).
    read: usize,
    bytes: u64,
    limit: u64,
    trailers: Option<HeaderMap>,
    /// The copy grew past `limit` and was dropped.
    overflowed: bool,
    /// `rest` has been polled at least once.
    started: bool,
}

impl ReplayBody {
    /// Wraps `body`, or gives it back when its declared size exceeds `limit`.
    pub fn try_new(body: BoxBody, limit: u64) -> Result<ReplayBody, BoxBody> {
        let hint = body.size_hint();
        if hint.lower() > limit {
            return Err(body);
        }
        let ended = body.is_end_stream();
        Ok(ReplayBody {
            shared: Arc::new(Mutex::new(State {
                rest: (!ended).then_some(body),
                chunks: Vec::new(),
                read: 0,
                bytes: 0,
                limit,
                trailers: None,
                overflowed: false,
                started: ended,
            })),
            position: 0,
            trailers_sent: false,
            hint,
        })
    }

    /// Whether another attempt can send the whole body: it was read to its
    /// end within the limit, or not touched at all (e.g. the connect failed).
    pub fn is_replayable(&self) -> bool {
        let state = self.lock();
        !state.overflowed && (state.rest.is_none() || !state.started)
    }

    /// A fresh copy for the next attempt, starting from the first byte.
    pub fn replay(&self) -> ReplayBody {
        ReplayBody {
            shared: self.shared.clone(),
            position: 0,
            trailers_sent: false,
            hint: self.hint,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let shared = this.shared.clone();
        let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
        // Replay the copy first.
        if this.position < state.read {
            if state.overflowed {
                return Poll::Ready(Some(Err("request body is no longer replayable".into())));
            }
            let chunk = state.chunks[this.position].clone();
            this.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(rest) = state.rest.as_mut() else {
            if !this.trailers_sent
                && let Some(trailers) = state.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        state.started = true;
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                state.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The caller's body broke: nothing more to replay either.
                state.rest = None;
                state.overflowed = true;
                state.chunks.clear();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        state.read += 1;
                        this.position = state.read;
                        state.bytes += data.len() as u64;
                        if state.overflowed || state.bytes > state.limit {
                            state.overflowed = true;
                            state.chunks.clear();
                        } else {
                            state.chunks.push(data.clone());
                        }
                        Frame::data(data)
                    }
                    Err(frame) => {
                        if let Some(trailers) = frame.trailers_ref() {
                            state.trailers = Some(trailers.clone());
                            this.trailers_sent = true;
                        }
                        frame
                    }
                };
                if state.rest.as_ref().is_some_and(Body::is_end_stream) {
                    state.rest = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = self.lock();
        self.position >= state.read
            && state.rest.is_none()
            && (self.trailers_sent || state.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
