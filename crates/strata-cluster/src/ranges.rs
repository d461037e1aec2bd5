//! The range map: which range group owns each key range, kept in etcd.
//!
//! Role: the cluster's one answer to "who may write this key". Every key
//! belongs to exactly one range; every range to one group. Nodes refuse
//! keys their group does not own at the map's revision they know; clients
//! route by the map and refresh it when refused. Every change is one etcd
//! transaction guarded by the mod revisions of the entries it replaces,
//! so two concurrent changes cannot both win.
//!
//! LAYOUT (under the cluster's root, see [`crate::ClusterKeys`]):
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `ranges/k{hex(start)}` | the range starting at `start` ([`RangeEntry`], JSON) | none |
//! | `moves/k{hex(start)}` | the source's freeze of that range during a move ([`Freeze`], JSON) | the source primary's |
//!
//! `hex` is lower-case, two digits a byte, so the keys list in the order of
//! the starts (`k` keeps the empty start a key of its own).
//!
//! FORMAT of an entry: `{"v":1,"end":"6d","group":"g1","split_version":2,"move_version":1,"moving":null}`
//! (`end` hex, `null` for "to the end of the key space"; `moving`
//! `{"to":"g2"}` while a move is under way; the move's id is then the
//! entry's mod revision). `split_version`
//! changes on every split and merge that touches the range,
//! `move_version` on every change of its group.
//!
//! Invariants of a [`RangeMap`] (checked whenever one is built, never
//! published otherwise): the entries are sorted, the first starts at the
//! empty key, each ends where the next starts, the last is unbounded.
//! A watch applies the events of one transaction one by one; a state in
//! between (a split's first half without its second) breaks these
//! invariants and is never published.
//!
//! Moves: see [`begin_move`], [`flip_move`] and [`abort_move`], and
//! `docs/design/cluster.md` "Range moves" for the protocol and why the
//! source's freeze lives under its lease.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::coordinator::{
    Compare, Coordinator, Error, EventKind, KeyValue, Op, Result, Revision, Txn, Watch,
};
use crate::keys::{ClusterKeys, check_name};

/// A move under way: the group the range is going to. The move's id is
/// the entry's mod revision while it is marked (the revision of the
/// transaction that began it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moving {
    /// The target group.
    pub to: String,
}

/// One entry of the map: a key range `[start, end)` and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeEntry {
    /// The first key of the range.
    pub start: Vec<u8>,
    /// The first key after it (`None`: the end of the key space).
    pub end: Option<Vec<u8>>,
    /// The owning range group.
    pub group: String,
    /// Changes on every split or merge touching the range.
    pub split_version: u64,
    /// Changes on every change of owner.
    pub move_version: u64,
    /// A move under way, if any.
    pub moving: Option<Moving>,
    /// The store's mod revision of the entry (what a change compares).
    pub mod_revision: Revision,
}

impl RangeEntry {
    /// Whether `key` is in `[start, end)`.
    ///
    /// ```
    /// use strata_cluster::RangeEntry;
    /// let e = RangeEntry { start: b"b".to_vec(), end: Some(b"d".to_vec()), group: "g1".into(),
    ///     split_version: 1, move_version: 1, moving: None, mod_revision: 0 };
    /// assert!(e.contains(b"b") && e.contains(b"c") && !e.contains(b"d") && !e.contains(b"a"));
    /// ```
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// The range as `[start, end)` for messages (see [`describe_range`]).
    pub fn describe(&self) -> String {
        describe_range(&self.start, self.end.as_deref())
    }
}

/// `[start, end)` for messages, keys shown by [`show_key`], `end` for an
/// unbounded range.
///
/// ```
/// assert_eq!(strata_cluster::describe_range(b"m", None), "[\"m\", end)");
/// ```
pub fn describe_range(start: &[u8], end: Option<&[u8]>) -> String {
    format!(
        "[{}, {})",
        show_key(start),
        end.map_or("end".to_string(), show_key)
    )
}

/// A key for messages: as text when printable, else hex.
pub fn show_key(key: &[u8]) -> String {
    if key.is_empty() {
        return "\"\"".to_string();
    }
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| c.is_ascii_graphic()) => format!("{s:?}"),
        _ => format!("0x{}", hex(key)),
    }
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    v: u32,
    end: Option<String>,
    group: String,
    split_version: u64,
    move_version: u64,
    moving: Option<Moving>,
}

