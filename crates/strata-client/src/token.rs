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
}
