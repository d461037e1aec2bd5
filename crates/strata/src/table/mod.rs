//! Sorted tables as the engine reads them: open (mapped) tables, a cache of
//! open tables, point lookups, and cursors for scans and compactions.
//!
//! The byte format and its verification live in `strata_format::table`;
//! this module adds files: a table is mapped once
//! ([`crate::env::FileSystem::map`]), checked against the size the manifest
//! recorded, and kept open while any version references it.
//!
//! Thread-safety: [`Table`] is immutable and shared (`Arc`); a
//! [`TableCursor`] belongs to one thread.
//!
//! Invariants: a table is never read past a failed check: any
//! `DecodeError` becomes [`crate::Error::Corruption`] naming the file.
//!
//! One concept per file: `reader.rs` (an open table), `cache.rs` (the table
//! and block caches), `cursor.rs` (table and level cursors), `writer.rs`
//! (writing a table).

mod cache;
mod cursor;
mod reader;
mod writer;

pub(crate) use cache::{BlockCache, TableCache};
pub(crate) use cursor::{LevelCursor, OpenFn, TableCursor};
pub(crate) use reader::Table;
pub(crate) use writer::TableWriter;
