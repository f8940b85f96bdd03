//! The HTTP/2 settings the proxy announces, read off the wire with raw
//! frames: to clients on both listeners (streams per connection, fixed
//! stream and connection windows, header list size) and to upstreams on the
//! connections it dials. Fixed windows mean no peer can make the proxy
//! buffer more than the connection window of its body; adaptive windows grew
//! to 16 MiB.

use std::{net::SocketAddr, time::Duration};

use levee_tests::harness::{
    Http2Conn, Proxy,
    abuse::{Footprint, Recorder},
    empty, get_http2,
    h2frames::{
        self, ACK, Frame, H2Conn, PING, REFUSED_STREAM, SETTINGS, SETTINGS_INITIAL_WINDOW_SIZE,
        SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE, WINDOW_UPDATE,
    },
    upstream::bind,
    yaml,
};

const READ: Duration = Duration::from_secs(5);

/// What one side announced at the start of a connection.
#[derive(Debug, Default)]
struct Announced {
    settings: Vec<(u16, u32)>,
    /// The connection-level WINDOW_UPDATE increments.
    connection_window_increments: Vec<u32>,
}

impl Announced {
    fn setting(&self, id: u16) -> Option<u32> {
        self.settings
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// The connection window the peer gave: 65,535 plus its increments.
    fn connection_window(&self) -> u64 {
        65_535
            + self
                .connection_window_increments
                .iter()
                .map(|&i| u64::from(i))
                .sum::<u64>()
    }

    fn note(&mut self, frame: &Frame) {
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            self.settings.extend(frame.settings());
        }
        if frame.kind == WINDOW_UPDATE && frame.stream == 0 {
            self.connection_window_increments
                .extend(frame.window_increment());
        }
    }
}

/// Opens an h2c connection to `listener` and collects what the proxy
/// announces: its SETTINGS (complete once it answered a PING) and its
/// connection window update (which may come after; a proxy that sends none
/// within a second has none to send).
async fn announced_by(listener: SocketAddr) -> Announced {
    let mut conn = H2Conn::connect(listener).await.unwrap();
    conn.send(&h2frames::ping(*b"settled?")).await.unwrap();
    let mut announced = Announced::default();
    let mut ponged = false;
    let update_deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !ponged || announced.connection_window_increments.is_empty() {
        let wait = if ponged {
            update_deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            READ
        };
        let frame = match conn.read_frame(wait).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("the proxy closed the connection: {announced:?}"),
            Err(_) if ponged => break,
            Err(e) => panic!("no PING answer: {e}; {announced:?}"),
        };
        announced.note(&frame);
        ponged |= frame.kind == PING && frame.flags & ACK != 0;
    }
    announced
}

#[tokio::test]
async fn listeners_announce_bounded_streams_and_fixed_windows() {
    let proxy = Proxy::builder().start().await;
    for listener in [proxy.outbound(), proxy.inbound()] {
        let a = announced_by(listener).await;
        assert_eq!(
            a.setting(SETTINGS_MAX_CONCURRENT_STREAMS),
            Some(250),
            "{a:?}"
        );
        assert_eq!(
            a.setting(SETTINGS_INITIAL_WINDOW_SIZE),
            Some(256 * 1024),
            "{a:?}"
        );
        assert_eq!(
            a.setting(SETTINGS_MAX_HEADER_LIST_SIZE),
            Some(64 * 1024),
            "{a:?}"
        );
        assert_eq!(a.connection_window(), 1024 * 1024, "{a:?}");
    }
}

#[tokio::test]
async fn the_h2_flags_set_what_the_listeners_announce() {
    let flags = [
        "--h2-max-concurrent-streams",
        "7",
        "--h2-stream-window",
        "100000",
        "--h2-connection-window",
        "300000",
        "--max-header-bytes",
        "20000",
    ];
    let proxy = flags
        .into_iter()
        .fold(Proxy::builder(), |b, flag| b.arg(flag))
        .start()
        .await;
    let a = announced_by(proxy.outbound()).await;
    assert_eq!(a.setting(SETTINGS_MAX_CONCURRENT_STREAMS), Some(7), "{a:?}");
    assert_eq!(
        a.setting(SETTINGS_INITIAL_WINDOW_SIZE),
        Some(100_000),
        "{a:?}"
    );
    assert_eq!(
        a.setting(SETTINGS_MAX_HEADER_LIST_SIZE),
        Some(20_000),
        "{a:?}"
    );
    assert_eq!(a.connection_window(), 300_000, "{a:?}");
}

