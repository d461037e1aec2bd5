//! A client of every range group of a cluster, routing by the range map.
//!
//! Role: [`ShardedClient`] reads the cluster's range map from etcd on
//! first use, caches it, and sends each request to the group owning its
//! keys through one [`Client`] per group (made on first use, sharing the
//! sharded client's etcd connection). The pure rules (which group a batch
//! goes to, how a scan is cut) are in `route`; this module does the I/O
//! and the retries. The rules are written up in `docs/design/cluster.md`,
//! "Routing by the range map".
//!
//! Retries, all bounded by [`ClientConfig::failover_wait`] from the
//! request's start, and all after refusals that applied nothing:
//!
//! - "wrong group" ([`Error::WrongGroup`]) and the node's "batch spans
//!   range groups": read the map until its revision is above the one the
//!   refused attempt was routed by (and at least the node's, when it names
//!   one), every 50 ms; then route again. So a request is retried at most
//!   once per new map revision. A batch the new map places in several
//!   groups ends as [`Error::SpansGroups`].
//! - "range moving" and "no range map" ([`Error::RangeMoving`]): wait
//!   (20 ms, doubling to 200 ms), read the map, route again.
//!
//! Anything else is returned as the group's client gave it; in particular
//! [`Error::OutcomeUnknown`] is never retried.
//!
//! Thread-safety: the cached map and the per-group clients sit behind
//! mutexes held only to copy or replace them, never across I/O.
//!
//! Invariants: the cached map's revision only grows (a read that comes
//! back older than the cache, from a concurrent refresh, is dropped); a
//! write is sent only when the map it is routed by places all its keys in
//! one group; a read's token is used only for pieces of the token's group.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_cluster::{ClusterKeys, Coordinator, RangeMap};

use crate::client::{Client, connect_etcd};
use crate::config::{ClientConfig, EtcdSource};
use crate::discovery::{Directory, Shared};
use crate::error::{Error, Result};
use crate::read::{GetAnswer, ReadPolicy, ScanRange};
use crate::route::{self, Assembly, Span};
use crate::token::GroupToken;
use crate::wire::SPANS_GROUPS;
use crate::write::WriteBatch;

/// The first pause after a "range moving" refusal; it doubles up to
/// [`MOVING_BACKOFF_MAX`].
const MOVING_BACKOFF_FIRST: Duration = Duration::from_millis(20);
/// The longest pause after a "range moving" refusal.
const MOVING_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// The pause between two reads of the map while waiting for a newer one.
const MAP_POLL: Duration = Duration::from_millis(50);

/// Where a sharded read goes.
///
/// ```
/// use strata_client::{GroupToken, ShardedRead, Token};
/// let token = GroupToken { group: "g1".into(), token: Token { epoch: 7, seq: 41 } };
/// let after_my_write = ShardedRead::Replicas { token: Some(token) };
/// assert_ne!(after_my_write, ShardedRead::Primary);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardedRead {
    /// Each owning group's primary.
    Primary,
    /// Each owning group's replicas. A token applies to the pieces of its
    /// own group only; the other groups' replicas are read without one.
    Replicas {
        /// The write to read after, if any.
        token: Option<GroupToken>,
    },
}

impl ShardedRead {
    /// The policy for a read of `group`.
    fn for_group(&self, group: &str) -> ReadPolicy {
        match self {
            ShardedRead::Primary => ReadPolicy::Primary,
            ShardedRead::Replicas { token } => ReadPolicy::Replicas {
                token: token.as_ref().filter(|t| t.group == group).map(|t| t.token),
            },
        }
    }
}

/// The answer to a sharded `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardedGet {
    /// The group that answered.
    pub group: String,
    /// The revision of the range map the read was routed by.
    pub map_revision: i64,
    /// The group's answer.
    pub answer: GetAnswer,
}

