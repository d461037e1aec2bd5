//! Key ranges: the keyspace split into contiguous ranges `[start, end)`
//! that cover every key, each with a stable [`RangeId`].
//!
//! The range map ([`map::RangeMap`]) lives in the version (and so in the
//! manifest): it changes only by a logged edit that replaces it whole, so
//! after any crash it is the old map or the new one, never a mixture.
//!
//! What a range owns: its sorted tables (no table ever spans a range
//! boundary: flushes and compactions cut their output at boundaries, and a
//! split rewrites the few tables that straddle the new boundary before the
//! map changes), its compaction (picked, scored and run per range), and its
//! figures ([`stats`]). The memtable and the commit log are shared, so a
//! batch spanning ranges stays one record and one insert; see
//! `docs/design/ranges.md` for why.
//!
//! Range deletions ([`tombstones`]) are separate from ranges: a
//! `delete_range` is a logged batch operation that hides older versions of
//! every key in `[start, end)`; versions carry the flushed ones until
//! compaction has removed everything they hide.

pub(crate) mod intervals;
pub(crate) mod map;
pub(crate) mod stats;
pub(crate) mod tombstones;

pub use intervals::KeyIntervals;
pub use map::RangeId;
pub use stats::RangeInfo;
