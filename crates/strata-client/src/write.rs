//! The write path: to the primary, across failovers, never twice.
//!
//! Role: sends a batch to the group's primary and returns its commit
//! token. The rules (docs/design/cluster.md, "The client"):
//!
//! - "not primary" naming a primary at an epoch newer than the one the
//!   refused attempt was sent at: follow it at once. Epochs only grow, so
//!   this happens at most once per epoch change and cannot loop.
//! - "not primary" at the same or an older epoch, no primary named, a
//!   connection that never opened, UNAVAILABLE without
//!   `strata-outcome: unknown`, or FAILED_PRECONDITION "fenced" (the node
//!   did not apply the write):
//!   forget the primary, wait (50 ms doubling to 1 s), rediscover and try
//!   again, until [`crate::ClientConfig::failover_wait`] has passed; then
//!   [`Error::NoPrimary`] with every attempt.
//! - Anything after which the write may have been applied (UNAVAILABLE
//!   with `strata-outcome: unknown`, a deadline that passed or a
//!   connection that broke after sending): [`Error::OutcomeUnknown`],
//!   at once, never retried.
//! - A refusal by the range map (FAILED_PRECONDITION "wrong group",
//!   UNAVAILABLE "range moving" or "no range map"; not applied):
//!   [`Error::WrongGroup`] or [`Error::RangeMoving`] at once, the primary
//!   kept. Re-routing is the business of [`crate::ShardedClient`].
//! - Any other refusal: [`Error::Refused`].
//!
//! Invariants: a write is sent again only after a node said it did not
//! apply it, or it never left this process.

use std::time::Instant;

use strata_proto::v1::{Operation, WriteRequest, WriteResponse, operation};

use crate::client::{BACKOFF_FIRST, BACKOFF_MAX, Client, note};
use crate::discovery::Primary;
use crate::error::{Attempt, Error, Result};
use crate::token::Token;
use crate::wire::{self, WriteFailure};

/// Operations applied atomically, in order.
///
/// # Examples
///
/// ```
/// let batch = strata_client::WriteBatch::new()
///     .put(b"a", b"1")
///     .delete(b"b")
///     .delete_range(b"c", b"d")
///     .sync(true);
/// assert_eq!(batch.len(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub(crate) request: WriteRequest,
}

impl WriteBatch {
    /// An empty batch, not synced.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    fn push(mut self, kind: operation::Kind, key: &[u8], value: &[u8]) -> WriteBatch {
        self.request.operations.push(Operation {
            kind: kind as i32,
            key: key.to_vec(),
            value: value.to_vec(),
        });
        self
    }

    /// Sets `key` to `value`.
    pub fn put(self, key: &[u8], value: &[u8]) -> WriteBatch {
        self.push(operation::Kind::Put, key, value)
    }

    /// Removes `key`.
    pub fn delete(self, key: &[u8]) -> WriteBatch {
        self.push(operation::Kind::Delete, key, b"")
    }

    /// Removes every key in `[start, end)`.
    pub fn delete_range(self, start: &[u8], end: &[u8]) -> WriteBatch {
        self.push(operation::Kind::DeleteRange, start, end)
    }

    /// Whether the primary makes the batch durable before answering.
    pub fn sync(mut self, sync: bool) -> WriteBatch {
        self.request.sync = sync;
        self
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.request.operations.len()
    }

    /// Whether there is no operation.
    pub fn is_empty(&self) -> bool {
        self.request.operations.is_empty()
    }
}

impl Client {
    /// Sets `key` to `value` on the group's primary.
    ///
    /// # Errors
    /// As [`Client::write`].
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<Token> {
        self.write(WriteBatch::new().put(key, value)).await
    }

    /// Removes `key` on the group's primary.
    ///
    /// # Errors
    /// As [`Client::write`].
    pub async fn delete(&self, key: &[u8]) -> Result<Token> {
        self.write(WriteBatch::new().delete(key)).await
    }

