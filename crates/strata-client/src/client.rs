//! The client: one value per range group, cheap to clone, shared by tasks.
//!
//! Role: holds what the client has learned of the group (its primary and
//! epoch, its epoch history) and how to learn it again (etcd, seeds). The
//! write path is in `write`, the read path in `read`, the cluster report
//! in `status`.
//!
//! Thread-safety: the caches sit behind mutexes held only to copy or
//! replace their contents, never across I/O. Two tasks may rediscover the
//! primary at once; the later answer wins, which is harmless (both come
//! from the same source).
//!
//! Invariants: a cached primary is forgotten on every answer that says it
//! is not (or may not be) the primary any more; the cached history only
//! grows (entries are written once).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_cluster::{Coordinator, EpochStart, EtcdCoordinator, EtcdOptions};

use crate::config::ClientConfig;
use crate::discovery::{self, Etcd, Member, Primary};
use crate::error::{Attempt, Error, Result};
use crate::pool::Pool;

/// An async client of one range group.
///
/// # Examples
///
/// ```no_run
/// use strata_client::{Client, ClientConfig, EtcdSource, ReadPolicy};
/// # async fn run() -> Result<(), strata_client::Error> {
/// let client = Client::new(ClientConfig::etcd(EtcdSource::new(
///     ["http://127.0.0.1:2379"], "shop", "g1")))?;
/// let token = client.put(b"cart/1", b"apples").await?;
/// let answer = client.get(b"cart/1", ReadPolicy::Replicas { token: Some(token) }).await?;
/// assert_eq!(answer.value.as_deref(), Some(&b"apples"[..]));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) pool: Pool,
    pub(crate) etcd: Option<Etcd>,
    pub(crate) primary: Mutex<Option<Primary>>,
    pub(crate) history: Mutex<Vec<EpochStart>>,
    /// The group's members and when they were read.
    pub(crate) members: Mutex<Option<(Instant, Vec<Member>)>>,
    pub(crate) next_read: AtomicUsize,
}

/// The first pause between two attempts while a group has no usable
/// primary; it doubles up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// The longest pause between two attempts.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a read of the group's members is used before it is read again
/// (a read that no member answered forgets it at once).
pub(crate) const MEMBERS_FRESH: Duration = Duration::from_secs(5);

/// Pushes `attempt` unless the same node already said the same thing (a
/// wait of many rounds reports each distinct answer once).
pub(crate) fn note(tried: &mut Vec<Attempt>, attempt: Attempt) {
    if !tried.contains(&attempt) {
        tried.push(attempt);
    }
}

/// Connects to `source`'s etcd with `config`'s deadlines (no I/O yet).
pub(crate) fn connect_etcd(
    config: &ClientConfig,
    source: &crate::config::EtcdSource,
) -> Result<EtcdCoordinator> {
    let mut options = EtcdOptions::new(source.endpoints.clone());
    options.request_timeout = config.request_timeout;
    options.connect_timeout = config.request_timeout / 2;
    EtcdCoordinator::connect(options).map_err(|e| Error::Config {
        detail: e.to_string(),
    })
}

