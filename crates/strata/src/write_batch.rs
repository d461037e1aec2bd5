//! `WriteBatch`: puts, deletes and range deletions applied atomically, in
//! order.

use strata_format::wal::BatchBuilder;

/// An atomic group of puts and deletes. All of it is applied, or none of
/// it, for readers, after a crash and on replicas; later operations win
/// over earlier ones on the same key.
///
/// # Examples
///
/// ```
/// let mut batch = strata::WriteBatch::new();
/// batch.put(b"a", b"1");
/// batch.delete(b"b");
/// assert_eq!(batch.len(), 2);
/// ```
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub(crate) inner: BatchBuilder,
    pub(crate) key_bytes_max: usize,
    pub(crate) value_bytes_max: usize,
    /// The first invalid operation added, if any: the write refuses the
    /// batch whole, naming it.
    pub(crate) invalid: Option<String>,
}

impl WriteBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.key_bytes_max = self.key_bytes_max.max(key.len());
        self.value_bytes_max = self.value_bytes_max.max(value.len());
        self.inner.put(key, value);
    }

    /// Removes `key` (a no-op for readers if it is absent).
    pub fn delete(&mut self, key: &[u8]) {
        self.key_bytes_max = self.key_bytes_max.max(key.len());
        self.inner.delete(key);
    }

    /// Removes every key in `[start, end)`, at the cost of one operation
    /// whatever the number of keys: later reads skip what it hides, and
    /// compaction drops it (whole tables without reading them where it
    /// can). A range with `start >= end` makes the write refuse the batch.
    ///
    /// # Examples
    ///
    /// ```
    /// # use strata::{Db, MemFileSystem, Options, WriteBatch, WriteOptions};
    /// # use std::sync::Arc;
    /// # let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
    /// for k in [b"a1", b"a2", b"b1"] { db.put(k, b"v")?; }
    /// let mut batch = WriteBatch::new();
    /// batch.delete_range(b"a", b"b");
    /// batch.put(b"a3", b"new"); // after the deletion in the batch: kept
    /// db.write(batch, &WriteOptions::default())?;
    /// let keys: Vec<_> = db.scan(..)?.map(|kv| kv.unwrap().0).collect();
    /// assert_eq!(keys, vec![b"a3".to_vec(), b"b1".to_vec()]);
    /// # Ok::<(), strata::Error>(())
    /// ```
    pub fn delete_range(&mut self, start: &[u8], end: &[u8]) {
        if start >= end {
            if self.invalid.is_none() {
                self.invalid = Some(format!(
                    "delete_range needs start < end, got start of {} bytes and end of {} bytes (operation {})",
                    start.len(),
                    end.len(),
                    self.len()
                ));
            }
            return;
        }
        self.key_bytes_max = self.key_bytes_max.max(start.len()).max(end.len());
        self.inner.delete_range(start, end);
    }

    /// The number of operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.count() as usize
    }

    /// Whether the batch holds no operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The encoded size in bytes (what the limit `batch_bytes_max` counts).
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.inner.encoded_len()
    }

    /// Removes every operation.
    pub fn clear(&mut self) {
        self.inner.clear();
        self.key_bytes_max = 0;
        self.value_bytes_max = 0;
        self.invalid = None;
    }
}
