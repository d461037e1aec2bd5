//! A fake node for the agent's tests: an applied sequence number, whether
//! it is range-scoped, the leadership it was given, and every transition
//! with the time it happened; and an agent started over it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_cluster::{
    AgentConfig, AgentStatus, ClusterKeys, Coordinator, Follow, Leadership, Node, run_agent,
};
use tokio::sync::watch;

#[derive(Default)]
pub(crate) struct FakeNode {
    pub(crate) applied: AtomicU64,
    pub(crate) epoch: AtomicU64,
    pub(crate) drained: AtomicBool,
    pub(crate) scoped: AtomicBool,
    pub(crate) leadership: Mutex<Option<Arc<Leadership>>>,
    /// (when, what): every transition.
    pub(crate) events: Mutex<Vec<(Instant, String)>>,
}

impl FakeNode {
    pub(crate) fn is_primary(&self) -> bool {
        self.leadership
            .lock()
            .as_ref()
            .is_some_and(|l| l.is_valid())
    }
}

impl Node for FakeNode {
    fn applied_seq(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }
    fn full(&self) -> bool {
        !self.scoped.load(Ordering::Relaxed)
    }
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }
    async fn prepare_promotion(&self, epoch: u64) -> Result<u64, String> {
        let mine = self.epoch.load(Ordering::Relaxed);
        if epoch <= mine {
            return Err(format!("epoch {epoch} is not above {mine}"));
        }
        self.epoch.store(epoch, Ordering::Relaxed);
        Ok(self.applied.load(Ordering::Relaxed))
    }
    fn accept_writes(&self, epoch: u64, leadership: Arc<Leadership>) -> Result<(), String> {
        *self.leadership.lock() = Some(leadership);
        self.events
            .lock()
            .push((Instant::now(), format!("promote {epoch}")));
        Ok(())
    }
    async fn follow(&self, plan: &Follow) {
        self.epoch.fetch_max(plan.epoch, Ordering::Relaxed);
        let cut = plan.cut.map_or("none".to_string(), |c| c.to_string());
        self.events.lock().push((
            Instant::now(),
            format!("follow {} cut {cut}", plan.primary.node),
        ));
    }
    fn drain(&self, on: bool) {
        self.drained.store(on, Ordering::Relaxed);
        self.events
            .lock()
            .push((Instant::now(), format!("drain {on}")));
    }
    fn fence(&self) {
        *self.leadership.lock() = None;
        self.events.lock().push((Instant::now(), "fence".into()));
    }
}

/// An agent running over a fake node.
pub(crate) struct Running {
    pub(crate) node: Arc<FakeNode>,
    pub(crate) status: watch::Receiver<AgentStatus>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: tokio::task::JoinHandle<strata_cluster::Result<()>>,
}

/// Starts an agent for node `name` of group "g" on `store`.
pub(crate) fn start<C: Coordinator>(store: C, name: &str, applied: u64, ttl: Duration) -> Running {
    let node = Arc::new(FakeNode::default());
    node.applied.store(applied, Ordering::Relaxed);
    let mut config = AgentConfig::new(
        ClusterKeys::new("strata", "agent-test").unwrap(),
        name,
        &format!("http://127.0.0.1/{name}"),
        "g",
    );
    config.lease_ttl = ttl;
    let (status_tx, status) = watch::channel(AgentStatus::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_agent(
        store,
        Arc::clone(&node),
        config,
        status_tx,
        stop_rx,
    ));
    Running {
        node,
        status,
        stop,
        task,
    }
}

/// Waits until `check` holds, at most `limit`; returns how long it took.
pub(crate) async fn wait_for(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}
