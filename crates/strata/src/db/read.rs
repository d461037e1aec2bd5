//! The read path: point lookups through the published view, scans'
//! sources, and table access through the cache.

use super::*;

impl Inner {
    /// The value of `key` at `seq` into `value` (its old content
    /// replaced); returns whether there is one. Takes no lock and allocates
    /// only if `value` must grow.
    pub(crate) fn get_into(&self, key: &[u8], seq: u64, value: &mut Vec<u8>) -> Result<bool> {
        let view = self.view.load();
        if let Some(counters) = view.router.counters_for(key) {
            counters.reads.fetch_add(1, Ordering::Relaxed);
        }
        let version = &view.version;
        // The newest range tombstone covering the key that this read sees:
        // any version older than it is hidden.
        let cover =
            if version.tombstones.is_empty() && !view.memtables().any(|m| m.has_tombstones()) {
                0
            } else {
                view.memtables()
                    .map(|m| m.tombstone_cover(key, seq))
                    .chain(std::iter::once(version.tombstone_cover(key, seq)))
                    .max()
                    .unwrap_or(0)
            };
        let hash = strata_format::table::filter_hash(key);
        for memtable in view.memtables() {
            if let Some((found_seq, found)) = memtable.get(key, hash, seq) {
                value.clear();
                return Ok(match found {
                    Some(bytes) if found_seq >= cover => {
                        value.extend_from_slice(bytes);
                        true
                    }
                    _ => false,
                });
            }
        }
        for meta in version.tables_for_key(key) {
            if meta.smallest_seq > seq {
                continue;
            }
            let table = self.table(meta)?;
            if let Some((found_seq, is_value)) = table.get_into(key, hash, seq, value)? {
                if is_value && found_seq >= cover {
                    return Ok(true);
                }
                value.clear();
                return Ok(false);
            }
        }
        value.clear();
        Ok(false)
    }

    /// As [`Inner::get_into`], into a new vector.
    pub(crate) fn get_at(&self, key: &[u8], seq: u64) -> Result<Option<Vec<u8>>> {
        let mut value = Vec::new();
        Ok(self.get_into(key, seq, &mut value)?.then_some(value))
    }

    /// The open table of `meta` (opened, through the table cache, by the
    /// first reader that needs it).
    pub(super) fn table<'m>(&self, meta: &'m TableMeta) -> Result<&'m Arc<Table>> {
        meta.handle.get_or_open(|| {
            let path = self
                .dir
                .join(strata_format::manifest::table_file_name(meta.number));
            self.open_table(&path, meta.number, meta.size)
        })
    }

    pub(super) fn open_table(&self, path: &Path, number: u64, size: u64) -> Result<Arc<Table>> {
        self.tables.get_or_open(&*self.fs, path, number, size)
    }

    /// Checks every checksum of every table of the current version.
    pub(super) fn verify_tables(&self) -> Result<usize> {
        let version = Arc::clone(&self.current.read());
        let mut checked = 0;
        for meta in version.levels.iter().flatten() {
            let path = self
                .dir
                .join(strata_format::manifest::table_file_name(meta.number));
            self.open_table(&path, meta.number, meta.size)?.verify()?;
            checked += 1;
        }
        Ok(checked)
    }

    pub(super) fn iterate(
        self: &Arc<Self>,
        range: KeyRange,
        seq: u64,
        forward: bool,
        hold: Option<Snapshot>,
    ) -> Result<DbIterator> {
        let view = self.view.load_full();
        let version = Arc::clone(&view.version);
        if let Some(start) = range.user_bounds().0
            && let Some(counters) = view.router.counters_for(start)
        {
            counters.reads.fetch_add(1, Ordering::Relaxed);
        }
        let mut tombstones = version.tombstones.as_ref().clone();
        for memtable in view.memtables() {
            if memtable.has_tombstones() {
                tombstones.extend(memtable.tombstones());
            }
        }
        if !tombstones.is_empty() {
            tombstones.retain(|t| t.seq <= seq);
            crate::ranges::tombstones::sort(&mut tombstones);
        }
        let mut cursors: Vec<Box<dyn Cursor>> = Vec::new();
        for memtable in view.memtables() {
            if !memtable.is_empty() {
                cursors.push(Box::new(MemCursor::new(
                    Arc::clone(memtable),
                    &range,
                    forward,
                )));
            }
        }
        let range = Arc::new(range);
        let (start, end) = range.user_bounds();
        // Level-0 tables overlap: a cursor each.
        for meta in version
            .levels
            .first()
            .into_iter()
            .flatten()
            .filter(|t| t.overlaps(start, end))
        {
            let table = Arc::clone(self.table(meta)?);
            cursors.push(Box::new(TableCursor::new(
                table,
                Arc::clone(&range),
                forward,
            )));
        }
        // Deeper levels do not: one cursor per level, opening its tables
        // one after another as the scan reaches them.
        for level in 1..version.levels.len() {
            let inner = Arc::clone(self);
            let open: crate::table::OpenFn =
                Box::new(move |meta| inner.table(meta).map(Arc::clone));
            if let Some(cursor) = LevelCursor::new(
                Arc::clone(&version),
                level,
                Arc::clone(&range),
                forward,
                open,
            ) {
                cursors.push(Box::new(cursor));
            }
        }
        let hold: Box<dyn Send + Sync> = match hold {
            Some(snapshot) => Box::new((snapshot, version)),
            None => Box::new((Arc::clone(self), version)),
        };
        Ok(DbIterator::new(
            cursors,
            range,
            seq,
            forward,
            tombstones,
            self.retain.clone(),
            hold,
        ))
    }
}
