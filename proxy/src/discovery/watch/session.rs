//! One stream to the control plane: connect (plaintext, or mTLS with the
//! current workload certificate), say hello with every subscription, then
//! serve updates, address answers, subscription changes and the resync
//! hold until the stream fails or the proxy shuts down.

use std::collections::HashSet;

use levee_proto::policy::ServiceKey;
use levee_proto::v1 as pb;
use levee_proto::v1::discovery_client::DiscoveryClient;
use levee_proto::v1::watch_request::Kind as Request;
use levee_proto::v1::watch_response::Kind as Response;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::hold::expiry;
use super::{End, Watcher, request};
use crate::discovery::{MAX_REQUEST_SIZE, MAX_UPDATE_SIZE, PROXY_VERSION};
use crate::subscriptions::Change;

/// Connects to the control plane: in plaintext, or over TLS presenting
/// the current workload certificate (waiting for the first one).
async fn connect(
    base: Endpoint,
    tls: Option<crate::identity::ControlPlaneTls>,
    certified: Option<crate::identity::CertifiedWatch>,
) -> Result<tonic::transport::Channel, String> {
    let endpoint = match tls {
        None => base,
        Some(tls) => {
            let current = match certified {
                Some(mut rx) => rx
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| "the identity task stopped".to_owned())?
                    .clone(),
                None => None,
            };
            let roots = current
                .as_ref()
                .map(|c| c.roots.clone())
                .unwrap_or_default();
            tls.apply(base, current.as_deref(), &roots)?
        }
    };
    endpoint
        .connect()
        .await
        .map_err(|error| format!("connecting: {}", crate::errors::error_chain(&error)))
}

impl Watcher {
    /// One stream: connect, hello, then updates until it fails or shutdown.
    pub(super) async fn session(
        &mut self,
        changes: &mut mpsc::UnboundedReceiver<Change>,
        shutdown: &CancellationToken,
    ) -> End {
        let Some((_, endpoint)) = self.endpoints.get(self.current).cloned() else {
            return End::Failed("no control-plane URL".into());
        };
        let connecting = connect(
            endpoint,
            self.config.tls.clone(),
            self.config.certified.clone(),
        );
        tokio::pin!(connecting);
        let channel = loop {
            tokio::select! {
                () = shutdown.cancelled() => return End::Shutdown,
                Some(change) = changes.recv() => self.offline_changes(change, changes),
                connected = &mut connecting => match connected {
                    Ok(channel) => break channel,
                    Err(error) => return End::Failed(error),
                },
            }
        };
        // Changes while no stream was up: the hello carries their result.
        self.unsubscribed.clear();
        if let Ok(change) = changes.try_recv() {
            self.offline_changes(change, changes);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(self.hello());
        // Addresses are not part of hello: subscribed right after it.
        let addresses = self.shared.subscriptions.addresses.addresses();
        if !addresses.is_empty() {
            let addresses = addresses.iter().map(ToString::to_string).collect();
            let _ = tx.send(request(Request::Subscribe(pb::Subscribe {
                services: Vec::new(),
                addresses,
            })));
        }
        let requests = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|request| (request, rx))
        });
        let mut client = DiscoveryClient::new(channel)
            .max_decoding_message_size(MAX_UPDATE_SIZE)
            .max_encoding_message_size(MAX_REQUEST_SIZE);
        let mut responses = tokio::select! {
            () = shutdown.cancelled() => return End::Shutdown,
            answered = client.watch(requests) => match answered {
                Ok(response) => response.into_inner(),
                Err(status) => return End::Failed(format!("watch refused: {status}")),
            },
        };
        tracing::info!(url = %self.url(), subscriptions = self.subscribed.len(), "control plane stream up");
        self.shared.metrics.set_control_plane_connected(true);
        self.shared.subscriptions.set_connected(true);
        let now = Instant::now();
        self.stream_up = Some(now);
        self.hold_until = (!self.held.is_empty()).then_some(now + self.config.resync_hold);
        // The initial subscriptions not answered yet: ready (and the source
        // switches to the control plane) once this is empty.
        let mut pending: HashSet<ServiceKey> = self.subscribed.iter().cloned().collect();
        self.after_update(&pending, false).await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return End::Shutdown,
                () = expiry(self.hold_until) => self.release_held(),
                Some(change) = changes.recv() => {
                    let changed = self.on_changes(change, changes, Some(&tx), &mut pending);
                    self.after_update(&pending, changed).await;
                }
                message = responses.message() => match message {
                    Ok(Some(pb::WatchResponse { kind: Some(Response::Update(update)) })) => {
                        self.failures.reset();
                        let changed = self.on_update(update, &tx, &mut pending);
                        self.after_update(&pending, changed).await;
                    }
                    Ok(Some(pb::WatchResponse { kind: Some(Response::Address(answer)) })) => {
                        self.failures.reset();
                        self.on_address(&answer);
                    }
                    Ok(Some(pb::WatchResponse { kind: None })) => {}
                    Ok(None) => return End::Failed("the control plane ended the stream".into()),
                    Err(status) => return End::Failed(format!("stream failed: {status}")),
                },
            }
        }
    }

    fn hello(&self) -> pb::WatchRequest {
        let id = &self.config.identity;
        request(Request::Hello(pb::Hello {
            service: id.service.clone(),
            namespace: id.namespace.clone(),
            service_port: u32::from(id.service_port),
            address: id.address.clone(),
            inbound_port: u32::from(id.inbound_port),
            proxy_version: PROXY_VERSION.to_owned(),
            subscriptions: self.subscribed.iter().map(pb::ServiceRef::from).collect(),
        }))
    }
}
