use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, StreamBody};

use super::*;
use crate::body;

fn streamed(chunks: &[&'static str], trailers: bool) -> BoxBody {
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    if trailers {
        let mut t = HeaderMap::new();
        t.insert("x-sum", "42".parse().expect("value"));
        frames.push(Ok(Frame::trailers(t)));
    }
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

async fn read_all(body: ReplayBody) -> (Vec<u8>, Option<HeaderMap>) {
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    (collected.to_bytes().to_vec(), trailers)
}

#[tokio::test]
async fn replays_every_chunk_and_the_trailers() {
    let handle = ReplayBody::try_new(streamed(&["ab", "cd"], true), 1024).expect("small");
    assert!(handle.is_replayable(), "untouched bodies are replayable");
    let (bytes, trailers) = read_all(handle.replay()).await;
    assert_eq!(bytes, b"abcd");
    assert!(trailers.is_some());
    assert!(handle.is_replayable());
    let (again, trailers) = read_all(handle.replay()).await;
    assert_eq!(again, b"abcd");
    assert_eq!(trailers.expect("trailers")["x-sum"], "42");
}

#[tokio::test]
async fn a_partly_read_body_is_finished_from_the_caller_on_replay() {
    let handle = ReplayBody::try_new(streamed(&["a", "b", "c"], false), 1024).expect("small");
    let mut first = handle.replay();
    let frame = first.frame().await.expect("frame").expect("ok");
    assert_eq!(frame.into_data().expect("data"), "a");
    assert!(
        handle.is_replayable(),
        "what was read is copied; the rest follows"
    );
    drop(first);
    let (bytes, _) = read_all(handle.replay()).await;
    assert_eq!(bytes, b"abc");
    assert!(handle.is_replayable(), "read to the end within the limit");
}

#[tokio::test]
async fn past_the_limit_the_first_attempt_streams_on_but_nothing_replays() {
    let handle = ReplayBody::try_new(streamed(&["12345", "67890"], false), 6).expect("no length");
    let (bytes, _) = read_all(handle.replay()).await;
    assert_eq!(bytes, b"1234567890");
    assert!(!handle.is_replayable());
}

#[test]
fn a_declared_length_over_the_limit_is_not_wrapped() {
    assert!(ReplayBody::try_new(body::full("0123456789"), 4).is_err());
    let small = ReplayBody::try_new(body::full("0123"), 4).expect("fits");
    assert_eq!(small.size_hint().exact(), Some(4));
}

#[tokio::test]
async fn an_empty_body_is_replayable_and_ends_at_once() {
    let body = ReplayBody::try_new(body::empty(), 0).expect("empty");
    assert!(body.is_end_stream());
    assert!(body.is_replayable());
    assert!(read_all(body.replay()).await.0.is_empty());
}

#[tokio::test]
async fn a_superseded_copy_stops_reading() {
    let handle = ReplayBody::try_new(streamed(&["a", "b"], false), 1024).expect("small");
    let mut old = handle.replay();
    let frame = old.frame().await.expect("frame").expect("ok");
    assert_eq!(frame.into_data().expect("data"), "a");
    let new = handle.replay();
    assert!(
        old.frame().await.expect("frame").is_err(),
        "the old copy is cut off"
    );
    assert_eq!(read_all(new).await.0, b"ab");
}

/// `n` one-byte chunks, each a slice of its own 8 KiB allocation (as
/// hyper's chunks are slices of its read buffer); the originals are kept
/// to see whether the replay copy still pins them.
fn tiny_slices_of_big_buffers(n: usize) -> (BoxBody, Vec<Bytes>) {
    let originals: Vec<Bytes> = (0..n)
        .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; 8192]).slice(0..1))
        .collect();
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = originals
        .iter()
        .map(|c| Ok(Frame::data(c.clone())))
        .collect();
    (
        StreamBody::new(futures_util::stream::iter(frames)).boxed(),
        originals,
    )
}

#[tokio::test]
async fn many_one_byte_chunks_are_copied_compactly_and_pin_no_caller_buffer() {
    let (body, originals) = tiny_slices_of_big_buffers(4096);
    let expected: Vec<u8> = originals.iter().flat_map(|c| c.to_vec()).collect();
    let limit = 64 * 1024;
    let handle = ReplayBody::try_new(body, limit).expect("no length");
    let (first, _) = read_all(handle.replay()).await;
    assert_eq!(first, expected);
    assert!(handle.is_replayable(), "4096 bytes fit a 64 KiB limit");
    // Before: every chunk kept its 8 KiB buffer alive (32 MiB for a
    // "4 KiB" copy under a 64 KiB limit).
    let pinned = originals.iter().filter(|c| !c.is_unique()).count();
    assert_eq!(pinned, 0, "caller buffers still referenced by the copy");
    let held = handle.lock().copy.allocated;
    assert!(held <= limit, "the copy holds {held} bytes");
    let (again, _) = read_all(handle.replay()).await;
    assert_eq!(again, expected);
}

#[tokio::test]
async fn the_limit_counts_allocated_blocks() {
    // 10 chunks of 1 byte under a 4-byte limit: more bytes than the limit.
    let (body, _) = tiny_slices_of_big_buffers(10);
    let handle = ReplayBody::try_new(body, 4).expect("no length");
    let (bytes, _) = read_all(handle.replay()).await;
    assert_eq!(bytes.len(), 10, "the first attempt streams on");
    assert!(!handle.is_replayable());
    // A replay that catches up with the first attempt mid-block, then reads on.
    let handle = ReplayBody::try_new(streamed(&["ab", "cd", "ef"], false), 1024).expect("small");
    let mut first = handle.replay();
    let _ = first.frame().await;
    let mut second = handle.replay();
    let frame = second.frame().await.expect("frame").expect("ok");
    assert_eq!(frame.into_data().expect("data"), "ab");
    let frame = second.frame().await.expect("frame").expect("ok");
    assert_eq!(frame.into_data().expect("data"), "cd");
    let (rest, _) = read_all(handle.replay()).await;
    assert_eq!(rest, b"abcdef");
}
