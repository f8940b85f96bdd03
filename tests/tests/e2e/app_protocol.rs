//! The app's protocol is kept: an HTTP/2 (prior knowledge) caller reaches
//! an HTTP/1.1-only app through both listeners, the proxy having learned
//! from the app's answer to the HTTP/2 preface that it speaks HTTP/1.x:
//! hyper's HTTP/1 server closes the connection on the preface (learned once
//! HTTP/1.1 worked), Python's `http.server` answers it with HTTP/1 bytes
//! (learned at once). gRPC is never downgraded: it gets a clear error. A
//! port whose `appProtocol` discovery declares is not learned: it is known.

use std::{
    convert::Infallible,
    net::SocketAddr,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use levee_proto::policy::{AppProtocol, Document};
use levee_tests::harness::{
    Body, ControlPlane, Http2Conn, Proxy, eventually, full, mesh::apply, upstream::bind, yaml,
};

/// An app that speaks HTTP/1.x only (hyper's HTTP/1 server: it answers the
/// HTTP/2 preface with an error). Echoes the body; says the version, the
/// `Host` and the URI it saw. Counts the requests it served and the
/// connections it accepted.
async fn http1_only_app() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (listener, addr) = bind().await;
    let served = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (count, accepts) = (served.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepts.fetch_add(1, Ordering::SeqCst);
            let count = count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    answer(req)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, served, accepted)
}

