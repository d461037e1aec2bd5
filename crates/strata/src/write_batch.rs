//! `WriteBatch`: puts and deletes applied atomically, in order.

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
    }
}
