//! HTTP/2 abuse against both h2c listeners, written frame by frame
//! ([`levee_tests::harness::h2frames`]): rapid reset (CVE-2023-44487),
//! CONTINUATION floods (large and empty frames), SETTINGS and PING floods
//! from a client that never reads. Each asserts what the proxy does with
//! the connection (GOAWAY with the code, then close; or backpressure), that
//! the upstream is not made to do the attacker's work, that the proxy's
//! memory and descriptors stay bounded, and that it serves a normal request
//! at once afterwards.

use std::{net::SocketAddr, time::Duration};

use levee_tests::harness::{
    Proxy,
    abuse::{Footprint, Recorder},
    get_http1, get_http2,
    h2frames::{
        self, CANCEL, CONTINUATION, ENHANCE_YOUR_CALM, Frame, GOAWAY, H2Conn, HEADERS, frame,
    },
};
use tokio::io::AsyncWriteExt;

/// RSS the proxy may gain over one attack (allocator slack included).
const RSS_GROWTH: u64 = 24 * 1024 * 1024;
/// How long the proxy may take to close an abusive connection.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

async fn setup() -> (Recorder, Proxy) {
    let up = Recorder::start().await;
    let proxy = Proxy::builder().fronting(up.addr()).start().await;
    (up, proxy)
}

fn pid(proxy: &Proxy) -> u32 {
    proxy.process.pid().expect("the proxy runs")
}

/// A normal request on a fresh connection of each protocol answers at once.
async fn serves_at_once(proxy: &Proxy) {
    for listener in [proxy.outbound(), proxy.inbound()] {
        let h2 = tokio::time::timeout(Duration::from_secs(2), get_http2(listener, "web:80", "/ok"))
            .await
            .expect("an HTTP/2 request right after the attack is answered at once")
            .unwrap();
        assert_eq!(h2.status, 200);
        let h1 = tokio::time::timeout(Duration::from_secs(2), get_http1(listener, "web:80", "/ok"))
            .await
            .expect("an HTTP/1.1 request right after the attack is answered at once")
            .unwrap();
        assert_eq!(h1.status, 200);
    }
}

/// Writes `bytes` on `conn`'s write half from a task (a write the proxy
/// refuses by closing is fine), reads every frame until the proxy closes
/// the connection, and returns them.
async fn flood_until_closed(conn: H2Conn, bytes: Vec<u8>) -> Vec<Frame> {
    let H2Conn {
        mut reader,
        mut writer,
    } = conn;
    let flood = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        writer
    });
    let frames = reader
        .read_to_close(CLOSE_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("the proxy kept the abusive connection open: {e}"));
    drop(flood.await);
    frames
}

fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .and_then(Frame::error_code)
}

