//! The write-ahead log's formats: segment header, record framing, the
//! write-batch encoding, the sync point, and whole-segment recovery.
//!
//! A WAL is a directory of segment files. Each segment is a 64-byte header
//! ([`segment`]) followed by records ([`record`]), one per write batch
//! ([`batch`]). Beside the segments, the `SYNC_POINT` file ([`sync_point`])
//! says how far the log is known to be durable, which lets recovery
//! ([`scan`]) tell a torn tail from corruption. See `docs/format.md`.

pub mod batch;
pub mod record;
pub mod scan;
pub mod segment;
pub mod sync_point;

pub use batch::{
    BATCH_HEADER_LEN, BatchBuilder, BatchOp, BatchOps, BatchView, OP_DELETE, OP_PUT, decode_batch,
    set_batch_first_seq, view_built_batch,
};
pub use record::{
    IGNORABLE_TYPE_BIT, MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN, RecordType, RecordView,
    begin_record, decode_record, encode_record, finish_record, is_zero_header,
};
pub use scan::{RecoveryMode, ScanParams, ScannedBatch, SegmentEnd, SegmentScan, scan_segment};
pub use segment::{
    SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SegmentHeader,
    parse_segment_file_name, segment_file_name,
};
pub use sync_point::{
    FAILED_SYNC_FILE_NAME, SYNC_POINT_FILE_NAME, SYNC_POINT_SLOT_LEN, SYNC_POINT_SLOT_OFFSETS,
    SyncPoint,
};
