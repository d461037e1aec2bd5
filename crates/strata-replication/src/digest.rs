//! Digests of a node's database as of a sequence number, per key range, to
//! check replicas against their primary while writes continue.
//!
//! A digest is xxh3-64 over every live key and value in key order, each
//! length-prefixed (`u64` little-endian length, then the bytes); the same
//! is computed for each piece of the keyspace that one of the node's key
//! ranges (`Db::ranges`) holds, so that a mismatch names the range.
//!
//! The database as of `seq` is rebuilt from the public API: a snapshot at
//! or below `seq` (a *digest point*) scanned, with the log records after it
//! up to `seq` laid over it (puts, deletes and range deletions of
//! operations numbered at most `seq`). [`DigestPoints`] keeps a few recent
//! points (a snapshot and a pin on the log after it), taken by the caller
//! at an interval; a request for a `seq` the node has not yet applied takes
//! its own point on arrival and waits, bounded, for the node to apply it.
//!
//! Thread-safety: [`DigestPoints`] is shared (`&self` everywhere); a digest
//! blocks (it scans and may wait), so call it from a thread that may.
//!
//! Invariants: a point's snapshot and log pin belong to one database, which
//! the point holds (so a bootstrap replacing it, or a close, waits until the
//! next [`DigestPoints::record`] or a [`DigestPoints::clear`] lets go); all
//! points are dropped when the node's database is taken or replaced; points
//! are kept in increasing sequence order.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata::replication::{LogPin, LogSource};
use strata::{Db, RangeId, SeqNo, Snapshot};
use strata_format::wal::BatchOp;

use crate::shared::SharedDb;

/// One recent view of the database: what a digest as of a later sequence
/// number starts from.
struct Point {
    db: Arc<Db>,
    snapshot: Arc<Snapshot>,
    /// Holds the log after the snapshot, to lay over it.
    _pin: LogPin,
}

/// Recent digest points of a node's database. See the module docs.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use strata::{Db, MemFileSystem, Options, SeqNo};
/// use strata_replication::SharedDb;
/// use strata_replication::digest::{DigestPoints, DigestQuery};
/// let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
/// let shared = SharedDb::new(db);
/// let points = DigestPoints::new(shared.clone(), 8);
/// let db = shared.get().unwrap();
/// db.put(b"a", b"1")?;
/// points.record();
/// let at = db.put(b"b", b"2")?;
/// db.put(b"a", b"changed later")?;
/// let digest = points.digest(&DigestQuery::at(at), &[]).unwrap();
/// assert_eq!((digest.seq, digest.keys), (at, 2));
/// # Ok::<(), strata::Error>(())
/// ```
pub struct DigestPoints {
    db: SharedDb,
    keep: usize,
    points: Mutex<VecDeque<Point>>,
}

impl std::fmt::Debug for DigestPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestPoints")
            .field("keep", &self.keep)
            .field("oldest", &self.oldest_seq())
            .finish_non_exhaustive()
    }
}

/// What to digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestQuery {
    /// As of this sequence number (waiting for the node to apply it), or
    /// `None`: the node's current one.
    pub seq: Option<SeqNo>,
    /// Only keys in `[start, end)` (`end` `None`: unbounded), or `None`:
    /// every key the node holds.
    pub range: Option<(Vec<u8>, Option<Vec<u8>>)>,
    /// The longest to wait for the node to apply `seq`.
    pub timeout: Duration,
}

