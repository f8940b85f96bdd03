//! Static mode's policy source: `--policy-file`, a multi-document YAML file
//! of `ResiliencePolicy` and `ServiceEndpoints` documents.
//!
//! The first load must succeed (an invalid file stops the proxy with every
//! field error listed). Afterwards the file is polled (content hash, about
//! once a second; no inotify dependency) and re-read on SIGHUP. A valid new
//! file becomes the next [`Snapshot`] version; an invalid or unreadable one
//! is logged with its field paths, counted as a nack, and the last good
//! snapshot stays in force.

mod watch;

use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use levee_proto::policy::{PolicyErrors, parse_documents};

use crate::snapshot::Snapshot;
use crate::state::Shared;

pub use watch::{WatchOptions, Watching, load_and_watch_with};

/// Errors are boxed at this boundary; `main` prints them and exits.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Loads `path` (refusing an invalid file), marks the proxy ready, and spawns
/// the task that reloads it on change or SIGHUP until `shutdown`.
pub async fn load_and_watch(
    shared: Arc<Shared>,
    path: PathBuf,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), BoxError> {
    load_and_watch_with(shared, path, shutdown, WatchOptions::default())
        .await
        .map(|_| ())
}

/// Why a policy file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy file {} is invalid ({} problem(s)):\n{errors}", path.display(), errors.0.len())]
    Invalid { path: PathBuf, errors: PolicyErrors },
}

/// What a reload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The content is what is already in force (or was already refused).
    Unchanged,
    /// The file was valid and is now in force as this version.
    Applied { version: u64 },
}

/// The file's content as last seen, so an unchanged file is not re-parsed
/// and a refused file is reported once, not every poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Content(u64),
    Unreadable(std::io::ErrorKind),
}

/// One policy file feeding one [`Shared`].
#[derive(Debug)]
pub struct PolicyFile {
    shared: Arc<Shared>,
    path: PathBuf,
    state: Mutex<FileState>,
}

#[derive(Debug, Default)]
struct FileState {
    /// Hash of the content behind the snapshot in force.
    installed: Option<u64>,
    /// What the last look found.
    seen: Option<Seen>,
}

impl PolicyFile {
    /// A source for `path`; nothing is read yet.
    pub fn new(shared: Arc<Shared>, path: PathBuf) -> PolicyFile {
        // Absolute, so logs and `/config` say which file even if the flag was relative.
        let path = std::path::absolute(&path).unwrap_or(path);
        PolicyFile {
            shared,
            path,
            state: Mutex::new(FileState::default()),
        }
    }

    /// The file this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first load: any problem is an error, nothing is kept.
    pub async fn load_initial(&self) -> Result<u64, LoadError> {
        match self.apply(true).await? {
            Reload::Applied { version } => {
                self.shared.metrics.policy_update(true);
                self.shared.set_ready(true);
                tracing::info!(path = %self.path.display(), version, "policy file loaded");
                Ok(version)
            }
            // Unreachable with `force`, but harmless: whatever is in force stays.
            Reload::Unchanged => Ok(self.shared.snapshot.load().version),
        }
    }

    /// Re-reads the file now (SIGHUP). A refused file is logged and counted
    /// again even if it was refused before.
    pub async fn reload_now(&self) -> Result<Reload, LoadError> {
        let result = self.report(self.apply(true).await);
        if let Ok(Reload::Unchanged) = result {
            let version = self.shared.snapshot.load().version;
            tracing::info!(path = %self.path.display(), version, "policy file unchanged");
        }
        result
    }

    /// One poll: acts only when the content differs from the last look.
    pub async fn poll(&self) -> Result<Reload, LoadError> {
        self.report(self.apply(false).await)
    }

    /// Reads, and unless `force` is unset and nothing changed, validates and installs.
    async fn apply(&self, force: bool) -> Result<Reload, LoadError> {
        let text = tokio::fs::read_to_string(&self.path).await;
        let seen = match &text {
            Ok(text) => Seen::Content(content_hash(text)),
            Err(error) => Seen::Unreadable(error.kind()),
        };
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let unchanged = state.seen == Some(seen);
            state.seen = Some(seen);
            if Some(seen) == state.installed.map(Seen::Content) || (unchanged && !force) {
                return Ok(Reload::Unchanged);
            }
        }
        let text = text.map_err(|source| LoadError::Read {
            path: self.path.clone(),
            source,
        })?;
        let source = format!("file:{}", self.path.display());
        let snapshot = parse_documents(&text)
            .and_then(|documents| {
                Snapshot::from_documents(documents, &self.shared.namespace, source)
            })
            .map_err(|errors| LoadError::Invalid {
                path: self.path.clone(),
                errors,
            })?;
        let version = self.shared.install(snapshot);
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .installed = Some(content_hash(&text));
        Ok(Reload::Applied { version })
    }

    /// Logs and counts the outcome of a reload (not of the first load, whose
    /// error stops the proxy).
    fn report(&self, result: Result<Reload, LoadError>) -> Result<Reload, LoadError> {
        let metrics = &self.shared.metrics;
        match &result {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Applied { version }) => {
                metrics.policy_update(true);
                tracing::info!(path = %self.path.display(), version, "policy file reloaded");
            }
            Err(error) => {
                metrics.policy_update(false);
                let version = self.shared.snapshot.load().version;
                let path = self.path.display();
                match error {
                    LoadError::Read { source, .. } => {
                        tracing::warn!(%path, version, error = %source, "policy file unreadable; keeping the last good policy");
                    }
                    // One line per problem, so each field path is its own log record.
                    LoadError::Invalid { errors, .. } => {
                        for problem in errors.iter() {
                            tracing::warn!(%path, %problem, "policy file problem");
                        }
                        let problems = errors.0.len();
                        tracing::warn!(%path, version, problems, "policy file refused; keeping the last good policy");
                    }
                }
            }
        }
        result
    }
}

fn content_hash(text: &str) -> u64 {
    // Fixed keys: stable across calls, which is all a change detector needs.
    let mut hasher = DefaultHasher::new();
    hasher.write(text.as_bytes());
    hasher.finish()
}

#[cfg(test)]
mod tests;
