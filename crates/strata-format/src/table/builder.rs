//! Writes a sorted table from internal keys given in order, into an
//! in-memory output buffer that the caller drains as it goes.
//!
//! The layout it writes is described in [`super::format`]: data blocks of
//! about [`TableOptions::block_bytes`] each, then the filter, properties and
//! index blocks, then the footer. Each index entry's key is a separator:
//! at or after the last key of its block and before the first key of the
//! next one (a shortened user key when one exists, else the block's last
//! key), so a seek finds the only block that can hold its target.
//!
//! Output is incremental: [`TableBuilder::take_output`] hands over the bytes
//! produced so far (whole blocks), so a large table never sits in memory;
//! [`TableBuilder::finish`] returns the rest. File offsets are counted by
//! the builder, so the caller must write every byte it takes, in order.
//!
//! Invariants: keys are strictly increasing internal keys (a caller bug
//! otherwise: `add` panics); every block is checksummed against its final
//! file offset.

use std::cmp::Ordering;

use super::block::{BlockBuilder, DEFAULT_RESTART_INTERVAL};
use super::bloom::{BloomBuilder, DEFAULT_BLOOM_BITS_PER_KEY};
use super::format::{BlockHandle, Compression, FOOTER_LEN, Footer, Properties, encode_block};
use crate::key::{InternalKeyRef, MAX_SEQ, ValueKind, compare_internal, encode_internal_key};

/// How a table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    /// Target uncompressed size of a data block. Default 4096.
    pub block_bytes: usize,
    /// Entries between restart points in a block. Default 16.
    pub restart_interval: usize,
    /// Bloom filter bits per user key; 0 writes no filter. Default 10.
    pub bloom_bits_per_key: usize,
    /// Compression of data and index blocks. Default none.
    pub compression: Compression,
    /// The LSM level the table is written for, recorded in its
    /// properties. Default 0.
    pub level: u32,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            block_bytes: 4096,
            restart_interval: DEFAULT_RESTART_INTERVAL,
            bloom_bits_per_key: DEFAULT_BLOOM_BITS_PER_KEY,
            compression: Compression::None,
            level: 0,
        }
    }
}

/// What [`TableBuilder::finish`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedTable {
    /// The bytes not yet taken with [`TableBuilder::take_output`].
    pub tail: Vec<u8>,
    /// The whole file's size.
    pub file_size: u64,
    /// The properties written into the table.
    pub properties: Properties,
}

/// Builds one table.
///
/// # Examples
///
/// ```
/// use strata_format::key::{encode_internal_key, ValueKind};
/// use strata_format::table::{TableBuilder, TableOptions, TableReader};
/// let mut builder = TableBuilder::new(TableOptions::default());
/// let mut key = Vec::new();
/// encode_internal_key(b"k", 1, ValueKind::Put, &mut key);
/// builder.add(&key, b"v");
/// let mut file = builder.take_output();
/// let finished = builder.finish();
/// file.extend_from_slice(&finished.tail);
/// let table = TableReader::open(&file, finished.file_size)?;
/// let (kind, value) = table.get(b"k", 5)?.unwrap();
/// assert_eq!((kind, &*value), (ValueKind::Put, &b"v"[..]));
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TableBuilder {
    options: TableOptions,
    data: BlockBuilder,
    index: BlockBuilder,
    bloom: Option<BloomBuilder>,
    output: Vec<u8>,
    /// File offset of the end of `output` (bytes produced, taken or not).
    offset: u64,
    last_key: Vec<u8>,
    /// The last flushed data block, whose index entry waits for the next
    /// key to choose a separator.
    pending_index: Option<BlockHandle>,
    properties: Properties,
    scratch: Vec<u8>,
}

impl TableBuilder {
    /// An empty table.
    ///
    /// # Panics
    /// If `restart_interval` is 0.
    #[must_use]
    pub fn new(options: TableOptions) -> Self {
        Self {
            options,
            data: BlockBuilder::new(options.restart_interval, compare_internal),
            index: BlockBuilder::new(1, compare_internal),
            bloom: (options.bloom_bits_per_key > 0)
                .then(|| BloomBuilder::new(options.bloom_bits_per_key)),
            output: Vec::new(),
            offset: 0,
            last_key: Vec::new(),
            pending_index: None,
            properties: Properties {
                level: options.level,
                ..Properties::default()
            },
            scratch: Vec::new(),
        }
    }

    /// Appends an entry.
    ///
    /// # Panics
    /// If `internal_key` is not a valid internal key or not greater than
    /// the previous one (caller bugs).
    pub fn add(&mut self, internal_key: &[u8], value: &[u8]) {
        let parsed = InternalKeyRef::decode(internal_key)
            .unwrap_or_else(|e| panic!("TableBuilder::add: invalid internal key: {e}"));
        let first = self.properties.entries == 0;
        assert!(
            first || compare_internal(internal_key, &self.last_key) == Ordering::Greater,
            "TableBuilder::add: keys must be strictly increasing"
        );
        if let Some(handle) = self.pending_index.take() {
            shortest_separator(&self.last_key, internal_key, &mut self.scratch);
            self.add_index_entry(handle);
        }
        if let Some(bloom) = &mut self.bloom
            && (first || crate::key::user_key(&self.last_key) != parsed.user_key)
        {
            bloom.add_key(parsed.user_key);
        }

        let props = &mut self.properties;
        if first {
            props.smallest_key = internal_key.to_vec();
            props.smallest_seq = parsed.seq;
            props.largest_seq = parsed.seq;
        }
        props.entries += 1;
        props.deletions += u64::from(parsed.kind == ValueKind::Delete);
        props.raw_key_bytes += internal_key.len() as u64;
        props.raw_value_bytes += value.len() as u64;
        props.smallest_seq = props.smallest_seq.min(parsed.seq);
        props.largest_seq = props.largest_seq.max(parsed.seq);

        self.last_key.clear();
        self.last_key.extend_from_slice(internal_key);
        self.data.add(internal_key, value);
        if self.data.estimated_size() >= self.options.block_bytes {
            self.flush_data_block();
        }
    }

