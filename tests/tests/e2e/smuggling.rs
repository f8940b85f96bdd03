//! HTTP/1.1 request smuggling attempts, as raw bytes, against the outbound
//! and the inbound listener: Content-Length with Transfer-Encoding, two
//! Content-Lengths, obfuscated Transfer-Encoding, obs-fold, bare CR and LF,
//! invalid chunk sizes and oversized chunk extensions. Each attempt hides a
//! second request (`/smuggled`) where a lenient parser would find one; the
//! upstream records every request it receives and must never see it. Each
//! attempt gets a clear answer (400, or the one request the proxy parsed and
//! then the connection closed), and the proxy's memory and descriptors stay
//! bounded and it serves a normal request right after.

use std::{net::SocketAddr, time::Duration};

use levee_tests::harness::{
    Proxy,
    abuse::{Footprint, Recorder},
    get_http1,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The request hidden in every attempt.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: web:80\r\n\r\n";

/// What the proxy answered on one connection, and whether it then closed it.
struct Answer {
    text: String,
    closed: bool,
}

impl Answer {
    fn status(&self) -> &str {
        self.text.get(9..12).unwrap_or("")
    }
}

/// Sends `bytes` on a fresh connection, and reads until the proxy closes it
/// or 3 s pass.
async fn exchange(addr: SocketAddr, bytes: Vec<u8>) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The proxy may close before reading everything: a failed write is fine.
    let _ = tcp.write_all(&bytes).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let closed = loop {
        match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Answer {
        text: String::from_utf8_lossy(&got).into_owned(),
        closed,
    }
}

/// One attempt: its name, its bytes (the smuggled request appended), and
/// the one request the upstream may see for it (`None`: nothing).
struct Attempt {
    name: &'static str,
    head_and_body: String,
    expect: Expect,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// 400 from the proxy's HTTP/1 parser; nothing reaches the upstream.
    Rejected,
    /// A malformed body, found while streaming it: 400 `bad-request`; the
    /// upstream sees at most the head and a body cut off (never complete).
    RejectedMidBody,
    /// The proxy's own reading of the request reaches the upstream (this
    /// line as the recorder logs it), the caller gets its 200, and the
    /// connection is closed so nothing after it is ever read as a request.
    ForwardedThenClosed(&'static str),
}

fn attempts() -> Vec<Attempt> {
    use Expect::*;
    let a = |name, head_and_body: &str, expect| Attempt {
        name,
        head_and_body: head_and_body.to_owned(),
        expect,
    };
    let long_extension = format!(
        "POST /ext HTTP/1.1\r\nHost: web:80\r\nTransfer-Encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\n",
        "a=b;".repeat(10_000)
    );
    vec![
        // RFC 9112 §6.1: Transfer-Encoding wins, and the connection closes after.
        a(
            "CL then TE",
            "POST /cl-te HTTP/1.1\r\nHost: web:80\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ForwardedThenClosed("POST /cl-te 0"),
        ),
        a(
            "TE then CL",
            "POST /te-cl HTTP/1.1\r\nHost: web:80\r\nTransfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n0\r\n\r\n",
            ForwardedThenClosed("POST /te-cl 0"),
        ),
        a(
            "two Content-Length",
            "POST /two-cl HTTP/1.1\r\nHost: web:80\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n",
            Rejected,
        ),
        a(
            "Content-Length list",
            "POST /cl-list HTTP/1.1\r\nHost: web:80\r\nContent-Length: 0, 44\r\n\r\n",
            Rejected,
        ),
        a(
            "Transfer-Encoding not chunked",
            "POST /te-x HTTP/1.1\r\nHost: web:80\r\nTransfer-Encoding: xchunked\r\nContent-Length: 0\r\n\r\n",
            Rejected,
        ),
        a(
            "chunked not last",
            "POST /te-last HTTP/1.1\r\nHost: web:80\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            Rejected,
        ),
        a(
            "space before the colon",
            "POST /te-space HTTP/1.1\r\nHost: web:80\r\nTransfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
            Rejected,
        ),
        a(
            "obs-fold",
            "POST /fold HTTP/1.1\r\nHost: web:80\r\nX-A: 1\r\n Content-Length: 44\r\n\r\n",
            Rejected,
        ),
        a(
            "bare CR",
            "POST /cr HTTP/1.1\r\nHost: web:80\r\nX-A: 1\rContent-Length: 44\r\n\r\n",
            Rejected,
        ),
        a(
            "HTTP/1.0 with Transfer-Encoding",
            "POST /te-10 HTTP/1.0\r\nHost: web:80\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Rejected,
        ),
        a(
            "overflowing chunk size",
            "POST /chunk-big HTTP/1.1\r\nHost: web:80\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n",
            RejectedMidBody,
        ),
        a(
            "negative chunk size",
            "POST /chunk-neg HTTP/1.1\r\nHost: web:80\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n",
            RejectedMidBody,
        ),
        a(
            "garbage chunk size",
            "POST /chunk-zz HTTP/1.1\r\nHost: web:80\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
            RejectedMidBody,
        ),
        a(
            "oversized chunk extensions",
            &long_extension,
            RejectedMidBody,
        ),
    ]
}

/// A recorder as `web:80` behind a proxy's outbound, and as the app behind
/// its inbound.
async fn setup() -> (Recorder, Proxy) {
    let up = Recorder::start().await;
    let proxy = Proxy::builder().fronting(up.addr()).start().await;
    (up, proxy)
}

async fn attack(listener: SocketAddr, up: &Recorder, proxy: &Proxy) {
    let pid = proxy.process.pid().expect("the proxy runs");
    let normal = get_http1(proxy.outbound(), "web:80", "/warm-up")
        .await
        .unwrap();
    assert_eq!(normal.status, 200);
    let before = Footprint::of(pid);
    let attempts = attempts();
    let answers = futures_util::future::join_all(attempts.iter().map(|a| {
        let bytes = format!("{}{SMUGGLED}", a.head_and_body).into_bytes();
        exchange(listener, bytes)
    }))
    .await;
    let mut failures = Vec::new();
    for (attempt, answer) in attempts.iter().zip(&answers) {
        let path = attempt.head_and_body.split(' ').nth(1).unwrap_or("");
        let reached: Vec<String> = up
            .seen()
            .into_iter()
            .filter(|line| line.split(' ').nth(1) == Some(path))
            .collect();
        let ok = match attempt.expect {
            Expect::Rejected => answer.status() == "400" && answer.closed && reached.is_empty(),
            Expect::RejectedMidBody => {
                answer.status() == "400"
                    && answer.text.contains("x-levee-error: bad-request")
                    && answer.closed
                    && reached
                        .iter()
                        .all(|l| l.ends_with(" error") || l.ends_with(" ..."))
            }
            Expect::ForwardedThenClosed(line) => {
                answer.status() == "200" && answer.closed && reached == [line]
            }
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}; got status {:?}, closed {}, upstream saw {reached:?}; answer {:?}",
                attempt.name,
                attempt.expect,
                answer.status(),
                answer.closed,
                answer.text.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let seen = up.seen();
    assert!(
        !seen.iter().any(|l| l.contains("/smuggled")),
        "a smuggled request reached the upstream: {seen:?}"
    );
    // Served at once afterwards; the connections of the attempts are gone.
    let after = get_http1(proxy.outbound(), "web:80", "/after")
        .await
        .unwrap();
    assert_eq!(after.status, 200);
    Footprint::settles(pid, before, 16 * 1024 * 1024, 2).await;
}

#[tokio::test]
async fn smuggling_attempts_on_the_outbound_listener_never_reach_the_upstream() {
    let (up, proxy) = setup().await;
    attack(proxy.outbound(), &up, &proxy).await;
}

#[tokio::test]
async fn smuggling_attempts_on_the_inbound_listener_never_reach_the_app() {
    let (up, proxy) = setup().await;
    attack(proxy.inbound(), &up, &proxy).await;
}

/// Bare LF line ends (RFC 9112 §2.2 lets a recipient accept them): the
/// proxy reads one request, and the upstream receives it re-framed with
/// CRLF only, so no reading of the forwarded bytes can differ from the
/// proxy's.
#[tokio::test]
async fn bare_lf_heads_are_read_as_one_request_and_reframed() {
    let (listener, app) = levee_tests::harness::upstream::bind().await;
    let heads = tokio::spawn(async move {
        let mut heads = Vec::new();
        for _ in 0..2 {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed mid-head: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            heads.push(String::from_utf8_lossy(&got).into_owned());
        }
        heads
    });
    let proxy = Proxy::builder().fronting(app).start().await;
    for listener in [proxy.outbound(), proxy.inbound()] {
        let answer = exchange(
            listener,
            b"POST /lf HTTP/1.1\nHost: web:80\nContent-Length: 5\nConnection: close\n\nhello"
                .to_vec(),
        )
        .await;
        assert_eq!(answer.status(), "200", "{:?}", answer.text);
        assert!(answer.closed);
    }
    let heads = tokio::time::timeout(Duration::from_secs(5), heads)
        .await
        .expect("both requests arrived")
        .unwrap();
    for head in heads {
        assert!(head.starts_with("POST /lf HTTP/1.1\r\n"), "{head:?}");
        let bare_lf = head
            .char_indices()
            .any(|(i, c)| c == '\n' && !head[..i].ends_with('\r'));
        assert!(!bare_lf, "a bare LF reached the upstream: {head:?}");
        assert!(
            head.to_ascii_lowercase().contains("content-length: 5\r\n"),
            "{head:?}"
        );
    }
}
