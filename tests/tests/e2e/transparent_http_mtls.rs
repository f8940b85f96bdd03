//! HTTP between two sidecars with workload certificates, on Kubernetes'
//! path (docs/identity.md, "How a mesh ClientHello is recognised"): the
//! callee's endpoint is declared at its app port (pod IP:app port, as an
//! EndpointSlice lists it) with the identity expected there, so the
//! caller's sidecar originates mTLS to the pod's app port, and the
//! callee's iptables redirect it to its proxy's inbound listener. That
//! proxy terminates it and serves HTTP/1.1 and HTTP/2 as on any inbound
//! port: the app sees the verified caller in `x-levee-client-id` (a
//! forged one never), the callee counts the handshakes. An app that
//! speaks its own TLS on a redirected port still gets its own ClientHello.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use levee_tests::harness::{
    Body,
    certs::TestCa,
    full,
    netns::{B_V4, Netns},
    pods::TwoPods,
    yaml,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(10);

const SERVER_ID: &str = "spiffe://levee.test/ns/default/sa/echo";
const CLIENT_ID: &str = "spiffe://levee.test/ns/default/sa/web";
const FORGED_ID: &str = "spiffe://levee.test/ns/default/sa/forged";

/// The app's HTTP port: the endpoint's port too (no Service port).
const APP_PORT: u16 = 8080;
/// The app's own TLS server (no expected identity).
const TLS_PORT: u16 = 8443;
/// The server name the app's own TLS client sends.
const APP_SNI: &str = "api.example";

/// An app (HTTP/1.1 and HTTP/2) in `ns` on loopback `port` that answers
/// with the caller identities it was given (`x-seen-client-id`, comma
/// separated) and the HTTP version (`x-seen-version`).
fn identity_app(ns: &Netns, port: u16) {
    let listener = ns.listen(SocketAddr::from(([127, 0, 0, 1], port)));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
}

async fn answer(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let ids: Vec<&str> = req
        .headers()
        .get_all("x-levee-client-id")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut response = Response::new(full("app"));
    let seen = [
        ("x-seen-client-id", ids.join(",")),
        ("x-seen-version", format!("{:?}", req.version())),
    ];
    for (name, value) in seen {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// An app in `ns` on loopback `port` that speaks its own TLS (a
/// certificate for [`APP_SNI`], ALPN h2): answers each connection with
/// the server name and ALPN its client sent. Returns the certificate its
/// clients trust.
fn own_tls_app(ns: &Netns, port: u16) -> CertificateDer<'static> {
    let certified =
        rcgen::generate_simple_self_signed(vec![APP_SNI.to_owned()]).expect("a certificate");
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = ns.listen(SocketAddr::from(([127, 0, 0, 1], port)));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let said = format!(
                    "sni={} alpn={}\n",
                    conn.server_name().unwrap_or("none"),
                    String::from_utf8_lossy(conn.alpn_protocol().unwrap_or(b"none"))
                );
                let _ = tls.write_all(said.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    cert
}

/// The app's own TLS client in `ns`: to `target` as [`APP_SNI`], trusting
/// `cert`, offering h2. What the server said.
async fn own_tls_call(ns: &Netns, target: SocketAddr, cert: CertificateDer<'static>) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("a root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = ns.connect(target).expect("connect");
    let name = ServerName::try_from(APP_SNI).expect("a name");
    let call = async {
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let mut said = String::new();
        tls.read_to_string(&mut said).await?;
        Ok::<_, std::io::Error>(said)
    };
    tokio::time::timeout(DEADLINE, call)
        .await
        .expect("the app's TLS answered in time")
        .expect("the app's own TLS handshake and answer")
}

/// A header of a curl response (names are lowercased).
fn header<'a>(out: &'a levee_tests::harness::CurlOutput, name: &str) -> &'a str {
    out.headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

#[tokio::test]
async fn http_to_a_meshed_pods_app_port_crosses_inside_mtls_and_the_apps_own_tls_passes() {
    let pods = TwoPods::create();
    let (client, server) = (&pods.client, &pods.server);
    let ca = TestCa::new("levee e2e CA");

    // Server pod: the HTTP app and an app with its own TLS, on loopback.
    identity_app(server, APP_PORT);
    let app_cert = own_tls_app(server, TLS_PORT);
    let mut flags = ca
        .workload(SERVER_ID)
        .write(&pods.path(""), "echo", &ca)
        .flags();
    flags.extend(["--service", "echo", "--app-port", "8080"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _server_sidecar = pods.server_sidecar(&[], &[], &flags).await;

    // Client pod: the echo service's endpoint is the pod's app port,
    // expected to be the server's identity.
    let flags = ca
        .workload(CLIENT_ID)
        .write(&pods.path(""), "web", &ca)
        .flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let endpoints =
        yaml::endpoints_with_identity("echo", APP_PORT, &[pods.server_addr(APP_PORT)], SERVER_ID);
    let _client_sidecar = pods.client_sidecar(&[], &[endpoints], &flags).await;

    let url = format!("http://{}/hello", pods.server_addr(APP_PORT));
    let host = format!("host: echo:{APP_PORT}");
    let forged = format!("x-levee-client-id: {FORGED_ID}");
    for (extra, version) in [
        (None, "HTTP/1.1"),
        (Some("--http2-prior-knowledge"), "HTTP/2.0"),
    ] {
        let mut args = vec!["-H", &host, "-H", &forged];
        args.extend(extra);
        args.push(&url);
        let out = client.curl(&args).await;
        assert_eq!(out.status, 200, "{version}: {out:?}");
        assert_eq!(
            header(&out, "x-seen-client-id"),
            CLIENT_ID,
            "{version}: the app did not see the verified caller alone: {out:?}"
        );
        assert_eq!(header(&out, "x-seen-version"), version, "{out:?}");
    }

    let s = server.admin_metrics().await;
    let inbound_ok = [("direction", "inbound"), ("result", "ok")];
    let handshakes = s.value("levee_tls_handshakes_total", &inbound_ok);
    assert!(
        handshakes >= 2.0,
        "the server's sidecar terminated no mTLS: {}",
        s.text
    );
    let inbound = s.sum(
        "levee_requests_total",
        &[("direction", "inbound"), ("code", "200")],
    );
    assert_eq!(inbound, Some(2.0), "{}", s.text);
    let c = client.admin_metrics().await;
    let outbound_ok = [("direction", "outbound"), ("result", "ok")];
    assert!(
        c.value("levee_tls_handshakes_total", &outbound_ok) >= 2.0,
        "{}",
        c.text
    );

    // The app's own TLS, on a port without an expected identity: its own
    // ClientHello (server name, ALPN h2) reaches it through both sidecars.
    let said = own_tls_call(client, SocketAddr::new(B_V4, TLS_PORT), app_cert).await;
    assert_eq!(said, format!("sni={APP_SNI} alpn=h2\n"));
    let s = server.admin_metrics().await;
    assert_eq!(
        s.value("levee_tls_handshakes_total", &inbound_ok),
        handshakes,
        "the server's sidecar terminated the app's own TLS: {}",
        s.text
    );
}
