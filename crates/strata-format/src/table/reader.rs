//! Reads a table from its bytes (a mapped file, say): point lookups and a
//! cursor over its internal keys.
//!
//! Opening checks the footer, then loads and verifies the index, filter and
//! properties blocks; data blocks are verified (checksum, parent checksum,
//! structure) when first loaded, so a damaged block makes the reads that
//! reach it fail and never returns wrong data. A block stored uncompressed
//! is read in place from the file's bytes (a mapping): once its checksums
//! have matched, a bit per block records it, and later loads of that block
//! skip the checksum, as a block cache skips it for the blocks it holds
//! (the bytes are the same memory; [`TableReader::verify`] checks every
//! block again regardless). Every block goes
//! through [`TableReader::read_block`], the one seam where the engine can
//! put a block cache. The index is decoded once at open and kept in memory
//! (a key and a handle per data block), so a seek binary-searches it
//! without touching the file.
//!
//! Beyond the checksums, reading checks what the writer guarantees: the
//! file has its recorded size; blocks are laid out back to back in the
//! order of [`super::format`]; index keys increase; every data key is a
//! valid internal key, keys increase inside a block, and each key lies
//! between its block's index entry and the previous one (so keys increase
//! across blocks too). A violation is a [`DecodeError`] naming the byte
//! offset in the file.
//!
//! Thread-safety: a [`TableReader`] is immutable after `open` and can be
//! shared between threads; each [`TableIter`] belongs to one thread.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as Atomic};

use super::block::{Block, BlockBytes, BlockIter};
use super::bloom::{bloom_may_contain_hashed, filter_hash};
use super::format::{
    BLOCK_TRAILER_LEN, BlockHandle, FOOTER_LEN, Footer, MAX_BLOCK_UNCOMPRESSED, Properties,
    decode_block,
};
use crate::error::{DecodeError, DecodeErrorKind};
use crate::key::{InternalKeyRef, MAX_SEQ, ValueKind, compare_internal, encode_internal_key};

/// What [`TableReader::get`] found: the entry's kind and its value
/// (empty for a tombstone), borrowed from the file when its block is
/// stored uncompressed.
pub type Found<'a> = (ValueKind, Cow<'a, [u8]>);

/// What [`TableReader::get_versioned`] finds: kind, sequence number and
/// value (empty for a tombstone).
pub type FoundVersion<'a> = (ValueKind, u64, Cow<'a, [u8]>);

/// One entry of the index, borrowed from [`Index`].
#[derive(Debug, Clone, Copy)]
struct IndexEntry<'x> {
    /// At or after every key of the block, before every key of the next.
    key: &'x [u8],
    handle: BlockHandle,
}

/// The decoded index: keys stored back to back in one buffer (so a binary
/// search touches contiguous memory, not one allocation per key).
#[derive(Debug, Clone, Default)]
struct Index {
    keys: Vec<u8>,
    /// End of each key in `keys`.
    ends: Vec<usize>,
    handles: Vec<BlockHandle>,
}

impl Index {
    fn push(&mut self, key: &[u8], handle: BlockHandle) {
        self.keys.extend_from_slice(key);
        self.ends.push(self.keys.len());
        self.handles.push(handle);
    }

    fn len(&self) -> usize {
        self.handles.len()
    }

    fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    fn get(&self, i: usize) -> Option<IndexEntry<'_>> {
        let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
        let end = *self.ends.get(i)?;
        Some(IndexEntry {
            key: self.keys.get(start..end)?,
            handle: *self.handles.get(i)?,
        })
    }

    /// The first entry for which `before` is false (entries for which it is
    /// true must all come first).
    fn partition_point(&self, before: impl Fn(IndexEntry<'_>) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match self.get(mid) {
                Some(entry) if before(entry) => low = mid + 1,
                _ => high = mid,
            }
        }
        low
    }
}

/// A cache of verified, decompressed data blocks, keyed by (table id,
/// block offset). The engine implements it (this crate does no caching of
/// its own); a reader given one with [`TableReader::set_block_cache`]
/// consults it before loading a data block and fills it with blocks that
/// had to be decompressed (uncompressed blocks are read from the file's
/// bytes, which the engine maps, without a copy).
pub trait BlockCache: Send + Sync + std::fmt::Debug {
    /// The cached block, if present.
    fn get(&self, table_id: u64, offset: u64) -> Option<Arc<[u8]>>;
    /// Caches a block that was just read and verified.
    fn insert(&self, table_id: u64, offset: u64, block: Arc<[u8]>);
}

