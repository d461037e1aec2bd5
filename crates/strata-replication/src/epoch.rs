//! The primary epoch a node serves or follows, persisted in
//! `<dir>/EPOCH`: the engine's [`strata::replication::Epoch`], which
//! writes it through the database's file system (format in
//! `docs/format.md`).
//!
//! A primary's epoch rises by one at each promotion; a replica records the
//! highest epoch it has followed and refuses an upstream with a lower one.
//!
//! # Examples
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let epoch = strata_replication::epoch::Epoch::open(dir.path())?;
//! assert_eq!(epoch.get(), 0);
//! epoch.raise_to(3)?;
//! assert_eq!(strata_replication::epoch::Epoch::open(dir.path())?.get(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use strata::replication::Epoch;
