//! Both ends of an opaque mTLS hop in one process, on loopback.

use levee_tests::harness::certs::{TestCa, Workload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::metrics::{Direction, Metrics, TcpOutcome, TlsResult, tcp_target};
use crate::snapshot::Snapshot;
use crate::transparent::{DEFAULT_DETECT_TIMEOUT, Transparent};

const SERVER: &str = "spiffe://levee.test/ns/shop/sa/db";
const CLIENT: &str = "spiffe://levee.test/ns/shop/sa/web";

fn credentials(ca: &TestCa, w: &Workload) -> Arc<TlsConfigs> {
    let configs = Arc::new(TlsConfigs::default());
    let credentials = crate::tls::Credentials::from_der(
        vec![w.cert_der.clone()],
        w.key_der.clone(),
        vec![ca.der.clone()],
    )
    .expect("credentials");
    configs.install(Arc::new(credentials)).expect("configs");
    configs
}

/// Accepts connections on a loopback listener and forwards each with
/// `transparent` as if it had been redirected from `original`;
/// `asked` answers the inbound side's admission and collects the callers.
async fn listen(
    transparent: Transparent,
    original: impl Fn() -> SocketAddr + Send + 'static,
    asked: Option<Arc<Asked>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (transparent, asked) = (transparent.clone(), asked.clone());
            let original = original();
            tokio::spawn(async move {
                let admit = |client: Option<&ClientIdentity>| {
                    let Some(asked) = &asked else {
                        return true;
                    };
                    let id = client.map(|c| c.0.as_str().to_owned());
                    asked.seen.lock().expect("lock").push(id);
                    asked.admit
                };
                let hard = CancellationToken::new();
                transparent
                    .forward(stream, original, false, admit, &hard)
                    .await;
            });
        }
    });
    addr
}

/// What the inbound side answers when asked to admit a caller, and who
/// it was asked about.
struct Asked {
    admit: bool,
    seen: std::sync::Mutex<Vec<Option<String>>>,
}

/// An app that echoes what it reads, upper-cased, until the end.
async fn upper_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.expect("read");
        conn.write_all(&got.to_ascii_uppercase())
            .await
            .expect("write");
    });
    addr
}

/// A caller's outbound side and a callee's inbound side on loopback,
/// the callee's address expected to be `expected`. Returns what the
/// client got back, the callers the inbound side admitted, and the
/// metrics of both.
async fn exchange(expected: &str, admit: bool) -> (Vec<u8>, Vec<Option<String>>, Metrics, Metrics) {
    let ca = TestCa::new("levee test CA");
    let app = upper_app().await;
    let settings = |metrics: &Metrics, direction| {
        let passthrough = Passthrough::new(
            Duration::from_secs(2),
            Duration::from_secs(10),
            metrics.tcp(direction, tcp_target::PASSTHROUGH),
        );
        Transparent::new(passthrough, DEFAULT_DETECT_TIMEOUT, &[])
    };
    let callee = Metrics::new();
    let termination = Termination::new(credentials(&ca, &ca.workload(SERVER)), callee.tls());
    let inbound = settings(&callee, Direction::Inbound).with_termination(termination);
    let asked = Arc::new(Asked {
        admit,
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let inbound_addr = listen(inbound, move || app, Some(asked.clone())).await;

    let caller = Metrics::new();
    let configs = credentials(&ca, &ca.workload(CLIENT));
    let shared = Arc::new(Shared::new("shop".into(), caller.clone()));
    let (between, wire) = recording_relay(inbound_addr).await;
    let mut snapshot = Snapshot::default();
    let id = SpiffeId::parse(expected).expect("id");
    snapshot.identities.insert(between, id);
    shared.install(snapshot);
    let origination = Arc::new(Origination::new(
        configs.clone(),
        shared.clone(),
        caller.tls(),
    ));
    let mesh = MeshOrigination::new(origination, configs, shared, Duration::from_millis(10));
    let outbound = settings(&caller, Direction::Outbound).with_origination(mesh);
    let front = listen(outbound, move || between, None).await;

    let mut client = TcpStream::connect(front).await.expect("connect");
    let sent = b"opaque bytes, never seen between the proxies".repeat(1000);
    // The write fails when the hop was refused (the connection is gone).
    let _ = client.write_all(&sent).await;
    let _ = client.shutdown().await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
        .await
        .expect("an answer or the end in time");
    let seen = asked.seen.lock().expect("lock").clone();
    let wire = wire.lock().expect("lock").clone();
    let plaintext = sent[..64].to_vec();
    assert!(
        !wire.windows(plaintext.len()).any(|w| w == plaintext),
        "the client's bytes crossed the hop in plaintext"
    );
    (got, seen, caller, callee)
}

/// A TCP relay to `to` that records what the caller's side sends.
async fn recording_relay(to: SocketAddr) -> (SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let wire = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = wire.clone();
    tokio::spawn(async move {
        let (from, _) = listener.accept().await.expect("accept");
        let upstream = TcpStream::connect(to).await.expect("connect");
        let (mut from_read, mut from_write) = from.into_split();
        let (mut up_read, mut up_write) = upstream.into_split();
        let back = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut up_read, &mut from_write).await;
            let _ = from_write.shutdown().await;
        });
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from_read.read(&mut buf).await
            && n > 0
        {
            recorded.lock().expect("lock").extend_from_slice(&buf[..n]);
            if up_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = up_write.shutdown().await;
        let _ = back.await;
    });
    (addr, wire)
}