/// The proxy's upstream connections announce the same fixed windows (and
/// header list size) to the upstream, read by a raw HTTP/2 upstream that
/// sends its (empty) SETTINGS — no request goes out before the server's
/// SETTINGS prove it speaks HTTP/2 — and never answers.
#[tokio::test]
async fn upstream_connections_announce_fixed_windows() {
    let (listener, addr) = bind().await;
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[addr]))
        .start()
        .await;
    let call = tokio::spawn({
        let outbound = proxy.outbound();
        async move { get_http2(outbound, "web:80", "/").await }
    });
    let (tcp, _) = tokio::time::timeout(READ, listener.accept())
        .await
        .expect("the proxy dials the upstream")
        .unwrap();
    let mut conn = H2Conn::accepted(tcp);
    conn.send(&h2frames::settings(&[])).await.unwrap();
    conn.reader.read_preface(READ).await.unwrap();
    let mut announced = Announced::default();
    // The proxy's SETTINGS, then its window update, then the request.
    loop {
        let frame = conn.read_frame(READ).await.unwrap().expect("a request");
        announced.note(&frame);
        if frame.kind == h2frames::HEADERS {
            break;
        }
    }
    call.abort();
    let a = announced;
    assert_eq!(
        a.setting(SETTINGS_INITIAL_WINDOW_SIZE),
        Some(256 * 1024),
        "{a:?}"
    );
    assert_eq!(
        a.setting(SETTINGS_MAX_HEADER_LIST_SIZE),
        Some(64 * 1024),
        "{a:?}"
    );
    assert_eq!(a.connection_window(), 1024 * 1024, "{a:?}");
}

/// A client that opens more streams than `--h2-max-concurrent-streams`
/// gets the extra ones refused (REFUSED_STREAM: never processed, safe to
/// retry), while the streams within the limit go on.
#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let up = Recorder::start().await;
    let proxy = Proxy::builder()
        .fronting(up.addr())
        .arg("--h2-max-concurrent-streams")
        .arg("2")
        .start()
        .await;
    let mut conn = H2Conn::connect(proxy.outbound()).await.unwrap();
    // The limit binds once the client acknowledged the proxy's SETTINGS.
    loop {
        let frame = conn.read_frame(READ).await.unwrap().expect("SETTINGS");
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            break;
        }
    }
    conn.send(&h2frames::frame(SETTINGS, ACK, 0, &[]))
        .await
        .unwrap();
    // Three uploads that never end: two fit, the third does not.
    let block = [
        h2frames::literal(":method", "POST"),
        h2frames::literal(":scheme", "http"),
        h2frames::literal(":authority", "web:80"),
        h2frames::literal(":path", "/held"),
    ]
    .concat();
    for id in [1, 3, 5] {
        conn.send(&h2frames::headers(id, &block, false))
            .await
            .unwrap();
    }
    let refused = loop {
        let frame = conn.read_frame(READ).await.unwrap().expect("an answer");
        if frame.kind == h2frames::RST_STREAM {
            break frame;
        }
    };
    assert_eq!(refused.stream, 5);
    assert_eq!(refused.error_code(), Some(REFUSED_STREAM));
    levee_tests::harness::eventually(
        READ,
        "the two streams within the limit to reach the upstream",
        || async {
            let held = up
                .seen()
                .iter()
                .filter(|l| l.starts_with("POST /held"))
                .count();
            if held == 2 {
                Ok(())
            } else {
                Err(format!("{:?}", up.seen()))
            }
        },
    )
    .await;
}

