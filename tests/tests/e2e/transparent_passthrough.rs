//! Transparent outbound, first step: in a namespace with `init-iptables`
//! applied, an unmodified client's TCP to another namespace is captured,
//! and the sidecar (running as the proxy uid) forwards it to the original
//! destination byte for byte: large transfers, half-close, a server that
//! speaks first, IPv4 and IPv6. A call to the sidecar itself (explicit
//! mode) is still HTTP.

use std::{net::SocketAddr, time::Duration};

use levee_tests::harness::netns::{B_V4, B_V6, NetnsPair};
use levee_tests::harness::pods::PROXY_UID;
use levee_tests::harness::upstream::{greeting, reversing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn captured_tcp_to_an_unknown_destination_passes_through() {
    let NetnsPair { a, b } = NetnsPair::create();
    reversing(b.listen(SocketAddr::from(([0u16; 8], 9001))));
    greeting(b.listen(SocketAddr::from(([0u16; 8], 9002))));
    a.init_iptables(&[]).await;

    // Captured, with no sidecar yet: nothing listens on 4140.
    let refused = a.connect(SocketAddr::new(B_V4, 9001));
    assert!(refused.is_err(), "the connection was not captured");

    let _proxy = a.start_proxy(PROXY_UID, &[]).await;
    let sent: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
    for ip in [B_V6, B_V4] {
        a.assert_reversed(SocketAddr::new(ip, 9001), &sent).await;
        a.assert_greeted(SocketAddr::new(ip, 9002)).await;
    }

    // Explicit mode is unchanged: a call to the listener itself is HTTP.
    let mut conn = a
        .connect(SocketAddr::from(([127, 0, 0, 1], 4140)))
        .expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nhost: nowhere.invalid:80\r\nconnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert!(answer.to_lowercase().contains("x-levee-error"), "{answer}");
}

#[tokio::test]
async fn a_proxy_outside_the_proxy_uid_closes_the_loop_instead_of_following_it() {
    let NetnsPair { a, b } = NetnsPair::create();
    let b_listener = b.listen(SocketAddr::from(([0u16; 8], 9001)));
    a.init_iptables(&[]).await;
    // As root, not the proxy uid: its passthrough connections are captured too.
    let proxy = a.start_proxy(0, &[]).await;

    let mut conn = a.connect(SocketAddr::new(B_V4, 9001)).expect("connect");
    // The second hop is recognised and closed, so the first one ends too.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the looping connection was not closed");
    assert!(
        futures_util::FutureExt::now_or_never(b_listener.accept()).is_none(),
        "a looped connection reached the destination"
    );
    levee_tests::harness::eventually(DEADLINE, "the loop warning", || {
        let log = proxy.process.output();
        async move {
            match log.matches("passthrough loop").count() {
                1 => Ok(()),
                n => Err(format!("{n} loop warnings:\n{log}")),
            }
        }
    })
    .await;
}
