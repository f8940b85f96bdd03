//! `Discovery.Watch`: the stream every proxy keeps open to learn the policy
//! and endpoints of the services it calls (protocol in docs/control-plane.md).
//!
//! Layout:
//! - `registry`: per-service snapshots on watch channels (coalescing lives here).
//! - `session`: one stream's lifecycle (hello, subscriptions, ACK/NACK, cleanup).
//! - `status`: what each stream was sent and acknowledged, for `Status`.
//! - `limits`: streams per peer IP, subscriptions per stream.

pub mod limits;
pub mod registry;
pub mod session;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use levee_proto::v1::{self, discovery_server::Discovery};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use limits::PeerStreams;
use session::SessionContext;

/// Updates buffered per stream before the session waits for the proxy to
/// read; while it waits, newer snapshots replace older ones (coalescing).
const STREAM_BUFFER: usize = 4;

/// One message for a proxy, boxed: the channel's slots then cost a pointer
/// each, which matters with ten thousand open streams.
pub type Outgoing = Box<Result<v1::WatchResponse, Status>>;

/// The response stream of one Watch call.
#[derive(Debug)]
pub struct UpdateStream(mpsc::Receiver<Outgoing>);

impl Stream for UpdateStream {
    type Item = Result<v1::WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|next| next.map(|boxed| *boxed))
    }
}

/// The tonic service.
#[derive(Debug)]
pub struct DiscoveryService {
    ctx: SessionContext,
    next_stream_id: AtomicU64,
    peers: Arc<PeerStreams>,
}

impl DiscoveryService {
    /// A service sharing `ctx` with the rest of the control plane.
    pub fn new(ctx: SessionContext) -> Self {
        DiscoveryService {
            ctx,
            next_stream_id: AtomicU64::new(1),
            peers: Arc::default(),
        }
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type WatchStream = UpdateStream;

    async fn watch(
        &self,
        request: Request<Streaming<v1::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let peer = request.remote_addr();
        // With identities on, the stream is the workload of its certificate.
        let identity = if self.ctx.require_identity {
            match crate::identity::peer::from_certs(request.peer_certs()) {
                Ok(identity) => Some(identity),
                Err(refusal) => {
                    self.ctx.metrics.watch_refused(refusal.reason);
                    tracing::warn!(?peer, reason = refusal.reason, message = %refusal.message, "refused a Discovery stream");
                    return Err(Status::unauthenticated(refusal.message));
                }
            }
        } else {
            None
        };
        let slot = match peer {
            Some(peer) => Some(self.peers.admit(
                peer.ip(),
                self.ctx.limits.streams_per_peer,
                &self.ctx.metrics,
            )?),
            None => None,
        };
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            session::run(ctx, stream_id, peer, identity, inbound, tx).await;
            // The stream counts against its peer until the session ends.
            drop(slot);
        });
        Ok(Response::new(UpdateStream(rx)))
    }
}
