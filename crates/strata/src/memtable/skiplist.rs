//! An arena-backed, concurrent skip list of internal keys with their values
//! stored inline (in the shape of RocksDB's `InlineSkipList` and Pebble's
//! `arenaskl`).
//!
//! LAYOUT of a node (one arena allocation, 8-byte aligned; native endian,
//! in memory only, never on disk):
//!
//! ```text
//!  offset 0        4           8        12         16           24                 24+8h     24+8h+k
//!  +---------------+-----------+--------+----------+------------+--- - - - --------+- - - - -+- - - - -+
//!  | key_len u32   | value_len | height | hash tag | hash_next  | next[0..h]: 8-byte| internal| value   |
//!  | (k, with the  | u32       | u32    | u32      | 8-byte     | atomic pointers   | key (k) | bytes   |
//!  |  8-byte trailer)          |        |          | atomic ptr | (null: end)       |         |         |
//!  +---------------+-----------+--------+----------+------------+--- - - - --------+- - - - -+- - - - -+
//! ```
//!
//! Beside the list, a hash index serves point lookups: an array of
//! buckets (a power of two, sized from the memtable's capacity), each the
//! head of a chain of every node whose user key hashes there, linked
//! through `hash_next` (newest insert first). A lookup hashes the key once,
//! walks one short chain comparing 32-bit tags before keys, and keeps the
//! newest version at or below the read's sequence number: a few cache
//! misses where a search from the top of the list takes a dozen. A chain
//! holds every version of its keys in this list, so the answer is exact.
//!
//! The internal key is the user key followed by the 8-byte little-endian
//! trailer `(seq << 8) | kind`, exactly as sorted tables store it, so a
//! flush copies keys verbatim. Nodes are ordered as
//! [`strata_format::key::compare_internal`] orders internal keys: user key
//! ascending, then trailer descending (newest first).
//!
//! Inserts are lock-free: a writer finds the node's predecessors and
//! successors at every level, then links the node bottom-up, each level by
//! one compare-and-swap on the predecessor's link (retrying from that
//! predecessor when another insert got in between). Readers follow links
//! with acquire loads and never wait. There is no removal: the whole list
//! is freed with its arena.
//!
//! Invariants:
//! - A node's header, key, value and link at level `i` are written before
//!   the release CAS that links it at level `i`, and never written after
//!   it, so a reader that reaches a node through an acquire load of a link
//!   sees it whole.
//! - At every level the linked nodes are in strictly increasing order.
//! - A node reachable at level `i > 0` is reachable at every level below.
//! - Pointers handed out ([`NodeRef`], [`Position`]) point into this list's
//!   arena and stay valid as long as the list lives.

#![allow(
    unsafe_code,
    reason = "nodes live in raw arena memory; each block says why it is sound"
)]

use std::cell::Cell;
use std::cmp::Ordering;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering as Atomic};

use strata_format::key::TRAILER_LEN;

use super::arena::Arena;

/// The tallest a node may be. With a branching factor of 4, 16 levels keep
/// searches logarithmic up to about 4^16 entries.
pub(crate) const MAX_HEIGHT: usize = 16;

const HEADER_BYTES: usize = 24;
const HASH_NEXT_OFFSET: usize = 16;
const LINK_BYTES: usize = std::mem::size_of::<AtomicPtr<u8>>();

/// A node's address. Only ever made from this list's allocations.
type Raw = *mut u8;

/// Reads a node's header field at `offset` (a `u32`).
///
/// # Safety
/// `node` must be a node of a live list (header written before it was
/// published).
unsafe fn header(node: Raw, offset: usize) -> usize {
    // SAFETY: the header is 16 bytes at the node's 8-aligned start, written
    // before the node was published and never changed.
    unsafe { node.add(offset).cast::<u32>().read() as usize }
}