/// An HTTP/2 request head over `--max-header-bytes` gets 431 on its stream
/// and is not forwarded; the connection's next request is served.
#[tokio::test]
async fn an_oversized_h2_header_list_gets_431() {
    let up = Recorder::start().await;
    let proxy = Proxy::builder()
        .fronting(up.addr())
        .arg("--max-header-bytes")
        .arg("8192")
        .start()
        .await;
    let mut conn = Http2Conn::connect(proxy.outbound()).await.unwrap();
    let big = http::Request::get("http://web:80/big")
        .header("x-big", "a".repeat(16 * 1024))
        .body(empty())
        .unwrap();
    let r = conn.send(big).await.expect("a response, not a reset");
    assert_eq!(r.status, 431, "{r:?}");
    let small = http::Request::get("http://web:80/small")
        .body(empty())
        .unwrap();
    assert_eq!(conn.send(small).await.unwrap().status, 200);
    assert_eq!(up.seen(), ["GET /small 0"]);
}

/// One client, uploads on many streams to an upstream that accepts the
/// connection and never reads: the proxy takes no more body than its fixed
/// connection window, plus what it passed on to the upstream (the
/// upstream's 64 KiB window and a 64 KiB send buffer per stream), however
/// fast the client sends.
#[tokio::test]
async fn a_client_cannot_make_the_proxy_hold_more_body_than_its_windows() {
    let (listener, addr) = bind().await;
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let proxy = Proxy::builder()
        .policy(yaml::endpoints("web", 80, &[addr]))
        .start()
        .await;
    let pid = proxy.process.pid().expect("the proxy runs");
    let before = Footprint::of(pid);
    let mut conn = H2Conn::connect(proxy.outbound()).await.unwrap();
    const STREAMS: u32 = 20;
    let block = [
        h2frames::literal(":method", "POST"),
        h2frames::literal(":scheme", "http"),
        h2frames::literal(":authority", "web:80"),
        h2frames::literal(":path", "/upload"),
    ]
    .concat();
    for i in 0..STREAMS {
        conn.send(&h2frames::headers(1 + 2 * i, &block, false))
            .await
            .unwrap();
    }
    // Send as much as flow control lets us, until the proxy stops giving
    // window for a second.
    let mut connection_window: i64 = 65_535;
    let mut stream_windows = vec![65_535i64; STREAMS as usize];
    let chunk = vec![b'x'; 16 * 1024];
    let mut sent: i64 = 0;
    loop {
        for (i, window) in stream_windows.iter_mut().enumerate() {
            let n = (*window).min(connection_window).min(chunk.len() as i64);
            if n > 0 {
                let id = 1 + 2 * u32::try_from(i).unwrap();
                conn.send(&h2frames::frame(
                    h2frames::DATA,
                    0,
                    id,
                    &chunk[..n as usize],
                ))
                .await
                .unwrap();
                *window -= n;
                connection_window -= n;
                sent += n;
            }
        }
        let stalled = connection_window <= 0 || stream_windows.iter().all(|w| *w <= 0);
        let wait = if stalled {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(1)
        };
        match conn.read_frame(wait).await {
            Ok(Some(f)) if f.kind == SETTINGS && f.flags & ACK == 0 => {
                for (id, value) in f.settings() {
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        // Applies to every open stream (RFC 9113 §6.9.2).
                        for w in &mut stream_windows {
                            *w += i64::from(value) - 65_535;
                        }
                    }
                }
                conn.send(&h2frames::frame(SETTINGS, ACK, 0, &[]))
                    .await
                    .unwrap();
            }
            Ok(Some(f)) if f.kind == WINDOW_UPDATE => {
                let inc = i64::from(f.window_increment().unwrap_or(0));
                if f.stream == 0 {
                    connection_window += inc;
                } else {
                    stream_windows[((f.stream - 1) / 2) as usize] += inc;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the proxy closed the connection after {sent} bytes"),
            Err(_) if stalled => break,
            Err(_) => {}
        }
    }
    let bound = 1024 * 1024 + 65_535 + i64::from(STREAMS) * (64 + 16) * 1024;
    eprintln!("the proxy took {sent} bytes of body (bound {bound})");
    assert!(
        sent <= bound,
        "the proxy took {sent} bytes of body; bound {bound}"
    );
    Footprint::of(pid)
        .within(before, 16 * 1024 * 1024, 4)
        .unwrap_or_else(|e| panic!("{e}"));
    held.abort();
}
