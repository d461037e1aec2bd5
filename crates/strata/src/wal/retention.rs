//! Retention: which segments the log still needs, and pins that hold them.
//!
//! The log keeps a segment while anyone may still need one of its records:
//! the engine declares a low-water mark ([`super::Wal::release_below`]:
//! "everything below this is stored elsewhere"), and holders such as
//! replica slots take [`LogPin`]s ("I will read from here"). A sealed
//! segment whose records all lie below both the low-water mark and every
//! pin is deleted. The active segment is never deleted.
//!
//! The policy is the pure function [`releasable`]; the mechanism deletes
//! files outside the progress lock.
//!
//! Invariants: segments are deleted oldest first by one deleter at a time,
//! so the retained log is always a suffix, even after a crash; a segment is
//! removed from the published list before its file is deleted, so a
//! reader either finds it in the list (and its file, which stays readable
//! through an open handle) or gets `LogTruncated`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{SegmentState, Shared};
use crate::error::{Error, Result};
use crate::seqno::SeqNo;

/// Holds the log from a sequence number on, until advanced or dropped.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "internals")] {
/// use std::sync::Arc;
/// use strata::wal::{BatchBuilder, Wal, WalOptions};
/// use strata::{MemFileSystem, SeqNo};
///
/// let fs = Arc::new(MemFileSystem::new());
/// let options = WalOptions { segment_bytes_max: 100, ..Default::default() };
/// let (wal, _) = Wal::open(fs, "log", 1, options, SeqNo(1), |_| Ok(()))?;
/// let pin = wal.pin(SeqNo(1))?;
/// for i in 0..10u32 {
///     let mut batch = BatchBuilder::new();
///     batch.put(&i.to_be_bytes(), &[0u8; 64]);
///     wal.append(batch, false)?;
/// }
/// assert_eq!(wal.release_below(SeqNo(11))?, 0); // the pin holds everything
/// pin.advance(SeqNo(11))?;
/// assert!(wal.segment_count() == 1);
/// # }
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug)]
pub struct LogPin {
    shared: Arc<Shared>,
    id: u64,
}

impl LogPin {
    /// The sequence number held from.
    #[must_use]
    pub fn seq(&self) -> SeqNo {
        SeqNo(
            self.shared
                .progress
                .lock()
                .pins
                .get(&self.id)
                .copied()
                .unwrap_or(0),
        )
    }

    /// Moves the pin forward to `to` (never backward) and deletes segments
    /// no longer needed.
    ///
    /// # Errors
    /// [`Error::Io`] if a deletion fails.
    pub fn advance(&self, to: SeqNo) -> Result<()> {
        {
            let mut progress = self.shared.progress.lock();
            if let Some(at) = progress.pins.get_mut(&self.id) {
                *at = (*at).max(to.get());
            }
        }
        collect(&self.shared).map(|_| ())
    }
}

impl Drop for LogPin {
    fn drop(&mut self) {
        self.shared.progress.lock().pins.remove(&self.id);
    }
}

pub(super) fn pin(shared: &Arc<Shared>, from: u64) -> Result<LogPin> {
    let mut progress = shared.progress.lock();
    let oldest = progress
        .segments
        .first()
        .map_or(progress.written_next, |s| s.first_seq);
    if from < oldest {
        return Err(Error::LogTruncated {
            requested: from,
            oldest_retained: oldest,
        });
    }
    let id = progress.next_pin_id;
    progress.next_pin_id += 1;
    progress.pins.insert(id, from);
    Ok(LogPin {
        shared: Arc::clone(shared),
        id,
    })
}

pub(super) fn release_below(shared: &Shared, seq: u64) -> Result<usize> {
    {
        let mut progress = shared.progress.lock();
        progress.low_water = progress.low_water.max(seq);
    }
    collect(shared)
}

/// How many segments from the front of `segments` may be deleted when
/// nothing below `bound` is needed: a segment may go when its successor
/// starts at or below `bound` (so all its records are below it). The last
/// (active) segment always stays.
#[must_use]
pub(super) fn releasable(segments: &[SegmentState], bound: u64) -> usize {
    segments
        .windows(2)
        .take_while(|pair| matches!(pair, [_, next] if next.first_seq <= bound))
        .count()
}

fn collect(shared: &Shared) -> Result<usize> {
    let _deleting = shared.deleting.lock();
    let doomed: Vec<SegmentState> = {
        let mut progress = shared.progress.lock();
        let bound = progress
            .pins
            .values()
            .copied()
            .fold(progress.low_water, u64::min);
        let count = releasable(&progress.segments, bound);
        progress.segments.drain(..count).collect()
    };
    if doomed.is_empty() {
        return Ok(0);
    }
    for segment in &doomed {
        let path = shared.segment_path(segment.number);
        shared
            .fs
            .remove_file(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
        shared
            .counters
            .segments_deleted
            .fetch_add(1, Ordering::Relaxed);
    }
    shared
        .fs
        .sync_dir(&shared.dir)
        .map_err(|e| Error::io("sync directory", &shared.dir, e))?;
    Ok(doomed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(number: u64, first_seq: u64) -> SegmentState {
        SegmentState {
            number,
            first_seq,
            len: 64,
            sealed: true,
        }
    }

    #[test]
    fn releasable_keeps_segments_holding_needed_records_and_the_active_one() {
        let segments = [seg(1, 1), seg(2, 10), seg(3, 20)];
        assert_eq!(releasable(&segments, 0), 0);
        assert_eq!(releasable(&segments, 9), 0);
        assert_eq!(releasable(&segments, 10), 1);
        assert_eq!(releasable(&segments, 19), 1);
        assert_eq!(releasable(&segments, 20), 2);
        assert_eq!(releasable(&segments, u64::MAX), 2);
        assert_eq!(releasable(&segments[..1], u64::MAX), 0);
    }
}
