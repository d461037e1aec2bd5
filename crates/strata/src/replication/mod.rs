//! The replication port: the one surface through which replication (the
//! `strata-replication` crate, or any other transport) reaches a database.
//! The engine owns every byte on disk; the transport owns the network.
//!
//! - [`LogSource`] (`log_source.rs`): committed, durable records framed
//!   exactly as on disk, from any retained sequence number on, waiting
//!   for new ones; pins that keep the log; lag in records and bytes.
//! - [`Follower`] (`follower.rs`): fences local writes, and appends
//!   records that [`VerifiedRecord::verify`] checked, byte for byte: the
//!   disk frame is the wire frame, nothing is re-framed, and each record is
//!   decoded once on its way to the memtable.
//! - Snapshots (`snapshot.rs`, `install.rs`): [`build_snapshot`] (a
//!   checkpoint, cut to key ranges if asked, listed with sizes and
//!   checksums), [`read_snapshot_file`] by offset, and [`SnapshotInstall`]:
//!   staging, an fsync of every file and every directory, and an atomic
//!   switch that [`recover_install`] completes or rolls back after a crash.
//! - State files (`state.rs`): the [`Epoch`] a node serves or follows
//!   (`EPOCH`) and the key ranges a replica was built for (`RANGES`).
//!
//! Everything goes through the database's [`crate::FileSystem`], so the
//! fault-injecting file system tests replication's files too, and a
//! database on a [`crate::MemFileSystem`] can serve and install snapshots.
//!
//! Thread-safety: every type here is `Send + Sync` or borrows a [`Db`],
//! which is.
//!
//! Invariants:
//! - A log source yields only durable records, in sequence order.
//! - A follower's log holds byte for byte the records it was given, at the
//!   sequence numbers they carry; a replicated batch is visible only once
//!   durable.
//! - After [`recover_install`], the data directory holds the old database
//!   or the complete new one, never a mix.
//!
//! [`Db`]: crate::Db

mod follower;
mod install;
mod log_source;
mod snapshot;
mod state;

pub use crate::wal::{LogPin, LogReader, LogRecord};
pub use follower::{Follower, FollowerStats, VerifiedRecord};
pub use install::{SnapshotInstall, StagedFile, recover_install};
pub use log_source::{Lag, LogSource};
pub use snapshot::{
    BuiltSnapshot, SnapshotFile, build_snapshot, file_crc32, list_snapshot, purge_outside_retained,
    read_snapshot_file, remove_snapshot,
};
pub use state::{Epoch, record_ranges};

/// Whether a snapshot file path is safe to create under a directory:
/// relative, `/`-separated, with no `..`, `.` or empty components and no
/// backslash.
///
/// # Examples
///
/// ```
/// use strata::replication::safe_relative_path;
/// assert!(safe_relative_path("wal/00000000000000000001.wal"));
/// assert!(!safe_relative_path("../etc/passwd"));
/// ```
#[must_use]
pub fn safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The file system `db` lives on (where its snapshots are built and read).
#[must_use]
pub fn file_system_of(db: &crate::Db) -> std::sync::Arc<dyn crate::FileSystem> {
    db.file_system()
}
