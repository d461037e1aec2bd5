//! Copying a key range into this group's primary from another group's
//! primary, for an online range move.
//!
//! Role: the target's half of a move (`docs/design/cluster.md`, "Range
//! moves"). The copy subscribes to the source's log at its durable
//! sequence number `S0` first (the subscription pins the log there), then
//! deletes whatever this node holds of the range, scans the range from the
//! source page by page and writes each page, then applies the source's
//! records after `S0`, each clipped to the range. A key's final value is
//! then the source's: either no operation touched it after `S0`, and the
//! scan (taken after `S0`) read it, or the replay applies its last one.
//!
//! Writes go through the node's commit path without the ownership check
//! (the range is not this group's until the map flips), durable and
//! confirmed by `min_sync_replicas` replicas like any write, so a failover
//! of this group right after the flip keeps the copy.
//!
//! Invariants:
//! - The copy never applies a record after it was told to stop (the source
//!   drops its copy of the range only after that), and stops by itself
//!   once the map no longer marks the range as moving here under its move.
//! - Nothing is read from the network without a check: every record is
//!   verified (checksum, framing, batch) before its operations are used.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strata::WriteBatch;
use strata::replication::VerifiedRecord;
use strata_cluster::{RangeMap, show_key};
use strata_format::wal::{BatchOp, decode_batch};
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::replication_client::ReplicationClient;
use strata_proto::v1::{
    ImportState, ReplicaMessage, ScanRequest, StatusRequest, Subscribe, replica_message,
    upstream_message,
};
use strata_replication::auth::Secret;
use tokio::sync::watch;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::node::Node;

/// The deletion of `db`'s keys in `[start, end)` (`end` `None`: to the
/// end of the key space, so the deletion ends at the last key held), or
/// `None` when an unbounded range holds no key here.
pub(crate) fn range_deletion(
    db: &strata::Db,
    start: &[u8],
    end: Option<&[u8]>,
) -> strata::Result<Option<WriteBatch>> {
    let mut batch = WriteBatch::new();
    if let Some(end) = end {
        batch.delete_range(start, end);
        return Ok(Some(batch));
    }
    let last = db
        .snapshot()
        .scan_rev((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))?
        .next()
        .transpose()?;
    let Some((last, _)) = last else {
        return Ok(None);
    };
    if last.as_slice() > start {
        batch.delete_range(start, &last);
    }
    batch.delete(&last);
    Ok(Some(batch))
}

impl Node {
    /// The replicas a member's own writes (a range copy, a drop) wait for,
    /// and how long: the member's `min_sync_replicas` and sync timeout.
    pub(crate) fn member_sync(&self) -> (u32, u64) {
        self.cluster
            .as_ref()
            .map_or((0, 2000), |m| (m.min_sync_replicas, m.sync_timeout_millis))
    }
}

/// How the copy reaches other nodes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reach {
    pub(crate) tls: Option<ClientTlsConfig>,
    pub(crate) token: Option<Secret>,
}

