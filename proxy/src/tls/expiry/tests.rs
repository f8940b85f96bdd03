//! Both ends of a real handshake over loopback, each with its own
//! settings and metrics: renewals keep a connection, expiry cuts it on
//! whichever side expired (a waiting read at the expiry itself), and an
//! expired certificate is never presented to a new client.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use levee_proto::policy::SpiffeId;
use levee_tests::harness::certs::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::metrics::{Direction, Metrics, TlsResult};
use crate::state::Shared;
use crate::tls::tests::{CLIENT, SERVER, credentials};
use crate::tls::{Accepted, Alpn, Credentials, Origination, Stream, Termination, TlsConfigs};

/// One side of a connection: its settings, credentials and metrics.
struct End {
    configs: Arc<TlsConfigs>,
    credentials: Arc<Credentials>,
    metrics: Metrics,
}

impl End {
    fn new(credentials: Arc<Credentials>) -> End {
        let configs = Arc::new(TlsConfigs::default());
        configs.install(credentials.clone()).expect("configs");
        End {
            configs,
            credentials,
            metrics: Metrics::new(),
        }
    }

    /// Installs the same certificate with another `not_after` (a renewal
    /// when later, an expiry when past).
    fn valid_until(&self, not_after: SystemTime) {
        let renewed = Arc::new(Credentials {
            not_after,
            ..(*self.credentials).clone()
        });
        self.configs.install(renewed).expect("configs");
    }

    fn cut(&self, direction: Direction) -> u64 {
        self.metrics.tls().connections_expired(direction)
    }
}

/// A client and a server end, and the connection the client originated
/// to the server (`Err`: the client's handshake error, the server's).
async fn connect(client: &End, server: &End) -> Result<(Stream, Stream), (String, std::io::Error)> {
    let termination = Termination::new(server.configs.clone(), server.metrics.tls());
    let shared = Arc::new(Shared::new("shop".into(), client.metrics.clone()));
    let origination = Origination::new(client.configs.clone(), shared, client.metrics.tls());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        termination.accept(tcp).await.map(|a: Accepted| a.stream)
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let expected = SpiffeId::parse(SERVER).expect("id");
    let connected = origination.connect(tcp, addr, &expected, Alpn::H2).await;
    let accepted = accept.await.expect("server task");
    match (connected, accepted) {
        (Ok(c), Ok(s)) => Ok((Stream::Client(Box::new(c)), s)),
        (c, s) => Err((
            c.err().map(|e| e.to_string()).unwrap_or_default(),
            s.err().unwrap_or_else(|| std::io::Error::other("accepted")),
        )),
    }
}

fn ends() -> (End, End) {
    let ca = TestCa::new("expiry");
    (
        End::new(credentials(&ca, &ca.workload(CLIENT))),
        End::new(credentials(&ca, &ca.workload(SERVER))),
    )
}

/// `from` sends a byte, `to` reads it.
async fn one_byte(from: &mut Stream, to: &mut Stream) -> std::io::Result<()> {
    from.write_all(b"x").await?;
    from.flush().await?;
    let mut buf = [0u8; 1];
    to.read_exact(&mut buf).await.map(drop)
}

#[tokio::test]
async fn renewals_keep_a_connection_and_an_expiry_cuts_it_on_the_expired_side() {
    let (client, server) = ends();
    let (mut c, mut s) = connect(&client, &server).await.expect("connected");
    one_byte(&mut c, &mut s).await.expect("client to server");
    one_byte(&mut s, &mut c).await.expect("server to client");

    // Renewals on both sides: the connection goes on.
    let later = SystemTime::now() + Duration::from_secs(3600);
    client.valid_until(later);
    server.valid_until(later);
    one_byte(&mut c, &mut s).await.expect("after renewals");
    one_byte(&mut s, &mut c).await.expect("after renewals");

    // The server's certificate expired unrenewed: its reads and writes fail.
    server.valid_until(SystemTime::now() - Duration::from_secs(5));
    c.write_all(b"y").await.expect("the client side is valid");
    let mut buf = [0u8; 1];
    let read = s.read(&mut buf).await.expect_err("the server's read fails");
    assert!(read.to_string().contains("expired"), "{read}");
    assert!(s.write_all(b"z").await.is_err(), "the server's write fails");
    assert_eq!(server.cut(Direction::Inbound), 1, "counted once");
    assert_eq!(client.cut(Direction::Outbound), 0);

    // The same for the client's, outbound.
    client.valid_until(SystemTime::now() - Duration::from_secs(5));
    assert!(c.write_all(b"w").await.is_err(), "the client's write fails");
    assert!(c.read(&mut buf).await.is_err(), "the client's read fails");
    assert_eq!(client.cut(Direction::Outbound), 1, "counted once");
}

#[tokio::test]
async fn a_waiting_read_is_cut_at_the_expiry_itself_and_a_renewal_moves_the_cut() {
    let (client, server) = ends();
    let (_c, mut s) = connect(&client, &server).await.expect("connected");
    let started = Instant::now();
    server.valid_until(SystemTime::now() + Duration::from_millis(300));
    let mut buf = [0u8; 1];
    let mut read = std::pin::pin!(s.read(&mut buf));
    assert!(
        futures_util::poll!(read.as_mut()).is_pending(),
        "nothing to read"
    );
    // Renewed before the first expiry: the waiting read outlives it.
    let renewed = Duration::from_millis(900);
    server.valid_until(SystemTime::now() + renewed);
    let result = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the idle connection is cut without a byte");
    let error = result.expect_err("cut");
    assert!(error.to_string().contains("expired"), "{error}");
    assert!(
        started.elapsed() >= renewed - Duration::from_millis(50),
        "cut after {:?}, before the renewed certificate expired",
        started.elapsed()
    );
    assert_eq!(server.cut(Direction::Inbound), 1);
}

#[tokio::test]
async fn an_expired_certificate_is_never_presented_to_a_new_client() {
    let (client, server) = ends();
    server.valid_until(SystemTime::now() - Duration::from_secs(5));
    let Err((client_error, server_error)) = connect(&client, &server).await else {
        panic!("a handshake with an expired certificate");
    };
    assert!(
        server_error.to_string().contains("expired")
            && server_error.to_string().contains("not renewed"),
        "{server_error}"
    );
    assert!(client_error.contains("TLS handshake"), "{client_error}");
    let tls = server.metrics.tls();
    assert_eq!(tls.handshakes(Direction::Inbound, TlsResult::Expired), 1);
    assert_eq!(tls.handshakes(Direction::Inbound, TlsResult::Ok), 0);
    assert_eq!(tls.handshakes(Direction::Inbound, TlsResult::Error), 0);
}
