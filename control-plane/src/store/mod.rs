//! The embedded policy store: every applied document, durably, in one `redb`
//! file under `--data-dir`.
//!
//! A write is one redb transaction committed with immediate durability
//! (fsync) before the caller answers, so an acknowledged `Apply` survives
//! `kill -9`. Every committed change bumps the store revision by one; the
//! revision is stored in the same transaction, so it never goes back.
//!
//! Documents are kept as their canonical YAML (the text operators read back
//! with `leveectl get -o yaml`) and parsed again when the control plane
//! starts. The calls block on disk I/O: async callers use `spawn_blocking`.
//!
//! A record that cannot be read is moved to a quarantine table when the
//! store opens (`quarantine`), so one corrupt record never stops the
//! control plane from starting.
//!
//! The identity module keeps its CA state and hashed join tokens in two
//! more tables (`identity`).

mod identity;
mod key;
mod quarantine;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use identity::IdentityTable;
pub use key::DocKey;
pub use quarantine::Quarantined;

/// `kind/namespace/name` → JSON-encoded [`Record`].
const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
/// Store-wide values; today only [`REVISION`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// File name of the database inside `--data-dir`.
pub const DB_FILE: &str = "levee.redb";

/// One stored document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Revision of the write that last changed the document.
    pub revision: u64,
    /// Canonical YAML of the document (one document, namespace filled in).
    pub yaml: String,
}

/// What an apply did to one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The document did not exist.
    Created,
    /// The document existed with different content.
    Configured,
    /// The document existed with the same content; nothing was written.
    Unchanged,
}

/// Result of a successful [`PolicyStore::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Store revision after the apply (the old one if nothing changed).
    pub revision: u64,
    /// One action per input document, in order.
    pub actions: Vec<Action>,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Compare-and-set failed: the store moved on since the caller looked.
    #[error(
        "the store is at revision {current}, not the expected {expected}; get the current state and retry"
    )]
    Conflict {
        /// The caller's expected revision.
        expected: u64,
        /// The store's revision.
        current: u64,
    },
    /// Delete of an absent document.
    #[error("{0} not found")]
    NotFound(DocKey),
    /// The database failed (disk, corruption, …).
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// A stored record could not be decoded.
    #[error("store: record {key} is corrupt: {error}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Decoder's message.
        error: String,
    },
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// The redb-backed store. Cheap to share behind an `Arc`; redb serialises writers.
#[derive(Debug)]
pub struct PolicyStore {
    db: Database,
    path: PathBuf,
    /// What [`PolicyStore::open`] moved to the quarantine table.
    opened_with: Vec<Quarantined>,
}

impl PolicyStore {
    /// Opens (or creates) the store in `dir`, creating the directory if needed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| db_err(redb::Error::Io(e)))?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(db_err)?;
        // Create the tables so that readers never meet a missing table.
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(DOCUMENTS).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
            txn.open_table(quarantine::QUARANTINE).map_err(db_err)?;
            identity::create_tables(&txn)?;
        }
        txn.commit().map_err(db_err)?;
        let mut store = PolicyStore {
            db,
            path,
            opened_with: Vec::new(),
        };
        store.opened_with = store.quarantine_unreadable()?;
        Ok(store)
    }

    /// The unreadable records [`PolicyStore::open`] moved to the quarantine table.
    pub fn quarantined_at_open(&self) -> &[Quarantined] {
        &self.opened_with
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current revision (0 for a new store).
    pub fn revision(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        Ok(meta.get(REVISION).map_err(db_err)?.map_or(0, |v| v.value()))
    }

    /// Stores `docs` (key, canonical YAML) all or nothing. With `expected`,
    /// only if the store is still at that revision.
    pub fn apply(
        &self,
        docs: &[(DocKey, String)],
        expected: Option<u64>,
    ) -> Result<ApplyOutcome, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let outcome = {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut table = txn.open_table(DOCUMENTS).map_err(db_err)?;
            let current = meta.get(REVISION).map_err(db_err)?.map_or(0, |v| v.value());
            check_expected(expected, current)?;
            let next = current + 1;
            let mut actions = Vec::with_capacity(docs.len());
            for (key, yaml) in docs {
                let id = key.to_string();
                let old = match table.get(id.as_str()).map_err(db_err)? {
                    Some(bytes) => Some(decode(&id, bytes.value())?),
                    None => None,
                };
                let action = match old {
                    None => Action::Created,
                    Some(old) if old.yaml == *yaml => Action::Unchanged,
                    Some(_) => Action::Configured,
                };
                if action != Action::Unchanged {
                    let record = Record {
                        revision: next,
                        yaml: yaml.clone(),
                    };
                    let bytes = encode(&record);
                    table
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(db_err)?;
                }
                actions.push(action);
            }
            let changed = actions.iter().any(|a| *a != Action::Unchanged);
            let revision = if changed { next } else { current };
            if changed {
                meta.insert(REVISION, next).map_err(db_err)?;
            }
            ApplyOutcome { revision, actions }
        };
        if outcome.actions.iter().all(|a| *a == Action::Unchanged) {
            txn.abort().map_err(db_err)?;
        } else {
            // Default durability is immediate: fsynced when commit returns.
            txn.commit().map_err(db_err)?;
        }
        Ok(outcome)
    }

    /// Deletes one document; returns the new revision.
    pub fn delete(&self, key: &DocKey, expected: Option<u64>) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let revision = {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut table = txn.open_table(DOCUMENTS).map_err(db_err)?;
            let current = meta.get(REVISION).map_err(db_err)?.map_or(0, |v| v.value());
            check_expected(expected, current)?;
            let id = key.to_string();
            if table.remove(id.as_str()).map_err(db_err)?.is_none() {
                return Err(StoreError::NotFound(key.clone()));
            }
            meta.insert(REVISION, current + 1).map_err(db_err)?;
            current + 1
        };
        txn.commit().map_err(db_err)?;
        Ok(revision)
    }

    /// One document, if stored.
    pub fn get(&self, key: &DocKey) -> Result<Option<Record>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(DOCUMENTS).map_err(db_err)?;
        let id = key.to_string();
        match table.get(id.as_str()).map_err(db_err)? {
            Some(bytes) => Ok(Some(decode(&id, bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Every stored document, sorted by key, with the revision they were read at.
    pub fn list(&self) -> Result<(u64, Vec<(DocKey, Record)>), StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let revision = meta.get(REVISION).map_err(db_err)?.map_or(0, |v| v.value());
        let table = txn.open_table(DOCUMENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let id = k.value().to_owned();
            let Some(key) = DocKey::parse(&id) else {
                return Err(StoreError::Corrupt {
                    key: id,
                    error: "bad key".into(),
                });
            };
            out.push((key, decode(&id, v.value())?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((revision, out))
    }
}

fn check_expected(expected: Option<u64>, current: u64) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != current => Err(StoreError::Conflict { expected, current }),
        _ => Ok(()),
    }
}

fn encode(record: &Record) -> Vec<u8> {
    // A struct of a number and a string always serialises.
    serde_json::to_vec(record).unwrap_or_default()
}

fn decode(id: &str, bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: id.to_owned(),
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
