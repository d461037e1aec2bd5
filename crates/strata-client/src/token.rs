//! Commit tokens: what a write's answer proves, and what a read may wait for.
//!
//! Role: a write acknowledged by a group's primary is identified by the
//! primary's epoch and the sequence number of the batch's last operation.
//! The sequence number alone is not enough: after a failover with
//! `min_sync_replicas = 0` a new epoch may reuse sequence numbers the old
//! primary handed out, so a read that waits for `seq` must also check the
//! epoch of the history it was answered from.
//!
//! FORMAT of a token as text (the CLI prints and parses it): `epoch:seq`,
//! both decimal, e.g. `7:41230`.
//!
//! Invariants: a token is plain data (`Copy`); parsing never panics.

use std::fmt;
use std::str::FromStr;

/// A commit token: the epoch and sequence number of an acknowledged write.
///
/// # Examples
///
/// ```
/// use strata_client::Token;
/// let token: Token = "7:41230".parse().unwrap();
/// assert_eq!(token, Token { epoch: 7, seq: 41230 });
/// assert_eq!(token.to_string(), "7:41230");
/// assert!("41230".parse::<Token>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token {
    /// The primary's epoch when it acknowledged the write.
    pub epoch: u64,
    /// The sequence number of the write's last operation.
    pub seq: u64,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

/// Why a text is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a commit token (expected EPOCH:SEQ, e.g. 7:41230)")]
pub struct ParseTokenError {
    /// The text given.
    pub text: String,
}

impl FromStr for Token {
    type Err = ParseTokenError;

    fn from_str(text: &str) -> Result<Token, ParseTokenError> {
        let bad = || ParseTokenError {
            text: text.to_string(),
        };
        let (epoch, seq) = text.split_once(':').ok_or_else(bad)?;
        Ok(Token {
            epoch: epoch.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// A commit token with the range group that gave it: what a
/// [`crate::ShardedClient`] write returns, and what a sharded read may
/// wait for (in that group only).
///
/// FORMAT as text: `group/epoch:seq`, e.g. `g1/7:41230` (group names hold
/// no `/`).
///
/// # Examples
///
/// ```
/// use strata_client::{GroupToken, Token};
/// let token: GroupToken = "g1/7:41230".parse().unwrap();
/// assert_eq!(token, GroupToken { group: "g1".into(), token: Token { epoch: 7, seq: 41230 } });
/// assert_eq!(token.to_string(), "g1/7:41230");
/// assert!("7:41230".parse::<GroupToken>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupToken {
    /// The range group whose primary acknowledged the write.
    pub group: String,
    /// The write's token in that group.
    pub token: Token,
}

impl fmt::Display for GroupToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.token)
    }
}

/// Why a text is not a group token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a group commit token (expected GROUP/EPOCH:SEQ, e.g. g1/7:41230)")]
pub struct ParseGroupTokenError {
    /// The text given.
    pub text: String,
}

impl FromStr for GroupToken {
    type Err = ParseGroupTokenError;

    fn from_str(text: &str) -> Result<GroupToken, ParseGroupTokenError> {
        let bad = || ParseGroupTokenError {
            text: text.to_string(),
        };
        let (group, token) = text.split_once('/').ok_or_else(bad)?;
        strata_cluster::check_name("range group", group).map_err(|_| bad())?;
        Ok(GroupToken {
            group: group.to_string(),
            token: token.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_texts_are_named() {
        let token = Token { epoch: 3, seq: 0 };
        assert_eq!(token.to_string().parse::<Token>().unwrap(), token);
        for bad in ["", ":", "1:", ":2", "1:2:3", "-1:2", "a:b", " 1:2"] {
            let err = bad.parse::<Token>().unwrap_err();
            assert_eq!(err.text, bad);
        }
    }

    #[test]
    fn group_tokens_round_trip_and_bad_texts_are_named() {
        let token = GroupToken {
            group: "eu-1.a_b".into(),
            token: Token { epoch: 3, seq: 9 },
        };
        assert_eq!(token.to_string(), "eu-1.a_b/3:9");
        assert_eq!(token.to_string().parse::<GroupToken>().unwrap(), token);
        for bad in [
            "", "/", "g1/", "/1:2", "g1/1", "g1/1:2:3", "g 1/1:2", "a/b/1:2", "g1:1:2",
        ] {
            let err = bad.parse::<GroupToken>().unwrap_err();
            assert_eq!(err.text, bad);
        }
    }
}