/// The node's link at `level`.
///
/// # Safety
/// `node` must be a node (or the head) of a live list and `level` below
/// its height.
unsafe fn link<'a>(node: Raw, level: usize) -> &'a AtomicPtr<u8> {
    // SAFETY: links start at offset 16 (8-aligned), one 8-byte atomic per
    // level below the node's height, initialised before publication.
    unsafe {
        &*node
            .add(HEADER_BYTES + level * LINK_BYTES)
            .cast::<AtomicPtr<u8>>()
    }
}

/// The node's hash-chain link.
///
/// # Safety
/// `node` must be a node of a live list.
unsafe fn hash_next<'a>(node: Raw) -> &'a AtomicPtr<u8> {
    // SAFETY: the hash link is the 8-aligned atomic at offset 16 of every
    // node, initialised before publication.
    unsafe { &*node.add(HASH_NEXT_OFFSET).cast::<AtomicPtr<u8>>() }
}

/// The 64-bit hash of a user key (the tables' filter hash, so a read
/// computes it once): the bucket from its high bits, the tag from its low
/// 32.
pub(crate) fn hash_key(user_key: &[u8]) -> u64 {
    strata_format::table::filter_hash(user_key)
}

/// The node's internal key.
///
/// # Safety
/// As [`header`]; the returned slice lives as long as the list.
unsafe fn key_of<'a>(node: Raw) -> &'a [u8] {
    // SAFETY: the key follows the links; its length is in the header; the
    // bytes were written before publication and are never changed.
    unsafe {
        let key_len = header(node, 0);
        let height = header(node, 8);
        std::slice::from_raw_parts(node.add(HEADER_BYTES + height * LINK_BYTES), key_len)
    }
}

/// The node's value.
///
/// # Safety
/// As [`key_of`].
unsafe fn value_of<'a>(node: Raw) -> &'a [u8] {
    // SAFETY: the value follows the key; lengths are in the header.
    unsafe {
        let key_len = header(node, 0);
        let value_len = header(node, 4);
        let height = header(node, 8);
        std::slice::from_raw_parts(
            node.add(HEADER_BYTES + height * LINK_BYTES + key_len),
            value_len,
        )
    }
}

/// Splits an internal key into the user key and the trailer.
fn split(internal: &[u8]) -> (&[u8], u64) {
    match internal.split_last_chunk::<TRAILER_LEN>() {
        Some((user_key, trailer)) => (user_key, u64::from_le_bytes(*trailer)),
        None => (internal, 0),
    }
}

/// Orders node `a` against node `b`.
///
/// # Safety
/// As [`key_of`], for both.
unsafe fn compare_nodes(a: Raw, b: Raw) -> Ordering {
    // SAFETY: forwarded.
    let (user_key, trailer) = split(unsafe { key_of(b) });
    // SAFETY: forwarded.
    unsafe { compare(a, user_key, trailer) }
}

/// Where the last of a run of inserts in increasing order went, so the
/// next one starts its search from there instead of from the head
/// ([`SkipList::insert_sorted`]): a sorted batch's inserts then touch the
/// neighbourhood of the previous one, which is still in cache.
pub(crate) struct Hint {
    prev: [Raw; MAX_HEIGHT],
    valid: bool,
}

impl Default for Hint {
    fn default() -> Self {
        Hint {
            prev: [std::ptr::null_mut(); MAX_HEIGHT],
            valid: false,
        }
    }
}

/// Orders `node` against the target `(user_key, trailer)`.
///
/// # Safety
/// As [`key_of`].
unsafe fn compare(node: Raw, user_key: &[u8], trailer: u64) -> Ordering {
    // SAFETY: forwarded.
    let (node_user_key, node_trailer) = split(unsafe { key_of(node) });
    node_user_key
        .cmp(user_key)
        .then_with(|| trailer.cmp(&node_trailer))
}

