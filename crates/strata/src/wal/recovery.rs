//! Recovery at open: find the segments, learn how far the log was synced,
//! scan and replay every segment in order, repair a torn tail, and start a
//! fresh segment for writing.
//!
//! What counts as synced: every segment but the last was synced in full
//! before its successor was created. For the last segment, the `SYNC_POINT`
//! file says how many bytes were synced (if it names that segment); else
//! nothing beyond the header is assumed synced. Damage before the synced
//! point is corruption and fails the open (naming file and offset); damage
//! after it is a torn tail: reported in [`RecoveryReport::torn_tail`] and
//! cut off. The byte-level decisions are `strata_format::wal::scan_segment`.
//!
//! Invariants:
//! - Nothing is truncated, renamed or deleted until every segment has been
//!   scanned without a fatal error, so a failed open changes nothing.
//! - A repaired log continues in a new segment whose header's `first_seq`
//!   is the next sequence number, so a later open checks continuity.
//! - Before that new segment is created, the old last segment is synced
//!   (cut first if torn): every segment but the last is fully durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_format::wal::{
    BatchView, FAILED_SYNC_FILE_NAME, SEGMENT_HEADER_LEN, SYNC_POINT_FILE_NAME, ScanParams,
    SegmentEnd, SyncPoint, decode_batch, decode_record, parse_segment_file_name, scan_segment,
};

use super::SegmentState;
use super::writer::{LogWriter, SyncPointWriter, create_segment};
use crate::env::{File, FileSystem, OpenMode, read_file};
use crate::error::{Error, Result};
use crate::seqno::SeqNo;

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments scanned.
    pub segments_scanned: usize,
    /// Batches passed to the replay callback.
    pub batches_replayed: u64,
    /// Operations in those batches.
    pub operations_replayed: u64,
    /// The sequence number the next write gets.
    pub next_seq: SeqNo,
    /// The sync point found, as (segment number, synced bytes).
    pub sync_point: Option<(u64, u64)>,
    /// A torn tail that was cut off, if any.
    pub torn_tail: Option<TailRepair>,
    /// In [`RecoveryMode::PointInTime`]: the damage where replay stopped.
    /// Every later record was not replayed; later segments were renamed to
    /// `*.wal.stopped` for inspection.
    pub stopped_at: Option<TailRepair>,
    /// Files in the log directory that are not part of the log; left alone.
    pub ignored_files: Vec<String>,
    /// Filled by the database at open: an unacknowledged, torn last edit
    /// cut from the manifest, if any.
    pub manifest_torn_tail: Option<String>,
    /// After an fdatasync failed, everything written after the last
    /// successful sync was discarded (it was never acknowledged as durable,
    /// and after a failed fsync it may exist only in the page cache).
    pub discarded_after_failed_sync: Option<TailRepair>,
}

/// A cut made by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRepair {
    /// The segment file.
    pub path: PathBuf,
    /// Where the damage starts (the file was cut to this length).
    pub offset: u64,
    /// How many bytes were dropped from that file.
    pub bytes_dropped: u64,
    /// What was found at `offset`.
    pub reason: String,
}

pub(super) struct Recovered {
    pub(super) segments: Vec<SegmentState>,
    pub(super) next_seq: u64,
    pub(super) writer: LogWriter,
    pub(super) report: RecoveryReport,
}

struct Found {
    /// Cut here because an fdatasync failed after this point.
    discard_from: Option<u64>,
    number: u64,
    path: PathBuf,
    file_len: u64,
    first_seq: Option<u64>,
    valid_len: u64,
    end: SegmentEnd,
}

