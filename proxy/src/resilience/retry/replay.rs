//! [`ReplayBody`]: a request body that can be sent again.
//!
//! The first attempt streams the caller's body through unchanged while a copy
//! of each chunk (and the trailers) is kept, up to `max_replay_bytes`. A
//! later attempt replays the copy, then continues with whatever the caller
//! has not sent yet (an upstream often answers before the whole body has
//! arrived, e.g. a gRPC server failing a call at once). Past the limit the
//! copy is dropped and the body is no longer replayable; the first attempt
//! keeps streaming. Bodies whose declared length is over the limit are never
//! wrapped.
//!
//! All copies share one state behind a mutex. Each [`ReplayBody::replay`]
//! supersedes the copies before it: a superseded copy (still held by a dead
//! attempt's connection task) gets an error instead of reading on, so only
//! the live attempt ever polls the caller's body and receives its wake-ups.

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
    /// Which copy this is; only the newest may read.
    generation: u64,
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
    /// The newest copy handed out.
    generation: u64,
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
                generation: 0,
            })),
            position: 0,
            trailers_sent: false,
            hint,
            generation: 0,
        })
    }

    /// Whether another attempt can send the whole body: everything read so
    /// far is still copied (the limit was not passed, the caller's body did
    /// not fail); what was not read yet follows from the caller.
    pub fn is_replayable(&self) -> bool {
        !self.lock().overflowed
    }

    /// A fresh copy for the next attempt, starting from the first byte.
    /// Earlier copies stop reading.
    pub fn replay(&self) -> ReplayBody {
        let generation = {
            let mut state = self.lock();
            state.generation += 1;
            state.generation
        };
        ReplayBody {
            shared: self.shared.clone(),
            position: 0,
            trailers_sent: false,
            hint: self.hint,
            generation,
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
        if this.generation != state.generation {
            return Poll::Ready(Some(Err("request body superseded by a retry".into())));
        }
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
        match Pin::new(rest).poll_frame(cx) {
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
mod tests;
