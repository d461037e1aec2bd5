//! The primary epoch a node serves or follows, persisted in
//! `<data dir>/EPOCH`.
//!
//! FORMAT: the ASCII text `strata-epoch 1\n` then the epoch in decimal and
//! `\n`. Written to `EPOCH.tmp`, synced, renamed over `EPOCH`, and the
//! directory synced, so a crash leaves the old value or the new one.
//!
//! A primary's epoch rises by one at each promotion; a replica records the
//! highest epoch it has followed and refuses an upstream with a lower one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const HEADER: &str = "strata-epoch 1\n";

/// A node's epoch, shared by its upstream service and its replica loop.
///
/// # Examples
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let epoch = strata_replication::epoch::Epoch::open(dir.path())?;
/// assert_eq!(epoch.get(), 0);
/// epoch.raise_to(3)?;
/// assert_eq!(strata_replication::epoch::Epoch::open(dir.path())?.get(), 3);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Epoch {
    path: PathBuf,
    value: Arc<AtomicU64>,
}

impl Epoch {
    /// Reads `<dir>/EPOCH` (0 if it does not exist).
    ///
    /// # Errors
    /// An I/O error, or `InvalidData` naming the file for content that is
    /// not the format above.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("EPOCH");
        let value = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not an epoch file ({HEADER:?} and a number)",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            value: Arc::new(AtomicU64::new(value)),
        })
    }

    /// The epoch.
    #[must_use]
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Raises the epoch to `epoch` (no-op if it is not higher), durably.
    ///
    /// # Errors
    /// An I/O error; the epoch is then unchanged in memory.
    pub fn raise_to(&self, epoch: u64) -> std::io::Result<()> {
        if epoch <= self.get() {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(format!("{HEADER}{epoch}\n").as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()?;
        self.value.fetch_max(epoch, Ordering::AcqRel);
        Ok(())
    }
}

fn parse(text: &str) -> Option<u64> {
    let number = text.strip_prefix(HEADER)?.strip_suffix('\n')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn damaged_epoch_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "strata-epoch 1\n",
            "strata-epoch 1\n-1\n",
            "strata-epoch 2\n4\n",
            "strata-epoch 1\n4",
        ] {
            std::fs::write(dir.path().join("EPOCH"), bad).unwrap();
            let err = Epoch::open(dir.path()).unwrap_err();
            assert!(err.to_string().contains("EPOCH"), "{err}");
        }
    }
}