    /// Applies `batch` on the group's primary; returns its commit token.
    ///
    /// ```no_run
    /// # async fn run(client: strata_client::Client) -> Result<(), strata_client::Error> {
    /// use strata_client::{Error, WriteBatch};
    /// match client.write(WriteBatch::new().put(b"k", b"v").sync(true)).await {
    ///     Ok(token) => println!("committed as {token}"),
    ///     Err(Error::OutcomeUnknown { node, .. }) => println!("ask {node}: it may have been applied"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// - [`Error::OutcomeUnknown`]: the write may or may not have been
    ///   applied; it was not retried.
    /// - [`Error::NoPrimary`]: no node took it within the failover wait
    ///   (nothing was applied), with every attempt.
    /// - [`Error::Refused`]: the primary refused it (a bad batch, a
    ///   credential).
    /// - [`Error::Config`]: an etcd source without a group.
    pub async fn write(&self, batch: WriteBatch) -> Result<Token> {
        let wait = self.inner.config.failover_wait;
        let deadline = Instant::now() + wait;
        let mut tried = Vec::new();
        let mut backoff = BACKOFF_FIRST;
        let mut next: Option<Primary> = None;
        // The newest epoch a refusal was followed to: a refusal is followed
        // only to a newer one, so two nodes that name each other at the
        // same epoch are each tried once per round, never in a loop.
        let mut followed = 0;
        loop {
            let target = match next.take() {
                Some(target) => Some(target),
                None => self.find_primary(&mut tried).await,
            };
            if let Some(target) = target {
                match self.send_write(&target, batch.request.clone()).await {
                    Ok(answer) => {
                        self.remember(Primary {
                            epoch: target.epoch.max(answer.epoch),
                            ..target
                        });
                        return Ok(Token {
                            epoch: answer.epoch,
                            seq: answer.seq,
                        });
                    }
                    Err(WriteFailure::Range(refusal)) => {
                        // The primary is fine; the range map says no.
                        return Err(refusal.into_error(&target.address));
                    }
                    Err(failure) => {
                        self.forget_primary();
                        next = self
                            .after_failure(&target, failure, &mut tried)?
                            .filter(|newer| newer.epoch > followed);
                        if let Some(newer) = &next {
                            followed = newer.epoch;
                            continue;
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NoPrimary {
                    group: self.group().to_string(),
                    waited: wait,
                    tried,
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// What to do after `target` failed: `Ok(Some)` to follow a newer
    /// primary at once, `Ok(None)` to wait and rediscover, `Err` to stop.
    fn after_failure(
        &self,
        target: &Primary,
        failure: WriteFailure,
        tried: &mut Vec<Attempt>,
    ) -> Result<Option<Primary>> {
        match failure {
            WriteFailure::NotPrimary {
                node,
                address,
                epoch,
            } => {
                let named = if address.is_empty() {
                    "it knows no primary".to_string()
                } else {
                    format!("it names {node} at {address}")
                };
                note(
                    tried,
                    Attempt::new(&target.address, epoch, format!("not primary; {named}")),
                );
                match epoch {
                    Some(epoch) if epoch > target.epoch && !address.is_empty() => {
                        Ok(Some(Primary {
                            node,
                            address,
                            epoch,
                        }))
                    }
                    _ => Ok(None),
                }
            }
            WriteFailure::NotApplied { detail } => {
                note(
                    tried,
                    Attempt::new(&target.address, None, format!("not applied: {detail}")),
                );
                Ok(None)
            }
            WriteFailure::MaybeApplied { detail } => Err(Error::OutcomeUnknown {
                node: target.address.clone(),
                epoch: target.epoch,
                detail,
            }),
            WriteFailure::Range(refusal) => Err(refusal.into_error(&target.address)),
            WriteFailure::Final { code, message } => Err(Error::Refused {
                node: target.address.clone(),
                code,
                message,
            }),
        }
    }

    async fn send_write(
        &self,
        target: &Primary,
        request: WriteRequest,
    ) -> Result<WriteResponse, WriteFailure> {
        let timeout = self.inner.config.request_timeout;
        let mut kv = self
            .inner
            .pool
            .kv(&target.address)
            .map_err(|detail| WriteFailure::NotApplied { detail })?;
        match tokio::time::timeout(timeout, kv.write(request)).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(wire::write_failure(&status)),
            Err(_) => Err(WriteFailure::MaybeApplied {
                detail: format!("no answer within {timeout:?} after the write was sent"),
            }),
        }
    }
}
