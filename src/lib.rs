//! Shared helpers for Strata's integration tests and benches. The engine's
//! crash-torture tests use [`db_gen`]; the commit log's use the rest.
//!
//! The crash-torture tests of the commit log (`tests/wal_*.rs`, described in
//! `docs/testing.md`) are built from three pieces defined here:
//!
//! - [`Generator`]: a seeded, deterministic source of write batches. Batch
//!   `index` of stream `stream` is always the same batch for the same seed,
//!   so the expected content of a log can be recomputed from ids alone.
//!   Every batch starts with a put whose value names the batch, and every
//!   value encodes (seed, stream, index, op) plus a checkable padding, so a
//!   garbage, misplaced or foreign value is detected.
//! - [`Model`]: a `BTreeMap` that batches are replayed into.
//! - [`verify_log`]: the checker. Given the batches a recovery replayed and
//!   the batches that were acknowledged, it verifies that the log is exactly
//!   a sequence of generator batches with dense sequence numbers from 1, that
//!   each stream's batches appear in order with no hole and no duplicate,
//!   that no batch is torn or holds a value the generator never wrote, and
//!   that every acknowledged batch is present with the sequence numbers it
//!   was acknowledged with. Violations are classified ([`ViolationKind`]) so
//!   a torture run can count them ([`Tally`]).
//!
//! With a single stream, "each stream in order, dense from index 0" means
//! the log is exactly generator batches `0..k`. With concurrent writers each
//! thread uses its own stream; the order of streams in the log is whatever
//! order the log assigned sequence numbers in.

pub mod db_gen;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::wal::{BatchBuilder, BatchOp, BatchView, Commit, RecoveryReport, Wal, WalOptions};
use strata::{FileSystem, SeqNo};

/// Number of distinct keys the generator writes (small, so keys are
/// overwritten and deleted often).
pub const KEY_SPACE: u32 = 40;

/// The most operations in one generated batch.
pub const MAX_OPS: usize = 8;

/// The database id every torture log uses.
pub const DATABASE_ID: u128 = 0x5354_5241_5441_5f54_4f52_5455_5245_0001;

/// Magic byte that starts every generated value.
const VALUE_MAGIC: u8 = 0xA7;

/// Length of the fixed part of a generated value: magic, seed, stream,
/// index, op, padding length.
const VALUE_HEADER_LEN: usize = 1 + 8 + 4 + 8 + 2 + 2;

/// Identifies one generated batch: the writer stream (one per writer thread)
/// and the batch's 0-based index within that stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId {
    /// The writer stream.
    pub stream: u32,
    /// The batch's index in its stream, from 0.
    pub index: u64,
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.index)
    }
}

/// One owned operation (of a generated or a replayed batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// A range deletion (the WAL torture generator never makes one; kept
    /// so a log holding one still compares).
    DeleteRange {
        /// The first key.
        start: Vec<u8>,
        /// The end (exclusive).
        end: Vec<u8>,
    },
    /// A sequence number replication withheld (never generated; kept so a
    /// replica's log still compares).
    Skip,
}

impl Op {
    fn from_batch_op(op: BatchOp<'_>) -> Self {
        match op {
            BatchOp::Put { key, value } => Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            BatchOp::Delete { key } => Op::Delete { key: key.to_vec() },
            BatchOp::DeleteRange { start, end } => Op::DeleteRange {
                start: start.to_vec(),
                end: end.to_vec(),
            },
            BatchOp::Skip => Op::Skip,
        }
    }
}

/// A batch the [`Generator`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenBatch {
    /// Which batch this is.
    pub id: BatchId,
    /// Its operations (1 to [`MAX_OPS`]); the first is always a put whose
    /// value encodes `id`.
    pub ops: Vec<Op>,
}

impl GenBatch {
    /// The batch as a [`BatchBuilder`], ready to append.
    #[must_use]
    pub fn to_builder(&self) -> BatchBuilder {
        let mut builder = BatchBuilder::new();
        for op in &self.ops {
            match op {
                Op::Put { key, value } => builder.put(key, value),
                Op::Delete { key } => builder.delete(key),
                Op::DeleteRange { start, end } => builder.delete_range(start, end),
                Op::Skip => builder.skip(),
            }
        }
        builder
    }

    /// Number of operations (and so of sequence numbers) the batch takes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.ops.len() as u64
    }

    /// Whether the batch has no operations (never true for generated ones).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A seeded, deterministic batch generator. See the crate documentation.
