//! `PolicyAdmin`: the operators' API (Apply, Get, List, Delete, Status).
//!
//! Writes are serialised by one async lock held across "commit to the store,
//! then update the discovery registry", so proxies see changes in revision
//! order. Each write runs in its own task ([`detached`]): a client that
//! disconnects mid-call cannot leave the store committed and the registry
//! (what proxies are pushed) behind. Authentication happens before these
//! handlers (see `auth`).
//!
//! Layout:
//! - `prepare`: YAML → validated, canonical documents and store keys.
//! - `errors`: store and validation failures → gRPC statuses.
//! - `kubernetes`: the `--kubernetes` replica's PolicyAdmin (Status only).

pub mod errors;
pub mod kubernetes;
pub mod prepare;

use std::sync::Arc;

use levee_proto::policy::parse_documents;
use levee_proto::v1::{self, policy_admin_server::PolicyAdmin};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::discovery::registry::Registry;
use crate::discovery::status::{Sessions, to_proto};
use crate::metrics::Metrics;
use crate::store::{Action, DocKey, PolicyStore, Record, StoreError};
use prepare::{Prepared, doc_key, doc_ref, prepare};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct AdminService {
    store: Arc<PolicyStore>,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    metrics: Metrics,
    /// Serialises writers (store commit + registry update).
    writer: Arc<Mutex<()>>,
}

impl AdminService {
    /// An admin API over `store` that publishes changes to `registry`.
    pub fn new(
        store: Arc<PolicyStore>,
        registry: Arc<Registry>,
        sessions: Arc<Sessions>,
        metrics: Metrics,
    ) -> Self {
        AdminService {
            store,
            registry,
            sessions,
            metrics,
            writer: Arc::new(Mutex::new(())),
        }
    }

    /// Runs a blocking store call off the async threads, counting it.
    async fn store_call<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&PolicyStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(format!("store task failed: {e}")))?;
        match result {
            Ok(value) => {
                self.metrics.store_op(op, "ok");
                Ok(value)
            }
            Err(e) => {
                self.metrics.store_op(op, errors::result_label(&e));
                Err(errors::store_error(e))
            }
        }
    }
}

fn stored(key: &DocKey, record: Record) -> v1::StoredDocument {
    v1::StoredDocument {
        r#ref: Some(doc_ref(key)),
        revision: record.revision,
        yaml: record.yaml,
    }
}

fn action(a: Action) -> v1::ApplyAction {
    match a {
        Action::Created => v1::ApplyAction::Created,
        Action::Configured => v1::ApplyAction::Configured,
        Action::Unchanged => v1::ApplyAction::Unchanged,
    }
}

impl AdminService {
    /// Apply's write under the writer lock: check targets, commit, publish.
    /// Runs [`detached`]: once started it finishes even if the caller left.
    async fn write_apply(
        self,
        prepared: Vec<Prepared>,
        expected: Option<u64>,
        dry_run: bool,
    ) -> Result<(Vec<Prepared>, u64, Vec<Action>), Status> {
        let _writer = self.writer.lock().await;
        prepare::check_targets(&prepared, &self.registry)
            .inspect_err(|_| self.metrics.store_op("apply", "invalid"))?;
        let pairs: Vec<(DocKey, String)> = prepared
            .iter()
            .map(|p| (p.key.clone(), p.yaml.clone()))
            .collect();
        if dry_run {
            let (revision, actions) = self
                .store_call("dry_run", move |store| dry_run_of(store, &pairs, expected))
                .await?;
            return Ok((prepared, revision, actions));
        }
        let outcome = self
            .store_call("apply", move |store| store.apply(&pairs, expected))
            .await?;
        publish(
            &self.registry,
            &prepared,
            &outcome.actions,
            outcome.revision,
        );
        self.metrics.set_revision(outcome.revision);
        Ok((prepared, outcome.revision, outcome.actions))
    }

    /// Delete's write under the writer lock: commit, then publish. Runs [`detached`].
    async fn write_delete(self, key: DocKey, expected: Option<u64>) -> Result<u64, Status> {
        let _writer = self.writer.lock().await;
        let target = key.clone();
        let revision = self
            .store_call("delete", move |store| store.delete(&target, expected))
            .await?;
        self.registry.remove(&key);
        self.metrics.set_revision(revision);
        Ok(revision)
    }
}

/// Runs a write in its own task and waits for it. tonic drops a handler's
/// future when the client goes away; a write running inline could then stop
/// between the store commit and the registry update, leaving proxies on
/// the old state until a restart. A spawned task always completes.
async fn detached<T: Send + 'static>(
    write: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(write)
        .await
        .map_err(|e| Status::internal(format!("write task failed: {e}")))?
}