/// One copy under way (or ended).
#[derive(Debug)]
struct Import {
    state: Mutex<ImportState>,
    stop: watch::Sender<bool>,
    done: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Copies by range start and move id.
type Running = HashMap<(Vec<u8>, i64), Arc<Import>>;

/// The copies of this node, by range start and move id.
#[derive(Debug, Default)]
pub(crate) struct Imports {
    reach: Reach,
    running: Mutex<Running>,
}

fn state(name: &str) -> ImportState {
    ImportState {
        state: name.to_string(),
        ..ImportState::default()
    }
}

impl Imports {
    pub(crate) fn new(reach: Reach) -> Self {
        Self {
            reach,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts copying `[start, end)` from `source` for move `id` (a copy of
    /// the same move already running is left alone; another one of the
    /// same range is stopped first).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        &self,
        node: Node,
        map: watch::Receiver<Option<Arc<RangeMap>>>,
        group: String,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        id: i64,
        source: String,
    ) -> ImportState {
        let older: Vec<Arc<Import>> = {
            let mut running = self.running.lock();
            if let Some(import) = running.get(&(start.clone(), id)) {
                let current = import.state.lock().clone();
                if current.state != "failed" && current.state != "stopped" {
                    return current;
                }
            }
            let older = running
                .iter()
                .filter(|((s, other), _)| *s == start && *other != id)
                .map(|(_, import)| Arc::clone(import))
                .collect();
            running.retain(|(s, other), _| !(*s == start && *other != id));
            older
        };
        for import in older {
            import.stop_and_wait().await;
        }
        let (stop, stop_rx) = watch::channel(false);
        let import = Arc::new(Import {
            state: Mutex::new(state("copying")),
            stop,
            done: Mutex::new(None),
        });
        let copy = RangeCopy {
            node,
            map,
            group,
            start: start.clone(),
            end,
            id,
            source,
            reach: self.reach.clone(),
            import: Arc::clone(&import),
            stop: stop_rx,
        };
        let handle = tokio::spawn(async move {
            let import = Arc::clone(&copy.import);
            let range = copy.describe();
            if let Err(error) = copy.run().await {
                tracing::warn!(range = %range, move_id = id, %error, "range copy failed");
                let mut s = import.state.lock();
                s.state = "failed".into();
                s.error = error;
            } else {
                import.state.lock().state = "stopped".into();
            }
        });
        *import.done.lock() = Some(handle);
        self.running.lock().insert((start, id), Arc::clone(&import));
        import.state.lock().clone()
    }

    /// The copy's state (`""` if there is none).
    pub(crate) fn status(&self, start: &[u8], id: i64) -> ImportState {
        self.running
            .lock()
            .get(&(start.to_vec(), id))
            .map_or_else(ImportState::default, |i| i.state.lock().clone())
    }

    /// Stops the copy and waits until it applies nothing more.
    pub(crate) async fn stop(&self, start: &[u8], id: i64) -> ImportState {
        let import = self.running.lock().get(&(start.to_vec(), id)).cloned();
        match import {
            Some(import) => {
                import.stop_and_wait().await;
                import.state.lock().clone()
            }
            None => ImportState::default(),
        }
    }
}

impl Import {
    async fn stop_and_wait(&self) {
        let _ = self.stop.send(true);
        let handle = self.done.lock().take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

struct RangeCopy {
    node: Node,
    map: watch::Receiver<Option<Arc<RangeMap>>>,
    group: String,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    id: i64,
    source: String,
    reach: Reach,
    import: Arc<Import>,
    stop: watch::Receiver<bool>,
}

/// Where the copy stands with the map.
enum Marked {
    /// The range is still moving here under this move.
    Moving,
    /// The map gave the range to this group: nothing more to copy.
    Flipped,
    /// The move ended otherwise.
    Ended,
}

fn with_token<T>(token: Option<&Secret>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        token.attach(&mut request);
    }
    request
}

impl RangeCopy {
    fn describe(&self) -> String {
        strata_cluster::describe_range(&self.start, self.end.as_deref())
    }

    fn marked(&self) -> Marked {
        let Some(map) = self.map.borrow().clone() else {
            return Marked::Ended;
        };
        match map.starting_at(&self.start) {
            Some(e)
                if e.mod_revision == self.id
                    && e.moving.as_ref().is_some_and(|m| m.to == self.group) =>
            {
                Marked::Moving
            }
            Some(e) if e.group == self.group && e.mod_revision > self.id => Marked::Flipped,
            _ => Marked::Ended,
        }
    }

    /// `[start, end)` cut to the copied range, if anything is left.
    fn clip<'a>(&'a self, start: &'a [u8], end: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let s = start.max(self.start.as_slice());
        let e = self.end.as_deref().map_or(end, |own| end.min(own));
        (s < e).then_some((s, e))
    }

    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }

    async fn channel(&self) -> Result<Channel, String> {
        crate::connect::dial(&self.source, self.reach.tls.clone())
            .await
            .map_err(|e| format!("the source: {e}"))
    }

    async fn write(&self, batch: WriteBatch) -> Result<(), String> {
        let (min_sync, timeout) = self.node.member_sync();
        let response = self
            .node
            .commit_local(batch, true, min_sync, timeout)
            .await
            .map_err(|s| format!("writing the copy here: {}", s.message()))?;
        if min_sync > 0 && !response.confirmed {
            return Err(format!(
                "the copy's write was not confirmed by {min_sync} replica(s) of this group in {timeout} ms"
            ));
        }
        Ok(())
    }

    fn set(&self, f: impl FnOnce(&mut ImportState)) {
        f(&mut self.import.state.lock());
    }

    async fn run(mut self) -> Result<(), String> {
        let token = self.reach.token.clone();
        let channel = self.channel().await?;
        let status = AdminClient::new(channel.clone())
            .status(with_token(token.as_ref(), StatusRequest {}))
            .await
            .map_err(|s| format!("asking the source for its status: {}", s.message()))?
            .into_inner();
        let from = status.durable_seq;
        // Subscribe first: the stream's slot holds the source's log from
        // `from` while the scan runs.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(ReplicaMessage {
            kind: Some(replica_message::Kind::Subscribe(Subscribe {
                replica_id: format!("import-{}-{}", self.group, self.id),
                database_id: status.database_id.clone(),
                applied_seq: from,
                applied_hash: Vec::new(),
                epoch: 0,
                ranges: Vec::new(),
                // A copy, not a replica: no slot left behind, never counted
                // for the source's semi-synchronous writes.
                transient: true,
            })),
        })
        .await
        .map_err(|_| "the subscription stream closed".to_string())?;
        let mut inbound = ReplicationClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .subscribe(with_token(
                token.as_ref(),
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await
            .map_err(|s| format!("subscribing to the source's log at {from}: {}", s.message()))?
            .into_inner();
        // Whatever this node held of the range (a copy of an earlier move
        // that did not finish) goes first.
        let db = self.node.db.get().ok_or("this node has no database yet")?;
        let clear = range_deletion(&db, &self.start, self.end.as_deref())
            .map_err(|e| format!("reading this node's copy of the range: {e}"))?;
        if let Some(clear) = clear {
            self.write(clear).await?;
        }

        let mut kv = KvClient::new(channel).max_decoding_message_size(64 << 20);
        let mut next = self.start.clone();
        let mut copied = 0u64;
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            let page = kv
                .scan(with_token(
                    token.as_ref(),
                    ScanRequest {
                        start: next.clone(),
                        end: self.end.clone().unwrap_or_default(),
                        unbounded: self.end.is_none(),
                        limit: 1000,
                        ..ScanRequest::default()
                    },
                ))
                .await
                .map_err(|s| format!("scanning the source: {}", s.message()))?
                .into_inner();
            let mut batch = WriteBatch::new();
            for entry in &page.entries {
                if !self.contains(&entry.key) {
                    return Err(format!(
                        "the source answered key {} outside the range",
                        show_key(&entry.key)
                    ));
                }
                batch.put(&entry.key, &entry.value);
            }
            copied += page.entries.len() as u64;
            if !batch.is_empty() {
                self.write(batch).await?;
            }
            self.set(|s| s.keys_copied = copied);
            match (page.more, page.entries.last()) {
                (true, Some(last)) => {
                    next = last.key.clone();
                    next.push(0);
                }
                _ => break,
            }
        }
        self.set(|s| {
            s.state = "tailing".into();
            s.applied_source_seq = from;
            s.source_durable_seq = status.durable_seq;
        });
        tracing::info!(range = %self.describe(), move_id = self.id, copied, from, "range copied; applying the source's log");

        let mut applied = from;
        let mut records = 0u64;
        loop {
            let message = tokio::select! {
                m = inbound.message() => m,
                _ = self.stop.changed() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    match self.marked() {
                        Marked::Moving => continue,
                        Marked::Flipped | Marked::Ended => return Ok(()),
                    }
                }
            };
            if *self.stop.borrow() || !matches!(self.marked(), Marked::Moving) {
                return Ok(());
            }
            let message = message
                .map_err(|s| format!("the source's log stream: {}", s.message()))?
                .ok_or("the source ended its log stream")?;
            let shipped = match message.kind {
                Some(upstream_message::Kind::Records(batch)) => batch.records,
                Some(upstream_message::Kind::Record(record)) => vec![record],
                Some(upstream_message::Kind::Heartbeat(beat)) => {
                    self.set(|s| s.source_durable_seq = beat.durable_seq);
                    continue;
                }
                Some(upstream_message::Kind::Welcome(_)) | None => continue,
            };
            let mut batch = WriteBatch::new();
            let mut last = applied;
            for shipped in shipped {
                let record = VerifiedRecord::verify(shipped.record)
                    .map_err(|e| format!("a record from the source: {e}"))?;
                if record.first_seq().get() != last + 1 {
                    return Err(format!(
                        "the source's log skipped from {last} to {}",
                        record.first_seq().get()
                    ));
                }
                let view = decode_batch(record.payload())
                    .map_err(|e| format!("a record from the source at {last}: {e}"))?;
                for op in view.ops() {
                    match op {
                        BatchOp::Put { key, value } if self.contains(key) => batch.put(key, value),
                        BatchOp::Delete { key } if self.contains(key) => batch.delete(key),
                        BatchOp::DeleteRange { start, end } => {
                            if let Some((s, e)) = self.clip(start, end) {
                                batch.delete_range(s, e);
                            }
                        }
                        _ => {}
                    }
                }
                last = record.last_seq().get();
                records += 1;
            }
            if !batch.is_empty() {
                self.write(batch).await?;
            }
            applied = last;
            // What is applied here is durable (the copy's writes are
            // synced): the source may let its log go up to it.
            let _ = tx
                .send(ReplicaMessage {
                    kind: Some(replica_message::Kind::Ack(strata_proto::v1::Ack {
                        durable_seq: applied,
                        applied_seq: applied,
                    })),
                })
                .await;
            self.set(|s| {
                s.applied_source_seq = applied;
                s.source_durable_seq = s.source_durable_seq.max(applied);
                s.records_applied = records;
            });
        }
    }
}
