//! Hand-written HTTP/2 frames over a raw `TcpStream`, for tests that must
//! send what no well-behaved client library would (floods, resets, endless
//! CONTINUATION) and read exactly what the peer answers (its SETTINGS,
//! WINDOW_UPDATE and GOAWAY frames). Header blocks are plain HPACK literals
//! (no Huffman, no dynamic table), enough for any request a test needs.

use std::{net::SocketAddr, time::Duration};

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

/// What a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// SETTINGS identifiers (RFC 9113 §6.5.2).
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as read off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// `(identifier, value)` pairs of a SETTINGS frame.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }

    /// The window increment of a WINDOW_UPDATE frame.
    pub fn window_increment(&self) -> Option<u32> {
        let b: [u8; 4] = self.payload.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b) & 0x7fff_ffff)
    }

    /// The error code of a GOAWAY frame (after the last stream id) or of a
    /// RST_STREAM frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let b: [u8; 4] = self.payload.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }
}

/// The bytes of one frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame payload fits 24 bits");
    assert!(len < 1 << 24, "frame payload fits 24 bits");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with these `(identifier, value)` pairs.
pub fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = pairs
        .iter()
        .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

/// A PING frame (not an ACK) carrying `data`.
pub fn ping(data: [u8; 8]) -> Vec<u8> {
    frame(PING, 0, 0, &data)
}

/// A RST_STREAM frame.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A WINDOW_UPDATE frame.
pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// An HPACK "literal header field without indexing, new name" for short
/// names and values (RFC 7541 §6.2.2).
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00];
    for part in [name, value] {
        let len = u8::try_from(part.len()).ok().filter(|l| *l < 127);
        out.push(len.expect("HPACK literal shorter than 127 bytes"));
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// The header block of `GET path` to `authority` over `http`.
pub fn get_block(authority: &str, path: &str) -> Vec<u8> {
    [
        literal(":method", "GET"),
        literal(":scheme", "http"),
        literal(":authority", authority),
        literal(":path", path),
    ]
    .concat()
}

/// A HEADERS frame carrying `block` whole (END_HEADERS), optionally ending
/// the stream.
pub fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

/// A raw HTTP/2 connection: a frame reader and a write half, separable so a
/// test can flood from one task while it reads (or deliberately does not
/// read) on another.
pub struct H2Conn {
    pub reader: FrameReader,
    pub writer: OwnedWriteHalf,
}

impl H2Conn {
    /// Connects to a proxy listener (prior knowledge, h2c), and sends the
    /// preface and an empty SETTINGS frame.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<H2Conn> {
        let mut conn = H2Conn::accepted(TcpStream::connect(addr).await?);
        conn.send(PREFACE).await?;
        conn.send(&settings(&[])).await?;
        Ok(conn)
    }

    /// Wraps an accepted connection (the upstream side); its preface is read
    /// by [`FrameReader::read_preface`].
    pub fn accepted(stream: TcpStream) -> H2Conn {
        let (read, writer) = stream.into_split();
        H2Conn {
            reader: FrameReader {
                read,
                buf: BytesMut::new(),
            },
            writer,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// See [`FrameReader::read_frame`].
    pub async fn read_frame(&mut self, deadline: Duration) -> std::io::Result<Option<Frame>> {
        self.reader.read_frame(deadline).await
    }
}

/// Reads frames off the read half of a connection.
pub struct FrameReader {
    read: OwnedReadHalf,
    buf: BytesMut,
}

impl FrameReader {
    /// Reads the 24-byte client preface, or fails when something else came.
    pub async fn read_preface(&mut self, deadline: Duration) -> std::io::Result<()> {
        let mut got = [0u8; 24];
        tokio::time::timeout(deadline, self.read.read_exact(&mut got))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no preface"))??;
        if &got != PREFACE {
            return Err(std::io::Error::other(format!("not a preface: {got:?}")));
        }
        Ok(())
    }

    /// The next frame; `Ok(None)` when the peer closed the connection.
    pub async fn read_frame(&mut self, deadline: Duration) -> std::io::Result<Option<Frame>> {
        tokio::time::timeout(deadline, self.read_frame_inner())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no frame in time"))?
    }

    async fn read_frame_inner(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head = self.buf.split_to(9 + len);
                    return Ok(Some(Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload: head[9..].to_vec(),
                    }));
                }
            }
            self.buf.reserve(64 * 1024);
            let n = match self.read.read_buf(&mut self.buf).await {
                Ok(n) => n,
                // A reset after GOAWAY is the peer closing too.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// Every frame until the peer closes the connection, or fails after
    /// `deadline` overall (a peer that keeps it open).
    pub async fn read_to_close(&mut self, deadline: Duration) -> std::io::Result<Vec<Frame>> {
        let until = tokio::time::Instant::now() + deadline;
        let mut frames = Vec::new();
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await? {
                None => return Ok(frames),
                Some(f) => frames.push(f),
            }
        }
    }
}