/// The source's freeze of a range during a move: it takes no write to the
/// range above `seq` while this key exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// Format version; always 1.
    pub v: u32,
    /// The move it is for.
    pub id: i64,
    /// The source node.
    pub node: String,
    /// Every write to the range the source took is at or below this.
    pub seq: u64,
}

impl Freeze {
    /// The value stored.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored freeze (`key` is named in the error).
    pub fn decode(bytes: &[u8], key: &str) -> Result<Freeze> {
        let freeze: Freeze = serde_json::from_slice(bytes).map_err(|e| Error::Rejected {
            what: "range freeze",
            detail: format!("{key}: not a range freeze: {e}"),
        })?;
        if freeze.v != 1 {
            return Err(Error::Rejected {
                what: "range freeze",
                detail: format!("{key}: format version {} (this node reads 1)", freeze.v),
            });
        }
        Ok(freeze)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

impl ClusterKeys {
    /// The prefix of every range entry.
    pub fn ranges(&self) -> Vec<u8> {
        let mut key = self.root().to_vec();
        key.extend_from_slice(b"ranges/");
        key
    }

    /// The entry of the range starting at `start`.
    ///
    /// ```
    /// let keys = strata_cluster::ClusterKeys::new("strata", "shop").unwrap();
    /// assert_eq!(keys.range_entry(b"m"), b"strata/shop/ranges/k6d".to_vec());
    /// assert_eq!(keys.range_entry(b""), b"strata/shop/ranges/k".to_vec());
    /// ```
    pub fn range_entry(&self, start: &[u8]) -> Vec<u8> {
        let mut key = self.ranges();
        key.push(b'k');
        key.extend_from_slice(hex(start).as_bytes());
        key
    }

    /// The freeze of the range starting at `start` during a move.
    pub fn range_freeze(&self, start: &[u8]) -> Vec<u8> {
        let mut key = self.root().to_vec();
        key.extend_from_slice(b"moves/k");
        key.extend_from_slice(hex(start).as_bytes());
        key
    }
}

/// Encodes an entry's value (its start is in its key).
pub fn encode_entry(entry: &RangeEntry) -> Vec<u8> {
    serde_json::to_vec(&StoredEntry {
        v: 1,
        end: entry.end.as_deref().map(hex),
        group: entry.group.clone(),
        split_version: entry.split_version,
        move_version: entry.move_version,
        moving: entry.moving.clone(),
    })
    .unwrap_or_default()
}

/// Decodes an entry listed under `prefix` (the keys' `ranges/` prefix).
pub fn decode_entry(prefix: &[u8], kv: &KeyValue) -> Result<RangeEntry> {
    let name = String::from_utf8_lossy(&kv.key).into_owned();
    let bad = |detail: String| Error::Rejected {
        what: "range entry",
        detail: format!("{name}: {detail}"),
    };
    let start = kv
        .key
        .strip_prefix(prefix)
        .and_then(|k| k.strip_prefix(b"k"))
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(unhex)
        .ok_or_else(|| bad("the key is not ranges/k{hex start}".into()))?;
    let stored: StoredEntry =
        serde_json::from_slice(&kv.value).map_err(|e| bad(format!("not a range entry: {e}")))?;
    if stored.v != 1 {
        return Err(bad(format!(
            "format version {} (this node reads 1)",
            stored.v
        )));
    }
    check_name("range group", &stored.group)?;
    let end = match stored.end {
        None => None,
        Some(h) => Some(unhex(&h).ok_or_else(|| bad(format!("end {h:?} is not hex")))?),
    };
    if end.as_deref().is_some_and(|e| e <= start.as_slice()) {
        return Err(bad("the range is empty (end not above start)".into()));
    }
    Ok(RangeEntry {
        start,
        end,
        group: stored.group,
        split_version: stored.split_version,
        move_version: stored.move_version,
        moving: stored.moving,
        mod_revision: kv.mod_revision,
    })
}

/// The whole map as of a store revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeMap {
    entries: Vec<RangeEntry>,
    revision: Revision,
}

impl RangeMap {
    /// Builds a map from its entries, checking they cover the key space
    /// once (see the module's invariants).
    ///
    /// ```
    /// use strata_cluster::{RangeEntry, RangeMap};
    /// let e = |s: &[u8], end: Option<&[u8]>, g: &str| RangeEntry { start: s.to_vec(),
    ///     end: end.map(<[u8]>::to_vec), group: g.into(), split_version: 1, move_version: 1,
    ///     moving: None, mod_revision: 1 };
    /// let map = RangeMap::new(vec![e(b"", Some(b"m"), "g1"), e(b"m", None, "g2")], 7).unwrap();
    /// assert_eq!(map.locate(b"zebra").group, "g2");
    /// assert!(RangeMap::new(vec![e(b"", Some(b"m"), "g1")], 7).is_err());
    /// ```
    pub fn new(mut entries: Vec<RangeEntry>, revision: Revision) -> Result<RangeMap> {
        entries.sort_by(|a, b| a.start.cmp(&b.start));
        let broken = |detail: String| Error::Rejected {
            what: "range map",
            detail,
        };
        let Some(first) = entries.first() else {
            return Err(broken("no ranges".into()));
        };
        if !first.start.is_empty() {
            return Err(broken(format!(
                "the first range starts at {}, not at the empty key",
                show_key(&first.start)
            )));
        }
        for pair in entries.windows(2) {
            if let [a, b] = pair
                && a.end.as_deref() != Some(b.start.as_slice())
            {
                return Err(broken(format!(
                    "range {} is not followed by the range starting at its end (next: {})",
                    a.describe(),
                    b.describe()
                )));
            }
        }
        if let Some(last) = entries.last()
            && last.end.is_some()
        {
            return Err(broken(format!(
                "the last range {} does not reach the end of the key space",
                last.describe()
            )));
        }
        Ok(RangeMap { entries, revision })
    }

