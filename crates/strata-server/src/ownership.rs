//! Range ownership on a sharded member (`[cluster] sharded = true`): the
//! node takes writes, and serves reads, only for keys whose range the
//! range map gives its group, and freezes a range for a move's cut-over.
//!
//! Role: the node's side of the range map (`strata_cluster::RangeMap`,
//! followed by a watch). Every write's keys are checked under the
//! ownership gate (a read lock held from the check until the engine has
//! the write); a freeze takes the gate's write lock, so the sequence
//! number it names is above every write to the range it let through.
//!
//! Refusals (the client's contract, `docs/design/cluster.md`):
//! - FAILED_PRECONDITION `wrong group: ...`, metadata `strata-range-group`
//!   (the owner this node knows) and `strata-map-revision`: not applied.
//! - INVALID_ARGUMENT `batch spans range groups: ...`: not applied.
//! - UNAVAILABLE `range moving: ...`, metadata `strata-range-moving: 1`:
//!   the range is frozen for a move's cut-over; not applied.
//! - UNAVAILABLE `no range map ...`: the cluster has none yet.
//!
//! Invariants:
//! - A write is taken only if, at the map revision this node knows, every
//!   key is in a range of its group, and none is frozen.
//! - A freeze is stored in etcd under the primary's lease (so it ends with
//!   the leadership), and released only by a transaction that also ends
//!   the move (so a move cannot flip after its freeze was released), or
//!   by finding the move already ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use strata_cluster::{
    ClusterKeys, Compare, Coordinator, EtcdCoordinator, Freeze, LeaseId, Op, RangeEntry, RangeMap,
    Txn, end_move, read_entry, show_key,
};
use strata_proto::v1::{Operation, operation};
use tokio::sync::watch;
use tonic::Status;

/// Metadata naming the owner group in a "wrong group" refusal.
pub(crate) const RANGE_GROUP_KEY: &str = "strata-range-group";
/// Metadata naming the map revision a refusal was decided at.
pub(crate) const MAP_REVISION_KEY: &str = "strata-map-revision";
/// Metadata marking a "range moving" refusal.
pub(crate) const RANGE_MOVING_KEY: &str = "strata-range-moving";

/// The keys a request touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Span {
    /// One key.
    Key(Vec<u8>),
    /// `[start, end)`; `None`: to the end of the key space.
    Range(Vec<u8>, Option<Vec<u8>>),
}

impl Span {
    fn bounds(&self) -> (&[u8], Option<&[u8]>, bool) {
        match self {
            Span::Key(k) => (k, None, true),
            Span::Range(s, e) => (s, e.as_deref(), false),
        }
    }

    fn overlaps(&self, start: &[u8], end: Option<&[u8]>) -> bool {
        let (s, e, point) = self.bounds();
        if point {
            return s >= start && end.is_none_or(|end| s < end);
        }
        end.is_none_or(|end| s < end) && e.is_none_or(|e| start < e)
    }
}

/// The spans of a write's operations.
pub(crate) fn spans_of(operations: &[Operation]) -> Vec<Span> {
    operations
        .iter()
        .map(|op| match operation::Kind::try_from(op.kind) {
            Ok(operation::Kind::DeleteRange) => Span::Range(op.key.clone(), Some(op.value.clone())),
            _ => Span::Key(op.key.clone()),
        })
        .collect()
}

#[derive(Debug)]
struct Frozen {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    id: i64,
    seq: u64,
    value: Vec<u8>,
}

/// A sharded member's view of the range map and its frozen ranges.
#[derive(Debug)]
pub(crate) struct Ownership {
    group: String,
    node: String,
    keys: ClusterKeys,
    store: EtcdCoordinator,
    map: watch::Receiver<Option<Arc<RangeMap>>>,
    gate: RwLock<()>,
    frozen: Mutex<Vec<Frozen>>,
    /// Requests refused because their keys belong to another group.
    pub(crate) wrong_group: AtomicU64,
    /// Writes refused because their range was frozen for a move.
    pub(crate) moving: AtomicU64,
    /// Writes taken per range (by start) since the figures were last
    /// taken, and when that was.
    writes: Mutex<(std::collections::HashMap<Vec<u8>, u64>, Instant)>,
}

impl Ownership {
    pub(crate) fn new(
        group: String,
        node: String,
        keys: ClusterKeys,
        store: EtcdCoordinator,
        map: watch::Receiver<Option<Arc<RangeMap>>>,
    ) -> Self {
        Self {
            group,
            node,
            keys,
            store,
            map,
            gate: RwLock::new(()),
            frozen: Mutex::new(Vec::new()),
            wrong_group: AtomicU64::new(0),
            moving: AtomicU64::new(0),
            writes: Mutex::new((std::collections::HashMap::new(), Instant::now())),
        }
    }

    /// The map this node routes by now.
    pub(crate) fn map(&self) -> Option<Arc<RangeMap>> {
        self.map.borrow().clone()
    }

