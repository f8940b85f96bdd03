//! [`ReplayBody`]: a request body that can be sent again.
//!
//! The first attempt streams the caller's body through unchanged while a copy
//! of its bytes (and the trailers) is kept, up to `max_replay_bytes`. A
//! later attempt replays the copy, then continues with whatever the caller
//! has not sent yet (an upstream often answers before the whole body has
//! arrived, e.g. a gRPC server failing a call at once). Past the limit the
//! copy is dropped and the body is no longer replayable; the first attempt
//! keeps streaming. Bodies whose declared length is over the limit are never
//! wrapped.
//!
//! The limit counts the memory the copy really holds, not the bytes
//! received: chunks are copied into blocks the replay buffer allocates
//! itself ([`ReplayCopy`]) and every block counts with its whole capacity. Keeping
//! the caller's chunks instead would pin their buffers: a 1-byte chunk from
//! hyper is a slice of an 8 KiB+ read buffer, so a trickled body of tiny
//! chunks would hold thousands of times its size.
//!
//! All copies share one state behind a mutex. Each [`ReplayBody::replay`]
//! supersedes the copies before it: a superseded copy (still held by a dead
//! attempt's connection task) gets an error instead of reading on, so only
//! the live attempt ever polls the caller's body and receives its wake-ups.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxBody, BoxError};

/// A replayable request body. Clone it for each attempt.
#[derive(Clone)]
pub struct ReplayBody {
    shared: Arc<Mutex<State>>,
    /// Offset of the next byte this clone yields.
    position: u64,
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
    /// The bytes read so far, unless `overflowed`.
    copy: ReplayCopy,
    /// Bytes read from `rest` (equals `copy.len()` until overflow).
    read: u64,
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
                copy: ReplayCopy::default(),
                read: 0,
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
            let Some(chunk) = state.copy.read_at(this.position) else {
                return Poll::Ready(Some(Err("request body copy is incomplete".into())));
            };
            this.position += chunk.len() as u64;
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
                state.copy = ReplayCopy::default();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        state.read += data.len() as u64;
                        this.position = state.read;
                        let limit = state.limit;
                        if state.overflowed || !state.copy.push(&data, limit) {
                            state.overflowed = true;
                            state.copy = ReplayCopy::default();
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

/// The smallest block [`ReplayCopy`] allocates (unless the limit leaves less):
/// small chunks share blocks instead of costing one allocation each.
const BLOCK: usize = 8 * 1024;

/// The copied bytes: frozen segments, then a block still being filled.
#[derive(Default)]
struct ReplayCopy {
    /// Frozen parts of earlier blocks, each with the offset of its first byte.
    segments: Vec<(u64, Bytes)>,
    /// Where new bytes go while its capacity lasts; its filled part follows
    /// the segments.
    tail: BytesMut,
    /// Bytes in `segments` (the offset where `tail` starts).
    frozen: u64,
    /// Memory held: the capacity of every block allocated so far.
    allocated: u64,
}

impl ReplayCopy {
    /// Copies `data` in, allocating a block when the current one is full.
    /// `false` when that would take the memory held past `limit`.
    fn push(&mut self, data: &[u8], limit: u64) -> bool {
        if data.is_empty() {
            return true;
        }
        if self.tail.capacity() - self.tail.len() < data.len() {
            let left = usize::try_from(limit.saturating_sub(self.allocated)).unwrap_or(usize::MAX);
            let capacity = data.len().max(BLOCK.min(left));
            if capacity > left {
                return false;
            }
            self.freeze();
            self.tail = BytesMut::with_capacity(capacity);
            self.allocated += self.tail.capacity() as u64;
        }
        self.tail.extend_from_slice(data);
        true
    }

    /// Moves the filled part of `tail` to the segments; its spare capacity
    /// stays in `tail` (the same allocation).
    fn freeze(&mut self) {
        if !self.tail.is_empty() {
            let part = self.tail.split().freeze();
            let start = self.frozen;
            self.frozen += part.len() as u64;
            self.segments.push((start, part));
        }
    }

    /// The copied bytes from `offset` to the end of the segment holding it;
    /// `None` when nothing was copied at `offset`.
    fn read_at(&mut self, offset: u64) -> Option<Bytes> {
        if offset >= self.frozen {
            self.freeze();
        }
        let index = self
            .segments
            .partition_point(|(start, part)| start + part.len() as u64 <= offset);
        let (start, part) = self.segments.get(index)?;
        let skip = usize::try_from(offset.checked_sub(*start)?).ok()?;
        (skip < part.len()).then(|| part.slice(skip..))
    }
}

#[cfg(test)]
mod tests;
