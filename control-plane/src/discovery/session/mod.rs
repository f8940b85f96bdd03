//! One `Discovery.Watch` stream: read the hello, register the proxy's
//! endpoint, forward every subscribed service's snapshots as they change,
//! record ACKs and NACKs, and clean up when the stream ends.
//!
//! Layout: this file owns the stream's lifecycle (open, the main loop,
//! cleanup); `hello` reads and checks the first message and says what it
//! registers; `requests` handles what the proxy sends after it
//! (subscriptions, ACK/NACK); `update` turns a snapshot into the wire
//! `ServiceUpdate`.

mod hello;
mod requests;
mod update;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use levee_proto::policy::ServiceKey;
use levee_proto::v1;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;
use tonic::{Status, Streaming};

use super::limits::{WatchLimits, note_inbound_error};
use super::registry::{Registry, ServiceSnapshot};
use super::status::{SessionStatus, Sessions, with_status};
use crate::identity::peer::PeerIdentity;
use crate::metrics::Metrics;
pub use requests::service_key;
use requests::{handle, subscribe};
pub use update::to_update;

/// Shared parts every session uses.
#[derive(Clone, Debug)]
pub struct SessionContext {
    /// Policies, endpoints and per-service channels.
    pub registry: Arc<Registry>,
    /// Open streams' status.
    pub sessions: Arc<Sessions>,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// How long a closed stream's endpoint stays registered.
    pub grace: Duration,
    /// Flips to true when the server stops: every stream then ends.
    pub shutdown: watch::Receiver<bool>,
    /// Subscriptions per stream and streams per peer.
    pub limits: WatchLimits,
    /// Whether a proxy's hello registers its inbound address as an endpoint
    /// of its service (redb mode). Kubernetes mode: no, endpoints come only
    /// from EndpointSlices (the pod is already there, at its targetPort).
    pub register_endpoints: bool,

    /// Streams must present a workload certificate, and their hello may
    /// claim only that identity and the stream's own address.
    pub require_identity: bool,
}

type Outbound = mpsc::Sender<super::Outgoing>;
type Updates = StreamMap<ServiceKey, WatchStream<Arc<ServiceSnapshot>>>;
type Owners = StreamMap<SocketAddr, WatchStream<Option<ServiceKey>>>;

/// What one stream watches: services, and destination addresses (whose
/// answer is the service port owning them).
#[derive(Default)]
struct Watched {
    services: Updates,
    addresses: Owners,
}

impl Watched {
    /// Subscriptions of both kinds, for the per-stream limit.
    fn len(&self) -> usize {
        self.services.len() + self.addresses.len()
    }
}

/// Runs one stream to its end.
pub async fn run(
    ctx: SessionContext,
    stream_id: u64,
    peer: Option<SocketAddr>,
    identity: Option<PeerIdentity>,
    mut inbound: Streaming<v1::WatchRequest>,
    tx: Outbound,
) {
    let Some(hello) = hello::read(&ctx, &mut inbound, &tx).await else {
        return;
    };
    let registration = match hello::admit(&ctx, &hello, peer, identity.as_ref()) {
        Ok(registration) => registration,
        Err(refusal) => {
            let _ = tx.send(Box::new(Err(refusal))).await;
            return;
        }
    };
    let mut watched = Watched::default();
    let status = ctx.sessions.open(SessionStatus {
        stream_id,
        // Subscriptions are tracked per service below; keep only the identity.
        hello: v1::Hello {
            subscriptions: Vec::new(),
            ..hello.clone()
        },
        peer: peer.map(|p| p.to_string()).unwrap_or_default(),
        connected_at_unix_ms: unix_ms(),
        subscriptions: Default::default(),
        spiffe_id: identity
            .as_ref()
            .map(|i| i.spiffe_id.to_string())
            .unwrap_or_default(),
        cert_not_after_unix: identity.as_ref().map_or(0, |i| i.not_after_unix),
    });
    ctx.metrics.connected_proxies.inc();
    tracing::info!(stream_id, service = %hello.service, namespace = %hello.namespace, ?peer, "proxy connected");
    if let Some(r) = &registration {
        ctx.registry.register(stream_id, r.clone());
    }
    let result = match subscribe(
        &ctx,
        &status,
        &mut watched,
        "hello.subscriptions",
        &hello.subscriptions,
    ) {
        Ok(()) => serve(&ctx, &status, &mut watched, &mut inbound, &tx).await,
        Err(e) => Err(e),
    };
    if let Err(status) = result {
        tracing::debug!(stream_id, %status, "watch stream ended with an error");
        let _ = tx.send(Box::new(Err(status))).await;
    }
    drop(watched);
    ctx.sessions.close(stream_id);
    ctx.metrics.connected_proxies.dec();
    tracing::info!(stream_id, "proxy disconnected");
    if registration.is_some() {
        let registry = ctx.registry.clone();
        let grace = ctx.grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            registry.deregister(stream_id);
        });
    }
}

/// The main loop: requests in, updates out, until either side ends.
async fn serve(
    ctx: &SessionContext,
    status: &Mutex<SessionStatus>,
    watched: &mut Watched,
    inbound: &mut Streaming<v1::WatchRequest>,
    tx: &Outbound,
) -> Result<(), Status> {
    let mut shutdown = ctx.shutdown.clone();
    let mut nonce: u64 = 0;
    loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(request)) => handle(ctx, status, watched, request)?,
                // The proxy closed its side.
                Ok(None) => return Ok(()),
                // A message over the size limit, or a broken connection.
                Err(status) => {
                    note_inbound_error(&status, &ctx.metrics);
                    return Err(status);
                }
            },
            Some((addr, owner)) = watched.addresses.next(), if !watched.addresses.is_empty() => {
                let answer = v1::AddressUpdate {
                    address: addr.to_string(),
                    service: owner.as_ref().map(v1::ServiceRef::from),
                };
                let response = v1::WatchResponse { kind: Some(v1::watch_response::Kind::Address(answer)) };
                if tx.send(Box::new(Ok(response))).await.is_err() {
                    return Ok(());
                }
                ctx.metrics.address_answers.inc();
            }
            Some((key, snapshot)) = watched.services.next(), if !watched.services.is_empty() => {
                nonce += 1;
                let update = to_update(&snapshot, nonce);
                let first = with_status(status, |s| {
                    let sub = s.subscriptions.entry(key).or_default();
                    let first = sub.sent_nonce.is_empty();
                    sub.sent_version = update.version.clone();
                    sub.sent_nonce = update.nonce.clone();
                    first
                });
                let response = v1::WatchResponse { kind: Some(v1::watch_response::Kind::Update(update)) };
                if tx.send(Box::new(Ok(response))).await.is_err() {
                    return Ok(());
                }
                ctx.metrics.updates_sent.inc();
                // The first update of a subscription carries whatever state
                // existed before it: only changes count as pushes.
                if !first {
                    ctx.metrics.push_latency.observe(snapshot.changed_at.elapsed().as_secs_f64());
                }
            }
            () = tx.closed() => return Ok(()),
            () = stopped(&mut shutdown) => {
                return Err(Status::unavailable("control plane shutting down"));
            }
        }
    }
}

/// Resolves once the server is stopping (the guard `wait_for` returns is not `Send`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