impl Client {
    /// A client for `config`. Opens no connection: nodes and etcd are
    /// reached on the first call. Call it within a Tokio runtime (the
    /// etcd connection's balancer runs as a task of it).
    ///
    /// # Errors
    /// [`Error::Config`] when `config` does not pass
    /// [`ClientConfig::check`], an etcd endpoint is not a URL, or there is
    /// no Tokio runtime to run in.
    pub fn new(config: ClientConfig) -> Result<Client> {
        config.check()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config {
                detail: "Client::new must be called within a Tokio runtime".into(),
            });
        }
        let directory = match &config.etcd {
            Some(source) => {
                Some(Box::new(connect_etcd(&config, source)?) as Box<dyn discovery::Directory>)
            }
            None => None,
        };
        Client::build(config, directory)
    }

    /// A client that reads the cluster's records from `coordinator`
    /// instead of connecting to `config.etcd`'s endpoints (which then only
    /// name it in messages): for tests over a `MemCoordinator`.
    ///
    /// ```
    /// use strata_client::{Client, ClientConfig, EtcdSource};
    /// let config = ClientConfig::etcd(EtcdSource::new(["mem"], "shop", "g1"));
    /// assert!(Client::with_coordinator(config, strata_cluster::MemCoordinator::new()).is_ok());
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] as [`Client::new`], and when `config` has no
    /// etcd source.
    pub fn with_coordinator(config: ClientConfig, coordinator: impl Coordinator) -> Result<Client> {
        config.check()?;
        if config.etcd.is_none() {
            return Err(Error::Config {
                detail: "a coordinator needs an etcd source naming the cluster and group".into(),
            });
        }
        Client::build(config, Some(Box::new(coordinator)))
    }

    pub(crate) fn build(
        config: ClientConfig,
        directory: Option<Box<dyn discovery::Directory>>,
    ) -> Result<Client> {
        let etcd = match (&config.etcd, directory) {
            (Some(source), Some(directory)) => Some(Etcd::new(source, directory)?),
            _ => None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                pool: Pool::new(&config),
                config,
                etcd,
                primary: Mutex::new(None),
                history: Mutex::new(Vec::new()),
                members: Mutex::new(None),
                next_read: AtomicUsize::new(0),
            }),
        })
    }

    /// The group's primary as the client knows it now (asking etcd or the
    /// seeds if it knows none).
    ///
    /// # Errors
    /// [`Error::NoPrimary`] naming every source asked and what it said.
    pub async fn primary(&self) -> Result<Primary> {
        let mut tried = Vec::new();
        match self.find_primary(&mut tried).await {
            Some(primary) => Ok(primary),
            None => Err(Error::NoPrimary {
                group: self.group().to_string(),
                waited: Duration::ZERO,
                tried,
            }),
        }
    }

    pub(crate) fn group(&self) -> &str {
        self.inner.etcd.as_ref().map_or("", Etcd::group)
    }

    /// The cached primary, else a fresh discovery.
    pub(crate) async fn find_primary(&self, tried: &mut Vec<Attempt>) -> Option<Primary> {
        if let Some(primary) = self.inner.primary.lock().clone() {
            return Some(primary);
        }
        self.discover_primary(tried).await
    }

    /// Asks etcd, then (if it has no answer) the seeds; caches what it
    /// finds. Every source that gave no primary is noted in `tried`.
    pub(crate) async fn discover_primary(&self, tried: &mut Vec<Attempt>) -> Option<Primary> {
        let inner = &self.inner;
        if let Some(etcd) = &inner.etcd {
            match etcd.primary().await {
                Ok(Ok(primary)) => return Some(self.remember(primary)),
                Ok(Err(why)) => note(
                    tried,
                    Attempt::new(format!("etcd {}", etcd.endpoints()), None, why),
                ),
                Err(e) => note(
                    tried,
                    Attempt::new(format!("etcd {}", etcd.endpoints()), None, e.to_string()),
                ),
            }
        }
        if inner.config.seeds.is_empty() {
            return None;
        }
        let answers = discovery::ask_seeds(
            &inner.pool,
            &inner.config.seeds,
            inner.config.request_timeout,
            tried,
        )
        .await;
        match discovery::primary_from_seeds(&answers) {
            Ok(primary) => Some(self.remember(primary)),
            Err(why) => {
                note(
                    tried,
                    Attempt::new(format!("seeds {}", inner.config.seeds.join(",")), None, why),
                );
                None
            }
        }
    }

    pub(crate) fn remember(&self, primary: Primary) -> Primary {
        *self.inner.primary.lock() = Some(primary.clone());
        primary
    }

    pub(crate) fn forget_primary(&self) {
        *self.inner.primary.lock() = None;
    }

    /// The group's members, as last read if that is recent.
    pub(crate) async fn members(&self, tried: &mut Vec<Attempt>) -> Vec<Member> {
        if let Some((read_at, members)) = self.inner.members.lock().as_ref()
            && read_at.elapsed() < MEMBERS_FRESH
        {
            return members.clone();
        }
        let members = self.discover_members(tried).await;
        if !members.is_empty() {
            *self.inner.members.lock() = Some((Instant::now(), members.clone()));
        }
        members
    }

    pub(crate) fn forget_members(&self) {
        *self.inner.members.lock() = None;
    }

    /// The group's members: from etcd, else from the seeds' answers.
    async fn discover_members(&self, tried: &mut Vec<Attempt>) -> Vec<Member> {
        let inner = &self.inner;
        if let Some(etcd) = &inner.etcd {
            match etcd.members().await {
                Ok(members) if !members.is_empty() => return members,
                Ok(_) => note(
                    tried,
                    Attempt::new(
                        format!("etcd {}", etcd.endpoints()),
                        None,
                        format!("group {:?} has no member", etcd.group()),
                    ),
                ),
                Err(e) => note(
                    tried,
                    Attempt::new(format!("etcd {}", etcd.endpoints()), None, e.to_string()),
                ),
            }
        }
        let answers = discovery::ask_seeds(
            &inner.pool,
            &inner.config.seeds,
            inner.config.request_timeout,
            tried,
        )
        .await;
        if let Ok(primary) = discovery::primary_from_seeds(&answers) {
            self.remember(primary);
        }
        discovery::members_from_seeds(&answers)
    }

    /// Reads the group's epoch history from etcd into the cache.
    pub(crate) async fn refresh_history(&self) -> Result<()> {
        let Some(etcd) = &self.inner.etcd else {
            return Ok(());
        };
        let entries = etcd.history().await?;
        let mut cached = self.inner.history.lock();
        for entry in entries {
            if !cached.iter().any(|e| e.epoch == entry.epoch) {
                cached.push(entry);
            }
        }
        Ok(())
    }
}