    /// The writes per range since the last call, and the seconds since.
    pub(crate) fn take_writes(&self) -> (std::collections::HashMap<Vec<u8>, u64>, f64) {
        let mut w = self.writes.lock();
        let taken = std::mem::take(&mut w.0);
        let seconds = w.1.elapsed().as_secs_f64();
        w.1 = Instant::now();
        (taken, seconds)
    }

    /// A receiver of the map's changes.
    pub(crate) fn watch(&self) -> watch::Receiver<Option<Arc<RangeMap>>> {
        self.map.clone()
    }

    /// This node's group.
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    /// How many ranges are frozen now, for the metrics.
    pub(crate) fn frozen_count(&self) -> usize {
        self.frozen.lock().len()
    }

    fn revision_status(mut status: Status, revision: i64) -> Status {
        if let Ok(v) = revision.to_string().parse() {
            status.metadata_mut().insert(MAP_REVISION_KEY, v);
        }
        status
    }

    /// Checks that every span is in a range of this group.
    fn check_owned(&self, spans: &[Span]) -> Result<Arc<RangeMap>, Status> {
        let Some(map) = self.map() else {
            return Err(Status::unavailable(
                "no range map: this sharded cluster has no range map in etcd yet (create it with `strata cluster apply` or `strata cluster ranges init`)",
            ));
        };
        let mut foreign: Vec<&RangeEntry> = Vec::new();
        let mut own = false;
        for span in spans {
            let (start, end, point) = span.bounds();
            let entries = if point {
                std::slice::from_ref(map.locate(start))
            } else {
                map.overlapping(start, end)
            };
            for entry in entries {
                if entry.group == self.group {
                    own = true;
                } else if !foreign.iter().any(|e| e.start == entry.start) {
                    foreign.push(entry);
                }
            }
        }
        let Some(first) = foreign.first() else {
            return Ok(map);
        };
        self.wrong_group.fetch_add(1, Ordering::Relaxed);
        let one_owner = !own && foreign.iter().all(|e| e.group == first.group);
        if one_owner {
            let mut status = Status::failed_precondition(format!(
                "wrong group: range {} belongs to group {} at map revision {}; this node ({}) is in group {}",
                first.describe(),
                first.group,
                map.revision(),
                self.node,
                self.group
            ));
            if let Ok(v) = first.group.parse() {
                status.metadata_mut().insert(RANGE_GROUP_KEY, v);
            }
            return Err(Self::revision_status(status, map.revision()));
        }
        let mut names: Vec<String> = foreign
            .iter()
            .map(|e| format!("{} in {}", e.describe(), e.group))
            .collect();
        if own {
            names.push(format!("ranges of {} (this node's group)", self.group));
        }
        Err(Self::revision_status(
            Status::invalid_argument(format!(
                "batch spans range groups: {} (map revision {}); a batch is atomic within one group only",
                names.join(", "),
                map.revision()
            )),
            map.revision(),
        ))
    }

    /// Admits `spans` by ownership alone: a read, or a pipelined write's
    /// own keys before its run is committed (and checked again, frozen
    /// ranges too, under the gate).
    pub(crate) fn check(&self, spans: &[Span]) -> Result<(), Status> {
        self.check_owned(spans).map(|_| ())
    }

