//! Snapshots: a consistent, read-only view at one sequence number, and
//! the oldest one alive (what compaction must keep).

use super::*;

impl Inner {
    /// The oldest sequence number any reader may still read at.
    pub(crate) fn oldest_snapshot(&self) -> u64 {
        let visible = self.visibility.visible();
        self.snapshots
            .lock()
            .keys()
            .next()
            .copied()
            .unwrap_or(visible)
            .min(visible)
    }
}

/// A consistent, read-only view of the database at one sequence number.
/// Dropping it releases the versions it holds.
///
/// # Examples
///
/// ```
/// # use strata::{Db, MemFileSystem, Options};
/// # use std::sync::Arc;
/// # let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
/// db.put(b"k", b"old")?;
/// let snapshot = db.snapshot();
/// db.put(b"k", b"new")?;
/// db.flush()?;
/// assert_eq!(snapshot.get(b"k")?.as_deref(), Some(&b"old"[..]));
/// assert_eq!(db.get(b"k")?.as_deref(), Some(&b"new"[..]));
/// # Ok::<(), strata::Error>(())
/// ```
pub struct Snapshot {
    pub(super) inner: Arc<Inner>,
    pub(super) seq: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("seq", &self.seq).finish()
    }
}

impl Snapshot {
    /// The sequence number this snapshot reads at.
    #[must_use]
    pub fn seq(&self) -> SeqNo {
        SeqNo(self.seq)
    }

    /// The value of `key` as of the snapshot.
    ///
    /// # Errors
    /// [`Error::Closed`] after the database was closed; as [`Db::get`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.check_open()?;
        self.inner.check_retained(key)?;
        self.inner.get_at(key, self.seq)
    }

    /// The keys of `range` as of the snapshot, in key order.
    ///
    /// # Errors
    /// As [`Db::scan`].
    pub fn scan<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.inner.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        self.inner.check_retained_range(&range)?;
        self.inner
            .iterate(range, self.seq, true, Some(self.clone_registration()))
    }

    /// As [`Snapshot::scan`], in reverse key order.
    ///
    /// # Errors
    /// As [`Db::scan`].
    pub fn scan_rev<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.inner.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        self.inner.check_retained_range(&range)?;
        self.inner
            .iterate(range, self.seq, false, Some(self.clone_registration()))
    }

    fn clone_registration(&self) -> Snapshot {
        *self.inner.snapshots.lock().entry(self.seq).or_insert(0) += 1;
        Snapshot {
            inner: Arc::clone(&self.inner),
            seq: self.seq,
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut snapshots = self.inner.snapshots.lock();
        if let Some(count) = snapshots.get_mut(&self.seq) {
            *count -= 1;
            if *count == 0 {
                snapshots.remove(&self.seq);
                drop(snapshots);
                // Versions kept for it may now be collectible.
                self.inner.work_changed.notify_all();
            }
        }
    }
}
