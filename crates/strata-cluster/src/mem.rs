//! An in-memory [`Coordinator`], for unit tests of what is built on the
//! trait (elections, membership, failover decisions) without an etcd.
//!
//! Role: the same semantics as etcd (checked by the conformance suite
//! that runs against both), one process, no persistence. Leases expire by
//! wall-clock time: a reaper thread checks every few milliseconds, so an
//! expiry is seen within about 10 ms of the deadline.
//!
//! Invariants:
//! - `history` holds every change since the store was created, in revision
//!   order (a test store is small); watches replay from it, then follow.
//! - Every key attached to a lease is in that lease's key set, and only
//!   those.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::coordinator::{
    Compare, CompareOp, CompareTarget, Coordinator, Error, EventKind, KeyValue, Lease, LeaseId, Op,
    Result, Revision, Txn, TxnOutcome, Watch, WatchEvent,
};

#[derive(Debug)]
struct LeaseState {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug)]
struct Watcher {
    prefix: Vec<u8>,
    tx: mpsc::UnboundedSender<WatchEvent>,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    keys: BTreeMap<Vec<u8>, KeyValue>,
    leases: HashMap<i64, LeaseState>,
    next_lease: i64,
    history: Vec<WatchEvent>,
    watchers: Vec<Watcher>,
}

impl State {
    fn publish(&mut self, event: WatchEvent) {
        self.watchers
            .retain(|w| !event.kv.key.starts_with(&w.prefix) || w.tx.send(event.clone()).is_ok());
        self.history.push(event);
    }

    fn put(&mut self, key: &[u8], value: &[u8], lease: Option<LeaseId>, revision: Revision) {
        let previous = self.keys.get(key);
        let (create_revision, version, old_lease) = match previous {
            Some(kv) => (kv.create_revision, kv.version + 1, kv.lease),
            None => (revision, 1, None),
        };
        if let Some(old) = old_lease
            && let Some(state) = self.leases.get_mut(&old.0)
        {
            state.keys.remove(key);
        }
        if let Some(new) = lease
            && let Some(state) = self.leases.get_mut(&new.0)
        {
            state.keys.insert(key.to_vec());
        }
        let kv = KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision,
            mod_revision: revision,
            version,
            lease,
        };
        self.keys.insert(key.to_vec(), kv.clone());
        self.publish(WatchEvent {
            kind: EventKind::Put,
            kv,
        });
    }

    /// Deletes `key` at `revision`; whether it existed.
    fn delete(&mut self, key: &[u8], revision: Revision) -> bool {
        let Some(old) = self.keys.remove(key) else {
            return false;
        };
        if let Some(lease) = old.lease
            && let Some(state) = self.leases.get_mut(&lease.0)
        {
            state.keys.remove(key);
        }
        self.publish(WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_vec(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
                lease: None,
            },
        });
        true
    }

    fn holds(&self, compare: &Compare) -> bool {
        let kv = self.keys.get(&compare.key);
        let ordering = match (&compare.target, kv) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
            (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
            (CompareTarget::CreateRevision(r), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            (CompareTarget::ModRevision(r), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
            (CompareTarget::Lease(l), kv) => kv.and_then(|kv| kv.lease).map_or(0, |l| l.0).cmp(l),
        };
        match compare.op {
            CompareOp::Equal => ordering.is_eq(),
            CompareOp::NotEqual => ordering.is_ne(),
            CompareOp::Greater => ordering.is_gt(),
            CompareOp::Less => ordering.is_lt(),
        }
    }

    fn check_lease(&self, lease: Option<LeaseId>) -> Result<()> {
        match lease {
            Some(id) if !self.leases.contains_key(&id.0) => Err(Error::LeaseExpired { id: id.0 }),
            _ => Ok(()),
        }
    }

    /// Removes a lease and its keys, all at one revision.
    fn end_lease(&mut self, id: i64) {
        let Some(state) = self.leases.remove(&id) else {
            return;
        };
        if state.keys.is_empty() {
            return;
        }
        self.revision += 1;
        let revision = self.revision;
        for key in state.keys {
            self.delete(&key, revision);
        }
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.end_lease(id);
        }
    }
}

