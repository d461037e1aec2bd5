//! The sync point: how far the log is known to be durable.
//!
//! After every successful `fdatasync` of a segment, the writer records the
//! synced position in the small file `SYNC_POINT` beside the segments,
//! **without** syncing that file. This costs one `pwrite` per group commit
//! and is sound in both directions: the record is written only after the
//! sync it describes returned, so whatever survives of it is true; if a
//! power loss takes it, recovery falls back to an older (smaller) sync point
//! and is merely less strict about the tail. A process crash (SIGKILL)
//! loses nothing from the page cache, so after one recovery knows the exact
//! synced point and reports any damage before it as corruption.
//!
//! FORMAT: two slots, at offsets 0 and 512 (different disk sectors, so a
//! torn write damages at most one). Writes alternate between them; the slot
//! with the higher `generation` whose checksum verifies wins. Each slot
//! (little-endian, 52 bytes):
//!
//! ```text
//!  0      4        8               24           32          40           48      52
//!  +------+--------+---------------+------------+-----------+------------+-------+
//!  |magic |version |  database_id  | generation |  segment  | synced_len | crc32 |
//!  |"SSYN"|  u32   |     u128      |    u64     |  number   |    u64     |  u32  |
//!  +------+--------+---------------+------------+-----------+------------+-------+
//! ```
//!
//! `crc32` covers bytes `0..48`. Every segment before `segment_number` is
//! fully synced (segments are synced before the next one is created), and
//! bytes `[0, synced_len)` of segment `segment_number` are synced.

use crate::coding::Cursor;
use crate::error::{DecodeError, DecodeErrorKind};

/// Magic bytes of a sync-point slot.
pub const SYNC_POINT_MAGIC: [u8; 4] = *b"SSYN";
/// The sync-point format version.
pub const SYNC_POINT_FORMAT_VERSION: u32 = 1;
/// Encoded length of one slot.
pub const SYNC_POINT_SLOT_LEN: usize = 52;
/// Offsets of the two slots in the file.
pub const SYNC_POINT_SLOT_OFFSETS: [u64; 2] = [0, 512];
/// The file name of the sync point, in the WAL directory.
pub const SYNC_POINT_FILE_NAME: &str = "SYNC_POINT";
/// The file name of the failed-sync marker, in the WAL directory: one slot
/// in the sync point's format, written and synced when an fdatasync of a
/// segment fails, naming the last point that was durably synced. The next
/// open discards everything after it (the page cache may still show those
/// bytes, but after a failed fsync they can never be made durable), then
/// deletes the marker.
pub const FAILED_SYNC_FILE_NAME: &str = "FAILED_SYNC";

/// A durable position in the log.
///
/// # Examples
///
/// ```
/// use strata_format::wal::SyncPoint;
/// let point = SyncPoint { database_id: 1, generation: 8, segment_number: 3, synced_len: 4096 };
/// assert_eq!(SyncPoint::decode(&point.encode())?, point);
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPoint {
    /// The database the log belongs to.
    pub database_id: u128,
    /// Increases with every write; the newer slot wins.
    pub generation: u64,
    /// The segment the position is in.
    pub segment_number: u64,
    /// Bytes of that segment known to be synced.
    pub synced_len: u64,
}

impl SyncPoint {
    /// The slot (0 or 1) this point is written to.
    #[must_use]
    pub fn slot(&self) -> usize {
        (self.generation % 2) as usize
    }

    /// Encodes one slot.
    #[must_use]
    pub fn encode(&self) -> [u8; SYNC_POINT_SLOT_LEN] {
        let mut body = Vec::with_capacity(SYNC_POINT_SLOT_LEN);
        body.extend_from_slice(&SYNC_POINT_MAGIC);
        body.extend_from_slice(&SYNC_POINT_FORMAT_VERSION.to_le_bytes());
        body.extend_from_slice(&self.database_id.to_le_bytes());
        body.extend_from_slice(&self.generation.to_le_bytes());
        body.extend_from_slice(&self.segment_number.to_le_bytes());
        body.extend_from_slice(&self.synced_len.to_le_bytes());
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let mut out = [0u8; SYNC_POINT_SLOT_LEN];
        out.copy_from_slice(&body);
        out
    }

    /// Decodes one slot.
    ///
    /// # Errors
    /// `Truncated`, `BadMagic`, `ChecksumMismatch` or `UnsupportedVersion`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(bytes);
        let all = c.bytes(SYNC_POINT_SLOT_LEN, "sync point")?;
        let (body, crc) = all.split_at(SYNC_POINT_SLOT_LEN - 4);
        let mut c = Cursor::new(body);
        let magic: [u8; 4] = c.array("sync point magic")?;
        if magic != SYNC_POINT_MAGIC {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::BadMagic {
                    what: "sync point",
                    found: magic.to_vec(),
                },
            ));
        }
        let stored = Cursor::new(crc).u32_le("sync point crc")?;
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(DecodeError::new(
                48,
                DecodeErrorKind::ChecksumMismatch {
                    what: "sync point",
                    expected: stored,
                    actual,
                },
            ));
        }
        let version = c.u32_le("sync point version")?;
        if version != SYNC_POINT_FORMAT_VERSION {
            return Err(DecodeError::new(
                4,
                DecodeErrorKind::UnsupportedVersion {
                    what: "sync point",
                    found: version,
                    supported: SYNC_POINT_FORMAT_VERSION,
                },
            ));
        }
        Ok(Self {
            database_id: c.u128_le("database id")?,
            generation: c.u64_le("generation")?,
            segment_number: c.u64_le("segment number")?,
            synced_len: c.u64_le("synced length")?,
        })
    }

    /// The newest valid sync point of `database_id` in a whole sync-point
    /// file, or `None` if neither slot holds one. A damaged slot is not an
    /// error: the file is written without sync, so damage is expected after
    /// a power loss, and the only cost is a less strict recovery.
    #[must_use]
    pub fn newest(file: &[u8], database_id: u128) -> Option<Self> {
        SYNC_POINT_SLOT_OFFSETS
            .iter()
            .filter_map(|&offset| file.get(offset as usize..))
            .filter_map(|slot| Self::decode(slot).ok())
            .filter(|point| point.database_id == database_id)
            .max_by_key(|point| point.generation)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn file_with(points: &[SyncPoint]) -> Vec<u8> {
        let mut file = vec![0u8; 1024];
        for p in points {
            let at = SYNC_POINT_SLOT_OFFSETS[p.slot()] as usize;
            file[at..at + SYNC_POINT_SLOT_LEN].copy_from_slice(&p.encode());
        }
        file
    }

    #[test]
    fn newest_valid_slot_wins() {
        let a = SyncPoint {
            database_id: 1,
            generation: 4,
            segment_number: 2,
            synced_len: 100,
        };
        let b = SyncPoint {
            generation: 5,
            synced_len: 200,
            ..a
        };
        let file = file_with(&[a, b]);
        assert_eq!(SyncPoint::newest(&file, 1), Some(b));
        let mut damaged = file.clone();
        damaged[512 + 40] ^= 1;
        assert_eq!(SyncPoint::newest(&damaged, 1), Some(a));
        assert_eq!(SyncPoint::newest(&file, 2), None);
        assert_eq!(SyncPoint::newest(&[], 1), None);
    }
}
