//! The client services of a node: `Kv` (writes on a primary, reads on any
//! node with `min_seq` and staleness waits) and `Admin` (status, digest).
//!
//! Work that may block runs on tokio's blocking pool: synced and
//! semi-synchronous writes, reads that wait for a commit token or a
//! staleness bound, scans. Reads whose waits are already met (the common
//! case) and unsynced writes are answered on the runtime thread that
//! decoded them: an engine get or an unsynced group-commit write takes a
//! few microseconds, less than the hop to another thread and back. At most
//! [`crate::node::inline_writers`] runtime threads are inside an engine write at once
//! (others take the blocking pool), so a write stall never holds every
//! runtime thread and reads keep being answered through one.
//!
//! `Pipeline` streams are served by [`crate::pipeline`]: requests answered
//! in order, runs of writes committed as one engine write, a bounded number
//! of requests read ahead.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use strata::{Error, SeqNo, WriteBatch, WriteOptions};
use strata_proto::v1::admin_server::Admin;
use strata_proto::v1::kv_server::Kv;
use strata_proto::v1::{
    DeleteRequest, DigestRequest, DigestResponse, GetRequest, GetResponse, KeyValue,
    MergeRangesRequest, MergeRangesResponse, PipelineRequest, PipelineResponse, PromoteRequest,
    PromoteResponse, PutRequest, RangeDigest, RangeState, RangesRequest, RangesResponse,
    ReplicaState, ScanRequest, ScanResponse, SplitRangeRequest, SplitRangeResponse, StatusRequest,
    StatusResponse, WriteRequest, WriteResponse, pipeline_request, pipeline_response,
};
use strata_replication::ReadOptions;
use strata_replication::auth::Role as Access;
use strata_replication::digest::{DigestError, DigestQuery};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::node::{Node, Role};
use crate::requests::{add_operations, delete_to_write, put_to_write};

fn to_status(error: &Error) -> Status {
    match error {
        Error::InvalidArgument(text) => Status::invalid_argument(text.clone()),
        Error::ReadOnly(text) => Status::failed_precondition(text.clone()),
        Error::Closed => Status::unavailable("the node is shutting down"),
        other => Status::internal(other.to_string()),
    }
}

/// The waits of a read request (0: none; timeout 0: one second).
fn read_options(min_seq: u64, max_staleness_millis: u64, timeout_millis: u64) -> ReadOptions {
    ReadOptions {
        min_seq: (min_seq > 0).then_some(SeqNo(min_seq)),
        max_staleness: (max_staleness_millis > 0)
            .then(|| Duration::from_millis(max_staleness_millis)),
        timeout: millis(timeout_millis, 1000),
    }
}

fn millis(value: u64, default: u64) -> Duration {
    Duration::from_millis(if value == 0 {
        default
    } else {
        value.min(60_000)
    })
}

/// Who may call what: `Kv` and `Admin` reads take a client or admin
/// credential; `Admin` changes an admin one. Replica credentials
/// replicate; one that is not limited to key ranges may also `Scan` and
/// read `Status` (it may read the whole log already): a range move's copy
/// into another group does both with its member's replica credential.
const READERS: &[Access] = &[Access::Client, Access::Admin];
const WRITERS: &[Access] = &[Access::Client, Access::Admin];
const ADMINS: &[Access] = &[Access::Admin];
const COPIERS: &[Access] = &[Access::Client, Access::Admin, Access::Replica];

impl Node {
    /// Refuses the call unless its credential has one of `roles`; counts
    /// refusals as outcome "denied". Returns who is calling.
    pub(crate) fn allow<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
        roles: &[Access],
        what: &str,
    ) -> Result<strata_replication::auth::Principal, Status> {
        let allowed = self.auth.authenticate(request).and_then(|principal| {
            principal.require(roles, what)?;
            Ok(principal)
        });
        if let Err(status) = &allowed {
            self.metrics
                .requests
                .get_or_create(&crate::request_metrics::RequestLabels {
                    method,
                    outcome: "denied",
                })
                .inc();
            tracing::debug!(method, code = ?status.code(), "request refused");
        }
        allowed
    }

    /// Refuses the call unless its credential is a reader's or a full
    /// replica's (see [`COPIERS`]).
    fn allow_copier<T>(&self, request: &Request<T>, method: &'static str) -> Result<(), Status> {
        let principal = self.allow(request, method, COPIERS, "read")?;
        if principal.role == Access::Replica && !principal.ranges.is_empty() {
            return Err(Status::permission_denied(format!(
                "a replica credential limited to key ranges may not call {method}"
            )));
        }
        Ok(())
    }

    /// The key ranges this node holds (empty: every key).
    fn held_ranges(&self) -> strata_replication::KeyIntervals {
        match &*self.role() {
            Role::Primary | Role::Standby => Vec::new(),
            Role::Replica { replica, .. } => replica.ranges().to_vec(),
        }
    }

    pub(crate) fn db(&self) -> Result<Arc<strata::Db>, Status> {
        self.db
            .get()
            .ok_or_else(|| Status::unavailable("the node has no database yet (bootstrapping)"))
    }
}

