//! The memtable's arena: memory handed out by bumping an offset, freed all
//! at once when the memtable is dropped.
//!
//! Role: every skip-list node (its header, links, key and value) lives in
//! one allocation from here, so an insert costs one atomic add instead of
//! heap allocations, entries of one memtable sit close together, and the
//! memtable's size is the arena's: bytes handed out, not an estimate.
//!
//! Memory comes in chunks. Allocations take the next bytes of the current
//! chunk with one `fetch_add`; when it is exhausted one thread installs a
//! new chunk under a mutex (the others retry). An allocation larger than a
//! quarter of a chunk gets a chunk of its own, so large values never waste
//! the tail of a shared one.
//!
//! Thread-safety: `alloc` may be called from any number of threads at once.
//! Memory handed out is never handed out again, never moved, and stays
//! valid until the arena is dropped.
//!
//! Invariants:
//! - Every pointer returned is 8-byte aligned, points at `size` bytes
//!   inside one chunk, and no two allocations overlap.
//! - `allocated_bytes` is the sum of the sizes handed out (each rounded up
//!   to 8), so it only grows.

#![allow(
    unsafe_code,
    reason = "a bump allocator hands out raw memory; each block says why it is sound"
)]

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Alignment of every allocation (the skip list's links are 8-byte atomics).
pub(crate) const ALIGN: usize = 8;

/// One block of memory owned by the arena.
struct Chunk {
    base: NonNull<u8>,
    capacity: usize,
    /// Bytes handed out (or claimed by an allocation that did not fit).
    used: AtomicUsize,
}

impl Chunk {
    fn new(capacity: usize) -> Chunk {
        let layout = Layout::from_size_align(capacity.max(ALIGN), ALIGN)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::new::<u64>()));
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(base) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Chunk {
            base,
            capacity: layout.size(),
            used: AtomicUsize::new(0),
        }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: `base` came from `alloc` with exactly this layout (the
        // capacity was taken from the layout) and is freed only here.
        unsafe {
            std::alloc::dealloc(
                self.base.as_ptr(),
                Layout::from_size_align_unchecked(self.capacity, ALIGN),
            );
        }
    }
}

/// A concurrent bump allocator (see the module documentation).
pub(crate) struct Arena {
    /// The chunk small allocations come from; points into `chunks`.
    current: AtomicPtr<Chunk>,
    /// Every chunk, kept (boxed, so they never move) until the arena drops.
    #[expect(
        clippy::vec_box,
        reason = "`current` points at a chunk: chunks must not move when the vector grows"
    )]
    chunks: Mutex<Vec<Box<Chunk>>>,
    chunk_bytes: usize,
    allocated: AtomicUsize,
}

// SAFETY: the arena's raw pointers point into chunks it owns and frees only
// on drop; chunk memory is handed out once, to one allocation, and all
// shared bookkeeping is atomic or behind the mutex.
unsafe impl Send for Arena {}
// SAFETY: as for `Send`: `alloc` takes `&self` and synchronises through
// atomics and the mutex.
unsafe impl Sync for Arena {}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("allocated", &self.allocated_bytes())
            .field("chunk_bytes", &self.chunk_bytes)
            .finish()
    }
}

impl Arena {
    /// An arena whose chunks hold `chunk_bytes` each (at least 4 KiB).
    pub(crate) fn new(chunk_bytes: usize) -> Arena {
        let chunk_bytes = chunk_bytes.max(4096).next_multiple_of(ALIGN);
        let mut first = Box::new(Chunk::new(chunk_bytes));
        let current: *mut Chunk = &mut *first;
        Arena {
            current: AtomicPtr::new(current),
            chunks: Mutex::new(vec![first]),
            chunk_bytes,
            allocated: AtomicUsize::new(0),
        }
    }

    /// Bytes handed out so far.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    /// `size` bytes (rounded up to a multiple of 8), 8-byte aligned,
    /// uninitialised, valid until the arena is dropped.
    pub(crate) fn alloc(&self, size: usize) -> NonNull<u8> {
        let size = size.max(1).next_multiple_of(ALIGN);
        self.allocated.fetch_add(size, Ordering::Relaxed);
        if size > self.chunk_bytes / 4 {
            return self.alloc_dedicated(size);
        }
        loop {
            let chunk_ptr = self.current.load(Ordering::Acquire);
            // SAFETY: `current` always points at a chunk boxed in `chunks`,
            // which lives as long as the arena.
            let chunk = unsafe { &*chunk_ptr };
            let start = chunk.used.fetch_add(size, Ordering::Relaxed);
            if start
                .checked_add(size)
                .is_some_and(|end| end <= chunk.capacity)
            {
                // SAFETY: `start + size <= capacity`, so the offset stays in
                // the chunk; `fetch_add` gave these bytes to this call alone.
                return unsafe { chunk.base.add(start) };
            }
            self.replace_chunk(chunk_ptr);
        }
    }

    /// Installs a fresh current chunk unless another thread already
    /// replaced `exhausted`.
    #[cold]
    fn replace_chunk(&self, exhausted: *mut Chunk) {
        let mut chunks = self.chunks.lock();
        if self.current.load(Ordering::Acquire) != exhausted {
            return;
        }
        let mut chunk = Box::new(Chunk::new(self.chunk_bytes));
        let fresh: *mut Chunk = &mut *chunk;
        chunks.push(chunk);
        self.current.store(fresh, Ordering::Release);
    }

    #[cold]
    fn alloc_dedicated(&self, size: usize) -> NonNull<u8> {
        let chunk = Box::new(Chunk::new(size));
        chunk.used.store(size, Ordering::Relaxed);
        let base = chunk.base;
        self.chunks.lock().push(chunk);
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_disjoint_and_counted() {
        let arena = Arena::new(4096);
        let mut spans = Vec::new();
        for size in [1, 7, 8, 9, 100, 1000, 2000, 5000, 3, 64] {
            let p = arena.alloc(size).as_ptr() as usize;
            assert_eq!(p % ALIGN, 0);
            spans.push((p, size.next_multiple_of(ALIGN)));
        }
        spans.sort();
        for pair in spans.windows(2) {
            if let [(a, len), (b, _)] = pair {
                assert!(a + len <= *b, "allocations overlap");
            }
        }
        let total: usize = spans.iter().map(|(_, len)| len).sum();
        assert_eq!(arena.allocated_bytes(), total);
    }

    #[test]
    fn concurrent_allocations_never_overlap() {
        let arena = std::sync::Arc::new(Arena::new(4096));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let arena = std::sync::Arc::clone(&arena);
                std::thread::spawn(move || {
                    (0..2000)
                        .map(|i| {
                            let size = 8 + (i * 7 + t) % 200;
                            let p = arena.alloc(size);
                            // SAFETY (test): the allocation is ours and `size` long.
                            unsafe { std::ptr::write_bytes(p.as_ptr(), t as u8, size) };
                            (p.as_ptr() as usize, size.next_multiple_of(ALIGN))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut spans: Vec<(usize, usize)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect();
        assert_eq!(spans.len(), 8000);
        spans.sort();
        for pair in spans.windows(2) {
            if let [(a, len), (b, _)] = pair {
                assert!(a + len <= *b, "allocations overlap");
            }
        }
    }
}