async fn answer(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let version = format!("{:?}", req.version());
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let uri = req.uri().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut response = Response::new(full(body));
    for (name, value) in [
        ("x-seen-version", version),
        ("x-seen-host", host),
        ("x-seen-uri", uri),
    ] {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

fn post(uri: &str, body: &'static str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "text/plain")
        .body(full(body))
        .expect("request")
}

/// Two calls on one HTTP/2 connection to `listener`, addressed to
/// `authority`: the first teaches the proxy, the second uses what it learned.
async fn h2_calls_reach_http1_app(listener: SocketAddr, authority: &str) {
    let mut conn = Http2Conn::connect(listener).await.expect("h2c connect");
    for round in ["first", "second"] {
        let body = if round == "first" {
            "hello over h2, first"
        } else {
            "hello over h2, second"
        };
        let r = conn
            .send(post(
                &format!("http://{authority}/echo?round={round}"),
                body,
            ))
            .await
            .expect("response");
        assert_eq!(r.status, 200, "{round}: {r:?}");
        assert_eq!(r.version, http::Version::HTTP_2, "{round}");
        assert_eq!(r.text(), body, "{round}: the body arrives intact");
        assert_eq!(r.header("x-seen-version"), "HTTP/1.1", "{round}");
        assert_eq!(r.header("x-seen-host"), authority, "{round}");
        assert_eq!(r.header("x-seen-uri"), format!("/echo?round={round}"));
    }
}

#[tokio::test]
async fn h2c_caller_reaches_http1_only_app_outbound_and_inbound() {
    let (app, served, accepted) = http1_only_app().await;
    let proxy = Proxy::builder().fronting(app).start().await;

    h2_calls_reach_http1_app(proxy.outbound(), "web:80").await;
    h2_calls_reach_http1_app(proxy.inbound(), "test-svc:4143").await;
    // Each call reached the app exactly once (the preface is no request).
    assert_eq!(served.load(Ordering::SeqCst), 4);
    // Learned once: one connection closed on the HTTP/2 preface, then one
    // pooled HTTP/1.1 connection for all four calls.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// Python's `http.server` serving `dir` on 127.0.0.1 (an HTTP/1.0 server),
/// killed when the child is dropped.
async fn python_http_server(dir: &std::path::Path) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let script = "import functools, http.server, sys\n\
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
        server = http.server.HTTPServer(('127.0.0.1', 0), handler)\n\
        print(server.server_port, flush=True)\n\
        server.serve_forever()\n";
    let mut child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("http.server says its port in time")
    .expect("reading its port");
    let port: u16 = line.trim().parse().expect("a port number");
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn h2c_caller_reaches_python_http_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let content = "served by http.server over HTTP/1.0\n".repeat(100);
    std::fs::write(dir.path().join("page.txt"), &content).expect("writing the page");
    let (_server, app) = python_http_server(dir.path()).await;
    let proxy = Proxy::builder().fronting(app).start().await;
    for listener in [proxy.outbound(), proxy.inbound(), proxy.outbound()] {
        let mut conn = Http2Conn::connect(listener).await.expect("h2c connect");
        let req = Request::get("http://web:80/page.txt")
            .body(levee_tests::harness::empty())
            .expect("request");
        let r = conn.send(req).await.expect("response");
        assert_eq!(r.status, 200, "{listener}: {r:?}");
        assert!(r.header("server").contains("SimpleHTTP"), "{r:?}");
        assert_eq!(r.text(), content, "{listener}: the body arrives intact");
    }
}

#[tokio::test]
async fn grpc_is_never_downgraded() {
    let (app, served, _) = http1_only_app().await;
    let proxy = Proxy::builder().fronting(app).start().await;
    let mut conn = Http2Conn::connect(proxy.outbound())
        .await
        .expect("h2c connect");
    let call = || {
        Request::post("http://web:80/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(full(&b"\0\0\0\0\0"[..]))
            .expect("request")
    };
    // Before the proxy has learned the app's protocol (the app closed the
    // connection on the preface), then after a plain call taught it.
    let mut messages = Vec::new();
    for round in 0..2 {
        let r = conn.send(call()).await.expect("response");
        assert_eq!(r.status, 200, "gRPC errors are trailers-only: {r:?}");
        assert_eq!(r.header("grpc-status"), "14", "UNAVAILABLE: {r:?}");
        assert_eq!(r.header("x-levee-error"), "upstream-connect", "{r:?}");
        messages.push(r.header("grpc-message").to_owned());
        if round == 0 {
            // A plain HTTP/2 call goes through, translated.
            let r = conn
                .send(post("http://web:80/echo", "plain"))
                .await
                .expect("response");
            assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "plain"));
        }
    }
    assert!(
        messages[0].contains("closed on the HTTP/2 preface"),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("speaks HTTP/1.x only, and gRPC needs HTTP/2"),
        "{messages:?}"
    );
    assert_eq!(served.load(Ordering::SeqCst), 1, "no gRPC call reached it");
}

/// The same app, its port declared `appProtocol: http` in a
/// `ServiceEndpoints` applied to the control plane: the proxy learns the
/// protocol from discovery, so the first HTTP/2 call already goes out as
/// HTTP/1.1 — no connection is spent on the HTTP/2 preface.
#[tokio::test]
async fn a_port_declared_http_by_discovery_gets_http1_from_the_first_call() {
    let (app, served, accepted) = http1_only_app().await;
    let cp = ControlPlane::builder().start().await;
    let mut endpoints = yaml::endpoints("legacy", 8080, &[app]);
    if let Document::Endpoints(e) = &mut endpoints {
        e.spec.app_protocol = Some(AppProtocol::Http);
    }
    apply(&cp, yaml::documents(&[endpoints])).await;
    let proxy = Proxy::builder().control_plane(&cp.grpc_url()).start().await;
    let mut conn = Http2Conn::connect(proxy.outbound())
        .await
        .expect("h2c connect");
    // The service is subscribed on first use; a loaded machine may answer
    // later than the first call waits (that call then finds no endpoint:
    // `legacy` has no DNS name). Calls until the answer is in.
    let prime = conn.clone();
    eventually(Duration::from_secs(10), "the proxy knows legacy", || {
        let mut conn = prime.clone();
        async move {
            let r = conn
                .send(post("http://legacy:8080/echo", "prime"))
                .await
                .map_err(|e| e.to_string())?;
            match r.status.as_u16() {
                200 => Ok(()),
                503 if r.header("x-levee-error") == "no-endpoints" => Err(format!("{r:?}")),
                _ => panic!("unexpected answer: {r:?}"),
            }
        }
    })
    .await;
    for round in ["first", "second"] {
        let r = conn
            .send(post("http://legacy:8080/echo", round))
            .await
            .expect("response");
        assert_eq!(r.status, 200, "{round}: {r:?}");
        assert_eq!(r.version, http::Version::HTTP_2, "{round}");
        assert_eq!(r.text(), round, "{round}");
        assert_eq!(r.header("x-seen-version"), "HTTP/1.1", "{round}");
        assert_eq!(r.header("x-seen-host"), "legacy:8080", "{round}");
    }
    // The priming call that succeeded, then the two rounds.
    assert_eq!(served.load(Ordering::SeqCst), 3);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one HTTP/1.1 connection, none closed on an HTTP/2 preface"
    );
}
