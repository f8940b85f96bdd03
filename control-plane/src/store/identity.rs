//! The identity side of the store: the CA's generated roots and keys
//! (`ca` table) and the hashed join tokens (`join_tokens` table). Values are
//! opaque bytes owned by `crate::identity`; writes are durable like
//! policy writes, but do not bump the policy revision (proxies do not
//! watch them).

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{PolicyStore, StoreError, db_err};

/// Key → bytes tables of the identity module.
#[derive(Clone, Copy, Debug)]
pub enum IdentityTable {
    /// The CA's state (generated roots with their keys).
    Ca,
    /// Join tokens by id (hash of the secret, identity, expiry).
    JoinTokens,
}

const CA: TableDefinition<&str, &[u8]> = TableDefinition::new("ca");
const JOIN_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("join_tokens");

impl IdentityTable {
    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            IdentityTable::Ca => CA,
            IdentityTable::JoinTokens => JOIN_TOKENS,
        }
    }
}

/// Creates the tables (when the store opens), so readers never meet a missing one.
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CA).map_err(db_err)?;
    txn.open_table(JOIN_TOKENS).map_err(db_err)?;
    Ok(())
}

impl PolicyStore {
    /// One value, if stored.
    pub fn identity_get(
        &self,
        table: IdentityTable,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(table.definition()).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Stores (or replaces) one value, durably.
    pub fn identity_put(
        &self,
        table: IdentityTable,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(table.definition()).map_err(db_err)?;
            t.insert(key, value).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Removes one value; `false` when it was absent.
    pub fn identity_remove(&self, table: IdentityTable, key: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut t = txn.open_table(table.definition()).map_err(db_err)?;
            t.remove(key).map_err(db_err)?.is_some()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// Every value, sorted by key.
    pub fn identity_list(
        &self,
        table: IdentityTable,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(table.definition()).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}