    /// Builds the map from a listing of the `ranges/` prefix.
    pub fn from_listing(prefix: &[u8], kvs: &[KeyValue], revision: Revision) -> Result<RangeMap> {
        let entries = kvs
            .iter()
            .map(|kv| decode_entry(prefix, kv))
            .collect::<Result<Vec<_>>>()?;
        RangeMap::new(entries, revision)
    }

    /// The store revision the map is as of (the "map version" refusals
    /// name).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The entries, in key order.
    pub fn entries(&self) -> &[RangeEntry] {
        &self.entries
    }

    /// The range holding `key`.
    pub fn locate(&self, key: &[u8]) -> &RangeEntry {
        let index = self
            .entries
            .partition_point(|e| e.start.as_slice() <= key)
            .saturating_sub(1);
        // The map is never empty and its first range starts at "".
        match self.entries.get(index) {
            Some(entry) => entry,
            None => unreachable_empty(&self.entries),
        }
    }

    /// The ranges overlapping `[start, end)` (`end` `None`: to the end),
    /// in key order: a run of the entries, found by binary search.
    ///
    /// ```
    /// use strata_cluster::{RangeEntry, RangeMap};
    /// let e = |s: &[u8], end: Option<&[u8]>| RangeEntry { start: s.to_vec(),
    ///     end: end.map(<[u8]>::to_vec), group: "g".into(), split_version: 1, move_version: 1,
    ///     moving: None, mod_revision: 1 };
    /// let map = RangeMap::new(vec![e(b"", Some(b"f")), e(b"f", Some(b"m")), e(b"m", None)], 7).unwrap();
    /// let starts = |s: &[u8], end: Option<&[u8]>| -> Vec<Vec<u8>> {
    ///     map.overlapping(s, end).iter().map(|e| e.start.clone()).collect() };
    /// assert_eq!(starts(b"g", Some(b"h")), [b"f".to_vec()]);
    /// assert_eq!(starts(b"a", Some(b"m")), [b"".to_vec(), b"f".to_vec()]);
    /// assert_eq!(starts(b"g", None), [b"f".to_vec(), b"m".to_vec()]);
    /// ```
    pub fn overlapping(&self, start: &[u8], end: Option<&[u8]>) -> &[RangeEntry] {
        let first = self
            .entries
            .partition_point(|e| e.start.as_slice() <= start)
            .saturating_sub(1);
        let last = match end {
            Some(end) => self.entries.partition_point(|e| e.start.as_slice() < end),
            None => self.entries.len(),
        };
        self.entries.get(first..last.max(first)).unwrap_or_default()
    }