/// An open table: its verified footer, index, filter and properties.
///
/// # Examples
///
/// ```
/// use strata_format::key::{encode_internal_key, ValueKind};
/// use strata_format::table::{TableBuilder, TableOptions, TableReader};
/// let mut builder = TableBuilder::new(TableOptions::default());
/// for (user_key, seq, kind) in [(b"a", 7, ValueKind::Delete), (b"a", 3, ValueKind::Put), (b"b", 5, ValueKind::Put)] {
///     let mut key = Vec::new();
///     encode_internal_key(user_key, seq, kind, &mut key);
///     builder.add(&key, b"value");
/// }
/// let finished = builder.finish();
/// let table = TableReader::open(&finished.tail, finished.file_size)?;
/// assert_eq!(table.get(b"a", 10)?.map(|(kind, _)| kind), Some(ValueKind::Delete));
/// assert_eq!(table.get(b"a", 6)?.map(|(kind, _)| kind), Some(ValueKind::Put));
/// assert!(table.get(b"a", 2)?.is_none());
///
/// let mut iter = table.iter();
/// let mut more = iter.seek_to_first()?;
/// let mut seqs = Vec::new();
/// while more {
///     seqs.push(iter.current().unwrap().0.seq);
///     more = iter.next()?;
/// }
/// assert_eq!(seqs, [7, 3, 5]);
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TableReader<'a> {
    file: &'a [u8],
    cache: Option<(Arc<dyn BlockCache>, u64)>,
    footer: Footer,
    index: Index,
    filter: Option<BlockBytes<'a>>,
    properties: Properties,
    /// One bit per data block: set once the block, stored uncompressed,
    /// passed its checks (shared by clones: same bytes).
    verified: Arc<[AtomicU64]>,
}

fn malformed(offset: u64, what: &'static str) -> DecodeError {
    DecodeError::new(offset, DecodeErrorKind::Malformed { what })
}