impl DigestQuery {
    /// Every key the node holds as of `seq`, waiting up to 5 s.
    #[must_use]
    pub fn at(seq: SeqNo) -> Self {
        Self {
            seq: Some(seq),
            range: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The digest of one piece of the keyspace: the part of one of the node's
/// key ranges that the query covers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RangeDigest {
    /// The node's range holding the piece.
    pub range: RangeId,
    /// The piece's first key.
    pub start: Vec<u8>,
    /// Its end (exclusive), `None`: unbounded.
    pub end: Option<Vec<u8>>,
    /// xxh3-64 over its keys and values.
    pub digest: u64,
    /// Live keys in it.
    pub keys: u64,
}

/// A digest of the database as of one sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Digest {
    /// Every operation up to and including this one is reflected, none after.
    pub seq: SeqNo,
    /// xxh3-64 over every key and value covered, in key order.
    pub digest: u64,
    /// Live keys covered.
    pub keys: u64,
    /// Per piece, in key order.
    pub ranges: Vec<RangeDigest>,
}

/// Why a digest was not computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The node had not applied the sequence number within the timeout.
    #[error("this node has applied up to {applied}, not yet {wanted} (waited {waited_ms} ms)")]
    NotYet {
        /// The sequence number asked for.
        wanted: u64,
        /// What the node has applied.
        applied: u64,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The node is past the sequence number and keeps no point at or below it.
    #[error(
        "this node is past {wanted} and keeps digest points back to {oldest} only: ask for a sequence number at or above {oldest} (or one the node has not reached yet)"
    )]
    Gone {
        /// The sequence number asked for.
        wanted: u64,
        /// The oldest it can digest (its oldest point's).
        oldest: u64,
    },
    /// The range reaches outside the key ranges this node holds.
    #[error("the range reaches outside the key ranges this node holds; ask a node that holds it")]
    OutsideHeld,
    /// The node has no database (it is bootstrapping).
    #[error("this node has no database yet (bootstrapping from a snapshot)")]
    Unavailable,
    /// Reading the database or its log failed.
    #[error("{0}")]
    Read(String),
}

type Intervals = [(Vec<u8>, Option<Vec<u8>>)];

/// A piece of the keyspace to digest: the node's range holding it, its
/// first key and its end (`None`: unbounded).
type Piece = (RangeId, Vec<u8>, Option<Vec<u8>>);

