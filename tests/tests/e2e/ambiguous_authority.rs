//! A request that names its destination twice in ways that disagree —
//! several `Host` headers, or a `Host` other than the absolute-form URI's
//! or HTTP/2 `:authority` — gets 400 `ambiguous-authority` on both
//! listeners and reaches nobody; agreeing spellings pass.

use http::Request;
use levee_tests::{
    flaky::FlakyUpstream,
    harness::{Proxy, empty, read_head, send_http1, send_http2},
};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::loops_self::{assert_fds_bounded, assert_serves, fds};

/// Sends `head` as is on a fresh connection and returns the response head.
async fn raw(addr: std::net::SocketAddr, head: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("write");
    read_head(&mut tcp)
        .await
        .unwrap_or_else(|e| panic!("{head:?}: {e}"))
}

#[tokio::test]
async fn disagreeing_or_repeated_host_gets_400_on_both_listeners() {
    let up = FlakyUpstream::start("authority-1").await.expect("upstream");
    let proxy = Proxy::builder().fronting(up.addr()).start().await;
    let heads = [
        "GET / HTTP/1.1\r\nHost: web:80\r\nHost: web:80\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: web:80\r\nHost: other:80\r\n\r\n",
        "GET http://web:80/ HTTP/1.1\r\nHost: other:80\r\n\r\n",
        "GET http://web:80/ HTTP/1.1\r\nHost: web:81\r\n\r\n",
        "GET http://web/ HTTP/1.1\r\nHost: web:443\r\n\r\n",
        "GET http://web:80/ HTTP/1.1\r\nHost: web:80\r\nHost: web:80\r\n\r\n",
    ];
    let before = fds(&proxy);
    for (addr, listener) in [(proxy.outbound(), "outbound"), (proxy.inbound(), "inbound")] {
        for head in heads {
            let answer = raw(addr, head).await;
            assert!(
                answer.starts_with("HTTP/1.1 400"),
                "{listener} {head:?}: {answer}"
            );
            assert!(
                answer.contains("x-levee-error: ambiguous-authority"),
                "{listener} {head:?}: {answer}"
            );
        }
        // HTTP/2: a `host` header that disagrees with `:authority`.
        let req = Request::get("http://web:80/h2")
            .header("host", "other:80")
            .body(empty())
            .expect("request");
        let r = send_http2(addr, req).await.expect("HTTP/2 answer");
        assert_eq!(r.status, 400, "{listener} h2: {r:?}");
        assert_eq!(r.header("x-levee-error"), "ambiguous-authority");
    }
    assert_eq!(up.requests(), 0, "no refused request reached the upstream");
    assert_fds_bounded(&proxy, before).await;

    // Spellings of one authority agree.
    for (uri, host) in [
        ("http://web:80/", "web:80"),
        ("http://web/", "WEB:80"),
        ("http://web:80/", "Web"),
    ] {
        let req = Request::get(uri)
            .header("host", host)
            .body(empty())
            .expect("request");
        let r = send_http1(proxy.outbound(), req).await.expect("answer");
        assert_eq!(r.status, 200, "{uri} / {host}: {r:?}");
    }
    let req = Request::get("http://web:80/h2")
        .header("host", "web:80")
        .body(empty())
        .expect("request");
    let r = send_http2(proxy.outbound(), req).await.expect("answer");
    assert_eq!(r.status, 200, "h2 with an agreeing host: {r:?}");
    assert_serves(&proxy).await;
}