impl<'a> TableReader<'a> {
    /// Opens the table in `file`, whose size must be `expected_size` (as
    /// recorded by the manifest).
    ///
    /// # Errors
    /// `FileSizeMismatch`; any footer error; any error of the index, filter
    /// or properties block; `Malformed` if the blocks are not laid out as
    /// the format says or the index disagrees with the properties;
    /// `KeyOrder` if index keys do not increase.
    pub fn open(file: &'a [u8], expected_size: u64) -> Result<Self, DecodeError> {
        if file.len() as u64 != expected_size {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::FileSizeMismatch {
                    expected: expected_size,
                    actual: file.len() as u64,
                },
            ));
        }
        let footer_at = file.len().saturating_sub(FOOTER_LEN) as u64;
        let footer = Footer::decode(file).map_err(|e| e.at(footer_at))?;
        let mut reader = Self {
            file,
            footer,
            index: Index::default(),
            filter: None,
            properties: Properties::default(),
            cache: None,
            verified: Arc::from(Vec::new()),
        };

        // Layout: data blocks, [filter], properties, index, footer.
        let data_end = footer.filter.unwrap_or(footer.properties).offset;
        let mut meta = Vec::from_iter(footer.filter);
        meta.extend([footer.properties, footer.index]);
        let mut expected_offset = data_end;
        for handle in &meta {
            if handle.offset != expected_offset {
                return Err(malformed(footer_at, "table layout (meta blocks)"));
            }
            expected_offset = handle.end();
        }
        if expected_offset != footer_at {
            return Err(malformed(footer_at, "table layout (meta blocks)"));
        }

        let properties = reader.read_block(&footer.properties)?;
        reader.properties =
            Properties::decode(&properties).map_err(|e| e.at(footer.properties.offset))?;
        if let Some(filter) = &footer.filter {
            reader.filter = Some(reader.read_block(filter)?);
        }
        reader.index = reader.load_index(data_end)?;
        reader.verified = (0..reader.index.len().div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        reader.check_properties()?;
        Ok(reader)
    }

    fn load_index(&self, data_end: u64) -> Result<Index, DecodeError> {
        let at = self.footer.index.offset;
        let block = Block::new(self.read_block(&self.footer.index)?).map_err(|e| e.at(at))?;
        let mut iter = block.iter(compare_internal);
        let mut index = Index::default();
        let mut next_offset = 0;
        let mut more = iter.seek_to_first().map_err(|e| e.at(at))?;
        while let Some((key, value)) = iter.current().filter(|_| more) {
            InternalKeyRef::decode(key).map_err(|e| e.at(at))?;
            let handle = BlockHandle::decode(value).map_err(|e| e.at(at))?;
            if handle.offset != next_offset || handle.end() > data_end {
                return Err(malformed(
                    at,
                    "index (data blocks must lie back to back from 0)",
                ));
            }
            next_offset = handle.end();
            index.push(key, handle);
            more = iter.next().map_err(|e| e.at(at))?;
        }
        if next_offset != data_end {
            return Err(malformed(
                at,
                "index (data blocks must end where meta blocks start)",
            ));
        }
        Ok(index)
    }

    fn check_properties(&self) -> Result<(), DecodeError> {
        let at = self.footer.properties.offset;
        let props = &self.properties;
        if props.data_blocks != self.index.len() as u64
            || (props.entries == 0) != self.index.is_empty()
        {
            return Err(malformed(at, "properties (disagree with the index)"));
        }
        if props.entries > 0 {
            InternalKeyRef::decode(&props.smallest_key).map_err(|e| e.at(at))?;
            InternalKeyRef::decode(&props.largest_key).map_err(|e| e.at(at))?;
            if compare_internal(&props.smallest_key, &props.largest_key) == Ordering::Greater {
                return Err(DecodeError::new(
                    at,
                    DecodeErrorKind::KeyOrder { what: "properties" },
                ));
            }
        }
        Ok(())
    }

    /// Reads and verifies one block (checksum at its offset, the handle's
    /// checksum, decompression within [`MAX_BLOCK_UNCOMPRESSED`]).
    /// Uncompressed blocks are borrowed from the file. Errors carry file
    /// offsets.
    ///
    /// # Errors
    /// `OutOfBounds` if the handle points outside the blocks area, else as
    /// [`decode_block`].
    pub fn read_block(&self, handle: &BlockHandle) -> Result<BlockBytes<'a>, DecodeError> {
        let bound = self.file.len().saturating_sub(FOOTER_LEN) as u64;
        let out_of_bounds = || {
            DecodeError::new(
                handle.offset,
                DecodeErrorKind::OutOfBounds {
                    what: "block",
                    offset: handle.offset,
                    len: handle.size,
                    bound,
                },
            )
        };
        let end = handle
            .offset
            .checked_add(handle.size)
            .filter(|&end| end <= bound);
        let bytes = end
            .and_then(|end| {
                let start = usize::try_from(handle.offset).ok()?;
                self.file.get(start..usize::try_from(end).ok()?)
            })
            .ok_or_else(out_of_bounds)?;
        decode_block(bytes, handle, MAX_BLOCK_UNCOMPRESSED)
            .map(BlockBytes::from)
            .map_err(|e| e.at(handle.offset))
    }

    /// Makes data-block loads go through `cache`, with this table known
    /// as `table_id` there.
    pub fn set_block_cache(&mut self, cache: Arc<dyn BlockCache>, table_id: u64) {
        self.cache = Some((cache, table_id));
    }

    /// Whether data block `index` was verified (stored uncompressed), and
    /// the bit to set once it is.
    fn verified_bit(&self, index: usize) -> (bool, Option<(&AtomicU64, u64)>) {
        let word = self.verified.get(index / 64);
        let bit = 1u64 << (index % 64);
        let done = word.is_some_and(|w| w.load(Atomic::Relaxed) & bit != 0);
        (done, word.map(|w| (w, bit)))
    }

    /// Data block `index` (at `handle`): read in place if it was verified
    /// before, else through the block cache when there is one, else read
    /// and verified. `verify_again` ignores earlier verification.
    fn read_data_block(
        &self,
        index: usize,
        handle: &BlockHandle,
        verify_again: bool,
    ) -> Result<BlockBytes<'a>, DecodeError> {
        let (verified, bit) = self.verified_bit(index);
        if verified && !verify_again {
            // Checked when first read: the payload is the block minus its
            // trailer, stored uncompressed.
            let start = usize::try_from(handle.offset).ok();
            let end = handle
                .offset
                .checked_add(handle.size)
                .and_then(|end| end.checked_sub(BLOCK_TRAILER_LEN as u64))
                .and_then(|end| usize::try_from(end).ok());
            if let Some(payload) = start.zip(end).and_then(|(s, e)| self.file.get(s..e)) {
                return Ok(BlockBytes::Borrowed(payload));
            }
        }
        let mark = |bytes: &BlockBytes<'a>| {
            if let (BlockBytes::Borrowed(_), Some((word, bit))) = (bytes, bit) {
                word.fetch_or(bit, Atomic::Relaxed);
            }
        };
        let Some((cache, table_id)) = &self.cache else {
            let bytes = self.read_block(handle)?;
            mark(&bytes);
            return Ok(bytes);
        };
        if let Some(block) = cache.get(*table_id, handle.offset) {
            return Ok(BlockBytes::Shared(block));
        }
        match self.read_block(handle)? {
            // Stored uncompressed: the bytes are the file's (a mapping),
            // verified; copying them into the cache would cost more than
            // verifying them again.
            borrowed @ BlockBytes::Borrowed(_) => {
                mark(&borrowed);
                Ok(borrowed)
            }
            BlockBytes::Shared(block) => {
                cache.insert(*table_id, handle.offset, Arc::clone(&block));
                Ok(BlockBytes::Shared(block))
            }
        }
    }

    /// The table's footer.
    #[must_use]
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The table's properties.
    #[must_use]
    pub fn properties(&self) -> &Properties {
        &self.properties
    }

    /// The data blocks' handles, in key order.
    pub fn data_blocks(&self) -> impl Iterator<Item = &BlockHandle> {
        self.index.handles.iter()
    }

    /// Whether the filter allows `user_key` to be in the table (always
    /// true without a filter).
    #[must_use]
    pub fn may_contain(&self, user_key: &[u8]) -> bool {
        self.may_contain_hashed(user_key, filter_hash(user_key))
    }

    /// As [`TableReader::may_contain`], with the key's
    /// [`super::filter_hash`] computed by the caller.
    #[must_use]
    pub fn may_contain_hashed(&self, user_key: &[u8], hash: u64) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| bloom_may_contain_hashed(filter, user_key, hash))
    }

    /// The newest entry for `user_key` with a sequence number at or below
    /// `seq` (a `seq` above [`MAX_SEQ`] means the newest of all): its kind
    /// and value (empty for a tombstone).
    ///
    /// # Errors
    /// If a block on the way is damaged.
    pub fn get(&self, user_key: &[u8], seq: u64) -> Result<Option<Found<'a>>, DecodeError> {
        Ok(self
            .get_versioned(user_key, seq)?
            .map(|(kind, _, value)| (kind, value)))
    }

    /// As [`TableReader::get`], with the found entry's sequence number.
    ///
    /// # Errors
    /// If a block on the way is damaged.
    pub fn get_versioned(
        &self,
        user_key: &[u8],
        seq: u64,
    ) -> Result<Option<FoundVersion<'a>>, DecodeError> {
        self.get_versioned_hashed(user_key, filter_hash(user_key), seq)
    }

    /// As [`TableReader::get_versioned`], with the key's
    /// [`super::filter_hash`] computed by the caller (once for all the
    /// tables a read consults).
    ///
    /// # Errors
    /// If a block on the way is damaged.
    pub fn get_versioned_hashed(
        &self,
        user_key: &[u8],
        hash: u64,
        seq: u64,
    ) -> Result<Option<FoundVersion<'a>>, DecodeError> {
        if !self.may_contain_hashed(user_key, hash) {
            return Ok(None);
        }
        let mut target = Vec::with_capacity(user_key.len() + 8);
        encode_internal_key(user_key, seq.min(MAX_SEQ), ValueKind::FOR_SEEK, &mut target);
        let mut iter = self.iter();
        if !iter.seek(&target)? {
            return Ok(None);
        }
        let Some((key, _)) = iter.current() else {
            return Ok(None);
        };
        if key.user_key != user_key {
            return Ok(None);
        }
        let (kind, found_seq) = (key.kind, key.seq);
        Ok(iter.value_bytes().map(|value| (kind, found_seq, value)))
    }

    /// A cursor over the table's entries, not yet positioned.
    #[must_use]
    pub fn iter(&self) -> TableIter<'_, 'a> {
        TableIter {
            table: self,
            block: 0,
            data: None,
            error: None,
            verify_again: false,
            fresh_block: false,
        }
    }

    /// Reads every entry, checking everything reading checks, and that the
    /// entries match the properties (count, smallest and largest key).
    ///
    /// # Errors
    /// The first damage found.
    pub fn verify(&self) -> Result<(), DecodeError> {
        let at = self.footer.properties.offset;
        let mut iter = self.iter();
        iter.verify_again = true;
        let mut entries = 0u64;
        let mut more = iter.seek_to_first()?;
        while let Some((key, _)) = iter.current_raw().filter(|_| more) {
            if entries == 0 && key != self.properties.smallest_key {
                return Err(malformed(at, "properties (smallest key)"));
            }
            entries += 1;
            more = iter.next()?;
        }
        let mut iter = self.iter();
        if iter.seek_to_last()?
            && iter.current_raw().map(|(k, _)| k) != Some(&self.properties.largest_key[..])
        {
            return Err(malformed(at, "properties (largest key)"));
        }
        if entries != self.properties.entries {
            return Err(DecodeError::new(
                at,
                DecodeErrorKind::CountMismatch {
                    declared: self.properties.entries,
                    found: entries,
                },
            ));
        }
        Ok(())
    }
}