///
/// # Examples
///
/// ```
/// use strata_tests::{BatchId, Generator};
/// let generator = Generator::new(7);
/// let id = BatchId { stream: 0, index: 3 };
/// assert_eq!(generator.batch(id), generator.batch(id));
/// assert_ne!(generator.batch(id), Generator::new(8).batch(id));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generator {
    seed: u64,
}

impl Generator {
    /// A generator for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The seed.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Batch `id`: 1 to [`MAX_OPS`] puts and deletes over [`KEY_SPACE`]
    /// keys, the first always a put. Values are mostly short, sometimes a
    /// few hundred bytes to 1.5 KiB (so records cross sectors and segments
    /// fill up).
    #[must_use]
    pub fn batch(&self, id: BatchId) -> GenBatch {
        let mut rng = SmallRng::seed_from_u64(mix(self.seed, id.stream, id.index));
        let count = rng.random_range(1..=MAX_OPS);
        let mut ops = Vec::with_capacity(count);
        for op in 0..count {
            let key = format!("key{:03}", rng.random_range(0..KEY_SPACE)).into_bytes();
            if op == 0 || rng.random_bool(0.75) {
                let pad_len: u16 = if rng.random_ratio(1, 16) {
                    rng.random_range(200..1500)
                } else {
                    rng.random_range(0..48)
                };
                let value = encode_value(self.seed, id, op as u16, pad_len);
                ops.push(Op::Put { key, value });
            } else {
                ops.push(Op::Delete { key });
            }
        }
        GenBatch { id, ops }
    }
}

/// A 64-bit mix of the generator inputs (splitmix64 finaliser).
fn mix(seed: u64, stream: u32, index: u64) -> u64 {
    let mut z = seed
        ^ u64::from(stream).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pad_byte(seed: u64, id: BatchId, op: u16, at: usize) -> u8 {
    let h = mix(seed, id.stream, id.index) ^ u64::from(op);
    (h.rotate_left((at % 64) as u32) as u8) ^ (at as u8)
}

/// The value of operation `op` of batch `id`.
fn encode_value(seed: u64, id: BatchId, op: u16, pad_len: u16) -> Vec<u8> {
    let mut value = Vec::with_capacity(VALUE_HEADER_LEN + usize::from(pad_len));
    value.push(VALUE_MAGIC);
    value.extend_from_slice(&seed.to_le_bytes());
    value.extend_from_slice(&id.stream.to_le_bytes());
    value.extend_from_slice(&id.index.to_le_bytes());
    value.extend_from_slice(&op.to_le_bytes());
    value.extend_from_slice(&pad_len.to_le_bytes());
    value.extend((0..usize::from(pad_len)).map(|at| pad_byte(seed, id, op, at)));
    value
}

/// What a generated value says about itself: (seed, batch id, op index).
/// `None` if the bytes are not a well-formed generated value (wrong magic,
/// wrong length, or padding that does not match): garbage.
///
/// # Examples
///
/// ```
/// use strata_tests::{decode_value, BatchId, Generator, Op};
/// let id = BatchId { stream: 2, index: 9 };
/// let batch = Generator::new(5).batch(id);
/// let Op::Put { value, .. } = &batch.ops[0] else { unreachable!() };
/// assert_eq!(decode_value(value), Some((5, id, 0)));
/// assert_eq!(decode_value(b"garbage"), None);
/// ```
#[must_use]
pub fn decode_value(value: &[u8]) -> Option<(u64, BatchId, u16)> {
    let (header, padding) = value.split_first_chunk::<VALUE_HEADER_LEN>()?;
    let (&magic, rest) = header.split_first()?;
    let (seed, rest) = rest.split_first_chunk::<8>()?;
    let (stream, rest) = rest.split_first_chunk::<4>()?;
    let (index, rest) = rest.split_first_chunk::<8>()?;
    let (op, rest) = rest.split_first_chunk::<2>()?;
    let pad_len = rest.first_chunk::<2>()?;
    if magic != VALUE_MAGIC {
        return None;
    }
    let seed = u64::from_le_bytes(*seed);
    let id = BatchId {
        stream: u32::from_le_bytes(*stream),
        index: u64::from_le_bytes(*index),
    };
    let op = u16::from_le_bytes(*op);
    if padding.len() != usize::from(u16::from_le_bytes(*pad_len)) {
        return None;
    }
    let padding_ok = padding
        .iter()
        .enumerate()
        .all(|(at, &byte)| byte == pad_byte(seed, id, op, at));
    padding_ok.then_some((seed, id, op))
}

/// A batch as recovery replayed it (owned, so it outlives the callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedBatch {
    /// Sequence number of its first operation.
    pub first_seq: u64,
    /// Its operations.
    pub ops: Vec<Op>,
}

