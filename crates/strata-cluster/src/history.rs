//! A group's epoch history, and whether a commit token survived it.
//!
//! Role: every promotion records where its epoch's history began: the new
//! primary's applied sequence number when it won (`start_seq`). Every
//! record it serves from then on continues the old history up to
//! `start_seq` and replaces whatever the old primary wrote after it (a
//! tail never shipped, possible only with `min_sync_replicas = 0`). From
//! these entries a client decides whether a commit token `(epoch, seq)` is
//! still part of the group's history ([`token_fate`]), so it never reports
//! a token as met by a node whose history lost that write.
//!
//! FORMAT (the value of `groups/{group}/history/{epoch:020}`), JSON:
//! `{"v":1,"epoch":7,"node":"n2","start_seq":41230}`. Unknown fields are
//! ignored; a record without `"v":1` is refused.
//!
//! Invariants: entries are written once, by the winner of the epoch,
//! before it acknowledges any write; [`token_fate`] is a pure function.

use serde::{Deserialize, Serialize};

use crate::coordinator::{Error, Result};

/// Where one epoch's history began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStart {
    /// Format version; always 1.
    pub v: u32,
    /// The epoch.
    pub epoch: u64,
    /// The node that won it.
    pub node: String,
    /// The last sequence number of the earlier history it kept: records
    /// of earlier epochs after it are not in this epoch's history.
    pub start_seq: u64,
}

impl EpochStart {
    /// The entry as stored.
    ///
    /// ```
    /// let e = strata_cluster::EpochStart { v: 1, epoch: 7, node: "n2".into(), start_seq: 41 };
    /// assert_eq!(strata_cluster::EpochStart::decode(&e.encode(), "k").unwrap(), e);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an entry read from `key` (named in the error).
    pub fn decode(bytes: &[u8], key: &str) -> Result<EpochStart> {
        let entry: EpochStart = serde_json::from_slice(bytes).map_err(|e| Error::Rejected {
            what: "epoch history entry",
            detail: format!("{key}: not an epoch history entry: {e}"),
        })?;
        if entry.v != 1 {
            return Err(Error::Rejected {
                what: "epoch history entry",
                detail: format!("{key}: format version {} (this node reads 1)", entry.v),
            });
        }
        Ok(entry)
    }
}

/// What became of a write acknowledged as `(epoch, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFate {
    /// Every later epoch kept it: a node at `epoch` or later that has
    /// applied `seq` holds it.
    Kept,
    /// A later epoch began before it (at `cut`): the write is gone from
    /// the group's history, and no node may be said to hold it.
    Lost {
        /// The epoch that dropped it.
        epoch: u64,
        /// Where that epoch's history began.
        cut: u64,
    },
}

/// Whether the write acknowledged as `(epoch, seq)` is still part of the
/// history described by `entries` (any order).
///
/// ```
/// use strata_cluster::{token_fate, EpochStart, TokenFate};
/// let e = |epoch, start_seq| EpochStart { v: 1, epoch, node: "n".into(), start_seq };
/// let history = [e(5, 0), e(6, 100), e(7, 90)];
/// assert_eq!(token_fate(&history, 5, 80), TokenFate::Kept);
/// assert_eq!(token_fate(&history, 5, 95), TokenFate::Lost { epoch: 7, cut: 90 });
/// assert_eq!(token_fate(&history, 7, 500), TokenFate::Kept);
/// ```
pub fn token_fate(entries: &[EpochStart], epoch: u64, seq: u64) -> TokenFate {
    let mut later: Vec<&EpochStart> = entries.iter().filter(|e| e.epoch > epoch).collect();
    later.sort_by_key(|e| e.epoch);
    let mut fate = TokenFate::Kept;
    let mut cut = u64::MAX;
    for entry in later {
        if entry.start_seq < cut {
            cut = entry.start_seq;
            if seq > cut {
                fate = TokenFate::Lost {
                    epoch: entry.epoch,
                    cut,
                };
                break;
            }
        }
    }
    fate
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn e(epoch: u64, start_seq: u64) -> EpochStart {
        EpochStart {
            v: 1,
            epoch,
            node: format!("n{epoch}"),
            start_seq,
        }
    }

    #[test]
    fn a_write_at_or_before_every_later_start_is_kept() {
        let h = [e(3, 10), e(1, 0), e(2, 5)];
        assert_eq!(token_fate(&h, 1, 5), TokenFate::Kept);
        assert_eq!(token_fate(&h, 2, 10), TokenFate::Kept);
        assert_eq!(token_fate(&h, 3, 1_000), TokenFate::Kept);
        assert_eq!(token_fate(&h, 9, 1), TokenFate::Kept);
    }

    #[test]
    fn the_first_later_epoch_that_cut_below_the_write_is_named() {
        let h = [e(1, 0), e(2, 5), e(3, 10)];
        assert_eq!(token_fate(&h, 1, 6), TokenFate::Lost { epoch: 2, cut: 5 });
        assert_eq!(token_fate(&h, 2, 11), TokenFate::Lost { epoch: 3, cut: 10 });
    }

    #[test]
    fn entries_round_trip_and_bad_ones_name_their_key() {
        let x = e(4, 9);
        assert_eq!(EpochStart::decode(&x.encode(), "k").unwrap(), x);
        let err = EpochStart::decode(b"[]", "strata/c/groups/g/history/4").unwrap_err();
        assert!(err.to_string().contains("groups/g/history/4"), "{err}");
    }
}