#[tokio::test]
async fn opaque_bytes_cross_the_hop_inside_mtls_and_the_callee_learns_the_caller() {
    let (got, admitted, caller, callee) = exchange(SERVER, true).await;
    let expected = b"OPAQUE BYTES, NEVER SEEN BETWEEN THE PROXIES".repeat(1000);
    assert!(got == expected, "{} bytes back", got.len());
    assert_eq!(admitted, [Some(CLIENT.to_owned())]);
    let (out, inb) = (caller.tls(), callee.tls());
    assert_eq!(out.handshakes(Direction::Outbound, TlsResult::Ok), 1);
    assert_eq!(inb.handshakes(Direction::Inbound, TlsResult::Ok), 1);
    let tcp = caller.tcp(Direction::Outbound, tcp_target::PASSTHROUGH);
    assert_eq!(tcp.connections(TcpOutcome::Connected), 1);
}

#[tokio::test]
async fn another_identity_at_the_destination_closes_the_connection() {
    let (got, admitted, caller, _callee) = exchange(CLIENT, true).await;
    assert!(got.is_empty(), "{} bytes came back", got.len());
    assert!(
        admitted.is_empty(),
        "the app's port was reached: {admitted:?}"
    );
    let out = caller.tls();
    assert_eq!(
        out.handshakes(Direction::Outbound, TlsResult::IdentityMismatch),
        1
    );
    let tcp = caller.tcp(Direction::Outbound, tcp_target::PASSTHROUGH);
    assert_eq!(tcp.connections(TcpOutcome::ConnectError), 1);
    assert_eq!(tcp.connections(TcpOutcome::Connected), 0);
}

#[tokio::test]
async fn a_caller_the_port_refuses_never_reaches_the_app() {
    let (got, asked, _caller, callee) = exchange(SERVER, false).await;
    assert!(got.is_empty(), "{} bytes came back", got.len());
    assert_eq!(
        asked,
        [Some(CLIENT.to_owned())],
        "asked about the verified caller"
    );
    let inb = callee.tls();
    assert_eq!(inb.handshakes(Direction::Inbound, TlsResult::Ok), 1);
    let tcp = callee.tcp(Direction::Inbound, tcp_target::PASSTHROUGH);
    assert_eq!(
        tcp.connections(TcpOutcome::Connected),
        0,
        "the app was reached"
    );
}

/// A callee's inbound side on loopback: forwards each connection as if
/// redirected to `app`, and reports what `forward` handed back and
/// whether the caller was asked about (HTTP is authorized per request).
async fn inbound_handing_back(
    ca: &TestCa,
    app: SocketAddr,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(Option<Accepted>, bool)>,
    Metrics,
) {
    let callee = Metrics::new();
    let termination = Termination::new(credentials(ca, &ca.workload(SERVER)), callee.tls());
    let passthrough = Passthrough::new(
        Duration::from_secs(2),
        Duration::from_secs(10),
        callee.tcp(Direction::Inbound, tcp_target::WORKLOAD),
    );
    let inbound =
        Transparent::new(passthrough, DEFAULT_DETECT_TIMEOUT, &[]).with_termination(termination);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut asked = false;
            let hard = CancellationToken::new();
            let admit = |_: Option<&ClientIdentity>| {
                asked = true;
                true
            };
            let handed = inbound.forward(stream, app, false, admit, &hard).await;
            let _ = tx.send((handed, asked));
        }
    });
    (addr, rx, callee)
}

#[tokio::test]
async fn a_peer_proxys_http_is_terminated_and_handed_back_with_the_verified_caller() {
    let ca = TestCa::new("levee test CA");
    let app = upper_app().await;
    let (inbound, mut handed, callee) = inbound_handing_back(&ca, app).await;

    let caller = Metrics::new();
    let configs = credentials(&ca, &ca.workload(CLIENT));
    let shared = Arc::new(Shared::new("shop".into(), caller.clone()));
    let origination = Origination::new(configs, shared, caller.tls());
    let server = SpiffeId::parse(SERVER).expect("id");
    for (alpn, h2) in [(Alpn::H2, true), (Alpn::Http1, false)] {
        let tcp = TcpStream::connect(inbound).await.expect("connect");
        let tls = origination
            .connect(tcp, inbound, &server, alpn)
            .await
            .expect("the callee terminated the caller's mTLS");
        let (handed, asked) = handed.recv().await.expect("forwarded");
        let accepted = handed.expect("HTTP inside mTLS is handed back to be served");
        assert_eq!(accepted.h2, h2, "{alpn:?}");
        assert_eq!(
            accepted.client.map(|c| c.0.as_str().to_owned()),
            Some(CLIENT.to_owned())
        );
        assert!(!asked, "HTTP is authorized per request, not per connection");
        drop(tls);
    }
    let inb = callee.tls();
    assert_eq!(inb.handshakes(Direction::Inbound, TlsResult::Ok), 2);
    let tcp = callee.tcp(Direction::Inbound, tcp_target::WORKLOAD);
    assert_eq!(
        tcp.connections(TcpOutcome::Connected),
        0,
        "the app was reached"
    );
}

#[tokio::test]
async fn the_apps_own_tls_offering_h2_passes_through_untouched() {
    let ca = TestCa::new("levee test CA");
    let app = upper_app().await;
    let (inbound, mut handed, callee) = inbound_handing_back(&ca, app).await;

    // The app's own client: its own server name, the ALPN a peer proxy
    // would offer for HTTP/2.
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("api.example").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("hello");

    let mut client = TcpStream::connect(inbound).await.expect("connect");
    client.write_all(&hello).await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert!(
        got == hello.to_ascii_uppercase(),
        "the app did not get its own ClientHello ({} bytes back)",
        got.len()
    );
    let (handed, asked) = handed.recv().await.expect("forwarded");
    assert!(handed.is_none(), "the app's own TLS was terminated");
    assert!(asked, "the port was asked about a caller without identity");
    let inb = callee.tls();
    assert_eq!(inb.handshakes(Direction::Inbound, TlsResult::Ok), 0);
}