impl ReplayedBatch {
    /// Copies a replayed view.
    #[must_use]
    pub fn from_view(view: &BatchView<'_>) -> Self {
        Self {
            first_seq: view.first_seq,
            ops: view.ops().map(Op::from_batch_op).collect(),
        }
    }

    /// Sequence number of its last operation.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        (self.first_seq + self.ops.len() as u64).saturating_sub(1)
    }
}

/// The state a sequence of batches produces: key to value, deletes applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// The live keys and their values.
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Batches applied.
    pub batches: u64,
    /// Operations applied.
    pub operations: u64,
}

impl Model {
    /// An empty model.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies operations in order.
    pub fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    self.map.insert(key.clone(), value.clone());
                }
                Op::Delete { key } => {
                    self.map.remove(key);
                }
                Op::DeleteRange { start, end } => {
                    self.map.retain(|k, _| {
                        k.as_slice() < start.as_slice() || k.as_slice() >= end.as_slice()
                    });
                }
                Op::Skip => {}
            }
        }
        self.batches += 1;
        self.operations += ops.len() as u64;
    }

    /// Applies a batch view (as a recovery callback would).
    pub fn apply_view(&mut self, view: &BatchView<'_>) {
        let ops: Vec<Op> = view.ops().map(Op::from_batch_op).collect();
        self.apply(&ops);
    }
}

/// A batch the log acknowledged as durable: a `sync: true` append (or a
/// later `sync`) returned `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ack {
    /// The commit token the append returned.
    pub last_seq: u64,
    /// The batch.
    pub id: BatchId,
}

/// What kind of promise a recovered log broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// An acknowledged batch is missing (or at other sequence numbers).
    Lost,
    /// A sequence number or a stream's batch index was skipped.
    Hole,
    /// A batch holds a strict prefix of its operations.
    Torn,
    /// A batch or value the generator did not produce (or a batch repeated).
    Garbage,
    /// The log could not be opened.
    FailedReopen,
}

impl ViolationKind {
    /// Every kind, in report order.
    pub const ALL: [ViolationKind; 5] = [
        ViolationKind::Lost,
        ViolationKind::Hole,
        ViolationKind::Torn,
        ViolationKind::Garbage,
        ViolationKind::FailedReopen,
    ];

    /// The figure's name in summaries.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Lost => "lost",
            ViolationKind::Hole => "holes",
            ViolationKind::Torn => "torn",
            ViolationKind::Garbage => "garbage",
            ViolationKind::FailedReopen => "failed_reopens",
        }
    }
}

/// One broken promise, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The kind.
    pub kind: ViolationKind,
    /// What exactly was wrong.
    pub detail: String,
}