/// A cursor over a table's entries in internal-key order, forwards and
/// backwards. Movements return `Ok(true)` on an entry, `Ok(false)` past
/// either end (after which `next` and `prev` stay there until a seek), and
/// an error when a block is damaged; errors are sticky.
#[derive(Debug, Clone)]
pub struct TableIter<'t, 'a> {
    table: &'t TableReader<'a>,
    /// The index of the loaded data block.
    block: usize,
    data: Option<BlockIter<'a>>,
    error: Option<DecodeError>,
    /// Check every block it loads, even those verified before.
    verify_again: bool,
    /// The next entry checked is the first of a freshly loaded block (so
    /// its lower bound is checked; later entries of the block follow it in
    /// order, which the block iterator checks).
    fresh_block: bool,
}

impl<'a> TableIter<'_, 'a> {
    /// Whether the cursor is on an entry.
    #[must_use]
    pub fn valid(&self) -> bool {
        self.data.as_ref().is_some_and(BlockIter::valid)
    }

    /// The current entry's decoded key and value.
    #[must_use]
    pub fn current(&self) -> Option<(InternalKeyRef<'_>, &[u8])> {
        let (key, value) = self.current_raw()?;
        Some((InternalKeyRef::decode(key).ok()?, value))
    }

    /// The current entry's internal key and value.
    #[must_use]
    pub fn current_raw(&self) -> Option<(&[u8], &[u8])> {
        self.data.as_ref()?.current()
    }

    /// The current value, borrowed from the file when its block is stored
    /// uncompressed.
    #[must_use]
    pub fn value_bytes(&self) -> Option<Cow<'a, [u8]>> {
        self.data.as_ref()?.value_bytes()
    }

    /// The error that stopped the cursor, if any.
    #[must_use]
    pub fn status(&self) -> Option<&DecodeError> {
        self.error.as_ref()
    }

    /// Moves to the first entry.
    ///
    /// # Errors
    /// If a block read on the way is damaged.
    pub fn seek_to_first(&mut self) -> Result<bool, DecodeError> {
        self.run(|it| it.first_from(0))
    }

    /// Moves to the last entry.
    ///
    /// # Errors
    /// If a block read on the way is damaged.
    pub fn seek_to_last(&mut self) -> Result<bool, DecodeError> {
        self.run(|it| it.last_from(it.table.index.len().checked_sub(1)))
    }

    /// Moves to the first entry at or after the internal key `target`.
    ///
    /// # Errors
    /// If a block read on the way is damaged.
    pub fn seek(&mut self, target: &[u8]) -> Result<bool, DecodeError> {
        self.run(|it| {
            let block = it
                .table
                .index
                .partition_point(|entry| compare_internal(entry.key, target) == Ordering::Less);
            if block >= it.table.index.len() {
                it.data = None;
                return Ok(false);
            }
            let at = it.offset_of(block);
            if it.load(block)?.seek(target).map_err(|e| e.at(at))? {
                return it.check_current();
            }
            it.first_from(block + 1)
        })
    }

    /// Moves to the next entry.
    ///
    /// # Errors
    /// If the next entry or block is damaged.
    #[expect(
        clippy::should_implement_trait,
        reason = "a fallible cursor movement, not an Iterator"
    )]
    pub fn next(&mut self) -> Result<bool, DecodeError> {
        self.run(|it| {
            let at = it.offset_of(it.block);
            let Some(data) = it.data.as_mut().filter(|data| data.valid()) else {
                return Ok(false);
            };
            if data.next().map_err(|e| e.at(at))? {
                return it.check_current();
            }
            it.first_from(it.block + 1)
        })
    }

    /// Moves to the previous entry.
    ///
    /// # Errors
    /// If the previous entry or block is damaged.
    pub fn prev(&mut self) -> Result<bool, DecodeError> {
        self.run(|it| {
            let at = it.offset_of(it.block);
            let Some(data) = it.data.as_mut().filter(|data| data.valid()) else {
                return Ok(false);
            };
            if data.prev().map_err(|e| e.at(at))? {
                // Backward, keys fall towards the lower bound: check it.
                it.fresh_block = true;
                return it.check_current();
            }
            it.last_from(it.block.checked_sub(1))
        })
    }

    fn run(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<bool, DecodeError>,
    ) -> Result<bool, DecodeError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        step(self).inspect_err(|error| {
            self.data = None;
            self.error = Some(error.clone());
        })
    }

    fn offset_of(&self, block: usize) -> u64 {
        self.table
            .index
            .get(block)
            .map_or(0, |entry| entry.handle.offset)
    }

    fn load(&mut self, block: usize) -> Result<&mut BlockIter<'a>, DecodeError> {
        let handle = self
            .table
            .index
            .get(block)
            .map(|entry| entry.handle)
            .ok_or_else(|| malformed(0, "table iterator (block index)"))?;
        let bytes = self
            .table
            .read_data_block(block, &handle, self.verify_again)?;
        let iter = Block::new(bytes)
            .map_err(|e| e.at(handle.offset))?
            .iter_reusing(compare_internal, self.data.take());
        self.block = block;
        self.fresh_block = true;
        Ok(self.data.insert(iter))
    }

    fn first_from(&mut self, mut block: usize) -> Result<bool, DecodeError> {
        while block < self.table.index.len() {
            let at = self.offset_of(block);
            if self.load(block)?.seek_to_first().map_err(|e| e.at(at))? {
                return self.check_current();
            }
            block += 1;
        }
        self.data = None;
        Ok(false)
    }

    fn last_from(&mut self, mut block: Option<usize>) -> Result<bool, DecodeError> {
        while let Some(current) = block {
            let at = self.offset_of(current);
            if self.load(current)?.seek_to_last().map_err(|e| e.at(at))? {
                return self.check_current();
            }
            block = current.checked_sub(1);
        }
        self.data = None;
        Ok(false)
    }

    /// Checks the entry the cursor is on: a valid internal key, within
    /// its block's index range (at or below the block's index key; above
    /// the previous block's, checked for the first entry reached after a
    /// load: the rest of the block's entries increase from it).
    fn check_current(&mut self) -> Result<bool, DecodeError> {
        let fresh = std::mem::take(&mut self.fresh_block);
        let Some((key, _)) = self.current_raw() else {
            return Ok(false);
        };
        let at = self.offset_of(self.block);
        InternalKeyRef::decode(key).map_err(|e| e.at(at))?;
        let index = &self.table.index;
        let above_upper = index
            .get(self.block)
            .is_some_and(|upper| compare_internal(key, upper.key) == Ordering::Greater);
        let below_lower = fresh
            && self
                .block
                .checked_sub(1)
                .and_then(|i| index.get(i))
                .is_some_and(|lower| compare_internal(key, lower.key) != Ordering::Greater);
        if above_upper || below_lower {
            return Err(DecodeError::new(
                at,
                DecodeErrorKind::KeyOrder {
                    what: "data block (key outside its index range)",
                },
            ));
        }
        Ok(true)
    }
}
