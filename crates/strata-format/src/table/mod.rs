//! Sorted tables (SSTs): immutable files of internal keys in order, with
//! an index, a bloom filter and properties, in the leveldb tradition.
//!
//! A table is data blocks ([`block`]) followed by a filter block
//! ([`bloom`]), a properties block and an index block, and a fixed footer;
//! [`format`](mod@format) gives the byte layout, the block trailer and its checksum.
//! [`builder`] writes a table from sorted entries, [`reader`] opens one and
//! serves point lookups and ordered scans. Keys are internal keys
//! ([`crate::key`]). See `docs/format.md`.

pub mod block;
pub mod bloom;
pub mod builder;
pub mod format;
pub mod reader;

#[cfg(test)]
mod tests;

pub use block::{Block, BlockBuilder, BlockBytes, BlockIter, Comparator, DEFAULT_RESTART_INTERVAL};
pub use bloom::{
    BloomBuilder, DEFAULT_BLOOM_BITS_PER_KEY, bloom_hash, bloom_may_contain,
    bloom_may_contain_hashed, filter_hash,
};
pub use builder::{FinishedTable, TableBuilder, TableOptions};
pub use format::{
    BLOCK_TRAILER_LEN, BlockHandle, Compression, FOOTER_LEN, Footer, MAX_BLOCK_UNCOMPRESSED,
    Properties, TABLE_FORMAT_VERSION, TABLE_MAGIC, decode_block, encode_block,
};
pub use reader::{BlockCache, Found, TableIter, TableReader};
