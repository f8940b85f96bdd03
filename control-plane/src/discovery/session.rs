//! One `Discovery.Watch` stream: read the hello, register the proxy's
//! endpoint, forward every subscribed service's snapshots as they change,
//! record ACKs and NACKs, and clean up when the stream ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use levee_proto::policy::{ServiceKey, check_service_ref};
use levee_proto::v1::{self, watch_request::Kind};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;
use tonic::{Status, Streaming};

use super::limits::{WatchLimits, check_subscriptions, note_inbound_error};
use super::registry::{Registration, Registry, ServiceSnapshot};
use super::status::{SessionStatus, Sessions, SubscriptionStatus, with_status};
use crate::identity::peer::{PeerIdentity, check_hello};
use crate::metrics::{Metrics, UpdateLabels};

/// How long a new stream may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

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
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(v1::WatchRequest {
            kind: Some(Kind::Hello(hello)),
        }))) => hello,
        Ok(Ok(None)) => return,
        Ok(Err(status)) => {
            note_inbound_error(&status, &ctx.metrics);
            let _ = tx.send(Box::new(Err(status))).await;
            return;
        }
        Ok(Ok(Some(_))) => {
            let refusal = Status::invalid_argument("the first message must be hello");
            let _ = tx.send(Box::new(Err(refusal))).await;
            return;
        }
        Err(_) => {
            let refusal = Status::deadline_exceeded("no hello within 30s");
            let _ = tx.send(Box::new(Err(refusal))).await;
            return;
        }
    };
    if let Err(errors) = levee_proto::policy::check_hello(&hello) {
        let _ = tx
            .send(Box::new(Err(Status::invalid_argument(errors.to_string()))))
            .await;
        return;
    }
    if let Some(identity) = &identity
        && let Err(refusal) = check_hello(&hello, identity, peer)
    {
        ctx.metrics.watch_refused(refusal.reason);
        tracing::warn!(?peer, spiffe_id = %identity.spiffe_id, reason = refusal.reason, message = %refusal.message, "refused a hello");
        let _ = tx
            .send(Box::new(Err(Status::permission_denied(refusal.message))))
            .await;
        return;
    }
    let registration = match registration(&hello, peer) {
        Ok(r) if ctx.register_endpoints => r,
        Ok(_) => None,
        Err(status) => {
            let _ = tx.send(Box::new(Err(status))).await;
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

fn handle(
    ctx: &SessionContext,
    status: &Mutex<SessionStatus>,
    watched: &mut Watched,
    request: v1::WatchRequest,
) -> Result<(), Status> {
    match request.kind {
        Some(Kind::Subscribe(s)) => {
            subscribe(ctx, status, watched, "subscribe.services", &s.services)?;
            subscribe_addresses(ctx, watched, &s.addresses)
        }
        Some(Kind::Unsubscribe(u)) => {
            for (i, service) in u.services.iter().enumerate() {
                let key = service_key(&format!("unsubscribe.services[{i}]"), service)?;
                watched.services.remove(&key);
                with_status(status, |s| s.subscriptions.remove(&key));
            }
            for (i, text) in u.addresses.iter().enumerate() {
                let addr = address(&format!("unsubscribe.addresses[{i}]"), text)?;
                watched.addresses.remove(&addr);
            }
            Ok(())
        }
        Some(Kind::Ack(ack)) => {
            let key = service_key("ack.service", &ack.service.unwrap_or_default())?;
            ctx.metrics
                .updates
                .get_or_create(&UpdateLabels { result: "ack" })
                .inc();
            with_status(status, |s| {
                if let Some(sub) = s.subscriptions.get_mut(&key) {
                    sub.acked_version = ack.version;
                    sub.nacked_version.clear();
                    sub.nack_reason.clear();
                }
            });
            Ok(())
        }
        Some(Kind::Nack(nack)) => {
            let key = service_key("nack.service", &nack.service.unwrap_or_default())?;
            ctx.metrics
                .updates
                .get_or_create(&UpdateLabels { result: "nack" })
                .inc();
            tracing::warn!(service = %key, version = %nack.version, reason = %nack.reason, "proxy NACKed an update");
            with_status(status, |s| {
                if let Some(sub) = s.subscriptions.get_mut(&key) {
                    sub.nacked_version = nack.version;
                    sub.nack_reason = nack.reason;
                }
            });
            Ok(())
        }
        Some(Kind::Hello(_)) => Err(Status::invalid_argument(
            "hello may be sent only once per stream",
        )),
        None => Err(Status::invalid_argument("empty WatchRequest")),
    }
}

fn subscribe(
    ctx: &SessionContext,
    status: &Mutex<SessionStatus>,
    watched: &mut Watched,
    path: &str,
    services: &[v1::ServiceRef],
) -> Result<(), Status> {
    for (i, service) in services.iter().enumerate() {
        let key = service_key(&format!("{path}[{i}]"), service)?;
        if watched.services.contains_key(&key) {
            continue;
        }
        check_subscriptions(
            watched.len(),
            ctx.limits.subscriptions_per_stream,
            &ctx.metrics,
        )?;
        let rx = ctx.registry.subscribe(&key);
        with_status(status, |s| {
            s.subscriptions
                .entry(key.clone())
                .or_insert_with(SubscriptionStatus::default);
        });
        watched.services.insert(key, WatchStream::new(rx));
    }
    Ok(())
}

/// Watches the owners of `addresses` (answered at once, then on change);
/// they count against the same per-stream limit as services.
fn subscribe_addresses(
    ctx: &SessionContext,
    watched: &mut Watched,
    addresses: &[String],
) -> Result<(), Status> {
    for (i, text) in addresses.iter().enumerate() {
        let addr = address(&format!("subscribe.addresses[{i}]"), text)?;
        if watched.addresses.contains_key(&addr) {
            continue;
        }
        check_subscriptions(
            watched.len(),
            ctx.limits.subscriptions_per_stream,
            &ctx.metrics,
        )?;
        let rx = ctx.registry.subscribe_address(addr);
        watched.addresses.insert(addr, WatchStream::new(rx));
    }
    Ok(())
}

/// A wire destination address found at `path` (`ip:port`, port not 0).
fn address(path: &str, text: &str) -> Result<SocketAddr, Status> {
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        _ => Err(Status::invalid_argument(format!(
            "{path}: {text:?} is not an ip:port address"
        ))),
    }
}

/// A wire service reference found at `path` as a key (names checked; an
/// empty namespace means "default").
pub fn service_key(path: &str, service: &v1::ServiceRef) -> Result<ServiceKey, Status> {
    check_service_ref(path, service).map_err(|errors| Status::invalid_argument(errors.to_string()))
}

/// The endpoint a hello registers, if any.
fn registration(
    hello: &v1::Hello,
    peer: Option<SocketAddr>,
) -> Result<Option<Registration>, Status> {
    if hello.service.is_empty() || hello.inbound_port == 0 {
        return Ok(None);
    }
    let inbound_port = u16::try_from(hello.inbound_port).map_err(|_| {
        Status::invalid_argument(format!(
            "hello.inbound_port {} is outside 1-65535",
            hello.inbound_port
        ))
    })?;
    let port = match hello.service_port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| {
            Status::invalid_argument(format!("hello.service_port {p} is outside 1-65535"))
        })?),
    };
    let ip: IpAddr = if hello.address.is_empty() {
        peer.map(|p| p.ip()).ok_or_else(|| {
            Status::invalid_argument("hello.address is empty and the peer address is unknown")
        })?
    } else {
        hello.address.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "hello.address {:?} is not an IP address",
                hello.address
            ))
        })?
    };
    let namespace = if hello.namespace.is_empty() {
        levee_proto::policy::DEFAULT_NAMESPACE
    } else {
        &hello.namespace
    };
    Ok(Some(Registration {
        service: hello.service.clone(),
        namespace: namespace.to_owned(),
        port,
        addr: SocketAddr::new(ip, inbound_port),
    }))
}

/// The `ServiceUpdate` a proxy is sent for `snapshot`.
pub fn to_update(snapshot: &ServiceSnapshot, nonce: u64) -> v1::ServiceUpdate {
    v1::ServiceUpdate {
        service: Some(v1::ServiceRef::from(&snapshot.key)),
        version: snapshot.version.clone(),
        nonce: nonce.to_string(),
        policy_revision: snapshot.policy_revision,
        policy: snapshot.policy.as_deref().map(v1::ResiliencePolicy::from),
        endpoints: snapshot
            .endpoints
            .iter()
            .map(SocketAddr::to_string)
            .collect(),
        app_protocol: snapshot
            .app_protocol
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
        virtual_ips: snapshot
            .virtual_ips
            .iter()
            .map(ToString::to_string)
            .collect(),
        // Expected endpoint identities: static documents' `spec.identity`
        // (registered proxies' and Kubernetes pods' identities: not yet).
        identities: snapshot
            .identities
            .iter()
            .map(|(addr, id)| (addr.to_string(), id.as_str().to_owned()))
            .collect(),
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
