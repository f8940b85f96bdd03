//! Records the control plane cannot serve are moved aside, not fatal: a
//! record whose key or bytes do not decode (found when the store opens),
//! or whose document no longer validates (found when the registry loads).
//!
//! A quarantined record leaves the `documents` table (so List, Get and the
//! proxies never see it) and is kept, bytes as they were, in the
//! `quarantine` table with the reason, for an operator to inspect and
//! re-apply. Moving a record aside does not change the store revision.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{DOCUMENTS, DocKey, PolicyStore, StoreError, db_err, decode};

/// Stored key as written (possibly not a valid key) → (reason, raw record).
pub(super) const QUARANTINE: TableDefinition<&str, (&str, &[u8])> =
    TableDefinition::new("quarantine");

/// One record moved aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// The record's key in `documents` (`kind/namespace/name`, or whatever
    /// unreadable key it had).
    pub key: String,
    /// Why it was moved aside.
    pub reason: String,
}

impl PolicyStore {
    /// Creates the quarantine table and moves every record whose key or
    /// bytes do not decode into it. Returns what it moved.
    pub(super) fn quarantine_unreadable(&self) -> Result<Vec<Quarantined>, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let moved = {
            let mut documents = txn.open_table(DOCUMENTS).map_err(db_err)?;
            let mut quarantine = txn.open_table(QUARANTINE).map_err(db_err)?;
            let mut bad = Vec::new();
            for entry in documents.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let id = k.value().to_owned();
                let reason = if DocKey::parse(&id).is_none() {
                    Some("the key is not kind/namespace/name".to_owned())
                } else {
                    decode(&id, v.value()).err().map(|e| e.to_string())
                };
                if let Some(reason) = reason {
                    bad.push((id, reason, v.value().to_vec()));
                }
            }
            let mut moved = Vec::with_capacity(bad.len());
            for (id, reason, raw) in bad {
                documents.remove(id.as_str()).map_err(db_err)?;
                quarantine
                    .insert(id.as_str(), (reason.as_str(), raw.as_slice()))
                    .map_err(db_err)?;
                moved.push(Quarantined { key: id, reason });
            }
            moved
        };
        txn.commit().map_err(db_err)?;
        Ok(moved)
    }

    /// Moves one stored document aside with `reason` (it decodes but can no
    /// longer be served). Nothing happens if it is not stored.
    pub fn quarantine(&self, key: &DocKey, reason: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut documents = txn.open_table(DOCUMENTS).map_err(db_err)?;
            let mut quarantine = txn.open_table(QUARANTINE).map_err(db_err)?;
            let id = key.to_string();
            let raw = documents
                .remove(id.as_str())
                .map_err(db_err)?
                .map(|v| v.value().to_vec());
            if let Some(raw) = raw {
                quarantine
                    .insert(id.as_str(), (reason, raw.as_slice()))
                    .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(())
    }

    /// Every quarantined record, sorted by key.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(QUARANTINE).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let (reason, _) = v.value();
            out.push(Quarantined {
                key: k.value().to_owned(),
                reason: reason.to_owned(),
            });
        }
        Ok(out)
    }
}