    /// The bytes produced since the last call: whole blocks, ready to be
    /// appended to the file.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Bytes produced so far plus the unflushed data block: roughly the
    /// file size if the table were finished now.
    #[must_use]
    pub fn estimated_file_size(&self) -> u64 {
        self.offset + self.data.estimated_size() as u64
    }

    /// Entries added so far.
    #[must_use]
    pub fn entries(&self) -> u64 {
        self.properties.entries
    }

    /// Writes the last data block, the filter, properties and index blocks
    /// and the footer, and returns the bytes not yet taken.
    #[must_use]
    pub fn finish(mut self) -> FinishedTable {
        self.flush_data_block();
        if let Some(handle) = self.pending_index.take() {
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.last_key);
            self.add_index_entry(handle);
        }
        let filter = self.bloom.take().map(|bloom| {
            let contents = bloom.finish();
            self.write_block(&contents, Compression::None)
        });
        self.properties.largest_key = self.last_key.clone();
        let properties = self.write_block(&self.properties.encode(), Compression::None);
        let index = encode_block(
            self.index.finish(),
            self.options.compression,
            self.offset,
            &mut self.output,
        );
        self.offset += index.size;
        let footer = Footer {
            index,
            filter,
            properties,
        };
        self.output.extend_from_slice(&footer.encode());
        self.offset += FOOTER_LEN as u64;
        FinishedTable {
            tail: self.output,
            file_size: self.offset,
            properties: self.properties,
        }
    }

    fn flush_data_block(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let handle = encode_block(
            self.data.finish(),
            self.options.compression,
            self.offset,
            &mut self.output,
        );
        self.offset += handle.size;
        self.data.reset();
        self.properties.data_blocks += 1;
        self.pending_index = Some(handle);
    }

    fn write_block(&mut self, contents: &[u8], compression: Compression) -> BlockHandle {
        let handle = encode_block(contents, compression, self.offset, &mut self.output);
        self.offset += handle.size;
        handle
    }

    /// Adds an index entry keyed by `scratch`.
    fn add_index_entry(&mut self, handle: BlockHandle) {
        let mut value = Vec::with_capacity(24);
        handle.encode_to(&mut value);
        self.index.add(&self.scratch, &value);
    }
}

/// Sets `out` to an internal key `s` with `last <= s < next`, as short as
/// the user keys allow: when the first differing byte of `last`'s user key
/// can be incremented and stay below `next`'s, the user key is cut there
/// (and given the trailer that sorts first for that user key).
fn shortest_separator(last: &[u8], next: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let last_user = crate::key::user_key(last);
    let next_user = crate::key::user_key(next);
    let shared = last_user
        .iter()
        .zip(next_user)
        .take_while(|(a, b)| a == b)
        .count();
    if let (Some(&a), Some(&b)) = (last_user.get(shared), next_user.get(shared))
        && a < 0xff
        && a + 1 < b
        && let Some(prefix) = last_user.get(..shared)
    {
        let mut user = prefix.to_vec();
        user.push(a + 1);
        encode_internal_key(&user, MAX_SEQ, ValueKind::FOR_SEEK, out);
        debug_assert!(compare_internal(last, out) == Ordering::Less);
        debug_assert!(compare_internal(out, next) == Ordering::Less);
        return;
    }
    out.extend_from_slice(last);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ikey(user: &[u8], seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_internal_key(user, seq, ValueKind::Put, &mut out);
        out
    }

    #[test]
    fn separator_shortens_user_keys_when_possible() {
        let mut out = Vec::new();
        shortest_separator(&ikey(b"abcdef", 5), &ikey(b"abzzz", 9), &mut out);
        assert_eq!(crate::key::user_key(&out), b"abd");
        // Adjacent bytes, a prefix, and 0xff leave the last key unchanged.
        for (last, next) in [
            (&b"abc"[..], &b"abd"[..]),
            (b"ab", b"abc"),
            (b"a\xff", b"b"),
            (b"same", b"same"),
        ] {
            shortest_separator(&ikey(last, 5), &ikey(next, 1), &mut out);
            assert_eq!(out, ikey(last, 5));
        }
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn keys_out_of_order_are_a_programmer_error() {
        let mut b = TableBuilder::new(TableOptions::default());
        b.add(&ikey(b"b", 1), b"");
        b.add(&ikey(b"a", 1), b"");
    }

    #[test]
    #[should_panic(expected = "invalid internal key")]
    fn short_keys_are_a_programmer_error() {
        TableBuilder::new(TableOptions::default()).add(b"abc", b"");
    }

    #[test]
    fn output_can_be_taken_incrementally() {
        let options = TableOptions {
            block_bytes: 64,
            ..TableOptions::default()
        };
        let mut b = TableBuilder::new(options);
        let mut file = Vec::new();
        for i in 0..100u32 {
            b.add(&ikey(format!("key{i:04}").as_bytes(), 1), &[7u8; 20]);
            file.extend(b.take_output());
        }
        assert!(!file.is_empty());
        let finished = b.finish();
        file.extend_from_slice(&finished.tail);
        assert_eq!(file.len() as u64, finished.file_size);
        assert_eq!(finished.properties.entries, 100);
        assert!(finished.properties.data_blocks > 10);
    }
}
