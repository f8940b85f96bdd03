//! Opaque TCP over mTLS at a certificate's expiry (docs/identity.md,
//! "Expiry fails closed"): a tunnel between two sidecars that is open when
//! one sidecar's certificate expires unrenewed (identity files that are
//! never replaced, valid for a few seconds) is closed then, by that
//! sidecar, and counted on its side; a new tunnel is refused
//! (`levee_tls_handshakes_total{result="expired"}`). Once for the
//! caller's sidecar (originating), once for the callee's (terminating).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use levee_tests::harness::{certs::TestCa, eventually, pods::TwoPods, upstream::echoing, yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVER_ID: &str = "spiffe://levee.test/ns/default/sa/db";
const CLIENT_ID: &str = "spiffe://levee.test/ns/default/sa/web";
/// Opaque by default (`--opaque-ports`).
const DB_PORT: u16 = 5432;
/// How long the expiring side's certificate is valid.
const LIFETIME: Duration = Duration::from_secs(10);
const LONG: Duration = Duration::from_secs(86_400);

/// Which sidecar's certificate expires.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expires {
    Client,
    Server,
}

/// One round trip on `conn` (an echoing peer behind it): `Err` when the
/// tunnel was closed.
async fn round_trip(conn: &mut TcpStream) -> Result<(), String> {
    let answered = async {
        conn.write_all(b"ping").await?;
        let mut back = [0u8; 4];
        conn.read_exact(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    match tokio::time::timeout(Duration::from_secs(5), answered).await {
        Ok(Ok(back)) if &back == b"ping" => Ok(()),
        Ok(Ok(back)) => panic!("the peer answered {back:?}"),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => panic!("neither an answer nor the end within 5 s"),
    }
}

async fn a_tunnel_is_cut_at_expiry(expires: Expires) {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    let ca = TestCa::new("levee e2e CA");
    // x509 times have whole seconds: the certificate expires within the
    // second before this.
    let expires_at = SystemTime::now() + LIFETIME;
    let (client_life, server_life) = match expires {
        Expires::Client => (LIFETIME, LONG),
        Expires::Server => (LONG, LIFETIME),
    };

    echoing(server.listen(SocketAddr::from(([127, 0, 0, 1], DB_PORT))));
    let flags = ca
        .workload_valid_for(SERVER_ID, server_life)
        .write(&pods.path(""), "db", &ca)
        .flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _server_sidecar = pods.server_sidecar(&[], &[], &flags).await;
    let flags = ca
        .workload_valid_for(CLIENT_ID, client_life)
        .write(&pods.path(""), "web", &ca)
        .flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let docs = [yaml::endpoints_with_identity(
        "db",
        DB_PORT,
        &[pods.server_addr(DB_PORT)],
        SERVER_ID,
    )];
    let _client_sidecar = pods.client_sidecar(&[], &docs, &flags).await;

    // A tunnel, inside mTLS, open before the expiry.
    let conn = client.connect(pods.server_addr(DB_PORT)).expect("connect");
    let conn = tokio::sync::Mutex::new(conn);
    round_trip(&mut *conn.lock().await)
        .await
        .expect("an echo through the tunnel");
    assert!(
        SystemTime::now() < expires_at - Duration::from_secs(2),
        "the sidecars took too long to start: the tunnel opened at the expiry"
    );
    let ok = [("direction", "outbound"), ("result", "ok")];
    let c = client.admin_metrics().await;
    assert_eq!(
        c.value("levee_tls_handshakes_total", &ok),
        1.0,
        "{}",
        c.text
    );

    // It answers until the expiry, then it is closed.
    let closed = eventually(
        LIFETIME + Duration::from_secs(5),
        "the tunnel closed at the expiry",
        || async {
            match round_trip(&mut *conn.lock().await).await {
                Ok(()) => Err("still open".to_owned()),
                Err(error) => Ok((error, SystemTime::now())),
            }
        },
    )
    .await;
    assert!(
        closed.1 >= expires_at - Duration::from_secs(1),
        "closed before the expiry: {}",
        closed.0
    );
    let (c, s) = (client.admin_metrics().await, server.admin_metrics().await);
    let (cut_by_client, cut_by_server) = match expires {
        Expires::Client => (1.0, 0.0),
        Expires::Server => (0.0, 1.0),
    };
    let outbound = [("direction", "outbound")];
    let inbound = [("direction", "inbound")];
    assert_eq!(
        c.value("levee_tls_connections_expired_total", &outbound),
        cut_by_client,
        "{}",
        c.text
    );
    assert_eq!(
        s.value("levee_tls_connections_expired_total", &inbound),
        cut_by_server,
        "{}",
        s.text
    );

    // A new tunnel: the expired certificate is never presented.
    let mut conn = client.connect(pods.server_addr(DB_PORT)).expect("connect");
    let mut got = Vec::new();
    let answered = async {
        conn.write_all(b"hello").await?;
        conn.shutdown().await?;
        conn.read_to_end(&mut got).await
    };
    let ended = tokio::time::timeout(Duration::from_secs(10), answered).await;
    assert!(ended.is_ok(), "neither an answer nor the end within 10 s");
    assert!(
        got.is_empty(),
        "an expired sidecar carried a tunnel: {got:?}"
    );
    let (proxy, metrics, direction) = match expires {
        Expires::Client => ("client", client.admin_metrics().await, "outbound"),
        Expires::Server => ("server", server.admin_metrics().await, "inbound"),
    };
    let expired = [("direction", direction), ("result", "expired")];
    assert_eq!(
        metrics.value("levee_tls_handshakes_total", &expired),
        1.0,
        "the {proxy}'s sidecar: {}",
        metrics.text
    );
}

#[tokio::test]
async fn a_tunnel_is_cut_when_the_callers_certificate_expires() {
    a_tunnel_is_cut_at_expiry(Expires::Client).await;
}

#[tokio::test]
async fn a_tunnel_is_cut_when_the_callees_certificate_expires() {
    a_tunnel_is_cut_at_expiry(Expires::Server).await;
}