    /// Admits a write of `spans`: the guard must be held until the engine
    /// has the write (a freeze waits for it).
    pub(crate) fn admit_write(&self, spans: &[Span]) -> Result<RwLockReadGuard<'_, ()>, Status> {
        let guard = self.gate.read();
        let map = self.check_owned(spans)?;
        let frozen = self.frozen.lock();
        if let Some(f) = frozen
            .iter()
            .find(|f| spans.iter().any(|s| s.overlaps(&f.start, f.end.as_deref())))
        {
            self.moving.fetch_add(1, Ordering::Relaxed);
            let mut status = Status::unavailable(format!(
                "range moving: range starting at {} is frozen for the cut-over of move {} (writes up to {} taken); retry shortly",
                show_key(&f.start),
                f.id,
                f.seq
            ));
            status.metadata_mut().insert(
                RANGE_MOVING_KEY,
                tonic::metadata::MetadataValue::from_static("1"),
            );
            return Err(Self::revision_status(status, map.revision()));
        }
        drop(frozen);
        if let Some(first) = spans.first() {
            // Counted under its range's start; the key is copied only the
            // first time a range is written in a round of figures.
            let start = &map.locate(first.bounds().0).start;
            let mut writes = self.writes.lock();
            match writes.0.get_mut(start) {
                Some(count) => *count += 1,
                None => {
                    writes.0.insert(start.clone(), 1);
                }
            }
        }
        Ok(guard)
    }

    /// Waits (up to `wait`) for the map to be at least at `revision`.
    pub(crate) async fn map_at(
        &self,
        revision: i64,
        wait: Duration,
    ) -> Result<Arc<RangeMap>, Status> {
        let mut rx = self.map.clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(map) = rx.borrow_and_update().clone()
                && map.revision() >= revision
            {
                return Ok(map);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(Status::unavailable(format!(
                    "this node's range map has not reached revision {revision} yet"
                )));
            }
        }
    }

    /// Freezes the range starting at `start` for move `id`: no write to it
    /// is taken from now on; returns the sequence number every write taken
    /// is at or below, and the freeze record stored in etcd under `lease`.
    pub(crate) async fn freeze(
        self: &Arc<Self>,
        db: &strata::Db,
        start: &[u8],
        id: i64,
        hold: Duration,
        lease: LeaseId,
    ) -> Result<(u64, Vec<u8>), Status> {
        let map = self.map_at(id, Duration::from_secs(3)).await?;
        let entry = map
            .starting_at(start)
            .ok_or_else(|| {
                Status::failed_precondition(format!("no range starts at {}", show_key(start)))
            })?
            .clone();
        if entry.group != self.group || entry.moving.is_none() || entry.mod_revision != id {
            return Err(Status::failed_precondition(format!(
                "range {} is not marked as moving out of group {} by move {id} (entry: group {}, revision {}, moving {:?})",
                entry.describe(),
                self.group,
                entry.group,
                entry.mod_revision,
                entry.moving.as_ref().map(|m| m.to.clone())
            )));
        }
        if let Some(f) = self
            .frozen
            .lock()
            .iter()
            .find(|f| f.start == start && f.id == id)
        {
            return Ok((f.seq, f.value.clone()));
        }
        let (seq, value) = {
            let _exclusive = self.gate.write();
            let seq = db.last_seq().get();
            let value = Freeze {
                v: 1,
                id,
                node: self.node.clone(),
                seq,
            }
            .encode();
            self.frozen.lock().push(Frozen {
                start: start.to_vec(),
                end: entry.end.clone(),
                id,
                seq,
                value: value.clone(),
            });
            (seq, value)
        };
        // The release runs when the hold ends, whatever happens below.
        let this = Arc::clone(self);
        let held = start.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            this.release(&held, id).await;
        });
        let put = self
            .store
            .txn(Txn {
                compare: vec![Compare::mod_revision_is(&self.keys.range_entry(start), id)],
                success: vec![Op::Put {
                    key: self.keys.range_freeze(start),
                    value: value.clone(),
                    lease: Some(lease),
                }],
                failure: vec![],
            })
            .await;
        match put {
            Ok(outcome) if outcome.succeeded => {
                tracing::info!(range = %entry.describe(), move_id = id, seq, "range frozen for a move's cut-over");
                Ok((seq, value))
            }
            Ok(_) => {
                self.release(start, id).await;
                Err(Status::failed_precondition(format!(
                    "range {} changed while it was being frozen (the move was aborted or replaced)",
                    entry.describe()
                )))
            }
            Err(error) => {
                // The outcome is unknown: the range stays frozen until the
                // hold's release settles it by a transaction.
                Err(Status::unavailable(format!(
                    "storing the freeze in etcd: {error}; the range stays frozen until its hold ends"
                )))
            }
        }
    }

    /// Releases the freeze of move `id` on the range starting at `start`:
    /// ends the move in etcd if it has not flipped (so it never can), then
    /// takes writes again. Returns whether the range stays with this group.
    /// Retries while etcd cannot be reached (the range stays frozen).
    pub(crate) async fn release(&self, start: &[u8], id: i64) -> bool {
        if !self
            .frozen
            .lock()
            .iter()
            .any(|f| f.start == start && f.id == id)
        {
            return true;
        }
        let mut pause = Duration::from_millis(100);
        let started = Instant::now();
        loop {
            match self.try_release(start, id).await {
                Ok(kept) => {
                    self.frozen
                        .lock()
                        .retain(|f| !(f.start == start && f.id == id));
                    tracing::info!(range = %show_key(start), move_id = id, kept, "range freeze released");
                    return kept;
                }
                Err(error) => {
                    tracing::warn!(range = %show_key(start), move_id = id, %error, waited = ?started.elapsed(), "cannot release a range freeze yet; the range stays frozen");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn try_release(&self, start: &[u8], id: i64) -> Result<bool, strata_cluster::Error> {
        let entry = read_entry(&self.store, &self.keys, start).await?;
        if entry.mod_revision != id {
            // The move ended (flipped, or aborted by someone else): a flip
            // compares the entry's revision, so none can happen now.
            return Ok(entry.group == self.group);
        }
        if end_move(&self.store, &self.keys, &entry).await? {
            return Ok(true);
        }
        let entry = read_entry(&self.store, &self.keys, start).await?;
        Ok(entry.group == self.group)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spans_overlap_as_half_open_intervals() {
        let key = Span::Key(b"m".to_vec());
        assert!(key.overlaps(b"m", Some(b"n")));
        assert!(!key.overlaps(b"a", Some(b"m")));
        assert!(key.overlaps(b"a", None));
        let range = Span::Range(b"c".to_vec(), Some(b"f".to_vec()));
        assert!(range.overlaps(b"e", None));
        assert!(!range.overlaps(b"f", Some(b"z")));
        assert!(!range.overlaps(b"a", Some(b"c")));
        assert!(range.overlaps(b"a", Some(b"d")));
        let open = Span::Range(b"x".to_vec(), None);
        assert!(open.overlaps(b"y", Some(b"z")));
        assert!(!open.overlaps(b"a", Some(b"x")));
    }
}
