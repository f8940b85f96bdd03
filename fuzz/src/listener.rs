//! A real proxy in this process: `levee_proxy::run_with` with its outbound,
//! inbound and admin listeners on 127.0.0.1 (port 0), a policy file with
//! static endpoints, and a loopback upstream that answers every request.
//! [`exchange`] sends raw bytes to one listener, half-closes, and reads
//! until the proxy closes; it panics (a finding) when the proxy neither
//! answers nor closes within [`DEADLINE`], or answers with something that
//! is not an HTTP/1 response.
//!
//! Requests name arbitrary hosts, and the proxy connects where they point
//! (IP literals) or asks DNS. So the targets refuse to run outside a network
//! namespace of their own whose only interface is `lo` (`fuzz/run.sh` uses
//! `unshare -n`): no byte can leave the machine.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use levee_proxy::{BoundAddrs, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// How long the proxy may take to answer or close after the client's half-close.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The HTTP/2 connection preface: after it, the answer is HTTP/2 frames.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most bytes read back (a response larger than this is not read to its end).
const READ_CAP: usize = 1 << 20;

/// The listener a target feeds.
#[derive(Clone, Copy, Debug)]
pub enum Listener {
    Outbound,
    Inbound,
}

struct Running {
    runtime: Runtime,
    addrs: BoundAddrs,
    upstream: SocketAddr,
}

/// Sends `bytes` to `listener` and checks the proxy's reaction (module docs).
pub fn exchange(listener: Listener, bytes: &[u8]) {
    let running = running();
    let addr = match listener {
        Listener::Outbound => running.addrs.outbound,
        Listener::Inbound => running.addrs.inbound,
    };
    let answer = running
        .runtime
        .block_on(async { tokio::time::timeout(DEADLINE, send(addr, bytes)).await });
    let answer = match answer {
        Ok(answer) => answer,
        Err(_) => panic!(
            "the {listener:?} listener neither answered nor closed within {DEADLINE:?} \
             (upstream {})",
            running.upstream
        ),
    };
    // The listeners also take HTTP/2 with prior knowledge (the preface).
    if !answer.is_empty() && !bytes.starts_with(H2_PREFACE) {
        assert!(
            answer.starts_with(b"HTTP/1."),
            "the {listener:?} listener answered with something else than HTTP/1: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
}

/// Connects, writes, half-closes, reads to the end. Errors (the proxy
/// resetting the connection) end the exchange: closing is allowed.
async fn send(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut answer = Vec::new();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        panic!("the proxy's listener at {addr} refused a connection");
    };
    if stream.write_all(bytes).await.is_err() || stream.shutdown().await.is_err() {
        return answer;
    }
    let mut buf = [0u8; 16 * 1024];
    while answer.len() < READ_CAP {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    answer
}

/// Starts the proxy (once per process; [`exchange`] would otherwise start it
/// on the first input). Exits when not in a private network namespace.
pub fn start_proxy() {
    running();
}

fn running() -> &'static Running {
    static RUNNING: OnceLock<Running> = OnceLock::new();
    RUNNING.get_or_init(start)
}

fn start() -> Running {
    refuse_outside_a_private_network();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let upstream = runtime.block_on(upstream());
    let dir = std::env::temp_dir().join(format!("levee-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, policy_yaml(upstream)).expect("writing the policy file");
    let port = upstream.port().to_string();
    let config = ProxyConfig::from_args([
        "--outbound-addr=127.0.0.1:0",
        "--inbound-addr=127.0.0.1:0",
        "--admin-addr=127.0.0.1:0",
        "--service=payments",
        "--service-port=8080",
        "--app-port",
        &port,
        "--policy-file",
        policy.to_str().expect("a UTF-8 temp path"),
        "--header-read-timeout=2s",
        "--connect-timeout=200ms",
        "--shutdown-grace=1s",
    ])
    .expect("proxy flags");
    let (tx, rx) = tokio::sync::oneshot::channel();
    runtime.spawn(async move {
        if let Err(e) = levee_proxy::run_with(config, CancellationToken::new(), Some(tx)).await {
            eprintln!("levee-fuzz: the proxy stopped: {e}");
            std::process::exit(2);
        }
    });
    let addrs = runtime.block_on(rx).expect("the proxy's bound addresses");
    Running {
        runtime,
        addrs,
        upstream,
    }
}

/// A policy for `payments` (retries, timeouts, limits) and its endpoints.
fn policy_yaml(upstream: SocketAddr) -> String {
    format!(
        "apiVersion: levee.dev/v1alpha1
kind: ResiliencePolicy
metadata: {{name: payments}}
spec:
  target: {{service: payments, port: 8080}}
  outbound:
    timeouts: {{request: 2s, perTry: 500ms}}
    retry: {{maxRetries: 1, on: [connect-failure, reset, gateway-error]}}
    rateLimit: {{requestsPerSecond: 100000, burst: 100000}}
    routes:
      - name: create
        match: {{pathPrefix: /payments, methods: [POST]}}
        retry: {{maxRetries: 0}}
  inbound:
    timeouts: {{request: 2s}}
---
apiVersion: levee.dev/v1alpha1
kind: ServiceEndpoints
metadata: {{name: payments}}
spec: {{service: payments, port: 8080, addresses: [\"{upstream}\"]}}
"
    )
}

/// An upstream that reads a request head (or gives up after a second) and
/// answers `200 ok`, closing the connection.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the upstream");
    let addr = listener.local_addr().expect("the upstream's address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let head = async {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 1 << 16 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), head).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Exits unless this process's network namespace has no interface but `lo`.
fn refuse_outside_a_private_network() {
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    if interfaces.is_empty() || interfaces.iter().any(|i| *i != "lo") {
        eprintln!(
            "levee-fuzz: the listener targets forward to the hosts their inputs name; \
             run them in a network namespace with only `lo` (fuzz/run.sh does: \
             unshare -n). Interfaces here: {interfaces:?}"
        );
        std::process::exit(2);
    }
}
