//! The read path: from the primary, or spread over the replicas without
//! ever answering from a history that lost the token's write.
//!
//! Role: sends `Get` and `Scan` where the [`ReadPolicy`] says, and takes
//! an answer only when `accept::judge` does. With
//! [`ReadPolicy::Replicas`] the group's replicas are tried in turn
//! (round robin over calls), then the primary if it was not among them; a
//! node that fails, waits in vain for the token, or answers from a
//! history that cannot be shown to hold the token is noted and the next
//! one asked. With [`ReadPolicy::Primary`] the primary is asked, and
//! rediscovered (within the failover wait) when it fails or answers from
//! an epoch older than the one it was found at.
//!
//! A refusal by the range map ("wrong group", "range moving", "no range
//! map") ends a primary read at once as [`Error::WrongGroup`] or
//! [`Error::RangeMoving`]; a replica read passes it over for the next
//! member and returns it only when no member answered.
//!
//! Invariants: a read that etcd's history shows lost is
//! [`Error::WriteLost`], never an answer; every answer returned names the
//! node and epoch it came from.

use std::sync::atomic::Ordering;
use std::time::Instant;

use strata_proto::v1::{GetRequest, GetResponse, ScanRequest, ScanResponse};

use crate::accept::{History, Verdict, judge};
use crate::client::{BACKOFF_FIRST, BACKOFF_MAX, Client, note};
use crate::error::{Attempt, Error, Result};
use crate::token::Token;
use crate::wire;

/// Where a read goes.
///
/// ```
/// use strata_client::{ReadPolicy, Token};
/// let after_my_write = ReadPolicy::Replicas { token: Some(Token { epoch: 7, seq: 41 }) };
/// assert_ne!(after_my_write, ReadPolicy::Primary);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPolicy {
    /// The group's primary: the newest data.
    Primary,
    /// Any replica (round robin; the primary when none answers). With a
    /// token, only an answer that reflects its write.
    Replicas {
        /// The write to read after, if any.
        token: Option<Token>,
    },
}

/// The answer to a `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetAnswer {
    /// The value, if the key exists.
    pub value: Option<Vec<u8>>,
    /// The sequence number the answer reflects.
    pub seq: u64,
    /// The epoch of the history it comes from.
    pub epoch: u64,
    /// The node that answered.
    pub node: String,
}

/// Which keys a `scan` reads.
///
/// ```
/// let range = strata_client::ScanRange::new(b"a".to_vec(), Some(b"b".to_vec())).limit(10);
/// assert_eq!(range.limit, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanRange {
    /// The first key (inclusive).
    pub start: Vec<u8>,
    /// The end (exclusive); `None`: to the last key.
    pub end: Option<Vec<u8>>,
    /// At most this many entries (0: the node's default, 1000).
    pub limit: u32,
    /// Largest key first.
    pub reverse: bool,
}

impl ScanRange {
    /// The keys of `[start, end)`, in order, the node's default limit.
    pub fn new(start: Vec<u8>, end: Option<Vec<u8>>) -> ScanRange {
        ScanRange {
            start,
            end,
            limit: 0,
            reverse: false,
        }
    }

    /// At most `limit` entries.
    pub fn limit(mut self, limit: u32) -> ScanRange {
        self.limit = limit;
        self
    }

    /// Largest key first.
    pub fn reverse(mut self, reverse: bool) -> ScanRange {
        self.reverse = reverse;
        self
    }
}

/// The answer to a `scan`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanAnswer {
    /// The keys and values, in the order asked.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The sequence number the answer reflects.
    pub seq: u64,
    /// Whether the limit left entries out.
    pub more: bool,
    /// The epoch of the history it comes from.
    pub epoch: u64,
    /// The node that answered.
    pub node: String,
}

/// A read request, either kind.
#[derive(Debug, Clone)]
enum Read {
    Get(GetRequest),
    Scan(ScanRequest),
}

/// A read answer, either kind.
#[derive(Debug)]
enum Answer {
    Get(GetResponse),
    Scan(ScanResponse),
}

impl Answer {
    fn epoch_seq(&self) -> (u64, u64) {
        match self {
            Answer::Get(a) => (a.epoch, a.seq),
            Answer::Scan(a) => (a.epoch, a.seq),
        }
    }
}

/// What one node's answer came to.
enum Outcome {
    Taken(Answer),
    Passed,
}