/// Streams opened and cancelled at once, thousands of them: the proxy must
/// not keep working for them (CVE-2023-44487). After 20 streams reset
/// before they were accepted the connection gets GOAWAY ENHANCE_YOUR_CALM.
#[tokio::test]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    let (up, proxy) = setup().await;
    serves_at_once(&proxy).await;
    let before = Footprint::of(pid(&proxy));
    const STREAMS: u32 = 5_000;
    for listener in [proxy.outbound(), proxy.inbound()] {
        let block = h2frames::get_block("web:80", "/rapid");
        let mut bytes = Vec::new();
        for i in 0..STREAMS {
            let id = 1 + 2 * i;
            bytes.extend(h2frames::headers(id, &block, true));
            bytes.extend(h2frames::rst_stream(id, CANCEL));
        }
        let frames = flood_until_closed(H2Conn::connect(listener).await.unwrap(), bytes).await;
        assert_eq!(goaway_code(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
    }
    let reached = up.seen().iter().filter(|l| l.contains("/rapid")).count();
    eprintln!(
        "rapid reset: {reached} of {} streams reached the upstream",
        2 * STREAMS
    );
    assert!(
        reached < 200,
        "{reached} of {} cancelled streams were forwarded",
        2 * STREAMS
    );
    serves_at_once(&proxy).await;
    Footprint::settles(pid(&proxy), before, RSS_GROWTH, 2).await;
}

/// Malformed requests (a connection-specific header, which HTTP/2
/// forbids) on stream after stream: each stream gets RST_STREAM
/// PROTOCOL_ERROR, and after 128 of them the connection gets GOAWAY
/// ENHANCE_YOUR_CALM (hyper's default let a client make the proxy reset
/// 1,024 before it stepped in).
#[tokio::test]
async fn a_flood_of_malformed_streams_gets_goaway_enhance_your_calm() {
    let (up, proxy) = setup().await;
    serves_at_once(&proxy).await;
    let before = Footprint::of(pid(&proxy));
    const STREAMS: u32 = 600;
    for listener in [proxy.outbound(), proxy.inbound()] {
        let block = [
            h2frames::get_block("web:80", "/malformed"),
            h2frames::literal("connection", "keep-alive"),
        ]
        .concat();
        let mut bytes = Vec::new();
        for i in 0..STREAMS {
            bytes.extend(h2frames::headers(1 + 2 * i, &block, true));
        }
        let frames = flood_until_closed(H2Conn::connect(listener).await.unwrap(), bytes).await;
        let resets = frames
            .iter()
            .filter(|f| f.kind == h2frames::RST_STREAM)
            .count();
        assert_eq!(
            goaway_code(&frames),
            Some(ENHANCE_YOUR_CALM),
            "{resets} resets; {:?}",
            frames.last()
        );
        assert!(resets <= 128, "{resets} streams reset before the GOAWAY");
    }
    assert!(
        !up.seen().iter().any(|l| l.contains("/malformed")),
        "a malformed request was forwarded: {:?}",
        up.seen()
    );
    serves_at_once(&proxy).await;
    Footprint::settles(pid(&proxy), before, RSS_GROWTH, 2).await;
}

/// A header block that never ends: HEADERS without END_HEADERS, then
/// CONTINUATION frames (full ones, or empty ones that add nothing to the
/// header list) for as long as the proxy reads them.
#[tokio::test]
async fn continuation_floods_are_cut_off() {
    let (up, proxy) = setup().await;
    serves_at_once(&proxy).await;
    let before = Footprint::of(pid(&proxy));
    let filler: Vec<u8> = (0..130)
        .flat_map(|i| h2frames::literal(&format!("x-flood-{i}"), &"a".repeat(100)))
        .collect();
    let floods: [(&str, Vec<u8>, usize); 2] = [
        ("16 KiB CONTINUATION frames", filler, 2_000),
        ("empty CONTINUATION frames", Vec::new(), 1_000_000),
    ];
    for (name, payload, count) in floods {
        for listener in [proxy.outbound(), proxy.inbound()] {
            let block = h2frames::get_block("web:80", "/continuation");
            // END_STREAM, no END_HEADERS.
            let mut bytes = frame(HEADERS, h2frames::END_STREAM, 1, &block);
            let one = frame(CONTINUATION, 0, 1, &payload);
            bytes.reserve(one.len() * count);
            for _ in 0..count {
                bytes.extend_from_slice(&one);
            }
            let frames = flood_until_closed(H2Conn::connect(listener).await.unwrap(), bytes).await;
            assert_eq!(
                goaway_code(&frames),
                Some(ENHANCE_YOUR_CALM),
                "{name}: {frames:?}"
            );
        }
    }
    assert!(
        !up.seen().iter().any(|l| l.contains("/continuation")),
        "an unfinished header block was forwarded: {:?}",
        up.seen()
    );
    serves_at_once(&proxy).await;
    Footprint::settles(pid(&proxy), before, RSS_GROWTH, 2).await;
}

/// What a flood of `one` (a SETTINGS or a PING frame, each of which asks
/// for an answer) does while the client reads nothing: the proxy stops
/// reading once its answers back up (bounded memory) or closes the
/// connection. Returns the frames read afterwards and whether it closed.
async fn control_flood(
    listener: SocketAddr,
    one: Vec<u8>,
    count: usize,
    pid: u32,
) -> (Vec<Frame>, bool) {
    let before = Footprint::of(pid);
    let H2Conn {
        mut reader,
        mut writer,
    } = H2Conn::connect(listener).await.unwrap();
    let mut bytes = Vec::with_capacity(one.len() * count);
    for _ in 0..count {
        bytes.extend_from_slice(&one);
    }
    // Writes until the flood is out, the proxy closes, or it stops reading.
    let wrote = tokio::time::timeout(Duration::from_secs(5), writer.write_all(&bytes)).await;
    // Measured while the answers are unread.
    let during = Footprint::of(pid);
    during
        .within(before, RSS_GROWTH, 2)
        .unwrap_or_else(|e| panic!("during the flood: {e}"));
    let mut frames = Vec::new();
    let closed = loop {
        match reader.read_frame(Duration::from_secs(1)).await {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => break true,
            // Quiet for a second: it answered all it read and kept the
            // connection.
            Err(_) => break false,
        }
    };
    eprintln!(
        "flood of {count}: RSS {} -> {} KiB, fds {} -> {}; write {}, {} frames back, closed {closed}",
        before.rss_bytes / 1024,
        during.rss_bytes / 1024,
        before.fds,
        during.fds,
        if matches!(wrote, Ok(Ok(()))) {
            "complete"
        } else {
            "blocked or refused"
        },
        frames.len()
    );
    (frames, closed)
}

#[tokio::test]
async fn settings_and_ping_floods_stay_bounded() {
    let (_up, proxy) = setup().await;
    serves_at_once(&proxy).await;
    let before = Footprint::of(pid(&proxy));
    let floods = [
        ("SETTINGS", h2frames::settings(&[])),
        ("PING", h2frames::ping(*b"flooding")),
    ];
    for (name, one) in floods {
        for listener in [proxy.outbound(), proxy.inbound()] {
            let (frames, closed) = control_flood(listener, one.clone(), 200_000, pid(&proxy)).await;
            if !closed {
                // Kept open: then it answered, and it still works.
                assert!(!frames.is_empty(), "{name}: no answer at all");
            } else {
                assert!(
                    goaway_code(&frames).is_some(),
                    "{name}: closed without GOAWAY"
                );
            }
        }
    }
    serves_at_once(&proxy).await;
    Footprint::settles(pid(&proxy), before, RSS_GROWTH, 4).await;
}
