//! Leader election on a `coordination.k8s.io/v1` Lease
//! (`levee-system/levee-control-plane`, `leaseDurationSeconds: 15`, holder =
//! the pod name), so only one replica writes policy status. Reads need no
//! leader: every replica serves Discovery from its own watches.
//!
//! [`Elector`] is a pure state machine (no I/O, the clock passed in); [`run`]
//! drives it with kube calls every [`RETRY`]:
//! - not the holder: GET the Lease. Absent (404): POST one naming us. Held by
//!   another: wait until its record (holder, renewTime, resourceVersion) has
//!   not changed for `leaseDurationSeconds` *as measured on our own clock*
//!   (as client-go does: no trust in the other replica's clock), then PUT a
//!   takeover (new holder, acquireTime, renewTime, `leaseTransitions + 1`)
//!   carrying the resourceVersion we read;
//! - the holder: PUT a renewal with the resourceVersion of our last write.
//!
//! Any 409 (`Conflict`: someone wrote since we read; `AlreadyExists`: a
//! create raced another) means another replica won: forget what we knew,
//! and GET again next round. We consider ourselves leader until
//! `leaseDurationSeconds - RENEW_MARGIN` after our last successful write, so
//! a replica cut off from the API server stops writing status before another
//! can take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Namespace of the Lease.
pub const LEASE_NAMESPACE: &str = "levee-system";
/// Name of the Lease.
pub const LEASE_NAME: &str = "levee-control-plane";
/// `leaseDurationSeconds` we write.
pub const LEASE_SECONDS: i32 = 15;
/// How often the lease is read or renewed.
pub const RETRY: Duration = Duration::from_secs(2);
/// Leadership ends this long before the lease could expire for others.
pub const RENEW_MARGIN: Duration = Duration::from_secs(3);

/// What to send next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// GET the Lease.
    Get,
    /// POST this Lease (none exists).
    Create(Lease),
    /// PUT this Lease (renewal or takeover; carries the resourceVersion read).
    Replace(Lease),
    /// Nothing this round: someone else holds a live lease.
    Wait,
}

/// What the API server answered.
#[derive(Clone, Debug)]
pub enum Answer {
    /// 200/201 with the Lease.
    Lease(Box<Lease>),
    /// 404.
    NotFound,
    /// 409 (Conflict or AlreadyExists).
    Conflict,
    /// Anything else (network, 5xx, 403): try again next round.
    Failed(String),
}

/// The election state of one replica.
#[derive(Clone, Debug)]
pub struct Elector {
    identity: String,
    /// The Lease as last read or written, and when (our clock) its record
    /// last changed. `None`: unknown, GET first.
    observed: Option<(Lease, Instant)>,
    /// The last GET said there is no Lease.
    absent: bool,
    /// When our last write as holder succeeded.
    renewed: Option<Instant>,
}

impl Elector {
    /// A replica named `identity` (its pod name) that knows nothing yet.
    pub fn new(identity: impl Into<String>) -> Self {
        Elector {
            identity: identity.into(),
            observed: None,
            absent: false,
            renewed: None,
        }
    }

    /// Whether we may write status now.
    pub fn is_leader(&self, now: Instant) -> bool {
        let lease = Duration::from_secs(u64::from(LEASE_SECONDS.unsigned_abs()));
        self.holds()
            && self
                .renewed
                .is_some_and(|at| now < at + lease.saturating_sub(RENEW_MARGIN))
    }

    fn holds(&self) -> bool {
        self.observed
            .as_ref()
            .and_then(|(l, _)| l.spec.as_ref()?.holder_identity.as_deref())
            == Some(self.identity.as_str())
    }

    /// Whether this round starts with a GET (we are not the holder).
    pub fn needs_read(&self) -> bool {
        !self.holds()
    }