impl Client {
    /// Reads `key` where `policy` says.
    ///
    /// ```no_run
    /// # async fn run(client: strata_client::Client) -> Result<(), strata_client::Error> {
    /// use strata_client::{Error, ReadPolicy};
    /// let token = client.put(b"k", b"v").await?;
    /// match client.get(b"k", ReadPolicy::Replicas { token: Some(token) }).await {
    ///     Ok(answer) => println!("{:?} from {} at epoch {}", answer.value, answer.node, answer.epoch),
    ///     Err(Error::WriteLost { cut, .. }) => println!("a failover dropped it (history cut at {cut})"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// - [`Error::WriteLost`]: the token's write is gone from the group's
    ///   history.
    /// - [`Error::NoReadAnswer`]: no node gave an acceptable answer, with
    ///   each one's reason.
    /// - [`Error::Refused`]: a refusal every node would give (a bad key, a
    ///   credential).
    pub async fn get(&self, key: &[u8], policy: ReadPolicy) -> Result<GetAnswer> {
        let request = GetRequest {
            key: key.to_vec(),
            ..GetRequest::default()
        };
        let (answer, node) = self.read(Read::Get(request), policy).await?;
        match answer {
            Answer::Get(a) => Ok(GetAnswer {
                value: a.found.then_some(a.value),
                seq: a.seq,
                epoch: a.epoch,
                node,
            }),
            Answer::Scan(_) => Err(Error::NoReadAnswer {
                token: None,
                tried: vec![Attempt::new(node, None, "a scan answer to a get")],
            }),
        }
    }

