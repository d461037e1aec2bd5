//! Options for opening a database, writing and reading.
//!
//! Every field documents its default; `Options::default()` is a sound
//! production configuration for a service with a few GiB of data.

use std::sync::Arc;
use std::time::Duration;

use crate::env::{FileSystem, RealFileSystem};
use crate::wal::RecoveryMode;

/// How to open a database.
///
/// # Examples
///
/// ```
/// use strata::Options;
/// let options = Options { value_bytes_max: 1 << 20, ..Options::default() };
/// assert!(options.create_if_missing);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    /// Where every byte goes. Default: [`RealFileSystem`]; tests use
    /// `MemFileSystem` or `FaultFileSystem`.
    pub file_system: Arc<dyn FileSystem>,
    /// Create the database if the directory holds none. Default: `true`.
    pub create_if_missing: bool,
    /// Fail if a database already exists there. Default: `false`.
    pub error_if_exists: bool,
    /// The longest key accepted, in bytes. Default: 64 KiB. Empty keys are
    /// allowed (they sort first).
    pub key_bytes_max: usize,
    /// The longest value accepted, in bytes. Default: 16 MiB. Empty values
    /// are allowed and differ from absent keys.
    pub value_bytes_max: usize,
    /// The largest encoded write batch accepted, in bytes. Default: 32 MiB
    /// (below the replication message limit, so every accepted batch can be
    /// shipped to replicas).
    pub batch_bytes_max: usize,
    /// A commit-log segment that reaches this size is closed and a new one
    /// begun. Default: 64 MiB.
    pub wal_segment_bytes_max: u64,
    /// If set, the commit log is synced in the background at this interval,
    /// bounding what a power loss can take from `sync: false` writes.
    /// Default: `None` (only `sync: true` writes and [`crate::Db::sync`]
    /// sync).
    pub wal_sync_interval: Option<Duration>,
    /// How recovery treats damage in the commit log. Default:
    /// [`RecoveryMode::TolerateTornTail`].
    pub recovery_mode: RecoveryMode,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            file_system: Arc::new(RealFileSystem),
            create_if_missing: true,
            error_if_exists: false,
            key_bytes_max: 64 << 10,
            value_bytes_max: 16 << 20,
            batch_bytes_max: 32 << 20,
            wal_segment_bytes_max: 64 << 20,
            wal_sync_interval: None,
            recovery_mode: RecoveryMode::TolerateTornTail,
        }
    }
}

/// How to write.
///
/// # Examples
///
/// ```
/// let durable = strata::WriteOptions { sync: true };
/// assert!(!strata::WriteOptions::default().sync);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Return only once the write survives power loss (one fdatasync, shared
    /// with concurrent writers by group commit). With `false` the write
    /// survives a crash of the process but not of the machine. Default:
    /// `false`.
    pub sync: bool,
}