pub(super) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    database_id: u128,
    options: &super::WalOptions,
    replay_from: u64,
    apply: &mut dyn FnMut(BatchView<'_>) -> Result<()>,
) -> Result<Recovered> {
    let mode = options.recovery_mode;
    let require_replay_from = options.require_replay_from;
    let segment_bytes_max = options.segment_bytes_max;
    fs.create_dir_all(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    let names = fs
        .list_dir(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let mut report = RecoveryReport::default();
    let mut numbers = Vec::new();
    for name in names {
        if let Some(number) = parse_segment_file_name(&name) {
            numbers.push(number);
        } else if name != SYNC_POINT_FILE_NAME && name != FAILED_SYNC_FILE_NAME {
            report.ignored_files.push(name);
        }
    }
    numbers.sort_unstable();
    for pair in numbers.windows(2) {
        if let [a, b] = *pair
            && b != a + 1
        {
            return Err(Error::corruption_msg(
                dir.join(strata_format::wal::segment_file_name(a + 1)),
                0,
                format!("segment {} is missing between segments {a} and {b}", a + 1),
            ));
        }
    }

    let sync_point_path = dir.join(SYNC_POINT_FILE_NAME);
    let sync_point = read_sync_point(fs, &sync_point_path, database_id)?;
    report.sync_point = sync_point.map(|p| (p.segment_number, p.synced_len));
    let last_number = numbers.last().copied();
    if let (Some(point), Some(last)) = (sync_point, last_number)
        && point.segment_number > last
    {
        return Err(Error::corruption_msg(
            dir.join(strata_format::wal::segment_file_name(point.segment_number)),
            0,
            format!(
                "the sync point names segment {} as synced, but the log ends at segment {last}",
                point.segment_number
            ),
        ));
    }

    let failed_sync_path = dir.join(FAILED_SYNC_FILE_NAME);
    let failed_sync = if fs
        .exists(&failed_sync_path)
        .map_err(|e| Error::io("stat", &failed_sync_path, e))?
    {
        // The marker is written on the way down after a failed fsync, when
        // the disk may be failing: an unreadable one is reported, not fatal.
        let bytes = read_file(fs, &failed_sync_path, u64::MAX)?;
        match SyncPoint::decode(&bytes) {
            Ok(point) => Some(point),
            Err(error) => {
                report
                    .ignored_files
                    .push(format!("{FAILED_SYNC_FILE_NAME} (unreadable: {error})"));
                None
            }
        }
    } else {
        None
    };

    // Scan and replay, in order. Nothing is modified in this phase.
    let mut found: Vec<Found> = Vec::new();
    let mut next_seq: Option<u64> = None;
    let mut stopped = false;
    for &number in &numbers {
        let path = dir.join(strata_format::wal::segment_file_name(number));
        if stopped {
            found.push(Found {
                discard_from: None,
                number,
                path,
                file_len: 0,
                first_seq: None,
                valid_len: 0,
                end: SegmentEnd::Empty,
            });
            continue;
        }
        let is_last = Some(number) == last_number;
        let bytes = read_file(fs, &path, u64::MAX)?;
        let file_len = bytes.len() as u64;
        let synced_len = if !is_last {
            file_len.max(SEGMENT_HEADER_LEN as u64)
        } else {
            match sync_point {
                Some(point) if point.segment_number == number => point.synced_len,
                _ => 0,
            }
        };
        let params = ScanParams {
            database_id,
            segment_number: number,
            expected_first_seq: next_seq,
            synced_len,
            mode,
        };
        let mut scan = scan_segment(&bytes, &params).map_err(|e| Error::corruption(&path, e))?;
        report.segments_scanned += 1;
        let discard_from = failed_sync
            .filter(|point: &SyncPoint| {
                point.segment_number == number && point.database_id == database_id
            })
            .map(|point| point.synced_len.max(SEGMENT_HEADER_LEN as u64))
            .filter(|&cut| cut < scan.valid_len);
        if let Some(cut) = discard_from {
            scan.batches.retain(|b| b.offset + b.framed_len <= cut);
            scan.next_seq = scan
                .batches
                .last()
                .map(|b| b.last_seq + 1)
                .or(scan.header.map(|h| h.first_seq));
        }
        for batch in &scan.batches {
            if batch.last_seq < replay_from {
                continue;
            }
            let record = bytes
                .get(batch.offset as usize..)
                .and_then(|rest| decode_record(rest).ok())
                .and_then(|record| decode_batch(record.payload).ok());
            let Some(view) = record else {
                return Err(Error::corruption_msg(
                    &path,
                    batch.offset,
                    "record changed between scan and replay",
                ));
            };
            apply(view)?;
            report.batches_replayed += 1;
            report.operations_replayed += u64::from(view.count);
        }
        if let Some(seq) = scan.next_seq {
            next_seq = Some(seq);
        }
        if matches!(scan.end, SegmentEnd::Stopped { .. }) {
            stopped = true;
        }
        found.push(Found {
            discard_from,
            number,
            path,
            file_len,
            first_seq: scan.header.map(|h| h.first_seq),
            valid_len: scan.valid_len,
            end: scan.end,
        });
    }

    // The records from `replay_from` on must all be here: a log that starts
    // later has lost records that nothing else holds.
    if require_replay_from
        && let Some(first) = found.iter().find(|f| f.first_seq.is_some())
        && let Some(first_seq) = first.first_seq
        && first_seq > replay_from
    {
        return Err(Error::Corruption {
            path: first.path.clone(),
            offset: 40,
            detail: format!(
                "the log starts at sequence number {first_seq}, but the records from {replay_from} on are needed \
                 (everything below {replay_from} is in tables): records {replay_from}..{first_seq} are missing"
            ),
            source: Some(Box::new(strata_format::DecodeError::new(
                40,
                strata_format::DecodeErrorKind::RecordsMissing {
                    needed: replay_from,
                    found: first_seq,
                },
            ))),
        });
    }

    // Repair: cut torn tails, set aside what follows a point-in-time stop.
    let mut segments = Vec::new();
    let mut past_stop = false;
    for segment in found {
        if past_stop {
            let aside = PathBuf::from(format!("{}.stopped", segment.path.display()));
            fs.rename(&segment.path, &aside)
                .map_err(|e| Error::io("rename", &segment.path, e))?;
            continue;
        }
        let repair = |reason: String| TailRepair {
            path: segment.path.clone(),
            offset: segment.valid_len,
            bytes_dropped: segment.file_len.saturating_sub(segment.valid_len),
            reason,
        };
        if let Some(cut_at) = segment.discard_from {
            report.discarded_after_failed_sync = Some(TailRepair {
                path: segment.path.clone(),
                offset: cut_at,
                bytes_dropped: segment.valid_len - cut_at,
                reason: "written after the last successful fdatasync, before one failed".into(),
            });
            cut(fs, &segment.path, cut_at)?;
            if let Some(first_seq) = segment.first_seq {
                segments.push(SegmentState {
                    number: segment.number,
                    first_seq,
                    len: cut_at,
                    sealed: true,
                });
            }
            continue;
        }
        match &segment.end {
            // Its tail may be unsynced writes that survived a process crash
            // in the page cache; it is about to stop being the last segment,
            // which recovery trusts to be synced in full: sync it now.
            SegmentEnd::Clean if Some(segment.number) == last_number && segment.valid_len > 0 => {
                let file = fs
                    .open(&segment.path, OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open", &segment.path, e))?;
                file.sync_data()
                    .map_err(|e| Error::io("fdatasync", &segment.path, e))?;
            }
            SegmentEnd::Clean => {}
            SegmentEnd::Empty | SegmentEnd::ZeroTail { .. } | SegmentEnd::Torn { .. } => {
                if let SegmentEnd::Torn { error, .. } = &segment.end {
                    report.torn_tail = Some(repair(error.to_string()));
                }
                cut(fs, &segment.path, segment.valid_len)?;
            }
            SegmentEnd::Stopped { error, .. } => {
                report.stopped_at = Some(repair(error.to_string()));
                cut(fs, &segment.path, segment.valid_len)?;
                past_stop = true;
            }
        }
        if segment.valid_len == 0 {
            continue; // removed by `cut`
        }
        let Some(first_seq) = segment.first_seq else {
            continue;
        };
        segments.push(SegmentState {
            number: segment.number,
            first_seq,
            len: segment.valid_len,
            sealed: true,
        });
    }
    if past_stop {
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }

    // If the log ends before `replay_from`, the caller holds everything in
    // it elsewhere: drop it, so that numbering can continue at
    // `replay_from` without a gap inside the log.
    let mut next = next_seq.unwrap_or(replay_from);
    if next < replay_from {
        for segment in segments.drain(..) {
            let path = dir.join(strata_format::wal::segment_file_name(segment.number));
            fs.remove_file(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
        }
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
        next = replay_from;
    }

    // Continue right after the last retained segment, so the numbers stay
    // contiguous (a removed empty segment's number is reused).
    let number = segments
        .last()
        .map(|s| s.number)
        .or(last_number)
        .map_or(1, |n| n + 1);
    let (path, file) = create_segment(fs, dir, database_id, number, next, segment_bytes_max)?;
    segments.push(SegmentState {
        number,
        first_seq: next,
        len: SEGMENT_HEADER_LEN as u64,
        sealed: false,
    });

    let mut sync_point_writer =
        open_sync_point(fs, dir, &sync_point_path, database_id, sync_point)?;
    // Name the new segment durably, so a stale sync point can never name a
    // segment that recovery has set aside.
    sync_point_writer.record(number, SEGMENT_HEADER_LEN as u64)?;
    sync_point_writer
        .file
        .sync_data()
        .map_err(|e| Error::io("fdatasync", &sync_point_path, e))?;

    if fs
        .exists(&failed_sync_path)
        .map_err(|e| Error::io("stat", &failed_sync_path, e))?
    {
        fs.remove_file(&failed_sync_path)
            .map_err(|e| Error::io("remove", &failed_sync_path, e))?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    report.next_seq = SeqNo(next);
    Ok(Recovered {
        segments,
        next_seq: next,
        writer: LogWriter::new(number, path, file, sync_point_writer),
        report,
    })
}

fn read_sync_point(
    fs: &dyn FileSystem,
    path: &Path,
    database_id: u128,
) -> Result<Option<SyncPoint>> {
    if !fs.exists(path).map_err(|e| Error::io("stat", path, e))? {
        return Ok(None);
    }
    let bytes = read_file(fs, path, u64::MAX)?;
    Ok(SyncPoint::newest(&bytes, database_id))
}

fn open_sync_point(
    fs: &dyn FileSystem,
    dir: &Path,
    path: &Path,
    database_id: u128,
    existing: Option<SyncPoint>,
) -> Result<SyncPointWriter> {
    let file: Arc<dyn File> = match fs.open(path, OpenMode::ReadWrite) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = fs
                .open(path, OpenMode::CreateNew)
                .map_err(|e| Error::io("create", path, e))?;
            fs.sync_dir(dir)
                .map_err(|e| Error::io("sync directory", dir, e))?;
            file
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    Ok(SyncPointWriter {
        path: path.to_path_buf(),
        file,
        database_id,
        generation: existing.map_or(0, |p| p.generation),
    })
}

/// Cuts a segment to `len` bytes (synced), or removes it if `len` is 0.
fn cut(fs: &dyn FileSystem, path: &Path, len: u64) -> Result<()> {
    if len == 0 {
        fs.remove_file(path)
            .map_err(|e| Error::io("remove", path, e))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        return fs
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e));
    }
    let file = fs
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", path, e))?;
    file.set_len(len)
        .map_err(|e| Error::io("truncate", path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))
}
