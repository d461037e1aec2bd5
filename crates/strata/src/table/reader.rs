//! One open sorted table: mapped once, checked against the size the
//! manifest recorded, read by point lookups and cursors.
//!
//! Invariants: a table is never read past a failed check: any
//! `DecodeError` becomes [`Error::Corruption`] naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use self_cell::self_cell;
use strata_format::key::ValueKind;
use strata_format::table::{TableIter, TableReader};

use super::BlockCache;
use crate::env::{FileSystem, Mapped};
use crate::error::{Error, Result};

self_cell!(
    struct OpenTable {
        owner: Mapped,
        #[covariant]
        dependent: TableReader,
    }
);

/// One open sorted table.
pub(crate) struct Table {
    number: u64,
    path: PathBuf,
    cell: OpenTable,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("number", &self.number)
            .finish()
    }
}

impl Table {
    /// The table's file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// An iterator over every entry (every version), unpositioned.
    pub(super) fn iter(&self) -> TableIter<'_, '_> {
        self.cell.borrow_dependent().iter()
    }

    /// Maps and opens table `number` at `path`, which must be `size` bytes.
    pub(crate) fn open(
        fs: &dyn FileSystem,
        path: &Path,
        number: u64,
        size: u64,
        blocks: Option<Arc<BlockCache>>,
    ) -> Result<Table> {
        let bytes = fs.map(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::corruption_msg(path, 0, "a table the manifest names is missing")
            }
            _ => Error::io("map", path, e),
        })?;
        let cell = OpenTable::try_new(bytes, |bytes| {
            let mut reader = TableReader::open(bytes, size)?;
            if let Some(blocks) = blocks {
                reader.set_block_cache(blocks, number);
            }
            Ok(reader)
        })
        .map_err(|e| Error::corruption(path, e))?;
        Ok(Table {
            number,
            path: path.to_path_buf(),
            cell,
        })
    }

    /// The newest version of `key` at or below `seq` in this table, with
    /// its value copied into `value` (cleared first; left empty for a
    /// tombstone): `Some((seq, true))` for a value, `Some((seq, false))`
    /// for a tombstone, `None` if absent. Allocates only if `value` must
    /// grow.
    /// `hash` is the key's `filter_hash`.
    pub(crate) fn get_into(
        &self,
        key: &[u8],
        hash: u64,
        seq: u64,
        value: &mut Vec<u8>,
    ) -> Result<Option<(u64, bool)>> {
        let found = self
            .cell
            .borrow_dependent()
            .get_versioned_hashed(key, hash, seq)
            .map_err(|e| Error::corruption(&self.path, e))?;
        value.clear();
        Ok(found.map(|(kind, found_seq, bytes)| match kind {
            ValueKind::Put => {
                value.extend_from_slice(&bytes);
                (found_seq, true)
            }
            _ => (found_seq, false),
        }))
    }

    /// Checks every block's checksum and structure.
    pub(crate) fn verify(&self) -> Result<()> {
        self.cell
            .borrow_dependent()
            .verify()
            .map_err(|e| Error::corruption(&self.path, e))
    }
}
