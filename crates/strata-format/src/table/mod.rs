//! Sorted tables (SSTs): immutable files of internal keys in order, with
//! an index, a bloom filter and properties, in the leveldb tradition.

pub mod block;
pub mod bloom;

pub use block::{
    Block, BlockBuilder, BlockBytes, BlockIter, Comparator, DEFAULT_RESTART_INTERVAL,
};
pub use bloom::{BloomBuilder, DEFAULT_BLOOM_BITS_PER_KEY, bloom_hash, bloom_may_contain};