/// One piece of a sharded scan: the part of the scan inside one range,
/// and who answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanPiece {
    /// The group that answered.
    pub group: String,
    /// The piece's first key.
    pub start: Vec<u8>,
    /// The piece's end (exclusive; `None`: the end of the key space).
    pub end: Option<Vec<u8>>,
    /// The revision of the range map the piece was routed by.
    pub map_revision: i64,
    /// The node that answered.
    pub node: String,
    /// The epoch of the history the answer comes from.
    pub epoch: u64,
    /// The sequence number the answer reflects (in its group).
    pub seq: u64,
    /// How many entries the piece gave.
    pub entries: usize,
}

/// The answer to a sharded `scan`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardedScan {
    /// The keys and values, in the order asked.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether entries may have been left out: a piece was cut by its
    /// limit, or the limit was reached with pieces left. Continue after
    /// the last key returned.
    pub more: bool,
    /// The pieces read, in order. Each group's answer is as of its own
    /// sequence number: a scan over several groups is not one snapshot.
    pub pieces: Vec<ScanPiece>,
}

/// A client of every range group of a cluster: each request goes to the
/// group the range map says owns its keys.
///
/// # Examples
///
/// ```no_run
/// use strata_client::{ClientConfig, EtcdSource, ScanRange, ShardedClient, ShardedRead, WriteBatch};
/// # async fn run() -> Result<(), strata_client::Error> {
/// let client = ShardedClient::new(ClientConfig::etcd(EtcdSource::cluster(
///     ["http://127.0.0.1:2379"], "shop")))?;
/// let token = client.write(WriteBatch::new().put(b"cart/1", b"apples")).await?;
/// println!("committed as {token}"); // group/epoch:seq
/// let read = client.get(b"cart/1", ShardedRead::Replicas { token: Some(token) }).await?;
/// assert_eq!(read.answer.value.as_deref(), Some(&b"apples"[..]));
/// let carts = client.scan(ScanRange::new(b"cart/".to_vec(), Some(b"cart0".to_vec())),
///     ShardedRead::Primary).await?;
/// println!("{} carts over {} pieces", carts.entries.len(), carts.pieces.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ShardedClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    source: EtcdSource,
    keys: ClusterKeys,
    directory: Arc<dyn Directory>,
    map: Mutex<Option<Arc<RangeMap>>>,
    groups: Mutex<HashMap<String, Client>>,
    /// Dropped with the client: ends the map's watch.
    stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedClient")
            .field("config", &self.config)
            .field(
                "map_revision",
                &self.map.lock().as_ref().map(|m| m.revision()),
            )
            .field("groups", &self.groups.lock().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ShardedClient {
    /// A client of every group of `config.etcd`'s cluster (its `group`
    /// is ignored; so are `seeds`: the groups are found through etcd).
    /// Opens no connection. Call it within a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] when `config` has no etcd source or does not
    /// pass [`ClientConfig::check`] (but for the group), an etcd endpoint
    /// is not a URL, or there is no Tokio runtime.
    pub fn new(config: ClientConfig) -> Result<ShardedClient> {
        let source = Self::source(&config)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config {
                detail: "ShardedClient::new must be called within a Tokio runtime".into(),
            });
        }
        let etcd = Arc::new(connect_etcd(&config, &source)?);
        let client = ShardedClient::build(config, source, etcd.clone())?;
        client.follow(etcd);
        Ok(client)
    }

    /// A client that reads the cluster's records from `coordinator`
    /// instead of `config.etcd`'s endpoints: for tests over a
    /// `MemCoordinator`.
    ///
    /// ```
    /// use strata_client::{ClientConfig, EtcdSource, ShardedClient};
    /// let config = ClientConfig::etcd(EtcdSource::cluster(["mem"], "shop"));
    /// let client = ShardedClient::with_coordinator(config, strata_cluster::MemCoordinator::new());
    /// assert!(client.unwrap().map().is_none()); // not read yet
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] as [`ShardedClient::new`].
    pub fn with_coordinator(
        config: ClientConfig,
        coordinator: impl Coordinator,
    ) -> Result<ShardedClient> {
        let source = Self::source(&config)?;
        let store = Arc::new(coordinator);
        let client = ShardedClient::build(config, source, store.clone())?;
        client.follow(store);
        Ok(client)
    }

    /// Follows the map's changes through a watch (within a Tokio
    /// runtime; without one, the map is read on first use and on
    /// refusals only): each whole map the watch publishes replaces the
    /// cached one if it is newer. Ends when the client is dropped.
    fn follow<C: Coordinator>(&self, store: Arc<C>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (tx, mut rx) = tokio::sync::watch::channel(None);
        let keys = self.inner.keys.clone();
        let stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            strata_cluster::watch_map(&*store, keys, tx, stop).await;
        });
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(map) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let mut cached = inner.map.lock();
                if cached
                    .as_ref()
                    .is_none_or(|m| m.revision() < map.revision())
                {
                    *cached = Some(map);
                }
            }
        });
    }

    fn source(config: &ClientConfig) -> Result<EtcdSource> {
        config.check_with(false)?;
        config.etcd.clone().ok_or_else(|| Error::Config {
            detail: "a sharded client reads the range map from etcd: it needs an etcd source"
                .into(),
        })
    }

    fn build(
        config: ClientConfig,
        source: EtcdSource,
        directory: Arc<dyn Directory>,
    ) -> Result<ShardedClient> {
        let keys =
            ClusterKeys::new(&source.key_prefix, &source.cluster).map_err(|e| Error::Config {
                detail: e.to_string(),
            })?;
        Ok(ShardedClient {
            inner: Arc::new(Inner {
                config,
                source,
                keys,
                directory,
                map: Mutex::new(None),
                groups: Mutex::new(HashMap::new()),
                stop: tokio::sync::watch::channel(false).0,
            }),
        })
    }

    /// The range map requests are routed by now: the newest read, `None`
    /// before the first (see [`ShardedClient::refresh`]).
    pub fn map(&self) -> Option<Arc<RangeMap>> {
        self.inner.map.lock().clone()
    }

    /// Reads the range map from etcd and caches it (unless a newer one is
    /// cached already); returns the cached map.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use strata_client::{ClientConfig, EtcdSource, ShardedClient};
    /// use strata_cluster::{ClusterKeys, MemCoordinator, create_map};
    /// let store = MemCoordinator::new();
    /// create_map(&store, &ClusterKeys::new("strata", "shop").unwrap(), "g1").await.unwrap();
    /// let config = ClientConfig::etcd(EtcdSource::cluster(["mem"], "shop"));
    /// let client = ShardedClient::with_coordinator(config, store).unwrap();
    /// let map = client.refresh().await.unwrap();
    /// assert_eq!(map.locate(b"any key").group, "g1");
    /// assert_eq!(client.map().unwrap().revision(), map.revision());
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::Coordinator`] when etcd cannot be read, holds no range
    /// map for the cluster, or holds one that is not valid.
    pub async fn refresh(&self) -> Result<Arc<RangeMap>> {
        let inner = &self.inner;
        let prefix = inner.keys.ranges();
        let failed = |detail: String| Error::Coordinator {
            endpoints: inner.source.endpoints.join(","),
            detail,
        };
        let (kvs, revision) = inner
            .directory
            .list_at(&prefix)
            .await
            .map_err(|e| Error::coordinator(&inner.source.endpoints, &e))?;
        if kvs.is_empty() {
            return Err(failed(format!(
                "cluster {:?} has no range map (nothing under {})",
                inner.source.cluster,
                String::from_utf8_lossy(&prefix)
            )));
        }
        let read = RangeMap::from_listing(&prefix, &kvs, revision)
            .map_err(|e| Error::coordinator(&inner.source.endpoints, &e))?;
        let mut cached = inner.map.lock();
        match cached.as_ref() {
            Some(map) if map.revision() >= read.revision() => Ok(map.clone()),
            _ => {
                let read = Arc::new(read);
                *cached = Some(read.clone());
                Ok(read)
            }
        }
    }

    /// The cached map, read first if there is none.
    async fn current_map(&self) -> Result<Arc<RangeMap>> {
        match self.map() {
            Some(map) => Ok(map),
            None => self.refresh().await,
        }
    }

    /// The client of `group` (made on first use; it shares this client's
    /// etcd connection and configuration).
    ///
    /// # Errors
    /// [`Error::Config`] for a name that cannot be a group.
    pub fn group_client(&self, group: &str) -> Result<Client> {
        let inner = &self.inner;
        let mut groups = inner.groups.lock();
        if let Some(client) = groups.get(group) {
            return Ok(client.clone());
        }
        let config = ClientConfig {
            seeds: Vec::new(),
            etcd: Some(EtcdSource {
                group: group.to_string(),
                ..inner.source.clone()
            }),
            ..inner.config.clone()
        };
        config.check()?;
        let directory = Box::new(Shared(inner.directory.clone()));
        let client = Client::build(config, Some(directory))?;
        groups.insert(group.to_string(), client.clone());
        Ok(client)
    }

    /// Sets `key` to `value` in the group owning it.
    ///
    /// # Errors
    /// As [`ShardedClient::write`].
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<GroupToken> {
        self.write(WriteBatch::new().put(key, value)).await
    }

    /// Removes `key` in the group owning it.
    ///
    /// # Errors
    /// As [`ShardedClient::write`].
    pub async fn delete(&self, key: &[u8]) -> Result<GroupToken> {
        self.write(WriteBatch::new().delete(key)).await
    }

    /// Applies `batch` in the one group owning all its keys; returns its
    /// token with the group's name.
    ///
    /// ```no_run
    /// # async fn run(client: strata_client::ShardedClient) -> Result<(), strata_client::Error> {
    /// use strata_client::{Error, WriteBatch};
    /// match client.write(WriteBatch::new().put(b"a", b"1").put(b"z", b"2")).await {
    ///     Ok(token) => println!("committed as {token}"),
    ///     Err(Error::SpansGroups { ranges, .. }) => println!("split the batch: {ranges}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// - [`Error::SpansGroups`]: the keys (a delete_range's whole span)
    ///   fall in ranges of more than one group; nothing was sent.
    /// - [`Error::WrongGroup`], [`Error::RangeMoving`]: the nodes kept
    ///   refusing it by the range map for the whole failover wait; nothing
    ///   was applied.
    /// - [`Error::Coordinator`]: the map could not be read.
    /// - Anything [`Client::write`] returns, [`Error::OutcomeUnknown`]
    ///   included (never retried).
    pub async fn write(&self, batch: WriteBatch) -> Result<GroupToken> {
        let mut retry = Retry::new(self);
        let mut map = self.current_map().await?;
        loop {
            let group = route::route_batch(&map, &batch.request.operations)?;
            let error = match self.group_client(&group)?.write(batch.clone()).await {
                Ok(token) => return Ok(GroupToken { group, token }),
                Err(error) => error,
            };
            map = retry.after(error, &map).await?;
        }
    }

    /// Reads `key` from the group owning it.
    ///
    /// # Errors
    /// [`Error::WrongGroup`], [`Error::RangeMoving`] and
    /// [`Error::Coordinator`] as [`ShardedClient::write`]; anything
    /// [`Client::get`] returns.
    pub async fn get(&self, key: &[u8], read: ShardedRead) -> Result<ShardedGet> {
        let mut retry = Retry::new(self);
        let mut map = self.current_map().await?;
        loop {
            let group = map.locate(key).group.clone();
            let client = self.group_client(&group)?;
            let error = match client.get(key, read.for_group(&group)).await {
                Ok(answer) => {
                    return Ok(ShardedGet {
                        group,
                        map_revision: map.revision(),
                        answer,
                    });
                }
                Err(error) => error,
            };
            map = retry.after(error, &map).await?;
        }
    }

    /// Reads the keys of `range`: cut at range boundaries, each piece
    /// read from its group, the pieces' entries concatenated in the order
    /// asked (largest key first for a reverse scan), `range.limit` applied
    /// across them (0: each piece gets the node's default, and a cut piece
    /// ends the scan). After a refusal the rest of the range is cut again
    /// by the new map.
    ///
    /// # Errors
    /// As [`ShardedClient::get`], for any piece.
    pub async fn scan(&self, range: ScanRange, read: ShardedRead) -> Result<ShardedScan> {
        let reverse = range.reverse;
        let mut assembly = Assembly::new(range.limit);
        let mut pieces = Vec::new();
        let mut rest = Some(Span {
            start: range.start,
            end: range.end,
        });
        let mut retry = Retry::new(self);
        let mut map = self.current_map().await?;
        while let Some(span) = rest.take() {
            let cut = route::scan_pieces(&map, &span, reverse);
            let Some(piece) = cut.first() else {
                break;
            };
            let last = cut.len() == 1;
            let client = self.group_client(&piece.group)?;
            let request = ScanRange::new(piece.span.start.clone(), piece.span.end.clone())
                .limit(assembly.piece_limit())
                .reverse(reverse);
            let answer = match client.scan(request, read.for_group(&piece.group)).await {
                Ok(answer) => answer,
                Err(error) => {
                    map = retry.after(error, &map).await?;
                    rest = Some(span);
                    continue;
                }
            };
            pieces.push(ScanPiece {
                group: piece.group.clone(),
                start: piece.span.start.clone(),
                end: piece.span.end.clone(),
                map_revision: map.revision(),
                node: answer.node,
                epoch: answer.epoch,
                seq: answer.seq,
                entries: answer.entries.len(),
            });
            if assembly.add(answer.entries, answer.more, last) {
                rest = route::remaining(&span, &piece.span, reverse);
            }
        }
        Ok(ShardedScan {
            entries: assembly.entries,
            more: assembly.more,
            pieces,
        })
    }
}

