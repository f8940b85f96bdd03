//! Opaque TCP between two sidecars with workload certificates
//! (docs/identity.md, "Opaque TCP over mTLS"): an unmodified client's raw
//! TCP to the server pod's opaque port crosses the hop inside mTLS — the
//! callee's sidecar counts the inbound handshake and the server app gets
//! the plain bytes —, a destination expected to be another identity is
//! never reached, and a `strict` port closes a plaintext opaque
//! connection.

use std::{net::SocketAddr, time::Duration};

use levee_tests::harness::{
    certs::TestCa,
    netns::{B_V4, Netns},
    pods::TwoPods,
    upstream::reversing,
    yaml,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(10);

const SERVER_ID: &str = "spiffe://levee.test/ns/default/sa/db";
const CLIENT_ID: &str = "spiffe://levee.test/ns/default/sa/web";
/// What the client's proxy is told to expect at the wrong-identity port.
const OTHER_ID: &str = "spiffe://levee.test/ns/default/sa/someone-else";

/// Opaque by default (`--opaque-ports`): inside mTLS, the right identity.
const DB_PORT: u16 = 5432;
/// Not an opaque port: detected (the client speaks first, not HTTP) on
/// both sides, then inside mTLS.
const DETECTED_PORT: u16 = 9001;
/// Opaque by default: expected to be another identity.
const CACHE_PORT: u16 = 6379;
/// No expected identity: plaintext, and the server's port is strict.
const PLAIN_PORT: u16 = 7000;

/// `--identity-*` flags for a workload certificate of `id`, in the pods'
/// directory (readable by the proxy uid).
fn identity_flags(pods: &TwoPods, ca: &TestCa, name: &str, id: &str) -> Vec<String> {
    ca.workload(id).write(&pods.path(""), name, ca).flags()
}

/// Sends `sent` from `ns` to `target`, half-closes, and reads to the end:
/// what came back, empty when the connection was closed or reset instead.
async fn exchange(ns: &Netns, target: SocketAddr, sent: &[u8]) -> Vec<u8> {
    let mut conn = ns.connect(target).expect("connect");
    let mut got = Vec::new();
    let answered = async {
        conn.write_all(sent).await?;
        conn.shutdown().await?;
        conn.read_to_end(&mut got).await
    };
    let _ = tokio::time::timeout(DEADLINE, answered)
        .await
        .expect("an answer or the end in time");
    got
}

#[tokio::test]
async fn opaque_tcp_crosses_the_hop_inside_mtls_and_the_wrong_identity_is_never_reached() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    let ca = TestCa::new("levee e2e CA");

    // Server pod: apps on loopback that answer what they read reversed,
    // every port of its service strict.
    for port in [DB_PORT, DETECTED_PORT, CACHE_PORT, PLAIN_PORT] {
        reversing(server.listen(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    let mut flags = identity_flags(&pods, &ca, "db", SERVER_ID);
    flags.extend(["--service".into(), "db".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let strict = yaml::policy_in(
        "default",
        "db",
        None,
        "  inbound:\n    mtls:\n      mode: strict\n",
    );
    let _server_sidecar = pods.server_sidecar(&[], &[strict], &flags).await;

    // Client pod: the db and detected ports are expected to be the
    // server's identity, the cache port another one; the plain port has
    // none.
    let flags = identity_flags(&pods, &ca, "web", CLIENT_ID);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let docs = [
        yaml::endpoints_with_identity("db", DB_PORT, &[pods.server_addr(DB_PORT)], SERVER_ID),
        yaml::endpoints_with_identity(
            "admin",
            DETECTED_PORT,
            &[pods.server_addr(DETECTED_PORT)],
            SERVER_ID,
        ),
        yaml::endpoints_with_identity(
            "cache",
            CACHE_PORT,
            &[pods.server_addr(CACHE_PORT)],
            OTHER_ID,
        ),
    ];
    let _client_sidecar = pods.client_sidecar(&[], &docs, &flags).await;

    let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    client
        .assert_reversed(pods.server_addr(DB_PORT), &sent)
        .await;
    let detected = b"not http, said first";
    client
        .assert_reversed(pods.server_addr(DETECTED_PORT), detected)
        .await;

    let s = server.admin_metrics().await;
    let inbound_ok = [("direction", "inbound"), ("result", "ok")];
    assert_eq!(
        s.value("levee_tls_handshakes_total", &inbound_ok),
        2.0,
        "the server's sidecar terminated no mTLS: {}",
        s.text
    );
    let to_app = [("direction", "inbound"), ("flow", "to_target")];
    assert_eq!(
        s.value("levee_tcp_bytes_total", &to_app),
        (sent.len() + detected.len()) as f64,
        "the plain bytes reached the app: {}",
        s.text
    );

    // The wrong identity: closed before a byte reaches the server's app.
    let got = exchange(client, SocketAddr::new(B_V4, CACHE_PORT), b"hello cache").await;
    assert!(got.is_empty(), "the wrong identity answered: {got:?}");
    let c = client.admin_metrics().await;
    let mismatch = [("direction", "outbound"), ("result", "identity-mismatch")];
    assert_eq!(
        c.value("levee_tls_handshakes_total", &mismatch),
        1.0,
        "{}",
        c.text
    );
    let outbound_ok = [("direction", "outbound"), ("result", "ok")];
    assert_eq!(
        c.value("levee_tls_handshakes_total", &outbound_ok),
        2.0,
        "{}",
        c.text
    );

    // No expected identity: plaintext, which the strict port closes.
    let got = exchange(client, SocketAddr::new(B_V4, PLAIN_PORT), b"hello plain").await;
    assert!(got.is_empty(), "a strict port answered plaintext: {got:?}");
    let s = server.admin_metrics().await;
    let denied = [("client", "none")];
    assert_eq!(
        s.value("levee_authz_denied_total", &denied),
        1.0,
        "{}",
        s.text
    );
    // Only the mTLS connections reached an app.
    assert_eq!(
        s.value("levee_tcp_bytes_total", &to_app),
        (sent.len() + detected.len()) as f64,
        "{}",
        s.text
    );
}
