//! A database handle that can be swapped: a replica replaces its whole
//! database when it bootstraps from a snapshot, while its upstream service
//! (for downstream replicas) and its readers keep one handle.

use std::sync::Arc;

use parking_lot::RwLock;
use strata::Db;

/// The current database of a node, or none while it is being replaced.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use strata::{Db, MemFileSystem, Options};
/// let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
/// let shared = strata_replication::SharedDb::new(db);
/// assert!(shared.get().is_some());
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct SharedDb {
    db: Arc<RwLock<Option<Arc<Db>>>>,
}

impl SharedDb {
    /// A handle holding `db`. From now on `db` refuses batches larger
    /// than replication ships in one message
    /// ([`crate::MAX_SHIPPED_BATCH_BYTES`]).
    #[must_use]
    pub fn new(db: Db) -> Self {
        limit(&db);
        Self {
            db: Arc::new(RwLock::new(Some(Arc::new(db)))),
        }
    }

    /// An empty handle (a replica that has no database yet).
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// The current database, if any.
    #[must_use]
    pub fn get(&self) -> Option<Arc<Db>> {
        self.db.read().clone()
    }

    /// Closes the database for a shutdown: takes it out, waits up to `wait`
    /// for every other holder (readers, log streams) to let go, then closes
    /// it (flush, sync); if some holder is still busy, only syncs.
    ///
    /// # Errors
    /// The flush or sync failed.
    pub fn close(&self, wait: std::time::Duration) -> strata::Result<()> {
        let Some(mut db) = self.take() else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Arc::try_unwrap(db) {
                Ok(db) => return db.close(),
                Err(shared) if std::time::Instant::now() < deadline => {
                    db = shared;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(shared) => return shared.sync().map(|_| ()),
            }
        }
    }

    /// Takes the database out (readers then see none).
    pub(crate) fn take(&self) -> Option<Arc<Db>> {
        self.db.write().take()
    }

    /// Installs `db` (limited as in [`SharedDb::new`]).
    pub(crate) fn set(&self, db: Arc<Db>) {
        limit(&db);
        *self.db.write() = Some(db);
    }
}

/// A database whose log is shipped takes no batch replication could not
/// ship: refused when written, not found when shipped.
fn limit(db: &Db) {
    strata::replication::LogSource::of(db).limit_batch_bytes(
        crate::MAX_SHIPPED_BATCH_BYTES,
        "the most replication ships in one message",
    );
}
