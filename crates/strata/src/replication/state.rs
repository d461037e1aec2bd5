//! A node's replication state files: `EPOCH` and `RANGES`.
//!
//! FORMAT (both ASCII text, written to `NAME.tmp`, synced, renamed over
//! `NAME`, and the directory synced, so a crash leaves the old file or the
//! new one; see `docs/format.md`):
//!
//! ```text
//! EPOCH:  "strata-epoch 1\n" <epoch in decimal> "\n"
//! RANGES: "strata-ranges 1\n" { <start in hex> " " (<end in hex> | "-") "\n" }
//! ```
//!
//! A primary's epoch rises by one at each promotion; a replica records the
//! highest epoch it has followed and refuses an upstream with a lower one.
//! `RANGES` records the key ranges a replica was built for; a later start
//! with other ranges is refused.
//!
//! Invariants: the epoch in memory never exceeds the durable one; it never
//! goes down.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::env::{FileSystem, RealFileSystem, read_file, write_file_atomically};
use crate::error::{Error, Result};

const EPOCH_HEADER: &str = "strata-epoch 1\n";
const RANGES_HEADER: &str = "strata-ranges 1\n";
const EPOCH_FILE: &str = "EPOCH";
const RANGES_FILE: &str = "RANGES";
/// Neither file is ever near this long; a longer one is damage.
const STATE_FILE_BYTES_MAX: u64 = 1 << 20;

/// A node's epoch (in `<dir>/EPOCH`), shared by its upstream service and
/// its replica loop (clones share it).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use strata::MemFileSystem;
/// use strata::replication::Epoch;
///
/// let fs = Arc::new(MemFileSystem::new());
/// let epoch = Epoch::open_in(fs.clone(), "node".as_ref())?;
/// assert_eq!(epoch.get(), 0);
/// epoch.raise_to(3)?;
/// assert_eq!(Epoch::open_in(fs, "node".as_ref())?.get(), 3);
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Epoch {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    value: Arc<AtomicU64>,
}

impl Epoch {
    /// Reads `<dir>/EPOCH` on the real file system (0 if it does not exist).
    ///
    /// # Errors
    /// As [`Epoch::open_in`].
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_in(Arc::new(RealFileSystem), dir)
    }

    /// Reads `<dir>/EPOCH` on `fs` (0 if it does not exist).
    ///
    /// # Errors
    /// [`Error::Corruption`] naming the file for content that is not the
    /// format above; [`Error::Io`].
    pub fn open_in(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<Self> {
        let path = dir.join(EPOCH_FILE);
        let value = if fs.exists(&path).map_err(|e| Error::io("stat", &path, e))? {
            let bytes = read_file(&*fs, &path, STATE_FILE_BYTES_MAX)?;
            parse_epoch(&bytes).ok_or_else(|| {
                Error::corruption_msg(
                    &path,
                    0,
                    format!("not an epoch file ({EPOCH_HEADER:?} and a number)"),
                )
            })?
        } else {
            0
        };
        Ok(Self {
            fs,
            dir: dir.to_path_buf(),
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
    /// [`Error::Io`] naming the file; the epoch is then unchanged in memory.
    pub fn raise_to(&self, epoch: u64) -> Result<()> {
        if epoch <= self.get() {
            return Ok(());
        }
        create_dir(&*self.fs, &self.dir)?;
        write_file_atomically(
            &*self.fs,
            &self.dir,
            EPOCH_FILE,
            format!("{EPOCH_HEADER}{epoch}\n").as_bytes(),
        )?;
        self.value.fetch_max(epoch, Ordering::AcqRel);
        Ok(())
    }
}

fn parse_epoch(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let number = text.strip_prefix(EPOCH_HEADER)?.strip_suffix('\n')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// Records `ranges` in `<state_dir>/RANGES` on first start, and refuses a
/// later start with other ranges.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use strata::MemFileSystem;
/// use strata::replication::record_ranges;
///
/// let fs = Arc::new(MemFileSystem::new());
/// let eu = vec![(b"eu/".to_vec(), Some(b"eu0".to_vec()))];
/// record_ranges(&*fs, "r.state".as_ref(), &eu)?;
/// record_ranges(&*fs, "r.state".as_ref(), &eu)?; // the same: fine
/// assert!(record_ranges(&*fs, "r.state".as_ref(), &[]).is_err());
/// # Ok::<(), strata::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] if other ranges were recorded; [`Error::Io`].
pub fn record_ranges(
    fs: &dyn FileSystem,
    state_dir: &Path,
    ranges: &[(Vec<u8>, Option<Vec<u8>>)],
) -> Result<()> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let body: String = ranges
        .iter()
        .map(|(start, end)| {
            format!(
                "{} {}\n",
                hex(start),
                end.as_deref().map_or("-".to_string(), hex)
            )
        })
        .collect();
    let text = format!("{RANGES_HEADER}{body}");
    let path = state_dir.join(RANGES_FILE);
    if fs.exists(&path).map_err(|e| Error::io("stat", &path, e))? {
        let found = read_file(fs, &path, STATE_FILE_BYTES_MAX)?;
        if found == text.as_bytes() {
            return Ok(());
        }
        return Err(Error::InvalidArgument(format!(
            "this replica was built for other key ranges ({}); remove its data and state directories to rebuild it for the new ones",
            path.display()
        )));
    }
    create_dir(fs, state_dir)?;
    write_file_atomically(fs, state_dir, RANGES_FILE, text.as_bytes())
}

/// Creates `dir` if missing, making its name durable in its parent.
fn create_dir(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    if fs.exists(dir).map_err(|e| Error::io("stat", dir, e))? {
        return Ok(());
    }
    fs.create_dir_all(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs.sync_dir(parent)
        .map_err(|e| Error::io("sync directory", parent, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::env::MemFileSystem;

    #[test]
    fn damaged_epoch_files_are_refused_by_name() {
        let fs = MemFileSystem::new();
        fs.create_dir_all(Path::new("n")).unwrap();
        for bad in [
            "",
            "strata-epoch 1\n",
            "strata-epoch 1\n-1\n",
            "strata-epoch 2\n4\n",
            "strata-epoch 1\n4",
        ] {
            fs.write_file(Path::new("n/EPOCH"), bad.as_bytes()).unwrap();
            let err = Epoch::open_in(Arc::new(fs.clone()), Path::new("n")).unwrap_err();
            assert!(err.to_string().contains("EPOCH"), "{err}");
        }
    }
}