impl DigestPoints {
    /// Keeps at most `keep` points of `db`'s database.
    #[must_use]
    pub fn new(db: SharedDb, keep: usize) -> Self {
        Self {
            db,
            keep: keep.max(1),
            points: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes a point of the current database (dropping the oldest beyond
    /// `keep`, and every point of a database that was replaced). Call it at
    /// an interval: points reach back `keep` intervals.
    pub fn record(&self) {
        let Some(db) = self.db.get() else {
            self.points.lock().clear();
            return;
        };
        let point = point(&db);
        let mut points = self.points.lock();
        points.retain(|p| Arc::ptr_eq(&p.db, &db));
        if let Some(point) = point
            && points
                .back()
                .is_none_or(|last| last.snapshot.seq() < point.snapshot.seq())
        {
            points.push_back(point);
        }
        while points.len() > self.keep {
            points.pop_front();
        }
    }

    /// Drops every point (a node closing its database: points hold it).
    pub fn clear(&self) {
        self.points.lock().clear();
    }

    /// The oldest sequence number a digest can be computed as of.
    #[must_use]
    pub fn oldest_seq(&self) -> Option<SeqNo> {
        self.points.lock().front().map(|p| p.snapshot.seq())
    }

    /// The digest `query` asks for, over the keys the node holds (`held`,
    /// empty: every key). Blocking.
    ///
    /// # Errors
    /// [`DigestError`] naming what was missing.
    pub fn digest(&self, query: &DigestQuery, held: &Intervals) -> Result<Digest, DigestError> {
        let whole = [(Vec::new(), None)];
        let held = if held.is_empty() { &whole[..] } else { held };
        if let Some(range) = &query.range
            && !crate::covers(held, std::slice::from_ref(range))
        {
            return Err(DigestError::OutsideHeld);
        }
        let started = Instant::now();
        // A replica installing a snapshot has no database for a moment.
        let db = loop {
            match self.db.get() {
                Some(db) => break db,
                None if started.elapsed() < query.timeout => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                None => return Err(DigestError::Unavailable),
            }
        };
        let Some(wanted) = query.seq else {
            let snapshot = db.snapshot();
            let seq = snapshot.seq();
            return compute(&db, &snapshot, seq, query, held);
        };
        // A point taken now serves a sequence number not yet reached.
        let arrival = point(&db).filter(|p| p.snapshot.seq() <= wanted);
        let remaining = query.timeout.saturating_sub(started.elapsed());
        if !db.wait_for_seq(wanted, remaining) {
            return Err(DigestError::NotYet {
                wanted: wanted.get(),
                applied: db.last_seq().get(),
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        let points = self.points.lock();
        let base = arrival
            .as_ref()
            .into_iter()
            .chain(points.iter().rev().filter(|p| Arc::ptr_eq(&p.db, &db)))
            .filter(|p| p.snapshot.seq() <= wanted)
            .max_by_key(|p| p.snapshot.seq());
        let Some(base) = base else {
            return Err(DigestError::Gone {
                wanted: wanted.get(),
                oldest: points
                    .front()
                    .map_or(db.last_seq().get(), |p| p.snapshot.seq().get()),
            });
        };
        let snapshot = Arc::clone(&base.snapshot);
        drop(points);
        compute(&db, &snapshot, wanted, query, held)
    }
}

/// A point of `db` now, if its log after the snapshot can be pinned.
fn point(db: &Arc<Db>) -> Option<Point> {
    let snapshot = db.snapshot();
    let pin = LogSource::of(db)
        .pin(SeqNo(snapshot.seq().get() + 1))
        .ok()?;
    Some(Point {
        db: Arc::clone(db),
        snapshot: Arc::new(snapshot),
        _pin: pin,
    })
}

/// The pieces of the keyspace to digest: each node range cut by the held
/// intervals and the query's range, in key order.
fn pieces(db: &Db, held: &Intervals, range: Option<&(Vec<u8>, Option<Vec<u8>>)>) -> Vec<Piece> {
    let whole = (Vec::new(), None);
    let asked = range.unwrap_or(&whole);
    let mut out = Vec::new();
    for node_range in db.ranges() {
        for (held_start, held_end) in held {
            let start = node_range
                .start
                .as_slice()
                .max(held_start.as_slice())
                .max(asked.0.as_slice())
                .to_vec();
            let end = [
                node_range.end.as_deref(),
                held_end.as_deref(),
                asked.1.as_deref(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(<[u8]>::to_vec);
            if end.as_deref().is_none_or(|end| start.as_slice() < end) {
                out.push((node_range.id, start, end));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// The log laid over a snapshot: the newest value (or deletion) of each key
/// written after it, and the range deletions after it.
#[derive(Default)]
struct Overlay {
    keys: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    range_deletions: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Overlay {
    fn hides(&self, key: &[u8]) -> bool {
        self.range_deletions
            .iter()
            .any(|(start, end)| start.as_slice() <= key && key < end.as_slice())
    }
}

/// Reads the log after `from` up to `to` into an overlay of the keys the
/// pieces cover.
fn overlay(
    db: &Db,
    from: SeqNo,
    to: SeqNo,
    pieces: &[Piece],
    timeout: Duration,
) -> Result<Overlay, DigestError> {
    let mut overlay = Overlay::default();
    if from >= to {
        return Ok(overlay);
    }
    let covered = |key: &[u8]| {
        pieces.iter().any(|(_, start, end)| {
            start.as_slice() <= key && end.as_deref().is_none_or(|end| key < end)
        })
    };
    if db.durable_seq() < to {
        // Only durable records are read back: make the rest durable.
        db.sync()
            .map_err(|e| DigestError::Read(format!("syncing the log: {e}")))?;
    }
    let log =
        |e: strata::Error| DigestError::Read(format!("reading the log after {}: {e}", from.get()));
    let mut reader = LogSource::of(db)
        .read_from(SeqNo(from.get() + 1))
        .map_err(log)?;
    let deadline = Instant::now() + timeout;
    let mut next = from.get() + 1;
    while next <= to.get() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let record = reader.next(wait).map_err(log)?.ok_or_else(|| {
            DigestError::Read(format!(
                "the log record holding {next} did not become readable in time"
            ))
        })?;
        let damaged = |what: String| {
            DigestError::Read(format!(
                "this node's log record {}..={}: {what}",
                record.first_seq.get(),
                record.last_seq.get()
            ))
        };
        let view =
            strata_format::wal::decode_record(&record.bytes).map_err(|e| damaged(e.to_string()))?;
        let batch =
            strata_format::wal::decode_batch(view.payload).map_err(|e| damaged(e.to_string()))?;
        let mut ops = 0u32;
        for (seq, op) in (batch.first_seq..).zip(batch.ops()) {
            ops += 1;
            if seq >= next && seq <= to.get() {
                match op {
                    BatchOp::Put { key, value } if covered(key) => {
                        overlay.keys.insert(key.to_vec(), Some(value.to_vec()));
                    }
                    BatchOp::Delete { key } if covered(key) => {
                        overlay.keys.insert(key.to_vec(), None);
                    }
                    BatchOp::DeleteRange { start, end } => {
                        let hidden: Vec<Vec<u8>> = overlay
                            .keys
                            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for key in hidden {
                            overlay.keys.insert(key, None);
                        }
                        overlay.range_deletions.push((start.to_vec(), end.to_vec()));
                    }
                    _ => {}
                }
            }
        }
        if ops != batch.count {
            return Err(damaged(format!(
                "{ops} of its {} operations decode",
                batch.count
            )));
        }
        next = next.max(batch.last_seq() + 1);
    }
    Ok(overlay)
}

/// The digest of `snapshot` with the log up to `seq` laid over it.
fn compute(
    db: &Db,
    snapshot: &Snapshot,
    seq: SeqNo,
    query: &DigestQuery,
    held: &Intervals,
) -> Result<Digest, DigestError> {
    let pieces = pieces(db, held, query.range.as_ref());
    let overlay = overlay(db, snapshot.seq(), seq, &pieces, query.timeout)?;
    let mut total = xxhash_rust::xxh3::Xxh3::new();
    let mut total_keys = 0u64;
    let mut ranges = Vec::with_capacity(pieces.len());
    for (id, start, end) in pieces {
        let mut piece = xxhash_rust::xxh3::Xxh3::new();
        let mut keys = 0u64;
        let mut add = |key: &[u8], value: &[u8]| {
            for hasher in [&mut total, &mut piece] {
                hasher.update(&(key.len() as u64).to_le_bytes());
                hasher.update(key);
                hasher.update(&(value.len() as u64).to_le_bytes());
                hasher.update(value);
            }
            keys += 1;
        };
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let read = |e: strata::Error| DigestError::Read(e.to_string());
        let mut base = snapshot
            .scan((Bound::Included(start.as_slice()), upper))
            .map_err(read)?
            .peekable();
        let mut over = overlay
            .keys
            .range::<[u8], _>((Bound::Included(start.as_slice()), upper))
            .peekable();
        loop {
            let take_overlay = match (base.peek(), over.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(Ok((base_key, _))), Some((over_key, _))) => {
                    over_key.as_slice() <= base_key.as_slice()
                }
                (Some(Err(_)), Some(_)) => false,
            };
            if take_overlay {
                if let Some((over_key, value)) = over.next() {
                    if base
                        .peek()
                        .is_some_and(|b| b.as_ref().is_ok_and(|(k, _)| k == over_key))
                    {
                        base.next();
                    }
                    if let Some(value) = value {
                        add(over_key, value);
                    }
                }
            } else if let Some(item) = base.next() {
                let (key, value) = item.map_err(read)?;
                if !overlay.hides(&key) {
                    add(&key, &value);
                }
            }
        }
        total_keys += keys;
        ranges.push(RangeDigest {
            range: id,
            start,
            end,
            digest: piece.digest(),
            keys,
        });
    }
    Ok(Digest {
        seq,
        digest: total.digest(),
        keys: total_keys,
        ranges,
    })
}