    /// The write this round, given what we know (after a GET if [`Self::needs_read`]).
    pub fn next(&self, now: Instant, wall: Timestamp) -> Step {
        let Some((lease, seen)) = &self.observed else {
            return if self.absent {
                Step::Create(self.fresh(wall))
            } else {
                Step::Get
            };
        };
        let mut next = lease.clone();
        next.metadata.managed_fields = None;
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        let stamp = Some(MicroTime(wall));
        if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
            spec.renew_time = stamp;
            return Step::Replace(next);
        }
        let seconds = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS);
        let duration = Duration::from_secs(u64::from(seconds.unsigned_abs()));
        let vacant = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !vacant && now < *seen + duration {
            return Step::Wait;
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        spec.acquire_time = stamp.clone();
        spec.renew_time = stamp;
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        Step::Replace(next)
    }

    fn fresh(&self, wall: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.to_owned()),
                namespace: Some(LEASE_NAMESPACE.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                acquire_time: Some(MicroTime(wall)),
                renew_time: Some(MicroTime(wall)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Records the answer to a GET.
    pub fn on_read(&mut self, answer: Answer, now: Instant) {
        match answer {
            Answer::Lease(lease) => {
                self.absent = false;
                let same = self.observed.as_ref().is_some_and(|(old, _)| {
                    old.metadata.resource_version == lease.metadata.resource_version
                });
                if !same {
                    self.observed = Some((*lease, now));
                }
            }
            Answer::NotFound => {
                self.observed = None;
                self.absent = true;
            }
            Answer::Conflict | Answer::Failed(_) => {}
        }
    }

    /// Records the answer to a create or replace.
    pub fn on_write(&mut self, answer: Answer, now: Instant) {
        match answer {
            Answer::Lease(lease) => {
                self.absent = false;
                self.observed = Some((*lease, now));
                if self.holds() {
                    self.renewed = Some(now);
                }
            }
            // Someone else wrote first: we are not the leader; read again.
            Answer::Conflict | Answer::NotFound => {
                self.observed = None;
                self.absent = false;
                self.renewed = None;
            }
            // Unknown outcome: keep the view; leadership lapses on its own
            // if renewals keep failing.
            Answer::Failed(_) => {}
        }
    }
}

fn answer(result: Result<Lease, kube::Error>) -> Answer {
    match result {
        Ok(lease) => Answer::Lease(Box::new(lease)),
        Err(kube::Error::Api(status)) if status.code == 404 => Answer::NotFound,
        Err(kube::Error::Api(status)) if status.code == 409 => Answer::Conflict,
        Err(error) => Answer::Failed(error.to_string()),
    }
}

/// One round against the API server: GET if needed, then the write.
pub async fn round(elector: &mut Elector, api: &Api<Lease>) {
    if elector.needs_read() {
        let got = answer(api.get(LEASE_NAME).await);
        if let Answer::Failed(error) = &got {
            tracing::warn!(%error, "reading the leader Lease failed");
        }
        elector.on_read(got, Instant::now());
    }
    let params = PostParams::default();
    let written = match elector.next(Instant::now(), Timestamp::now()) {
        Step::Get | Step::Wait => return,
        Step::Create(lease) => answer(api.create(&params, &lease).await),
        Step::Replace(lease) => answer(api.replace(LEASE_NAME, &params, &lease).await),
    };
    if let Answer::Failed(error) = &written {
        tracing::warn!(%error, "writing the leader Lease failed");
    }
    elector.on_write(written, Instant::now());
}

/// Runs the election until `shutdown`, publishing whether we lead.
pub async fn run(
    client: Client,
    identity: String,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api = Api::<Lease>::namespaced(client, LEASE_NAMESPACE);
    let mut elector = Elector::new(identity.clone());
    loop {
        round(&mut elector, &api).await;
        let leading = elector.is_leader(Instant::now());
        if leader.send_replace(leading) != leading {
            tracing::info!(%identity, leading, "leader election: status writer changed");
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