/// The answers of a `Pipeline` stream.
pub(crate) type PipelineAnswers =
    Pin<Box<dyn Stream<Item = Result<PipelineResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Kv for Node {
    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        self.allow(&request, "write", WRITERS, "write")?;
        self.write_timed(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<WriteResponse>, Status> {
        self.allow(&request, "write", WRITERS, "write")?;
        self.write_timed(put_to_write(request.into_inner()))
            .await
            .map(Response::new)
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        self.allow(&request, "write", WRITERS, "write")?;
        self.write_timed(delete_to_write(request.into_inner()))
            .await
            .map(Response::new)
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.allow_copier(&request, "scan")?;
        let started = std::time::Instant::now();
        let result = self.scan_inner(request.into_inner()).await;
        self.metrics
            .read_seconds
            .observe(started.elapsed().as_secs_f64());
        self.count("scan", result.is_ok());
        result
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.allow(&request, "get", READERS, "read")?;
        self.get_timed(request.into_inner())
            .await
            .map(Response::new)
    }

    type PipelineStream = PipelineAnswers;

    async fn pipeline(
        &self,
        request: Request<Streaming<PipelineRequest>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        // The credentials that may read are those that may write
        // (READERS == WRITERS); checked for the stream, and again after
        // every reload of the credentials.
        let principal = self.allow(&request, "pipeline", READERS, "read and write")?;
        Ok(Response::new(Box::pin(crate::pipeline::serve(
            self.clone(),
            principal,
            request.into_inner(),
        ))))
    }
}

impl Node {
    /// The answer to one request of a `Pipeline` stream.
    pub(crate) async fn answer_pipelined(&self, request: PipelineRequest) -> PipelineResponse {
        let sequence = request.sequence;
        let outcome = match request.operation {
            Some(pipeline_request::Operation::Get(get)) => self
                .get_timed(get)
                .await
                .map(pipeline_response::Answer::Get),
            Some(pipeline_request::Operation::Put(put)) => self
                .write_timed(put_to_write(put))
                .await
                .map(pipeline_response::Answer::Write),
            Some(pipeline_request::Operation::Delete(delete)) => self
                .write_timed(delete_to_write(delete))
                .await
                .map(pipeline_response::Answer::Write),
            Some(pipeline_request::Operation::Write(write)) => self
                .write_timed(write)
                .await
                .map(pipeline_response::Answer::Write),
            None => Err(Status::invalid_argument(format!(
                "request {sequence}: no operation (get, put, delete or write)"
            ))),
        };
        crate::pipeline::answered(sequence, outcome)
    }

    pub(crate) async fn get_timed(&self, request: GetRequest) -> Result<GetResponse, Status> {
        let started = std::time::Instant::now();
        let result = self.get_inner(request).await;
        self.metrics
            .read_seconds
            .observe(started.elapsed().as_secs_f64());
        self.count("get", result.is_ok());
        result
    }

    pub(crate) async fn write_timed(&self, request: WriteRequest) -> Result<WriteResponse, Status> {
        let started = std::time::Instant::now();
        let result = self.write_inner(request).await;
        self.metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        self.count("write", result.is_ok());
        result
    }

    pub(crate) fn count(&self, method: &'static str, ok: bool) {
        self.metrics
            .requests
            .get_or_create(&crate::request_metrics::RequestLabels {
                method,
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    async fn write_inner(&self, request: WriteRequest) -> Result<WriteResponse, Status> {
        let mut batch = WriteBatch::new();
        add_operations(&mut batch, &request.operations)?;
        let spans = self
            .sharded()
            .map(|_| crate::ownership::spans_of(&request.operations));
        self.commit(
            batch,
            spans,
            request.sync,
            request.min_replicas,
            request.replica_timeout_millis,
        )
        .await
    }

    /// Writes `batch`; semi-synchronously if `min_replicas > 0`.
    pub(crate) async fn commit(
        &self,
        batch: WriteBatch,
        spans: Option<Vec<crate::ownership::Span>>,
        sync: bool,
        min_replicas: u32,
        replica_timeout_millis: u64,
    ) -> Result<WriteResponse, Status> {
        // A cluster member takes a write only under a valid leadership, and
        // acknowledges it only if the leadership is still valid once the
        // write is durable (and confirmed by min_sync_replicas replicas).
        if let Some(member) = &self.cluster {
            let leadership = member.admit()?;
            let wanted = min_replicas.max(member.min_sync_replicas);
            let timeout = if replica_timeout_millis == 0 {
                member.sync_timeout_millis
            } else {
                replica_timeout_millis
            };
            let response = match (&member.ownership, spans) {
                (Some(ownership), Some(spans)) => {
                    self.commit_engine(
                        batch,
                        Some((Arc::clone(ownership), spans)),
                        sync || wanted > 0,
                        wanted,
                        timeout,
                    )
                    .await?
                }
                (Some(_), None) => {
                    return Err(Status::internal(
                        "a write on a sharded member came without its keys",
                    ));
                }
                _ => {
                    self.commit_local(batch, sync || wanted > 0, wanted, timeout)
                        .await?
                }
            };
            member.acknowledge(&leadership)?;
            if member.min_sync_replicas > 0 && !response.confirmed {
                return Err(crate::member::unknown_outcome(Status::unavailable(
                    format!(
                        "not confirmed by {} replica(s) within {timeout} ms (min_sync_replicas): durable here, but not acknowledged; it may or may not survive a failover",
                        member.min_sync_replicas
                    ),
                )));
            }
            return Ok(response);
        }
        self.commit_local(batch, sync, min_replicas, replica_timeout_millis)
            .await
    }

    /// Writes `batch` to the engine (semi-synchronously if
    /// `min_replicas > 0`), without the membership's checks.
    pub(crate) async fn commit_local(
        &self,
        batch: WriteBatch,
        sync: bool,
        min_replicas: u32,
        replica_timeout_millis: u64,
    ) -> Result<WriteResponse, Status> {
        self.commit_engine(batch, None, sync, min_replicas, replica_timeout_millis)
            .await
    }

    /// [`Node::commit_local`], under the ownership gate with `gate`: the
    /// keys are checked, and the engine takes the write, before a freeze
    /// can name its sequence number.
    async fn commit_engine(
        &self,
        batch: WriteBatch,
        gate: Option<(
            Arc<crate::ownership::Ownership>,
            Vec<crate::ownership::Span>,
        )>,
        sync: bool,
        min_replicas: u32,
        replica_timeout_millis: u64,
    ) -> Result<WriteResponse, Status> {
        // A replica's database refuses writes (ReadOnly, naming the primary)
        // until it is promoted.
        let db = self.db()?;
        let epoch = self.epoch.get();
        let committed = move |seq: SeqNo| WriteResponse {
            seq: seq.get(),
            replicas: 0,
            confirmed: true,
            epoch,
        };
        // An unsynced write waits for no disk: on this thread, if no other
        // runtime thread is writing.
        if !sync
            && min_replicas == 0
            && gate.is_none()
            && let Ok(_permit) = self.inline_writers.try_acquire()
        {
            return db
                .write(batch, &WriteOptions { sync: false })
                .map(committed)
                .map_err(|e| to_status(&e));
        }
        let node = self.clone();
        tokio::task::spawn_blocking(move || {
            let _gate = match &gate {
                Some((ownership, spans)) => Some(ownership.admit_write(spans)?),
                None => None,
            };
            if min_replicas > 0 {
                node.upstream
                    .write(
                        batch,
                        min_replicas as usize,
                        millis(replica_timeout_millis, 1000),
                    )
                    .map(|o| WriteResponse {
                        seq: o.seq.get(),
                        replicas: o.replicas as u32,
                        confirmed: o.confirmed,
                        epoch,
                    })
            } else {
                db.write(batch, &WriteOptions { sync }).map(committed)
            }
            .map_err(|e| to_status(&e))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    /// The ranges this node's group owns, on a sharded member.
    pub(crate) fn sharded(&self) -> Option<&Arc<crate::ownership::Ownership>> {
        self.cluster.as_ref().and_then(|m| m.ownership.as_ref())
    }

    /// On a sharded member, refuses a read of keys (`span`, built only
    /// then) this node's group does not own.
    fn check_read(&self, span: impl FnOnce() -> crate::ownership::Span) -> Result<(), Status> {
        match self.sharded() {
            Some(ownership) => ownership.check(&[span()]),
            None => Ok(()),
        }
    }

    /// A snapshot if the read's waits are met now, without blocking:
    /// `None` if it would have to wait.
    fn snapshot_now(&self, options: &ReadOptions) -> Result<Option<strata::Snapshot>, Status> {
        let now = ReadOptions {
            timeout: Duration::ZERO,
            ..*options
        };
        match &*self.role() {
            Role::Replica { replica, .. } => Ok(replica.snapshot(&now).ok()),
            Role::Primary | Role::Standby => {
                let db = self.db()?;
                Ok(match now.min_seq {
                    Some(min) if !db.wait_for_seq(min, Duration::ZERO) => None,
                    _ => Some(db.snapshot()),
                })
            }
        }
    }

    /// [`Node::read_snapshot`] and the epoch whose history it is: the
    /// epoch read before and after the snapshot, retried while they differ
    /// (a replica raises its epoch when it starts following a new primary,
    /// before it applies that primary's history, and installs a snapshot
    /// only once no reader holds the old database), so an answer never
    /// names an epoch its data is not from.
    fn read_in_one_epoch(&self, options: &ReadOptions) -> Result<(u64, strata::Snapshot), Status> {
        for _ in 0..3 {
            let before = self.epoch.get();
            let snapshot = self.read_snapshot(options)?;
            if self.epoch.get() == before {
                return Ok((before, snapshot));
            }
        }
        Err(Status::unavailable(
            "the node moved to a new epoch during the read (a failover); retry",
        ))
    }

    /// A snapshot once the read's waits are met (a replica waits for
    /// `min_seq` and staleness; a primary for `min_seq`). Blocking.
    fn read_snapshot(&self, options: &ReadOptions) -> Result<strata::Snapshot, Status> {
        match &*self.role() {
            Role::Replica { replica, .. } => replica
                .snapshot(options)
                .map_err(|e| Status::unavailable(e.to_string())),
            Role::Primary | Role::Standby => {
                let db = self.db()?;
                if let Some(min) = options.min_seq
                    && !db.wait_for_seq(min, options.timeout)
                {
                    return Err(Status::unavailable(format!(
                        "not yet at {} (at {})",
                        min.get(),
                        db.last_seq().get()
                    )));
                }
                Ok(db.snapshot())
            }
        }
    }

    async fn scan_inner(&self, request: ScanRequest) -> Result<Response<ScanResponse>, Status> {
        let limit = match request.limit {
            0 => 1000,
            n if n > 100_000 => {
                return Err(Status::invalid_argument(
                    "limit: at most 100000 entries per scan",
                ));
            }
            n => n as usize,
        };
        if !request.unbounded && request.end <= request.start {
            return Err(Status::invalid_argument(
                "end must be above start (or set unbounded)",
            ));
        }
        self.check_read(|| {
            crate::ownership::Span::Range(
                request.start.clone(),
                (!request.unbounded).then(|| request.end.clone()),
            )
        })?;
        let options = read_options(
            request.min_seq,
            request.max_staleness_millis,
            request.timeout_millis,
        );
        let node = self.clone();
        let answer = tokio::task::spawn_blocking(move || -> Result<ScanResponse, Status> {
            let (epoch, snapshot) = node.read_in_one_epoch(&options)?;
            let start = std::ops::Bound::Included(request.start.as_slice());
            let end = if request.unbounded {
                std::ops::Bound::Unbounded
            } else {
                std::ops::Bound::Excluded(request.end.as_slice())
            };
            let iter = if request.reverse {
                snapshot.scan_rev((start, end))
            } else {
                snapshot.scan((start, end))
            }
            .map_err(|e| to_status(&e))?;
            let mut entries = Vec::new();
            let mut more = false;
            for item in iter {
                let (key, value) = item.map_err(|e| to_status(&e))?;
                if entries.len() == limit {
                    more = true;
                    break;
                }
                entries.push(KeyValue { key, value });
            }
            Ok(ScanResponse {
                entries,
                seq: snapshot.seq().get(),
                more,
                epoch,
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(answer))
    }

    async fn get_inner(&self, request: GetRequest) -> Result<GetResponse, Status> {
        self.check_read(|| crate::ownership::Span::Key(request.key.clone()))?;
        let options = read_options(
            request.min_seq,
            request.max_staleness_millis,
            request.timeout_millis,
        );
        let answer = move |epoch: u64, snapshot: &strata::Snapshot, key: &[u8]| {
            let value = snapshot.get(key).map_err(|e| to_status(&e))?;
            Ok(GetResponse {
                found: value.is_some(),
                value: value.unwrap_or_default(),
                seq: snapshot.seq().get(),
                epoch,
            })
        };
        // Met waits (or none): an engine get, on this thread. Otherwise the
        // wait holds a blocking-pool thread, not a runtime one, so other
        // reads go on.
        let before = self.epoch.get();
        if let Some(snapshot) = self.snapshot_now(&options)?
            && self.epoch.get() == before
        {
            return answer(before, &snapshot, &request.key);
        }
        let node = self.clone();
        tokio::task::spawn_blocking(move || -> Result<GetResponse, Status> {
            let (epoch, snapshot) = node.read_in_one_epoch(&options)?;
            answer(epoch, &snapshot, &request.key)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

#[tonic::async_trait]
impl Admin for Node {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.allow_copier(&request, "status")?;
        let db = self.db.get();
        let mut status = StatusResponse {
            role: match &*self.role() {
                Role::Primary => "primary".into(),
                Role::Standby => "standby".into(),
                Role::Replica { replica, .. } if replica.following() => "replica".into(),
                Role::Replica { .. } => "primary".into(),
            },
            last_seq: db.as_ref().map_or(0, |db| db.last_seq().get()),
            durable_seq: db.as_ref().map_or(0, |db| db.durable_seq().get()),
            epoch: self.epoch.get(),
            database_id: db
                .as_ref()
                .map(|db| db.database_id().to_le_bytes().to_vec())
                .unwrap_or_default(),
            replicas: self
                .upstream
                .replicas()
                .into_iter()
                .map(|r| ReplicaState {
                    id: r.id,
                    connected: r.connected,
                    applied_seq: r.applied_seq,
                    durable_seq: r.durable_seq,
                    lag_records: r.lag_records,
                    lag_bytes: r.lag_bytes,
                    lag_millis: r.lag_millis,
                })
                .collect(),
            ..StatusResponse::default()
        };
        if let Some(member) = &self.cluster {
            let known = member.status.borrow().clone();
            status.node.clone_from(&member.node);
            status.group.clone_from(&member.group);
            if let Some((node, address)) = known.primary_node {
                status.primary_node = node;
                status.primary_address = address;
            }
            status.lease_millis_left = member.lease_left().as_millis() as u64;
            status.fenced_writes = member.fenced_writes.load(Ordering::Relaxed);
            status.not_primary_writes = member.not_primary_writes.load(Ordering::Relaxed);
            status.discarded_records = member.discarded_records.load(Ordering::Relaxed);
        }
        if let Role::Replica { replica, upstream } = &*self.role() {
            let f = replica.figures();
            status.upstream = upstream.clone();
            status.upstream_durable_seq = f.upstream_durable_seq;
            status.records_applied = f.records_applied;
            status.duplicates_ignored = f.duplicates_ignored;
            status.gaps = f.gaps;
            status.hash_mismatches = f.hash_mismatches;
            status.bad_records = f.bad_records;
            status.reconnects = f.reconnects;
            status.bootstraps = f.bootstraps;
            status.refusals = f.refusals;
            status.upstream_shutdowns = f.upstream_shutdowns;
            status.credential_refusals = f.credential_refusals;
            status.last_error = f.last_error.unwrap_or_default();
        }
        Ok(Response::new(status))
    }

    async fn ranges(
        &self,
        request: Request<RangesRequest>,
    ) -> Result<Response<RangesResponse>, Status> {
        self.allow(&request, "ranges", READERS, "read ranges")?;
        let db = self.db()?;
        let ranges = tokio::task::spawn_blocking(move || db.ranges())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RangesResponse {
            ranges: ranges
                .into_iter()
                .map(|r| RangeState {
                    id: r.id.0,
                    unbounded: r.end.is_none(),
                    start: r.start,
                    end: r.end.unwrap_or_default(),
                    origin: r.origin,
                    table_bytes: r.table_bytes,
                    approximate_keys: r.approximate_keys,
                    writes: r.writes,
                    reads: r.reads,
                    writes_per_sec: r.writes_per_sec,
                    pending_compaction_bytes: r.pending_compaction_bytes,
                    last_applied_seq: r.last_applied_seq.get(),
                })
                .collect(),
        }))
    }

    async fn split_range(
        &self,
        request: Request<SplitRangeRequest>,
    ) -> Result<Response<SplitRangeResponse>, Status> {
        self.allow(&request, "split_range", ADMINS, "split ranges")?;
        let at = request.into_inner().at;
        if at.is_empty() {
            return Err(Status::invalid_argument("at: a split key is required"));
        }
        let db = self.db()?;
        let (left, right) = tokio::task::spawn_blocking(move || db.split_range(&at))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(SplitRangeResponse {
            left: left.0,
            right: right.0,
        }))
    }

    async fn merge_ranges(
        &self,
        request: Request<MergeRangesRequest>,
    ) -> Result<Response<MergeRangesResponse>, Status> {
        self.allow(&request, "merge_ranges", ADMINS, "merge ranges")?;
        let request = request.into_inner();
        let db = self.db()?;
        let merged = tokio::task::spawn_blocking(move || {
            db.merge_ranges(
                strata::RangeId(request.left),
                strata::RangeId(request.right),
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| to_status(&e))?;
        Ok(Response::new(MergeRangesResponse { merged: merged.0 }))
    }

    async fn promote(
        &self,
        request: Request<PromoteRequest>,
    ) -> Result<Response<PromoteResponse>, Status> {
        self.allow(&request, "promote", ADMINS, "promote")?;
        if self.cluster.is_some() {
            return Err(Status::failed_precondition(
                "this node is a cluster member: its role is elected through etcd; hand the group over with `strata cluster failover --to NODE`",
            ));
        }
        let role = self.role();
        let Role::Replica { replica, .. } = &*role else {
            return Err(Status::failed_precondition(
                "this node is already a primary",
            ));
        };
        let epoch = replica.promote().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(PromoteResponse { epoch }))
    }

    async fn digest(
        &self,
        request: Request<DigestRequest>,
    ) -> Result<Response<DigestResponse>, Status> {
        self.allow(&request, "digest", READERS, "read the digest")?;
        let request = request.into_inner();
        let range = request
            .range
            .map(|r| {
                if !r.unbounded && r.end <= r.start {
                    return Err(Status::invalid_argument(
                        "range: end must be above start (or set unbounded)",
                    ));
                }
                Ok((r.start, (!r.unbounded).then_some(r.end)))
            })
            .transpose()?;
        let query = DigestQuery {
            seq: (request.seq > 0).then_some(SeqNo(request.seq)),
            range,
            timeout: millis(request.timeout_millis, 5000),
        };
        let held = self.held_ranges();
        let points = Arc::clone(&self.digest_points);
        let answer = tokio::task::spawn_blocking(move || points.digest(&query, &held))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e {
                DigestError::NotYet { .. } | DigestError::Unavailable => {
                    Status::unavailable(e.to_string())
                }
                DigestError::Gone { .. } => Status::failed_precondition(e.to_string()),
                DigestError::OutsideHeld => Status::invalid_argument(format!(
                    "{e} ({})",
                    strata::KeyIntervals::new(&self.held_ranges()).describe()
                )),
                other => Status::internal(other.to_string()),
            })?;
        let answer = DigestResponse {
            seq: answer.seq.get(),
            digest: answer.digest,
            keys: answer.keys,
            ranges: answer
                .ranges
                .into_iter()
                .map(|r| RangeDigest {
                    range_id: r.range.0,
                    start: r.start,
                    unbounded: r.end.is_none(),
                    end: r.end.unwrap_or_default(),
                    digest: r.digest,
                    keys: r.keys,
                })
                .collect(),
        };
        Ok(Response::new(answer))
    }
}
