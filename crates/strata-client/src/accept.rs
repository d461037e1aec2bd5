//! Whether a read answer meets a commit token: the rule, as a pure
//! function.
//!
//! Role: a read for token `(E, S)` is sent with `min_seq = S`, so the node
//! answers only once it has applied `S`. That is not enough: the answer
//! must come from a history that still holds the write. So an answer at
//! epoch `A` with sequence number `Q` is taken only when
//!
//! 1. `Q >= S` (the node did wait), and `A >= E` (a node at an older
//!    epoch than the token's has not seen the write's epoch at all), and
//! 2. with etcd: [`strata_cluster::token_fate`] over the group's epoch
//!    history says the write was kept. A history with no entry at `A` or
//!    later is refreshed first (the caller does so on
//!    [`Verdict::NeedHistory`]); a write the history lost is
//!    [`Verdict::Lost`], which ends the read with `Error::WriteLost`;
//! 3. without etcd: `A == E` only. A newer epoch may or may not have kept
//!    the write, and nothing without the history can tell.
//!
//! Invariants: [`judge`] does no I/O and never panics; a read without a
//! token accepts any answer.

use strata_cluster::{EpochStart, TokenFate, token_fate};

use crate::token::Token;

/// What the client knows of the group's history.
#[derive(Debug, Clone, Copy)]
pub(crate) enum History<'a> {
    /// There is no etcd source: only the token's own epoch can be trusted.
    Unknown,
    /// The entries last read from etcd.
    Entries(&'a [EpochStart]),
}

/// The verdict on one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The answer meets the token.
    Accept,
    /// Not this answer (the reason, for the error if no node answers).
    Reject(String),
    /// The history known is older than the answer: refresh it and judge
    /// again.
    NeedHistory,
    /// The group's history dropped the write.
    Lost { epoch: u64, cut: u64 },
}

/// Judges an answer at `epoch` reflecting `seq` against `token`.
pub(crate) fn judge(token: Option<Token>, epoch: u64, seq: u64, history: History<'_>) -> Verdict {
    let Some(token) = token else {
        return Verdict::Accept;
    };
    if seq < token.seq {
        return Verdict::Reject(format!(
            "answered at seq {seq}, below the token's {}",
            token.seq
        ));
    }
    if epoch < token.epoch {
        return Verdict::Reject(format!(
            "answered from epoch {epoch}, older than the token's {}",
            token.epoch
        ));
    }
    match history {
        History::Unknown if epoch == token.epoch => Verdict::Accept,
        History::Unknown => Verdict::Reject(format!(
            "answered from epoch {epoch}, newer than the token's {}: without etcd's epoch \
             history the client cannot tell whether the failover kept the write",
            token.epoch
        )),
        History::Entries(entries) => {
            if !entries.iter().any(|e| e.epoch >= epoch) {
                return Verdict::NeedHistory;
            }
            match token_fate(entries, token.epoch, token.seq) {
                TokenFate::Kept => Verdict::Accept,
                TokenFate::Lost { epoch, cut } => Verdict::Lost { epoch, cut },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: u64, start_seq: u64) -> EpochStart {
        EpochStart {
            v: 1,
            epoch,
            node: format!("n{epoch}"),
            start_seq,
        }
    }

    const T: Option<Token> = Some(Token { epoch: 5, seq: 100 });

    #[test]
    fn without_a_token_every_answer_is_taken() {
        assert_eq!(judge(None, 1, 0, History::Unknown), Verdict::Accept);
    }

    #[test]
    fn an_older_epoch_or_a_lower_seq_is_refused_whatever_the_history() {
        let h = [e(5, 0)];
        assert!(matches!(
            judge(T, 4, 200, History::Entries(&h)),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            judge(T, 5, 99, History::Entries(&h)),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            judge(T, 4, 200, History::Unknown),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn without_etcd_only_the_tokens_own_epoch_is_trusted() {
        assert_eq!(judge(T, 5, 100, History::Unknown), Verdict::Accept);
        let Verdict::Reject(why) = judge(T, 6, 100, History::Unknown) else {
            panic!("a newer epoch was taken without the history");
        };
        assert!(why.contains("epoch 6") && why.contains("history"), "{why}");
    }

    #[test]
    fn with_etcd_the_history_decides_and_is_refreshed_when_older_than_the_answer() {
        let kept = [e(5, 0), e(7, 150)];
        assert_eq!(judge(T, 7, 160, History::Entries(&kept)), Verdict::Accept);
        assert_eq!(
            judge(T, 8, 160, History::Entries(&kept)),
            Verdict::NeedHistory
        );
        assert_eq!(
            judge(T, 5, 100, History::Entries(&[])),
            Verdict::NeedHistory
        );
        let lost = [e(5, 0), e(7, 90)];
        assert_eq!(
            judge(T, 7, 120, History::Entries(&lost)),
            Verdict::Lost { epoch: 7, cut: 90 }
        );
        // Even a node still at the token's epoch is not believed once the
        // history says a later epoch cut the write.
        assert_eq!(
            judge(T, 5, 100, History::Entries(&lost)),
            Verdict::Lost { epoch: 7, cut: 90 }
        );
    }
}
