//! Strata's on-disk and wire formats: bytes to types and back, and nothing
//! else.
//!
//! Every function here is pure: no I/O, no threads, no clocks. That makes
//! each decoder a fuzz target and lets the engine's recovery logic be
//! tested on byte strings. Decoders never panic, never read out of bounds
//! and never allocate a size read from the input; they return a
//! [`DecodeError`] that says what was wrong and at which offset.
//!
//! The byte layouts are documented in each module's FORMAT section and
//! collected in `docs/format.md`.
//!
//! # Examples
//!
//! ```
//! use strata_format::wal::{decode_batch, decode_record, encode_record, set_batch_first_seq, BatchBuilder, RecordType};
//!
//! let mut batch = BatchBuilder::new();
//! batch.put(b"user:42", b"alice");
//! let mut payload = batch.into_bytes();
//! set_batch_first_seq(&mut payload, 1);
//!
//! let mut log = Vec::new();
//! encode_record(RecordType::Batch, &payload, &mut log);
//! let record = decode_record(&log)?;
//! let batch = decode_batch(record.payload)?;
//! assert_eq!(batch.first_seq, 1);
//! # Ok::<(), strata_format::DecodeError>(())
//! ```

pub mod coding;
mod error;
pub mod header;
pub mod key;
pub mod manifest;
pub mod table;
pub mod wal;

pub use error::{DecodeError, DecodeErrorKind};