    /// The entry starting exactly at `start`.
    pub fn starting_at(&self, start: &[u8]) -> Option<&RangeEntry> {
        self.entries
            .binary_search_by(|e| e.start.as_slice().cmp(start))
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// The groups named in the map.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self.entries.iter().map(|e| e.group.clone()).collect();
        groups.sort();
        groups.dedup();
        groups
    }
}

#[allow(clippy::panic)]
fn unreachable_empty(entries: &[RangeEntry]) -> ! {
    // RangeMap::new refuses an empty map; a programmer error otherwise.
    panic!(
        "a range map with {} entries has no first range",
        entries.len()
    )
}

/// Reads the map now (`None` if none was created).
pub async fn read_map<C: Coordinator>(store: &C, keys: &ClusterKeys) -> Result<Option<RangeMap>> {
    let prefix = keys.ranges();
    let (kvs, revision) = store.list(&prefix).await?;
    if kvs.is_empty() {
        return Ok(None);
    }
    RangeMap::from_listing(&prefix, &kvs, revision).map(Some)
}

fn conflict(what: &'static str, detail: String) -> Error {
    Error::Conflict { what, detail }
}

fn put_entry(keys: &ClusterKeys, entry: &RangeEntry) -> Op {
    Op::Put {
        key: keys.range_entry(&entry.start),
        value: encode_entry(entry),
        lease: None,
    }
}

async fn run(store: &impl Coordinator, txn: Txn, what: &'static str) -> Result<Revision> {
    let outcome = store.txn(txn).await?;
    if outcome.succeeded {
        Ok(outcome.revision)
    } else {
        Err(conflict(
            what,
            "the range map changed since it was read (another change won); read it again"
                .to_string(),
        ))
    }
}

/// Creates the map: the whole key space owned by `group`. Refused if a
/// map exists.
pub async fn create_map(
    store: &impl Coordinator,
    keys: &ClusterKeys,
    group: &str,
) -> Result<Revision> {
    check_name("range group", group)?;
    if read_map(store, keys).await?.is_some() {
        return Err(conflict("create range map", "a range map exists".into()));
    }
    let entry = RangeEntry {
        start: Vec::new(),
        end: None,
        group: group.to_string(),
        split_version: 1,
        move_version: 1,
        moving: None,
        mod_revision: 0,
    };
    run(
        store,
        Txn {
            compare: vec![Compare::absent(&keys.range_entry(b""))],
            success: vec![put_entry(keys, &entry)],
            failure: vec![],
        },
        "create range map",
    )
    .await
}

/// Splits the range holding `at` into `[start, at)` and `[at, end)`, both
/// owned by its group. Refused while the range moves, or if `at` already
/// starts a range, or if the map changed since `map` was read.
pub async fn split(
    store: &impl Coordinator,
    keys: &ClusterKeys,
    map: &RangeMap,
    at: &[u8],
) -> Result<Revision> {
    let entry = map.locate(at);
    if entry.start == at {
        return Err(conflict(
            "split",
            format!("{} already starts a range", show_key(at)),
        ));
    }
    if let Some(moving) = &entry.moving {
        return Err(conflict(
            "split",
            format!(
                "range {} is moving to {} (move {}): split it after the move",
                entry.describe(),
                moving.to,
                entry.mod_revision
            ),
        ));
    }
    let mut left = entry.clone();
    left.end = Some(at.to_vec());
    left.split_version += 1;
    let mut right = entry.clone();
    right.start = at.to_vec();
    right.split_version += 1;
    run(
        store,
        Txn {
            compare: vec![
                Compare::mod_revision_is(&keys.range_entry(&entry.start), entry.mod_revision),
                Compare::absent(&keys.range_entry(at)),
            ],
            success: vec![put_entry(keys, &left), put_entry(keys, &right)],
            failure: vec![],
        },
        "split",
    )
    .await
}

/// Merges the range starting at `start` into the range before it; both
/// must belong to one group and neither may be moving.
pub async fn merge(
    store: &impl Coordinator,
    keys: &ClusterKeys,
    map: &RangeMap,
    start: &[u8],
) -> Result<Revision> {
    let right = map
        .starting_at(start)
        .ok_or_else(|| conflict("merge", format!("no range starts at {}", show_key(start))))?;
    if start.is_empty() {
        return Err(conflict(
            "merge",
            "the first range has no range before it".into(),
        ));
    }
    let left = map
        .entries()
        .iter()
        .find(|e| e.end.as_deref() == Some(start))
        .ok_or_else(|| conflict("merge", format!("no range ends at {}", show_key(start))))?;
    if left.group != right.group || left.moving.is_some() || right.moving.is_some() {
        return Err(conflict(
            "merge",
            format!(
                "ranges {} ({}) and {} ({}) are not both still in one group",
                left.describe(),
                left.group,
                right.describe(),
                right.group
            ),
        ));
    }
    let mut merged = left.clone();
    merged.end.clone_from(&right.end);
    merged.split_version = left.split_version.max(right.split_version) + 1;
    merged.move_version = left.move_version.max(right.move_version);
    run(
        store,
        Txn {
            compare: vec![
                Compare::mod_revision_is(&keys.range_entry(&left.start), left.mod_revision),
                Compare::mod_revision_is(&keys.range_entry(&right.start), right.mod_revision),
            ],
            success: vec![
                put_entry(keys, &merged),
                Op::Delete {
                    key: keys.range_entry(&right.start),
                },
            ],
            failure: vec![],
        },
        "merge",
    )
    .await
}

/// Marks the range starting at `start` as moving to group `to`. Writes
/// still go to its owner; the move's id is the returned revision.
pub async fn begin_move(
    store: &impl Coordinator,
    keys: &ClusterKeys,
    map: &RangeMap,
    start: &[u8],
    to: &str,
) -> Result<Revision> {
    check_name("range group", to)?;
    let entry = map
        .starting_at(start)
        .ok_or_else(|| conflict("move", format!("no range starts at {}", show_key(start))))?;
    if entry.group == to {
        return Err(conflict(
            "move",
            format!("range {} is already in group {to}", entry.describe()),
        ));
    }
    if let Some(moving) = &entry.moving {
        return Err(conflict(
            "move",
            format!(
                "range {} is already moving to {} (move {}); abort that move first",
                entry.describe(),
                moving.to,
                entry.mod_revision
            ),
        ));
    }
    let mut marked = entry.clone();
    marked.moving = Some(Moving { to: to.to_string() });
    let revision = run(
        store,
        Txn {
            compare: vec![Compare::mod_revision_is(
                &keys.range_entry(&entry.start),
                entry.mod_revision,
            )],
            success: vec![put_entry(keys, &marked)],
            failure: vec![],
        },
        "move",
    )
    .await?;
    Ok(revision)
}

/// The entry as stored now, or an error naming `start`.
pub async fn read_entry(
    store: &impl Coordinator,
    keys: &ClusterKeys,
    start: &[u8],
) -> Result<RangeEntry> {
    let key = keys.range_entry(start);
    let kv = store
        .get(&key)
        .await?
        .ok_or_else(|| conflict("move", format!("no range starts at {}", show_key(start))))?;
    decode_entry(&keys.ranges(), &kv)
}

/// Completes a move: the range's owner becomes its target, if the entry
/// is still the one `begin_move` wrote (revision `id`) and the source's
/// freeze (value `freeze`) is still in place. The freeze is deleted in the
/// same transaction.
pub async fn flip_move(
    store: &impl Coordinator,
    keys: &ClusterKeys,
    start: &[u8],
    id: Revision,
    freeze: &[u8],
) -> Result<Revision> {
    let entry = read_entry(store, keys, start).await?;
    let Some(moving) = entry.moving.clone().filter(|_| entry.mod_revision == id) else {
        return Err(conflict(
            "move",
            format!(
                "range {} is no longer marked by move {id}; the move was aborted or replaced",
                entry.describe()
            ),
        ));
    };
    let mut flipped = entry.clone();
    flipped.group = moving.to;
    flipped.move_version += 1;
    flipped.moving = None;
    let freeze_key = keys.range_freeze(start);
    run(
        store,
        Txn {
            compare: vec![
                Compare::mod_revision_is(&keys.range_entry(start), id),
                Compare::value_is(&freeze_key, freeze),
            ],
            success: vec![put_entry(keys, &flipped), Op::Delete { key: freeze_key }],
            failure: vec![],
        },
        "move",
    )
    .await
}

/// Ends the move marking `entry` (its mod revision is the move's id), if
/// the entry is still that one: one transaction clears the mark and
/// deletes the source's freeze, comparing the entry's revision, so the
/// move can never flip afterwards. Returns whether this call ended it
/// (`false`: the entry changed meanwhile: flipped, or ended by another).
pub async fn end_move(
    store: &impl Coordinator,
    keys: &ClusterKeys,
    entry: &RangeEntry,
) -> Result<bool> {
    let mut kept = entry.clone();
    kept.moving = None;
    let outcome = store
        .txn(Txn {
            compare: vec![Compare::mod_revision_is(
                &keys.range_entry(&entry.start),
                entry.mod_revision,
            )],
            success: vec![
                put_entry(keys, &kept),
                Op::Delete {
                    key: keys.range_freeze(&entry.start),
                },
            ],
            failure: vec![],
        })
        .await?;
    Ok(outcome.succeeded)
}

/// Rolls back a move that has not flipped: the range stays with its
/// owner, not moving, and the source's freeze is gone. Nothing to do if
/// the range is not moving.
pub async fn abort_move(store: &impl Coordinator, keys: &ClusterKeys, start: &[u8]) -> Result<()> {
    let entry = read_entry(store, keys, start).await?;
    if entry.moving.is_none() || end_move(store, keys, &entry).await? {
        return Ok(());
    }
    Err(conflict(
        "abort move",
        "the range map changed since it was read (another change won); read it again".to_string(),
    ))
}

/// Keeps `tx` holding the newest valid map (or `None` while there is
/// none) until `stop` is set: a listing, then a watch from the listing's
/// revision, re-listed after any error. A map broken by a transaction's
/// first events is held back until its last one.
pub async fn watch_map<C: Coordinator>(
    store: &C,
    keys: ClusterKeys,
    tx: watch::Sender<Option<Arc<RangeMap>>>,
    mut stop: watch::Receiver<bool>,
) {
    let prefix = keys.ranges();
    loop {
        if *stop.borrow() {
            return;
        }
        let listed = tokio::select! {
            r = store.list(&prefix) => r,
            _ = stop.changed() => return,
        };
        let (kvs, revision) = match listed {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "reading the range map");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let mut entries: std::collections::BTreeMap<Vec<u8>, KeyValue> =
            kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        publish(&prefix, &entries, revision, &tx);
        let mut watch = match store.watch(&prefix, revision + 1).await {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "watching the range map");
                continue;
            }
        };
        loop {
            let event = tokio::select! {
                e = watch.next() => e,
                _ = stop.changed() => return,
            };
            match event {
                Ok(event) => {
                    let revision = event.kv.mod_revision;
                    match event.kind {
                        EventKind::Put => {
                            entries.insert(event.kv.key.clone(), event.kv);
                        }
                        EventKind::Delete => {
                            entries.remove(&event.kv.key);
                        }
                    }
                    publish(&prefix, &entries, revision, &tx);
                }
                Err(error) => {
                    tracing::warn!(%error, "the range map's watch ended; reading it again");
                    break;
                }
            }
        }
    }
}

fn publish(
    prefix: &[u8],
    entries: &std::collections::BTreeMap<Vec<u8>, KeyValue>,
    revision: Revision,
    tx: &watch::Sender<Option<Arc<RangeMap>>>,
) {
    if entries.is_empty() {
        tx.send_replace(None);
        return;
    }
    let kvs: Vec<KeyValue> = entries.values().cloned().collect();
    if let Ok(map) = RangeMap::from_listing(prefix, &kvs, revision) {
        tx.send_replace(Some(Arc::new(map)));
    }
}
