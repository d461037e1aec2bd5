//! The one error type of the `strata` crate, with the evidence an operator
//! needs: which file, which offset, which operation.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use strata_format::DecodeError;

/// The result type of every fallible Strata operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Strata.
///
/// # Examples
///
/// ```
/// let err = strata::Error::InvalidArgument("key is 70000 bytes, the limit is 65536".into());
/// assert!(err.to_string().contains("70000"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("I/O error: {op} {path}: {source}")]
    Io {
        /// What was being done (`"write"`, `"fdatasync"`, `"open"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Stored data failed a check: a checksum, a length, an order. Data that
    /// fails a check is never returned.
    #[error("corruption in {path} at offset {offset}: {detail}")]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage in that file.
        offset: u64,
        /// What was wrong.
        detail: String,
        /// The decoder's structured error (expected and actual checksums,
        /// lengths), when a decoder found it. Boxed to keep `Error` small.
        #[source]
        source: Option<Box<DecodeError>>,
    },
    /// An earlier write or sync failed, so nothing more can be made durable
    /// safely. Every later write fails with this error; reopening recovers
    /// from what is durable.
    #[error(
        "the log is poisoned by an earlier failure ({reason}); reopen to recover from what is durable"
    )]
    Poisoned {
        /// The failure that poisoned the log.
        reason: Arc<str>,
    },
    /// A caller's argument was rejected; nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A log position that is no longer retained was requested.
    #[error(
        "sequence number {requested} is no longer in the log (the oldest retained is {oldest_retained})"
    )]
    LogTruncated {
        /// The sequence number asked for.
        requested: u64,
        /// The oldest sequence number still in the log.
        oldest_retained: u64,
    },
    /// A log position beyond the end of the log was requested.
    #[error("sequence number {requested} is beyond the end of the log (next is {next})")]
    BeyondEnd {
        /// The sequence number asked for.
        requested: u64,
        /// The next sequence number the log will assign.
        next: u64,
    },
    /// The database or log was closed.
    #[error("closed")]
    Closed,
    /// The database follows another (a replica): it takes no writes of its
    /// own. The message says which node to write to, if known.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// A replicated batch does not continue the log: its first sequence
    /// number is not the one that must come next.
    #[error("replicated batch starts at sequence number {found}, but {expected} must come next")]
    OutOfSequence {
        /// The sequence number that must come next.
        expected: u64,
        /// The batch's first sequence number.
        found: u64,
    },
    /// Another process (or handle) holds the data directory's lock.
    #[error("{path} is locked by another process or handle")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(path: impl Into<PathBuf>, source: DecodeError) -> Self {
        Self::Corruption {
            path: path.into(),
            offset: source.offset,
            detail: source.kind.to_string(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn corruption_msg(
        path: impl Into<PathBuf>,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        Self::Corruption {
            path: path.into(),
            offset,
            detail: detail.into(),
            source: None,
        }
    }

    /// Whether this error reports damaged data.
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        matches!(self, Self::Corruption { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Result<T, Error>` is returned everywhere: keep the error small, so
    /// that `Ok` paths do not pay to move a large `Err` (and users' code
    /// passes clippy's `result_large_err`).
    #[test]
    fn error_stays_small() {
        assert!(
            std::mem::size_of::<Error>() <= 80,
            "{}",
            std::mem::size_of::<Error>()
        );
    }
}