impl Violation {
    /// A violation of `kind`.
    pub fn new(kind: ViolationKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

/// What a successful [`verify_log`] learned.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    /// Batches in the log.
    pub batches: u64,
    /// The sequence number after the last batch.
    pub next_seq: u64,
    /// For every stream seen, the index of its next batch (its batch count).
    pub next_index: BTreeMap<u32, u64>,
    /// The state the log replays to.
    pub model: Model,
}

impl Verified {
    /// The id of stream `stream`'s next batch.
    #[must_use]
    pub fn next_id(&self, stream: u32) -> BatchId {
        BatchId {
            stream,
            index: self.next_index.get(&stream).copied().unwrap_or(0),
        }
    }
}

/// Checks a replayed log against the generator and the acknowledgements.
/// See the crate documentation for what is checked.
///
/// # Errors
/// The first [`Violation`] found.
///
/// # Examples
///
/// ```
/// use strata_tests::*;
/// let generator = Generator::new(1);
/// let mut replayed = Vec::new();
/// let mut seq = 1;
/// for index in 0..3 {
///     let batch = generator.batch(BatchId { stream: 0, index });
///     replayed.push(ReplayedBatch { first_seq: seq, ops: batch.ops.clone() });
///     seq += batch.len();
/// }
/// let ack = Ack { last_seq: replayed[1].last_seq(), id: BatchId { stream: 0, index: 1 } };
/// let verified = verify_log(&generator, &replayed, &[ack]).unwrap();
/// assert_eq!((verified.batches, verified.next_seq), (3, seq));
///
/// replayed.remove(1); // a hole
/// assert!(verify_log(&generator, &replayed, &[]).is_err());
/// ```
pub fn verify_log(
    generator: &Generator,
    replayed: &[ReplayedBatch],
    acked: &[Ack],
) -> Result<Verified, Violation> {
    use ViolationKind::{Garbage, Hole, Lost, Torn};
    let mut verified = Verified {
        next_seq: 1,
        ..Verified::default()
    };
    let mut expected_model = Model::new();
    let mut by_last_seq: BTreeMap<u64, BatchId> = BTreeMap::new();
    for (position, batch) in replayed.iter().enumerate() {
        let at = format!("batch #{position} (first_seq {})", batch.first_seq);
        if batch.first_seq > verified.next_seq {
            return Err(Violation::new(
                Hole,
                format!(
                    "{at}: sequence numbers {}..{} are missing",
                    verified.next_seq, batch.first_seq
                ),
            ));
        }
        if batch.first_seq < verified.next_seq {
            return Err(Violation::new(
                Garbage,
                format!(
                    "{at}: overlaps the previous batch, expected first_seq {}",
                    verified.next_seq
                ),
            ));
        }
        let Some(Op::Put { value, .. }) = batch.ops.first() else {
            return Err(Violation::new(
                Garbage,
                format!("{at}: does not start with a generated put"),
            ));
        };
        let Some((seed, id, 0)) = decode_value(value) else {
            return Err(Violation::new(
                Garbage,
                format!("{at}: first value is not a generated op-0 value"),
            ));
        };
        if seed != generator.seed() {
            return Err(Violation::new(
                Garbage,
                format!(
                    "{at}: value of seed {seed:#x}, expected {:#x}",
                    generator.seed()
                ),
            ));
        }
        let expected_index = verified.next_index.get(&id.stream).copied().unwrap_or(0);
        if id.index > expected_index {
            return Err(Violation::new(
                Hole,
                format!(
                    "{at}: is batch {id}, but stream {} is at index {expected_index}",
                    id.stream
                ),
            ));
        }
        if id.index < expected_index {
            return Err(Violation::new(
                Garbage,
                format!("{at}: batch {id} appears twice (stream is at index {expected_index})"),
            ));
        }
        let expected = generator.batch(id);
        if batch.ops != expected.ops {
            let kind =
                if batch.ops.len() < expected.ops.len() && expected.ops.starts_with(&batch.ops) {
                    Torn
                } else {
                    Garbage
                };
            let first_diff = batch
                .ops
                .iter()
                .zip(&expected.ops)
                .position(|(a, b)| a != b)
                .unwrap_or(batch.ops.len().min(expected.ops.len()));
            return Err(Violation::new(
                kind,
                format!(
                    "{at}: batch {id} has {} ops, the generator's has {}; first difference at op {first_diff}",
                    batch.ops.len(),
                    expected.ops.len()
                ),
            ));
        }
        verified.next_index.insert(id.stream, id.index + 1);
        verified.model.apply(&batch.ops);
        expected_model.apply(&expected.ops);
        by_last_seq.insert(batch.last_seq(), id);
        verified.batches += 1;
        verified.next_seq = batch.last_seq() + 1;
    }
    if verified.model != expected_model {
        return Err(Violation::new(
            Garbage,
            "the replayed state differs from the generator's",
        ));
    }
    if let Some((key, _)) =
        verified.model.map.iter().find(|(_, value)| {
            decode_value(value).is_none_or(|(seed, ..)| seed != generator.seed())
        })
    {
        return Err(Violation::new(
            Garbage,
            format!(
                "key {:?} holds a value the generator never wrote",
                String::from_utf8_lossy(key)
            ),
        ));
    }
    for ack in acked {
        match by_last_seq.get(&ack.last_seq) {
            Some(id) if *id == ack.id => {}
            Some(id) => {
                return Err(Violation::new(
                    Lost,
                    format!(
                        "batch {} was acknowledged with last_seq {}, but the log has batch {id} there",
                        ack.id, ack.last_seq
                    ),
                ));
            }
            None => {
                return Err(Violation::new(
                    Lost,
                    format!(
                        "batch {} acknowledged with last_seq {} is missing (the log ends at seq {})",
                        ack.id,
                        ack.last_seq,
                        verified.next_seq - 1
                    ),
                ));
            }
        }
    }
    Ok(verified)
}

/// Opens the log in `dir`, replaying everything from seq 1 into a list,
/// and verifies it with [`verify_log`].
///
/// # Errors
/// A [`ViolationKind::FailedReopen`] violation if the open fails, or the
/// violation [`verify_log`] found.
pub fn open_and_verify(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    options: WalOptions,
    generator: &Generator,
    acked: &[Ack],
) -> Result<(Wal, RecoveryReport, Verified), Violation> {
    let mut replayed = Vec::new();
    let (wal, report) = Wal::open(fs, dir, DATABASE_ID, options, SeqNo(1), |view| {
        replayed.push(ReplayedBatch::from_view(&view));
        Ok(())
    })
    .map_err(|e| Violation::new(ViolationKind::FailedReopen, format!("open failed: {e}")))?;
    let verified = verify_log(generator, &replayed, acked)?;
    if report.next_seq.get() != verified.next_seq {
        return Err(Violation::new(
            ViolationKind::Garbage,
            format!(
                "recovery says the next seq is {}, the replayed batches end before {}",
                report.next_seq, verified.next_seq
            ),
        ));
    }
    Ok((wal, report, verified))
}

/// Appends generated batch `batch` and checks that the commit covers
/// exactly its operations.
///
/// # Errors
/// What [`Wal::append`] returns.
///
/// # Panics
/// If the log returned a commit whose sequence range does not match the
/// batch's size (a broken promise of the API, not an I/O outcome).
pub fn append_batch(wal: &Wal, batch: &GenBatch, sync: bool) -> strata::Result<Commit> {
    let commit = wal.append(batch.to_builder(), sync)?;
    assert_eq!(
        commit.last_seq.get() + 1 - commit.first_seq.get(),
        batch.len(),
        "commit {commit:?} for batch {} of {} ops",
        batch.id,
        batch.len()
    );
    Ok(commit)
}

/// Counts violations by kind during a torture run, keeping the first few
/// details for the failure message.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    counts: BTreeMap<ViolationKind, u64>,
    examples: Vec<String>,
}