/// The in-memory coordinator. Cloning shares the store.
///
/// # Examples
///
/// ```
/// use strata_cluster::{Coordinator, MemCoordinator};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemCoordinator::new();
/// let revision = store.put(b"k", b"v", None).await.unwrap();
/// let kv = store.get(b"k").await.unwrap().unwrap();
/// assert_eq!((kv.value.as_slice(), kv.create_revision), (&b"v"[..], revision));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct MemCoordinator {
    state: Arc<Mutex<State>>,
}

impl Default for MemCoordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl MemCoordinator {
    /// An empty store (revision 0), with its lease reaper running until
    /// the last clone is dropped.
    pub fn new() -> MemCoordinator {
        let state = Arc::new(Mutex::new(State {
            next_lease: 0x1000,
            ..State::default()
        }));
        let weak: Weak<Mutex<State>> = Arc::downgrade(&state);
        std::thread::Builder::new()
            .name("mem-coordinator-leases".into())
            .spawn(move || {
                while let Some(state) = weak.upgrade() {
                    state.lock().expire(Instant::now());
                    drop(state);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .map(drop)
            .unwrap_or_else(|e| panic!("cannot start the lease reaper thread: {e}"));
        MemCoordinator { state }
    }

    /// Runs `f` on the state after expiring what is due.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock();
        state.expire(Instant::now());
        f(&mut state)
    }
}

/// A watch on a [`MemCoordinator`].
#[derive(Debug)]
pub struct MemWatch {
    rx: mpsc::UnboundedReceiver<WatchEvent>,
}

impl Watch for MemWatch {
    async fn next(&mut self) -> Result<WatchEvent> {
        self.rx.recv().await.ok_or_else(|| Error::WatchEnded {
            detail: "the in-memory store was dropped".into(),
        })
    }
}

fn whole_seconds(ttl: Duration) -> Duration {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

impl Coordinator for MemCoordinator {
    type Watch = MemWatch;

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let ttl = whole_seconds(ttl);
        Ok(self.with(|s| {
            s.next_lease += 1;
            let id = s.next_lease;
            s.leases.insert(
                id,
                LeaseState {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
            Lease {
                id: LeaseId(id),
                ttl,
            }
        }))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.with(|s| match s.leases.get_mut(&lease.0) {
            Some(state) => {
                state.deadline = Instant::now() + state.ttl;
                Ok(state.ttl)
            }
            None => Err(Error::LeaseExpired { id: lease.0 }),
        })
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.with(|s| s.end_lease(lease.0));
        Ok(())
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(self.with(|s| s.keys.get(key).cloned()))
    }

    async fn list(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, Revision)> {
        Ok(self.with(|s| {
            let found = s
                .keys
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, kv)| kv.clone())
                .collect();
            (found, s.revision)
        }))
    }

    async fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        self.with(|s| {
            s.check_lease(lease)?;
            s.revision += 1;
            let revision = s.revision;
            s.put(key, value, lease, revision);
            Ok(revision)
        })
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self.with(|s| {
            if !s.keys.contains_key(key) {
                return false;
            }
            s.revision += 1;
            let revision = s.revision;
            s.delete(key, revision)
        }))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.with(|s| {
            let succeeded = txn.compare.iter().all(|c| s.holds(c));
            let ops = if succeeded { txn.success } else { txn.failure };
            for op in &ops {
                if let Op::Put { lease, .. } = op {
                    s.check_lease(*lease)?;
                }
            }
            let changes = ops.iter().any(|op| match op {
                Op::Put { .. } => true,
                Op::Delete { key } => s.keys.contains_key(key),
            });
            if changes {
                s.revision += 1;
                let revision = s.revision;
                for op in ops {
                    match op {
                        Op::Put { key, value, lease } => s.put(&key, &value, lease, revision),
                        Op::Delete { key } => {
                            s.delete(&key, revision);
                        }
                    }
                }
            }
            Ok(TxnOutcome {
                succeeded,
                revision: s.revision,
            })
        })
    }

    async fn watch(&self, prefix: &[u8], start: Revision) -> Result<MemWatch> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.with(|s| {
            for event in s
                .history
                .iter()
                .filter(|e| e.kv.mod_revision >= start && e.kv.key.starts_with(prefix))
            {
                // The receiver is alive: it is in this function.
                let _ = tx.send(event.clone());
            }
            s.watchers.push(Watcher {
                prefix: prefix.to_vec(),
                tx,
            });
        });
        Ok(MemWatch { rx })
    }
}