thread_local! {
    static HEIGHT_RNG: Cell<u64> = Cell::new({
        // Any odd seed that differs between threads.
        let local = 0u8;
        (std::ptr::addr_of!(local) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
    });
}

/// Hints the processor to bring `node`'s first cache line in (no effect
/// on a null pointer, or where there is no such hint).
fn prefetch(node: Raw) {
    #[cfg(target_arch = "x86_64")]
    if !node.is_null() {
        // SAFETY: a prefetch is only a hint: it never faults, whatever the
        // address, and reads nothing into the program.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                node.cast_const().cast::<i8>(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = node;
}

/// A node height: 1, then each further level with probability 1/4.
fn random_height() -> usize {
    let bits = HEIGHT_RNG.with(|state| {
        // xorshift64*
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    });
    (1 + bits.trailing_zeros() as usize / 2).min(MAX_HEIGHT)
}

/// Zeroed (null) bucket heads of the hash index.
struct Buckets {
    slots: NonNull<AtomicPtr<u8>>,
    len: usize,
}

impl Buckets {
    /// `len` null slots (`len` a power of two), from zeroed memory (pages
    /// the operating system hands out lazily).
    fn new(len: usize) -> Buckets {
        let layout = std::alloc::Layout::array::<AtomicPtr<u8>>(len)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(std::alloc::Layout::new::<u64>()));
        // SAFETY: the layout is non-zero (len >= 1); an all-zero
        // `AtomicPtr` is a null pointer.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(slots) = NonNull::new(raw.cast::<AtomicPtr<u8>>()) else {
            std::alloc::handle_alloc_error(layout)
        };
        Buckets { slots, len }
    }

    fn slot(&self, hash: u64) -> &AtomicPtr<u8> {
        let index = ((hash >> 32) as usize) & (self.len - 1);
        // SAFETY: `index < len` (len a power of two), slots initialised.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    fn bytes(&self) -> usize {
        self.len * LINK_BYTES
    }
}

impl Drop for Buckets {
    fn drop(&mut self) {
        if let Ok(layout) = std::alloc::Layout::array::<AtomicPtr<u8>>(self.len) {
            // SAFETY: allocated in `new` with this layout, freed only here.
            unsafe { std::alloc::dealloc(self.slots.as_ptr().cast(), layout) };
        }
    }
}

/// The skip list (see the module documentation).
pub(crate) struct SkipList {
    arena: Arena,
    head: NonNull<u8>,
    /// The tallest node's height (at least 1).
    height: AtomicUsize,
    buckets: Buckets,
}

// SAFETY: nodes are immutable once published except for their atomic
// links; the arena is `Send + Sync`; `head` points into the arena.
unsafe impl Send for SkipList {}
// SAFETY: as for `Send`: shared access only reads published nodes and
// changes links with atomics.
unsafe impl Sync for SkipList {}

impl std::fmt::Debug for SkipList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkipList")
            .field("arena", &self.arena)
            .finish()
    }
}

/// One entry of the list, borrowed from it.
#[derive(Clone, Copy)]
pub(crate) struct NodeRef<'a> {
    node: NonNull<u8>,
    _list: PhantomData<&'a SkipList>,
}

impl<'a> NodeRef<'a> {
    /// The internal key (user key and trailer).
    pub(crate) fn internal_key(&self) -> &'a [u8] {
        // SAFETY: a `NodeRef` is made only from published nodes of a list
        // that outlives `'a`.
        unsafe { key_of(self.node.as_ptr()) }
    }

    /// The value (empty for a tombstone).
    pub(crate) fn value(&self) -> &'a [u8] {
        // SAFETY: as in `internal_key`.
        unsafe { value_of(self.node.as_ptr()) }
    }

    /// This entry's position, to find it again later.
    pub(crate) fn position(&self) -> Position {
        Position(self.node)
    }
}

/// Where a cursor stands in a list: a node's address, held without a
/// borrow (the cursor keeps the list alive by other means).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position(NonNull<u8>);

