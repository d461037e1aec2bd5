//! The seeded batch generator and the state check shared by the engine's
//! crash-torture tests (`tests/db_crash_sigkill.rs`,
//! `tests/db_power_loss.rs`).
//!
//! Generator batch `index` is 1 to 6 puts and deletes over `keys` keys
//! (`key0000`...), values naming the batch and operation with a random
//! padding, then a put of [`NEXT_BATCH_KEY`] holding `index + 1`, so a
//! recovered database says itself how many batches it holds.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::{Db, WriteBatch};

/// The key every generator batch sets to the index of the next batch.
pub const NEXT_BATCH_KEY: &[u8] = b"__next_batch";

/// One operation of a generator batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbOp {
    /// Set a key.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Vec<u8>),
}

/// The expected state: key to value.
pub type DbModel = BTreeMap<Vec<u8>, Vec<u8>>;

/// A seed derived from `seed` and `index` (splitmix64's finalizer).
#[must_use]
pub fn mix(seed: u64, index: u64) -> u64 {
    let mut x = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Generator batch `index` for `seed`, over `keys` keys, with value padding
/// below `pad_max` bytes; its last operation is the [`NEXT_BATCH_KEY`] put.
#[must_use]
pub fn db_batch_ops(seed: u64, index: u64, keys: u64, pad_max: usize) -> Vec<DbOp> {
    let mut rng = SmallRng::seed_from_u64(mix(seed, index));
    let count = rng.random_range(1..=6);
    let mut ops = Vec::with_capacity(count + 1);
    for op in 0..count {
        let key = format!("key{:04}", rng.random_range(0..keys)).into_bytes();
        if rng.random_bool(0.2) {
            ops.push(DbOp::Delete(key));
        } else {
            let pad = rng.random_range(0..pad_max);
            let value = format!("b{index}:o{op}:{}", "~".repeat(pad)).into_bytes();
            ops.push(DbOp::Put(key, value));
        }
    }
    ops.push(DbOp::Put(
        NEXT_BATCH_KEY.to_vec(),
        (index + 1).to_string().into_bytes(),
    ));
    ops
}

/// The operations as one atomic batch.
#[must_use]
pub fn to_batch(ops: &[DbOp]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for op in ops {
        match op {
            DbOp::Put(k, v) => batch.put(k, v),
            DbOp::Delete(k) => batch.delete(k),
        }
    }
    batch
}

/// Applies generator operations to a model.
pub fn apply_ops(model: &mut DbModel, ops: &[DbOp]) {
    for op in ops {
        match op {
            DbOp::Put(k, v) => model.insert(k.clone(), v.clone()),
            DbOp::Delete(k) => model.remove(k),
        };
    }
}

/// The recovered database's next batch index (0 if it holds none).
///
/// # Errors
/// A description of what is wrong.
pub fn read_next_batch(db: &Db) -> Result<u64, String> {
    match db.get(NEXT_BATCH_KEY).map_err(|e| format!("get: {e}"))? {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("garbage __next_batch {bytes:?}")),
    }
}

fn show(row: Option<&(Vec<u8>, Vec<u8>)>) -> Option<(String, String)> {
    row.map(|(k, v)| {
        (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        )
    })
}

/// Checks an open database against the generator's state after batches
/// `0..next` (`model`, holding `ops` operations): its last sequence number,
/// a forward and a reverse scan, and gets of every `key_step`-th of the
/// `keys` keys.
///
/// # Errors
/// A description of the first difference.
pub fn check_db_against(
    db: &Db,
    model: &DbModel,
    ops: u64,
    next: u64,
    keys: u64,
    key_step: usize,
) -> Result<(), String> {
    let last_seq = db.stats().last_seq.get();
    if last_seq != ops {
        return Err(format!(
            "last_seq {last_seq} but batches 0..{next} hold {ops} operations (a hole, a half batch or an extra write)"
        ));
    }
    let forward: Vec<(Vec<u8>, Vec<u8>)> = db
        .scan(..)
        .map_err(|e| format!("scan: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("scan: {e}"))?;
    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if forward != expected {
        let at = forward
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(forward.len().min(expected.len()));
        return Err(format!(
            "state differs from generator batches 0..{next}: {} rows vs {} expected; first difference at row {at}: found {:?}, expected {:?}",
            forward.len(),
            expected.len(),
            show(forward.get(at)),
            show(expected.get(at)),
        ));
    }
    let mut backward: Vec<(Vec<u8>, Vec<u8>)> = db
        .scan_rev(..)
        .map_err(|e| format!("scan_rev: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("scan_rev: {e}"))?;
    backward.reverse();
    if backward != expected {
        return Err("reverse scan differs from the forward scan".into());
    }
    for k in (0..keys).step_by(key_step.max(1)) {
        let key = format!("key{k:04}").into_bytes();
        let found = db.get(&key).map_err(|e| format!("get: {e}"))?;
        if found.as_ref() != model.get(&key) {
            return Err(format!(
                "get(key{k:04}) = {found:?}, expected {:?}",
                model.get(&key)
            ));
        }
    }
    Ok(())
}
