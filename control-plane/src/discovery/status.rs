//! What each connected proxy has been sent, has ACKed and has NACKed: the
//! data behind `PolicyAdmin.Status` and `leveectl status`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use levee_proto::policy::ServiceKey;
use levee_proto::v1;

/// Every open stream, by stream id.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<BTreeMap<u64, Arc<Mutex<SessionStatus>>>>,
}

/// One stream's identity and per-service progress.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    /// Assigned by the control plane.
    pub stream_id: u64,
    /// The proxy's hello as received.
    pub hello: v1::Hello,
    /// Peer address of the stream, if known.
    pub peer: String,
    /// Unix milliseconds when the stream opened.
    pub connected_at_unix_ms: u64,
    /// Per subscribed service.
    pub subscriptions: BTreeMap<ServiceKey, SubscriptionStatus>,
    /// SPIFFE ID of the stream's workload certificate ("" without identities).
    pub spiffe_id: String,
    /// That certificate's notAfter, Unix seconds (0 without).
    pub cert_not_after_unix: i64,
}

/// Progress of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionStatus {
    /// Last version sent.
    pub sent_version: String,
    /// Nonce of the last update sent.
    pub sent_nonce: String,
    /// Last version ACKed.
    pub acked_version: String,
    /// Last version NACKed since the last ACK.
    pub nacked_version: String,
    /// Reason of that NACK.
    pub nack_reason: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sessions {
    /// Records a new stream and returns its status handle.
    pub fn open(&self, status: SessionStatus) -> Arc<Mutex<SessionStatus>> {
        let id = status.stream_id;
        let handle = Arc::new(Mutex::new(status));
        lock(&self.open).insert(id, handle.clone());
        handle
    }

    /// Forgets a closed stream.
    pub fn close(&self, stream_id: u64) {
        lock(&self.open).remove(&stream_id);
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every open stream's status, by stream id.
    pub fn snapshot(&self) -> Vec<SessionStatus> {
        let handles: Vec<_> = lock(&self.open).values().cloned().collect();
        handles.iter().map(|h| lock(h).clone()).collect()
    }
}

/// Updates one session's status under its lock.
pub fn with_status<R>(handle: &Mutex<SessionStatus>, f: impl FnOnce(&mut SessionStatus) -> R) -> R {
    f(&mut lock(handle))
}

/// Status of one session in its protobuf form.
pub fn to_proto(status: &SessionStatus) -> v1::ProxyStatus {
    v1::ProxyStatus {
        stream_id: status.stream_id.to_string(),
        hello: Some(status.hello.clone()),
        peer: status.peer.clone(),
        connected_at_unix_ms: status.connected_at_unix_ms,
        subscriptions: status
            .subscriptions
            .iter()
            .map(|(key, sub)| v1::SubscriptionStatus {
                service: Some(v1::ServiceRef::from(key)),
                sent_version: sub.sent_version.clone(),
                acked_version: sub.acked_version.clone(),
                nacked_version: sub.nacked_version.clone(),
                nack_reason: sub.nack_reason.clone(),
            })
            .collect(),
        spiffe_id: status.spiffe_id.clone(),
        cert_not_after_unix: status.cert_not_after_unix,
    }
}