impl Tally {
    /// How many details are kept.
    const EXAMPLES: usize = 8;

    /// An empty tally.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation, with `context` (seed, case, ...) for its detail.
    pub fn record(&mut self, violation: &Violation, context: &str) {
        *self.counts.entry(violation.kind).or_insert(0) += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(format!("{context}: {violation}"));
        }
    }

    /// The count of `kind`.
    #[must_use]
    pub fn count(&self, kind: ViolationKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// The total of every kind.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// `lost=0 holes=0 torn=0 garbage=0 failed_reopens=0`.
    #[must_use]
    pub fn figures(&self) -> String {
        ViolationKind::ALL
            .iter()
            .map(|kind| format!("{}={}", kind.name(), self.count(*kind)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Panics, listing the figures and the first violations, unless none
    /// was recorded.
    ///
    /// # Panics
    /// If any violation was recorded.
    pub fn assert_clean(&self) {
        assert!(
            self.total() == 0,
            "{} violations ({}); first ones:\n{}",
            self.total(),
            self.figures(),
            self.examples.join("\n")
        );
    }
}

/// A count from the environment variable `name`, or `default`.
///
/// # Panics
/// If the variable is set but not a number.
#[must_use]
pub fn env_count(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// The torture seed: `STRATA_TORTURE_SEED` if set (to replay a failure),
/// else derived from the clock. Tests print it in their summary and in
/// every failure.
///
/// # Panics
/// If the variable is set but not a number.
#[must_use]
pub fn torture_seed() -> u64 {
    match std::env::var("STRATA_TORTURE_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => text.parse().ok(),
            };
            parsed.unwrap_or_else(|| panic!("STRATA_TORTURE_SEED={text:?} is not a number"))
        }
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_nanos() as u64),
    }
}

/// Derives an independent seed for sub-run `part` of a torture run.
#[must_use]
pub fn sub_seed(seed: u64, part: u64) -> u64 {
    mix(seed, 0xffff_ffff, part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_values_decode() {
        let generator = Generator::new(42);
        for index in 0..200 {
            let id = BatchId { stream: 3, index };
            let batch = generator.batch(id);
            assert_eq!(batch, generator.batch(id));
            assert!((1..=MAX_OPS).contains(&batch.ops.len()));
            for (op, item) in batch.ops.iter().enumerate() {
                if let Op::Put { value, .. } = item {
                    assert_eq!(decode_value(value), Some((42, id, op as u16)));
                }
            }
        }
    }

    #[test]
    fn damaged_values_do_not_decode() {
        let value = encode_value(
            1,
            BatchId {
                stream: 0,
                index: 5,
            },
            2,
            30,
        );
        for at in 0..value.len() {
            let mut damaged = value.clone();
            if let Some(byte) = damaged.get_mut(at) {
                *byte ^= 0x10;
            }
            let decoded = decode_value(&damaged);
            assert_ne!(
                decoded,
                Some((
                    1,
                    BatchId {
                        stream: 0,
                        index: 5
                    },
                    2
                )),
                "at {at}"
            );
        }
        assert_eq!(
            decode_value(value.get(..value.len() - 1).unwrap_or_default()),
            None
        );
    }

    fn log(generator: &Generator, ids: &[BatchId]) -> Vec<ReplayedBatch> {
        let mut seq = 1;
        ids.iter()
            .map(|&id| {
                let batch = generator.batch(id);
                let replayed = ReplayedBatch {
                    first_seq: seq,
                    ops: batch.ops,
                };
                seq = replayed.last_seq() + 1;
                replayed
            })
            .collect()
    }

    #[test]
    fn checker_catches_every_kind() {
        let generator = Generator::new(9);
        let id = |stream, index| BatchId { stream, index };
        let good = log(&generator, &[id(0, 0), id(1, 0), id(0, 1), id(1, 1)]);
        let acks: Vec<Ack> = good
            .iter()
            .zip([id(0, 0), id(1, 0), id(0, 1), id(1, 1)])
            .map(|(b, id)| Ack {
                last_seq: b.last_seq(),
                id,
            })
            .collect();
        let verified = verify_log(&generator, &good, &acks).unwrap_or_else(|v| panic!("{v}"));
        assert_eq!(verified.next_id(0), id(0, 2));
        assert_eq!(verified.next_id(7), id(7, 0));

        let kind = |log: &[ReplayedBatch], acks: &[Ack]| {
            verify_log(&generator, log, acks)
                .map(|_| ())
                .map_err(|v| v.kind)
        };
        // Lost: the last acknowledged batch is missing.
        let short = good.get(..3).unwrap_or_default();
        assert_eq!(kind(short, &acks), Err(ViolationKind::Lost));
        // Hole in seqs.
        let mut gap = good.clone();
        gap.remove(1);
        assert_eq!(kind(&gap, &[]), Err(ViolationKind::Hole));
        // Hole in a stream (dense seqs).
        let skip = log(&generator, &[id(0, 0), id(0, 2)]);
        assert_eq!(kind(&skip, &[]), Err(ViolationKind::Hole));
        // Duplicate.
        let twice = log(&generator, &[id(0, 0), id(0, 0)]);
        assert_eq!(kind(&twice, &[]), Err(ViolationKind::Garbage));
        // Torn: an op missing from a multi-op batch.
        let mut torn = log(&generator, &[id(0, 0)]);
        let multi = (0..100)
            .map(|i| id(5, i))
            .find(|&i| generator.batch(i).ops.len() > 1)
            .unwrap_or_else(|| panic!("no multi-op batch"));
        torn = {
            let mut t = torn.clone();
            t.extend(log(&generator, &[multi]).into_iter().map(|mut b| {
                b.first_seq = torn.first().map_or(1, |f| f.last_seq() + 1);
                b.ops.pop();
                b
            }));
            t
        };
        assert_eq!(kind(&torn, &[]), Err(ViolationKind::Torn));
        // Garbage value.
        let mut garbage = good.clone();
        if let Some(Op::Put { value, .. }) = garbage.get_mut(2).and_then(|b| b.ops.first_mut())
            && let Some(byte) = value.last_mut()
        {
            *byte ^= 1;
        }
        assert_eq!(kind(&garbage, &[]), Err(ViolationKind::Garbage));
        // Foreign seed.
        let foreign = log(&Generator::new(10), &[id(0, 0)]);
        assert_eq!(kind(&foreign, &[]), Err(ViolationKind::Garbage));
    }
}