// SAFETY: a position is an address into an arena that is `Send + Sync`; it
// is only dereferenced through `SkipList::at`, whose caller guarantees the
// list is alive.
unsafe impl Send for Position {}
// SAFETY: as for `Send`.
unsafe impl Sync for Position {}

impl SkipList {
    /// An empty list whose arena grows in chunks of `chunk_bytes`, with a
    /// hash index of about `expected_entries` buckets (rounded up to a
    /// power of two, at least 16).
    pub(crate) fn new(chunk_bytes: usize, expected_entries: usize) -> SkipList {
        let arena = Arena::new(chunk_bytes);
        let size = HEADER_BYTES + MAX_HEIGHT * LINK_BYTES;
        let head = arena.alloc(size);
        // SAFETY: `head` is `size` fresh bytes, 8-aligned: a header with
        // empty key and value and MAX_HEIGHT null links.
        unsafe {
            let raw = head.as_ptr();
            raw.cast::<u32>().write(0);
            raw.add(4).cast::<u32>().write(0);
            raw.add(8).cast::<u32>().write(MAX_HEIGHT as u32);
            raw.add(12).cast::<u32>().write(0);
            raw.add(HASH_NEXT_OFFSET)
                .cast::<AtomicPtr<u8>>()
                .write(AtomicPtr::new(std::ptr::null_mut()));
            for level in 0..MAX_HEIGHT {
                raw.add(HEADER_BYTES + level * LINK_BYTES)
                    .cast::<AtomicPtr<u8>>()
                    .write(AtomicPtr::new(std::ptr::null_mut()));
            }
        }
        SkipList {
            arena,
            head,
            height: AtomicUsize::new(1),
            buckets: Buckets::new(expected_entries.clamp(16, 1 << 26).next_power_of_two()),
        }
    }