    /// Reads the keys of `range` where `policy` says. A token's `seq`
    /// also pages a long scan forward without going back in time: read
    /// later pages with `Token { epoch, seq }` of the first page's answer.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn scan(&self, range: ScanRange, policy: ReadPolicy) -> Result<ScanAnswer> {
        let request = ScanRequest {
            start: range.start,
            unbounded: range.end.is_none(),
            end: range.end.unwrap_or_default(),
            limit: range.limit,
            reverse: range.reverse,
            ..ScanRequest::default()
        };
        let (answer, node) = self.read(Read::Scan(request), policy).await?;
        match answer {
            Answer::Scan(a) => Ok(ScanAnswer {
                entries: a.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                seq: a.seq,
                more: a.more,
                epoch: a.epoch,
                node,
            }),
            Answer::Get(_) => Err(Error::NoReadAnswer {
                token: None,
                tried: vec![Attempt::new(node, None, "a get answer to a scan")],
            }),
        }
    }

    async fn read(&self, read: Read, policy: ReadPolicy) -> Result<(Answer, String)> {
        match policy {
            ReadPolicy::Primary => self.read_primary(read).await,
            ReadPolicy::Replicas { token } => self.read_replicas(read, token).await,
        }
    }

    async fn read_primary(&self, read: Read) -> Result<(Answer, String)> {
        let deadline = Instant::now() + self.inner.config.failover_wait;
        let mut tried = Vec::new();
        let mut backoff = BACKOFF_FIRST;
        loop {
            if let Some(primary) = self.find_primary(&mut tried).await {
                match self.send_read(&primary.address, &read, None).await {
                    Ok(answer) if answer.epoch_seq().0 >= primary.epoch => {
                        return Ok((answer, primary.address));
                    }
                    Ok(answer) => note(
                        &mut tried,
                        Attempt::new(
                            &primary.address,
                            Some(answer.epoch_seq().0),
                            format!(
                                "answered from an epoch older than {}, where it was primary",
                                primary.epoch
                            ),
                        ),
                    ),
                    Err(status) if wire::range_refusal(&status).is_some() => {
                        return Err(range_error(&primary.address, &status));
                    }
                    Err(status) if wire::read_is_final(&status) => {
                        return Err(refused(&primary.address, &status));
                    }
                    Err(status) => note(
                        &mut tried,
                        Attempt::new(
                            &primary.address,
                            wire::refusal_epoch(&status),
                            wire::describe(&status),
                        ),
                    ),
                }
                self.forget_primary();
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NoReadAnswer { token: None, tried });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn read_replicas(&self, read: Read, token: Option<Token>) -> Result<(Answer, String)> {
        let mut tried = Vec::new();
        let members = self.members(&mut tried).await;
        let mut order: Vec<String> = members
            .iter()
            .filter(|m| !m.primary)
            .map(|m| m.address.clone())
            .collect();
        if !order.is_empty() {
            let turn = self.inner.next_read.fetch_add(1, Ordering::Relaxed) % order.len();
            order.rotate_left(turn);
        }
        order.extend(
            members
                .iter()
                .filter(|m| m.primary)
                .map(|m| m.address.clone()),
        );
        // A refusal by the range map, kept for when no node answers.
        let mut range = None;
        for address in &order {
            if let Outcome::Taken(answer) = self
                .try_node(address, &read, token, &mut tried, &mut range)
                .await?
            {
                return Ok((answer, address.clone()));
            }
        }
        let pool = &self.inner.pool;
        if let Some(primary) = self.find_primary(&mut tried).await
            && !order
                .iter()
                .any(|a| pool.url(a) == pool.url(&primary.address))
            && let Outcome::Taken(answer) = self
                .try_node(&primary.address, &read, token, &mut tried, &mut range)
                .await?
        {
            return Ok((answer, primary.address));
        }
        if let Some(refusal) = range {
            // The members answered; the range map sent the read away.
            return Err(refusal);
        }
        self.forget_members();
        self.forget_primary();
        Err(Error::NoReadAnswer { token, tried })
    }

    /// Asks one node and judges its answer.
    async fn try_node(
        &self,
        address: &str,
        read: &Read,
        token: Option<Token>,
        tried: &mut Vec<Attempt>,
        range: &mut Option<Error>,
    ) -> Result<Outcome> {
        let answer = match self.send_read(address, read, token).await {
            Ok(answer) => answer,
            Err(status) if wire::range_refusal(&status).is_some() => {
                note(tried, Attempt::new(address, None, wire::describe(&status)));
                *range = Some(range_error(address, &status));
                return Ok(Outcome::Passed);
            }
            Err(status) if wire::read_is_final(&status) => return Err(refused(address, &status)),
            Err(status) => {
                note(
                    tried,
                    Attempt::new(
                        address,
                        wire::refusal_epoch(&status),
                        wire::describe(&status),
                    ),
                );
                return Ok(Outcome::Passed);
            }
        };
        let (epoch, seq) = answer.epoch_seq();
        let mut verdict = self.verdict(token, epoch, seq);
        if verdict == Verdict::NeedHistory {
            if let Err(e) = self.refresh_history().await {
                note(
                    tried,
                    Attempt::new(
                        address,
                        Some(epoch),
                        format!("its answer could not be checked: {e}"),
                    ),
                );
                return Ok(Outcome::Passed);
            }
            verdict = self.verdict(token, epoch, seq);
        }
        let why = match verdict {
            Verdict::Accept => return Ok(Outcome::Taken(answer)),
            Verdict::Lost { epoch, cut } => {
                return match token {
                    Some(token) => Err(Error::WriteLost { token, epoch, cut }),
                    None => Ok(Outcome::Taken(answer)),
                };
            }
            Verdict::Reject(why) => why,
            Verdict::NeedHistory => {
                format!(
                    "answered from epoch {epoch}, and etcd's history has no entry at or after it"
                )
            }
        };
        note(tried, Attempt::new(address, Some(epoch), why));
        Ok(Outcome::Passed)
    }

    fn verdict(&self, token: Option<Token>, epoch: u64, seq: u64) -> Verdict {
        if self.inner.etcd.is_none() {
            return judge(token, epoch, seq, History::Unknown);
        }
        let history = self.inner.history.lock();
        judge(token, epoch, seq, History::Entries(&history))
    }

    async fn send_read(
        &self,
        address: &str,
        read: &Read,
        token: Option<Token>,
    ) -> Result<Answer, tonic::Status> {
        let config = &self.inner.config;
        let mut kv = self
            .inner
            .pool
            .kv(address)
            .map_err(tonic::Status::unavailable)?;
        let min_seq = token.map_or(0, |t| t.seq);
        let wait_millis = u64::try_from(config.read_wait.as_millis()).unwrap_or(u64::MAX);
        let deadline = config.request_timeout + config.read_wait;
        let call = async {
            match read.clone() {
                Read::Get(mut request) => {
                    request.min_seq = min_seq;
                    request.timeout_millis = wait_millis;
                    kv.get(request).await.map(|a| Answer::Get(a.into_inner()))
                }
                Read::Scan(mut request) => {
                    request.min_seq = min_seq;
                    request.timeout_millis = wait_millis;
                    kv.scan(request).await.map(|a| Answer::Scan(a.into_inner()))
                }
            }
        };
        tokio::time::timeout(deadline, call)
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {deadline:?}"
                )))
            })
    }
}

/// The range-map refusal `status` is, as an error (callers check that it
/// is one).
fn range_error(address: &str, status: &tonic::Status) -> Error {
    match wire::range_refusal(status) {
        Some(refusal) => refusal.into_error(address),
        None => refused(address, status),
    }
}

fn refused(address: &str, status: &tonic::Status) -> Error {
    Error::Refused {
        node: address.to_string(),
        code: status.code(),
        message: status.message().to_string(),
    }
}