/// The retry state of one request (see the module doc).
struct Retry<'c> {
    client: &'c ShardedClient,
    deadline: Instant,
    backoff: Duration,
}

impl<'c> Retry<'c> {
    fn new(client: &'c ShardedClient) -> Retry<'c> {
        Retry {
            client,
            deadline: Instant::now() + client.inner.config.failover_wait,
            backoff: MOVING_BACKOFF_FIRST,
        }
    }

    /// The map to route the request by again after `error`, which came
    /// from an attempt routed by `used`; `Err` to stop (with `error` when
    /// it is not one to retry, or the wait ran out).
    async fn after(&mut self, error: Error, used: &RangeMap) -> Result<Arc<RangeMap>> {
        // Every retry, however it is earned, ends with the wait: a map
        // whose revision keeps growing (any etcd write moves it) must not
        // keep a refused request going.
        if Instant::now() >= self.deadline {
            return Err(error);
        }
        let newer = used.revision().saturating_add(1);
        match &error {
            Error::WrongGroup { map_revision, .. } => {
                let want = newer.max(map_revision.unwrap_or(0));
                self.newer_map(want).await?.ok_or(error)
            }
            Error::Refused { code, message, .. }
                if *code == tonic::Code::InvalidArgument && message.starts_with(SPANS_GROUPS) =>
            {
                self.newer_map(newer).await?.ok_or(error)
            }
            Error::RangeMoving { .. } => {
                let now = Instant::now();
                if now + self.backoff > self.deadline {
                    return Err(error);
                }
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(MOVING_BACKOFF_MAX);
                self.client.refresh().await
            }
            _ => Err(error),
        }
    }

    /// A map at revision `want` or later, read every [`MAP_POLL`] until
    /// the deadline (`None` if none came).
    async fn newer_map(&mut self, want: i64) -> Result<Option<Arc<RangeMap>>> {
        loop {
            let map = self.client.refresh().await?;
            if map.revision() >= want {
                return Ok(Some(map));
            }
            if Instant::now() + MAP_POLL > self.deadline {
                return Ok(None);
            }
            tokio::time::sleep(MAP_POLL).await;
        }
    }
}