#[tonic::async_trait]
impl PolicyAdmin for AdminService {
    async fn apply(
        &self,
        request: Request<v1::ApplyRequest>,
    ) -> Result<Response<v1::ApplyResponse>, Status> {
        let request = request.into_inner();
        let prepared = prepare::request_yaml(&request)
            .and_then(|yaml| prepare(&yaml))
            .inspect_err(|_| self.metrics.store_op("apply", "invalid"))?;
        let this = self.clone();
        let (prepared, revision, actions) = detached(async move {
            this.write_apply(prepared, request.expected_revision, request.dry_run)
                .await
        })
        .await?;
        let documents = prepared
            .iter()
            .zip(&actions)
            .map(|(p, a)| v1::AppliedDocument {
                r#ref: Some(doc_ref(&p.key)),
                action: action(*a).into(),
            })
            .collect();
        Ok(Response::new(v1::ApplyResponse {
            revision,
            documents,
        }))
    }

    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        let key = doc_key(request.get_ref().r#ref.as_ref())?;
        let lookup = key.clone();
        let (revision, record) = self
            .store_call("get", move |store| {
                Ok((store.revision()?, store.get(&lookup)?))
            })
            .await?;
        let record =
            record.ok_or_else(|| errors::store_error(StoreError::NotFound(key.clone())))?;
        Ok(Response::new(v1::GetResponse {
            document: Some(stored(&key, record)),
            revision,
        }))
    }

    async fn list(
        &self,
        request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let filter = request.into_inner();
        let (revision, records) = self.store_call("list", |store| store.list()).await?;
        let documents = records
            .into_iter()
            .filter(|(k, _)| filter.kind.is_empty() || k.kind == filter.kind)
            .filter(|(k, _)| filter.namespace.is_empty() || k.namespace == filter.namespace)
            .map(|(k, r)| stored(&k, r))
            .collect();
        Ok(Response::new(v1::ListResponse {
            documents,
            revision,
        }))
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let request = request.into_inner();
        let key = doc_key(request.r#ref.as_ref())?;
        let expected = request.expected_revision;
        let this = self.clone();
        let revision = detached(async move { this.write_delete(key, expected).await }).await?;
        Ok(Response::new(v1::DeleteResponse { revision }))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let revision = self
            .store_call("revision", |store| store.revision())
            .await?;
        let quarantined = self
            .store_call("quarantined", |store| store.quarantined())
            .await?
            .into_iter()
            .map(|q| v1::QuarantinedRecord {
                key: q.key,
                reason: q.reason,
            })
            .collect();
        let proxies = self.sessions.snapshot().iter().map(to_proto).collect();
        Ok(Response::new(v1::StatusResponse {
            revision,
            proxies,
            quarantined,
            kubernetes_replica: String::new(),
        }))
    }
}

/// What an apply would do, without writing.
fn dry_run_of(
    store: &PolicyStore,
    docs: &[(DocKey, String)],
    expected: Option<u64>,
) -> Result<(u64, Vec<Action>), StoreError> {
    let current = store.revision()?;
    if let Some(expected) = expected.filter(|e| *e != current) {
        return Err(StoreError::Conflict { expected, current });
    }
    let mut actions = Vec::with_capacity(docs.len());
    for (key, yaml) in docs {
        actions.push(match store.get(key)? {
            None => Action::Created,
            Some(r) if r.yaml == *yaml => Action::Unchanged,
            Some(_) => Action::Configured,
        });
    }
    Ok((current, actions))
}

/// Hands the changed documents to discovery.
fn publish(registry: &Registry, prepared: &[Prepared], actions: &[Action], revision: u64) {
    let changed = prepared
        .iter()
        .zip(actions)
        .filter(|(_, a)| **a != Action::Unchanged)
        .map(|(p, _)| (p.key.clone(), revision, p.document.clone()));
    registry.upsert(changed);
}

/// Loads every stored document into the registry at startup. A document
/// that no longer parses (e.g. after a stricter upgrade) is quarantined
/// (`store::quarantine`), like the unreadable records the store moved aside
/// when it opened; each is logged and the rest are served. Returns the
/// store revision.
pub fn load_registry(store: &PolicyStore, registry: &Registry) -> Result<u64, StoreError> {
    for q in store.quarantined_at_open() {
        tracing::error!(key = %q.key, reason = %q.reason, "unreadable store record quarantined");
    }
    let (revision, records) = store.list()?;
    let mut docs = Vec::with_capacity(records.len());
    for (key, record) in records {
        let reason = match parse_documents(&record.yaml) {
            Ok(mut parsed) if parsed.len() == 1 => match parsed.pop() {
                Some(doc) => {
                    docs.push((key, record.revision, doc));
                    continue;
                }
                None => "the record holds no document".to_owned(),
            },
            Ok(parsed) => format!("the record holds {} documents, not one", parsed.len()),
            Err(errors) => format!("the document no longer validates: {errors}"),
        };
        tracing::error!(%key, %reason, "stored document quarantined");
        store.quarantine(&key, &reason)?;
    }
    registry.upsert(docs);
    Ok(revision)
}