    /// Bytes the list's arena has handed out for entries (nodes, keys and
    /// values; the head node not counted, so an empty list holds 0).
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.arena
            .allocated_bytes()
            .saturating_sub(HEADER_BYTES + MAX_HEIGHT * LINK_BYTES)
    }

    /// Bytes of the hash index (fixed at creation).
    pub(crate) fn index_bytes(&self) -> usize {
        self.buckets.bytes()
    }

    /// Whether the list has no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.first().is_none()
    }

    /// Inserts `user_key` with `trailer` and `value`. Returns false (and
    /// changes nothing) if that internal key is already present.
    ///
    /// # Panics
    /// If the key or value is 4 GiB or longer (the engine's limits are far
    /// below).
    pub(crate) fn insert(&self, user_key: &[u8], trailer: u64, value: &[u8]) -> bool {
        self.insert_with(user_key, trailer, value, None)
    }

    /// As [`SkipList::insert`], for one of a run of inserts in increasing
    /// internal-key order sharing `hint` (the caller sorts them): each
    /// search starts, level by level, from where the previous insert's
    /// ended.
    pub(crate) fn insert_sorted(
        &self,
        user_key: &[u8],
        trailer: u64,
        value: &[u8],
        hint: &mut Hint,
    ) -> bool {
        self.insert_with(user_key, trailer, value, Some(hint))
    }

    #[expect(
        clippy::indexing_slicing,
        reason = "every level is below the node's height, at most MAX_HEIGHT, the arrays' length"
    )]
    fn insert_with(
        &self,
        user_key: &[u8],
        trailer: u64,
        value: &[u8],
        hint: Option<&mut Hint>,
    ) -> bool {
        let key_len = user_key.len() + TRAILER_LEN;
        let (Ok(key_len32), Ok(value_len32)) = (u32::try_from(key_len), u32::try_from(value.len()))
        else {
            panic!("memtable entries are limited to 4 GiB keys and values");
        };
        let hash = hash_key(user_key);
        let bucket = self.buckets.slot(hash);
        // Read the bucket now: its cache miss overlaps the list search, and
        // the value (checked by the CAS below) is usually still current.
        let mut first = bucket.load(Atomic::Relaxed);
        let height = random_height();
        let list_height = self.height.fetch_max(height, Atomic::Relaxed).max(height);

        let mut prev: [Raw; MAX_HEIGHT] = [self.head.as_ptr(); MAX_HEIGHT];
        let mut next: [Raw; MAX_HEIGHT] = [std::ptr::null_mut(); MAX_HEIGHT];
        let head = self.head.as_ptr();
        let mut x = head;
        for level in (0..list_height).rev() {
            let mut start = x;
            if let Some(hint) = hint.as_deref()
                && hint.valid
            {
                // The previous insert's predecessor at this level is before
                // this key too (inserts come in increasing order; nodes are
                // never removed): start from it if it is further along.
                let earlier = hint.prev[level];
                if !earlier.is_null()
                    && earlier != head
                    && (start == head
                        // SAFETY: both are published nodes of this list.
                        || unsafe { compare_nodes(earlier, start) } == Ordering::Greater)
                {
                    start = earlier;
                }
            }
            let (p, n) = self.find_at_level(start, level, user_key, trailer);
            prev[level] = p;
            next[level] = n;
            x = p;
        }
        // SAFETY: `next[0]`, when not null, is a published node.
        if !next[0].is_null() && unsafe { compare(next[0], user_key, trailer) } == Ordering::Equal {
            return false;
        }

        let size = HEADER_BYTES + height * LINK_BYTES + key_len + value.len();
        let node = self.arena.alloc(size).as_ptr();
        // SAFETY: `node` is `size` fresh, 8-aligned bytes owned by this
        // call: write the header, null links, the key, the trailer and the
        // value, all before any link publishes the node.
        unsafe {
            node.cast::<u32>().write(key_len32);
            node.add(4).cast::<u32>().write(value_len32);
            node.add(8).cast::<u32>().write(height as u32);
            node.add(12).cast::<u32>().write(hash as u32);
            node.add(HASH_NEXT_OFFSET)
                .cast::<AtomicPtr<u8>>()
                .write(AtomicPtr::new(std::ptr::null_mut()));
            for level in 0..height {
                node.add(HEADER_BYTES + level * LINK_BYTES)
                    .cast::<AtomicPtr<u8>>()
                    .write(AtomicPtr::new(std::ptr::null_mut()));
            }
            let key_at = node.add(HEADER_BYTES + height * LINK_BYTES);
            std::ptr::copy_nonoverlapping(user_key.as_ptr(), key_at, user_key.len());
            std::ptr::copy_nonoverlapping(
                trailer.to_le_bytes().as_ptr(),
                key_at.add(user_key.len()),
                TRAILER_LEN,
            );
            std::ptr::copy_nonoverlapping(value.as_ptr(), key_at.add(key_len), value.len());
        }

        // Into the hash chain first (readers find it there only after its
        // sequence number is visible, which is after this call returns).
        loop {
            // SAFETY: `node` is ours until published by the CAS below.
            unsafe { hash_next(node).store(first, Atomic::Relaxed) };
            match bucket.compare_exchange(first, node, Atomic::Release, Atomic::Relaxed) {
                Ok(_) => break,
                Err(current) => first = current,
            }
        }
        for level in 0..height {
            loop {
                // SAFETY: `node` has `height` links; `prev[level]` is the
                // head or a published node at least `level + 1` tall.
                let linked = unsafe {
                    link(node, level).store(next[level], Atomic::Relaxed);
                    link(prev[level], level).compare_exchange(
                        next[level],
                        node,
                        Atomic::Release,
                        Atomic::Acquire,
                    )
                };
                if linked.is_ok() {
                    break;
                }
                // Another insert changed this link: search again from the
                // predecessor (still before the key: nodes are never removed).
                let (p, n) = self.find_at_level(prev[level], level, user_key, trailer);
                if level == 0
                    && !n.is_null()
                    // SAFETY: `n` is a published node.
                    && unsafe { compare(n, user_key, trailer) } == Ordering::Equal
                {
                    // A concurrent insert of the same internal key (sequence
                    // numbers are unique, so never in practice): keep theirs.
                    return false;
                }
                prev[level] = p;
                next[level] = n;
            }
        }
        if let Some(hint) = hint {
            // The next (larger) key's predecessors: this node where it is
            // linked, the same ones above.
            hint.prev = prev;
            for slot in hint.prev.iter_mut().take(height) {
                *slot = node;
            }
            hint.valid = true;
        }
        true
    }

    /// From `start` (the head or a node before the target), the last node
    /// at `level` before `(user_key, trailer)` and the node after it.
    fn find_at_level(&self, start: Raw, level: usize, user_key: &[u8], trailer: u64) -> (Raw, Raw) {
        let mut x = start;
        loop {
            // SAFETY: `x` is the head or a node reached through links at
            // `level`, so it is at least `level + 1` tall.
            let n = unsafe { link(x, level).load(Atomic::Acquire) };
            // SAFETY: `n`, when not null, is a published node.
            if !n.is_null() && unsafe { compare(n, user_key, trailer) } == Ordering::Less {
                x = n;
            } else {
                return (x, n);
            }
        }
    }

    fn node_ref(&self, raw: Raw) -> Option<NodeRef<'_>> {
        NonNull::new(raw).map(|node| NodeRef {
            node,
            _list: PhantomData,
        })
    }

    /// The newest entry of `user_key` whose trailer is at most
    /// `trailer_max` (so whose sequence number is at most the read's), by
    /// the hash index.
    /// `hash` is [`hash_key`] of `user_key`.
    pub(crate) fn get(&self, user_key: &[u8], hash: u64, trailer_max: u64) -> Option<NodeRef<'_>> {
        let tag = hash as u32 as usize;
        let mut node = self.buckets.slot(hash).load(Atomic::Acquire);
        let mut best: Option<(u64, Raw)> = None;
        while !node.is_null() {
            // SAFETY: chain nodes are published nodes of this list.
            unsafe {
                if header(node, 12) == tag {
                    let (key, trailer) = split(key_of(node));
                    if key == user_key
                        && trailer <= trailer_max
                        && best.is_none_or(|(newest, _)| trailer > newest)
                    {
                        best = Some((trailer, node));
                    }
                }
                node = hash_next(node).load(Atomic::Acquire);
            }
        }
        best.and_then(|(_, node)| self.node_ref(node))
    }

    /// The first entry at or after `(user_key, trailer)`.
    pub(crate) fn seek(&self, user_key: &[u8], trailer: u64) -> Option<NodeRef<'_>> {
        let mut x = self.head.as_ptr();
        let mut n = std::ptr::null_mut();
        for level in (0..self.height.load(Atomic::Relaxed)).rev() {
            (x, n) = self.find_at_level(x, level, user_key, trailer);
        }
        self.node_ref(n)
    }

    /// The last entry before `(user_key, trailer)`.
    pub(crate) fn seek_before(&self, user_key: &[u8], trailer: u64) -> Option<NodeRef<'_>> {
        let mut x = self.head.as_ptr();
        for level in (0..self.height.load(Atomic::Relaxed)).rev() {
            x = self.find_at_level(x, level, user_key, trailer).0;
        }
        if x == self.head.as_ptr() {
            None
        } else {
            self.node_ref(x)
        }
    }

    /// The first entry.
    pub(crate) fn first(&self) -> Option<NodeRef<'_>> {
        // SAFETY: the head has MAX_HEIGHT links.
        self.node_ref(unsafe { link(self.head.as_ptr(), 0).load(Atomic::Acquire) })
    }

    /// The last entry.
    pub(crate) fn last(&self) -> Option<NodeRef<'_>> {
        let mut x = self.head.as_ptr();
        for level in (0..self.height.load(Atomic::Relaxed)).rev() {
            loop {
                // SAFETY: `x` is the head or a node reached at `level`.
                let n = unsafe { link(x, level).load(Atomic::Acquire) };
                if n.is_null() {
                    break;
                }
                x = n;
            }
        }
        if x == self.head.as_ptr() {
            None
        } else {
            self.node_ref(x)
        }
    }

    /// The entry after `node`.
    pub(crate) fn next(&self, node: NodeRef<'_>) -> Option<NodeRef<'_>> {
        // SAFETY: `node` is a published node of this list (at least 1 tall).
        self.node_ref(unsafe { link(node.node.as_ptr(), 0).load(Atomic::Acquire) })
    }

    /// The entry after `node`, and a prefetch of the one after that: a
    /// walk along the bottom level then waits for one node's memory while
    /// the caller works on the current one, instead of stalling on each.
    pub(crate) fn next_prefetched(&self, node: NodeRef<'_>) -> Option<NodeRef<'_>> {
        let next = self.next(node)?;
        // SAFETY: `next` is a published node (at least 1 tall).
        let after = unsafe { link(next.node.as_ptr(), 0).load(Atomic::Acquire) };
        prefetch(after);
        Some(next)
    }

    /// The entry before `node`.
    pub(crate) fn prev(&self, node: NodeRef<'_>) -> Option<NodeRef<'_>> {
        let (user_key, trailer) = split(node.internal_key());
        self.seek_before(user_key, trailer)
    }

    /// The entry at `position`.
    ///
    /// # Safety
    /// `position` must come from a [`NodeRef`] of this very list.
    pub(crate) unsafe fn at(&self, position: Position) -> NodeRef<'_> {
        NodeRef {
            node: position.0,
            _list: PhantomData,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn trailer(seq: u64, kind: u8) -> u64 {
        (seq << 8) | u64::from(kind)
    }

    fn collect(list: &SkipList) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut node = list.first();
        while let Some(n) = node {
            out.push(n.internal_key().to_vec());
            node = list.next(n);
        }
        out
    }

    #[test]
    fn entries_come_out_in_internal_order() {
        let list = SkipList::new(4096, 64);
        assert!(list.is_empty());
        let mut expected = Vec::new();
        for i in (0..500u64).rev() {
            let key = format!("key{:03}", i % 100);
            assert!(list.insert(key.as_bytes(), trailer(i, 2), &i.to_le_bytes()));
            let mut ikey = key.into_bytes();
            ikey.extend_from_slice(&trailer(i, 2).to_le_bytes());
            expected.push(ikey);
        }
        expected.sort_by(|a, b| strata_format::key::compare_internal(a, b));
        assert_eq!(collect(&list), expected);
        assert!(
            !list.insert(b"key007", trailer(7, 2), b"again"),
            "duplicate refused"
        );
        let found = list.seek(b"key007", trailer(300, 2)).unwrap();
        assert_eq!(
            split(found.internal_key()),
            (&b"key007"[..], trailer(207, 2))
        );
        assert_eq!(found.value(), 207u64.to_le_bytes());
        let before = list
            .seek_before(b"key007", trailer(u64::MAX >> 8, 2))
            .unwrap();
        assert_eq!(
            split(before.internal_key()),
            (&b"key006"[..], trailer(6, 2))
        );
        assert_eq!(
            split(list.last().unwrap().internal_key()),
            (&b"key099"[..], trailer(99, 2))
        );
        assert!(list.seek(b"key100", 0).is_none());
        assert!(list.seek_before(b"key000", u64::MAX).is_none());
        let back = list.prev(list.seek(b"key050", u64::MAX).unwrap()).unwrap();
        assert_eq!(split(back.internal_key()).0, b"key049");
    }

    #[test]
    fn concurrent_inserts_lose_nothing_and_stay_sorted() {
        let list = Arc::new(SkipList::new(8192, 1024));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let list = Arc::clone(&list);
                std::thread::spawn(move || {
                    for i in 0..5000u64 {
                        let key = (i * 7919 + t * 13) % 20000;
                        let seq = t * 1_000_000 + i;
                        assert!(list.insert(&key.to_be_bytes(), trailer(seq, 2), &[t as u8; 3]));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = collect(&list);
        assert_eq!(all.len(), 20000);
        for pair in all.windows(2) {
            assert_eq!(
                strata_format::key::compare_internal(&pair[0], &pair[1]),
                Ordering::Less
            );
        }
    }

    #[test]
    fn readers_run_while_writers_insert() {
        let list = Arc::new(SkipList::new(8192, 1024));
        let writer = {
            let list = Arc::clone(&list);
            std::thread::spawn(move || {
                for i in 0..20000u64 {
                    list.insert(&(i * 2).to_be_bytes(), trailer(i + 1, 2), b"v");
                }
            })
        };
        let mut seen = 0;
        while seen < 20000 {
            let mut count = 0;
            let mut node = list.first();
            let mut last: Option<Vec<u8>> = None;
            while let Some(n) = node {
                if let Some(last) = &last {
                    assert!(last.as_slice() < n.internal_key());
                }
                last = Some(n.internal_key().to_vec());
                count += 1;
                node = list.next(n);
            }
            assert!(count >= seen, "entries never disappear");
            seen = count;
        }
        writer.join().unwrap();
    }

    #[test]
    fn hash_lookups_agree_with_list_searches() {
        // 64 buckets for 3,000 entries: long chains, many versions per key.
        let list = SkipList::new(4096, 64);
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seq in 1..=3000u64 {
            let key = (next() % 500).to_be_bytes();
            let kind = if next() % 4 == 0 { 1 } else { 2 };
            list.insert(&key, trailer(seq, kind), &seq.to_le_bytes());
        }
        for _ in 0..5000 {
            let key = (next() % 600).to_be_bytes();
            let read = next() % 3200;
            let target = trailer(read, 2);
            let by_search = list
                .seek(&key, target)
                .filter(|n| split(n.internal_key()).0 == key)
                .map(|n| n.internal_key().to_vec());
            let by_hash = list
                .get(&key, hash_key(&key), target)
                .map(|n| n.internal_key().to_vec());
            assert_eq!(by_hash, by_search, "key {key:?} at {read}");
        }
    }

    #[test]
    fn sorted_runs_with_a_hint_land_where_plain_inserts_would() {
        let list = SkipList::new(4096, 256);
        // Existing entries, then sorted runs interleaved with them.
        for i in (0..3000u64).step_by(3) {
            list.insert(&i.to_be_bytes(), trailer(i + 1, 2), b"old");
        }
        for run in 0..3u64 {
            let mut hint = Hint::default();
            for i in (run + 1..3000).step_by(7) {
                assert!(list.insert_sorted(
                    &i.to_be_bytes(),
                    trailer(10_000 + i, 2),
                    b"new",
                    &mut hint
                ));
            }
        }
        let all = collect(&list);
        for pair in all.windows(2) {
            assert_eq!(
                strata_format::key::compare_internal(&pair[0], &pair[1]),
                Ordering::Less
            );
        }
        let expected = 1000
            + (0..3u64)
                .map(|run| (run + 1..3000).step_by(7).count())
                .sum::<usize>();
        assert_eq!(all.len(), expected);
        for i in [1u64, 8, 2999] {
            assert!(
                list.get(&i.to_be_bytes(), hash_key(&i.to_be_bytes()), u64::MAX)
                    .is_some()
            );
        }
    }

    #[test]
    fn large_values_get_their_own_chunk() {
        let list = SkipList::new(4096, 64);
        let big = vec![7u8; 100_000];
        assert!(list.insert(b"big", trailer(1, 2), &big));
        assert!(list.insert(b"small", trailer(2, 2), b"x"));
        assert_eq!(list.seek(b"big", u64::MAX).unwrap().value(), big.as_slice());
        assert!(list.allocated_bytes() >= 100_000);
    }
}
