//! Fake Strata nodes for the client's tests: tonic `Kv` and `Admin`
//! servers on 127.0.0.1 that answer as a script says (take writes at an
//! epoch, refuse them as "not primary" naming another node, fence them
//! with an unknown outcome, answer reads from a given epoch), and count
//! what they were asked.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use strata_proto::v1::admin_server::{Admin, AdminServer};
use strata_proto::v1::kv_server::{Kv, KvServer};
use strata_proto::v1::{
    DeleteRequest, DigestRequest, DigestResponse, GetRequest, GetResponse, KeyValue,
    MergeRangesRequest, MergeRangesResponse, PipelineRequest, PipelineResponse, PromoteRequest,
    PromoteResponse, PutRequest, RangesRequest, RangesResponse, ScanRequest, ScanResponse,
    SplitRangeRequest, SplitRangeResponse, StatusRequest, StatusResponse, WriteRequest,
    WriteResponse,
};
use tonic::{Request, Response, Status};

/// How a fake node answers a write.
#[derive(Debug, Clone)]
pub(crate) enum OnWrite {
    /// Applies it at this epoch.
    Accept { epoch: u64 },
    /// Refuses it as not primary, naming this primary (or none).
    NotPrimary {
        node: String,
        address: String,
        epoch: Option<u64>,
    },
    /// Fenced while the write was in flight: UNAVAILABLE with
    /// `strata-outcome: unknown`.
    FencedInFlight,
    /// Refuses it as fenced before it began: UNAVAILABLE, no outcome.
    FencedBefore,
    /// Answers only after this long.
    Slow(Duration),
    /// Refuses it by the range map: FAILED_PRECONDITION "wrong group"
    /// naming the owner and the node's map revision.
    WrongGroup { owner: String, map_revision: i64 },
    /// Refuses it during a move's cut-over: UNAVAILABLE "range moving".
    RangeMoving,
}

/// What a fake node does.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) name: String,
    pub(crate) on_write: OnWrite,
    /// The epoch its reads are answered from.
    pub(crate) read_epoch: u64,
    /// Its role in Admin.Status.
    pub(crate) role: &'static str,
    /// The epoch it reports in Admin.Status.
    pub(crate) status_epoch: u64,
    /// The primary it names in Admin.Status.
    pub(crate) primary_address: String,
    pub(crate) lease_millis_left: u64,
    /// The keys its scans answer from (none: one entry `k`).
    pub(crate) data: Vec<&'static str>,
}

impl Script {
    pub(crate) fn primary(name: &str, epoch: u64) -> Script {
        Script {
            name: name.into(),
            on_write: OnWrite::Accept { epoch },
            read_epoch: epoch,
            role: "primary",
            status_epoch: epoch,
            primary_address: String::new(),
            lease_millis_left: 0,
            data: Vec::new(),
        }
    }

    pub(crate) fn replica(name: &str, epoch: u64, primary_address: &str) -> Script {
        Script {
            name: name.into(),
            on_write: OnWrite::NotPrimary {
                node: String::new(),
                address: primary_address.into(),
                epoch: Some(epoch),
            },
            read_epoch: epoch,
            role: "replica",
            status_epoch: epoch,
            primary_address: primary_address.into(),
            lease_millis_left: 0,
            data: Vec::new(),
        }
    }
}

/// A fake node's state.
#[derive(Debug)]
pub(crate) struct FakeNode {
    pub(crate) script: Mutex<Script>,
    /// The last sequence number applied (writes add one).
    pub(crate) applied: AtomicU64,
    pub(crate) writes: AtomicUsize,
    pub(crate) reads: AtomicUsize,
    pub(crate) statuses: AtomicUsize,
    /// The `min_seq` of every read, in order.
    pub(crate) min_seqs: Mutex<Vec<u64>>,
}

/// A running fake node.
pub(crate) struct Running {
    pub(crate) address: String,
    pub(crate) node: Arc<FakeNode>,
}

impl Running {
    pub(crate) fn writes(&self) -> usize {
        self.node.writes.load(Ordering::SeqCst)
    }

    pub(crate) fn reads(&self) -> usize {
        self.node.reads.load(Ordering::SeqCst)
    }

    pub(crate) fn statuses(&self) -> usize {
        self.node.statuses.load(Ordering::SeqCst)
    }

    pub(crate) fn set(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.node.script.lock());
    }
}

/// Starts a fake node on 127.0.0.1 with `applied` as its last sequence
/// number.
pub(crate) async fn start(script: Script, applied: u64) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let node = Arc::new(FakeNode {
        script: Mutex::new(script),
        applied: AtomicU64::new(applied),
        writes: AtomicUsize::new(0),
        reads: AtomicUsize::new(0),
        statuses: AtomicUsize::new(0),
        min_seqs: Mutex::new(Vec::new()),
    });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(KvServer::from_arc(Arc::clone(&node)))
        .add_service(AdminServer::from_arc(Arc::clone(&node)))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    Running { address, node }
}

/// An address nothing listens on.
pub(crate) async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    address
}

fn with_metadata(mut status: Status, pairs: &[(&'static str, String)]) -> Status {
    for (key, value) in pairs {
        status.metadata_mut().insert(*key, value.parse().unwrap());
    }
    status
}

impl FakeNode {
    async fn take_write(&self) -> Result<Response<WriteResponse>, Status> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let on_write = self.script.lock().on_write.clone();
        match on_write {
            OnWrite::Accept { epoch } => {
                let seq = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Response::new(WriteResponse {
                    seq,
                    epoch,
                    ..WriteResponse::default()
                }))
            }
            OnWrite::NotPrimary {
                node,
                address,
                epoch,
            } => {
                let mut pairs = Vec::new();
                if !address.is_empty() {
                    pairs.push(("strata-primary-node", node));
                    pairs.push(("strata-primary-address", address));
                }
                if let Some(epoch) = epoch {
                    pairs.push(("strata-epoch", epoch.to_string()));
                }
                Err(with_metadata(
                    Status::failed_precondition("not primary: this node follows another"),
                    &pairs,
                ))
            }
            OnWrite::FencedInFlight => Err(with_metadata(
                Status::unavailable(
                    "fenced: the lease could not be proven while the write was in flight",
                ),
                &[("strata-outcome", "unknown".into())],
            )),
            OnWrite::FencedBefore => Err(Status::unavailable("fenced: the lease is not proven")),
            OnWrite::WrongGroup {
                owner,
                map_revision,
            } => Err(with_metadata(
                Status::failed_precondition(format!("wrong group: the key is owned by {owner}")),
                &[
                    ("strata-range-group", owner),
                    ("strata-map-revision", map_revision.to_string()),
                ],
            )),
            OnWrite::RangeMoving => Err(with_metadata(
                Status::unavailable("range moving: the range is in its cut-over"),
                &[("strata-range-moving", "1".into())],
            )),
            OnWrite::Slow(pause) => {
                tokio::time::sleep(pause).await;
                Err(Status::unavailable("too late"))
            }
        }
    }

    /// The read's epoch and seq, or UNAVAILABLE when `min_seq` is not
    /// applied.
    fn take_read(&self, min_seq: u64) -> Result<(u64, u64, String), Status> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.min_seqs.lock().push(min_seq);
        let applied = self.applied.load(Ordering::SeqCst);
        if min_seq > applied {
            return Err(Status::unavailable(format!(
                "min_seq {min_seq} not applied within the timeout (applied {applied})"
            )));
        }
        let script = self.script.lock();
        Ok((script.read_epoch, applied, script.name.clone()))
    }
}

#[tonic::async_trait]
impl Kv for FakeNode {
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<WriteResponse>, Status> {
        self.take_write().await
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<WriteResponse>, Status> {
        self.take_write().await
    }

    async fn write(&self, _: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        self.take_write().await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (epoch, seq, name) = self.take_read(request.get_ref().min_seq)?;
        Ok(Response::new(GetResponse {
            found: true,
            value: format!("from {name}").into_bytes(),
            seq,
            epoch,
        }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let (epoch, seq, name) = self.take_read(request.get_ref().min_seq)?;
        let data = self.script.lock().data.clone();
        if data.is_empty() {
            return Ok(Response::new(ScanResponse {
                entries: vec![KeyValue {
                    key: b"k".to_vec(),
                    value: format!("from {name}").into_bytes(),
                }],
                seq,
                more: false,
                epoch,
            }));
        }
        let r = request.get_ref();
        let mut keys: Vec<&str> = data
            .into_iter()
            .filter(|k| {
                k.as_bytes() >= r.start.as_slice()
                    && (r.unbounded || k.as_bytes() < r.end.as_slice())
            })
            .collect();
        if r.reverse {
            keys.reverse();
        }
        let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok(Response::new(ScanResponse {
            entries: keys
                .into_iter()
                .map(|k| KeyValue {
                    key: k.as_bytes().to_vec(),
                    value: format!("from {name}").into_bytes(),
                })
                .collect(),
            seq,
            more,
            epoch,
        }))
    }

    type PipelineStream = tokio_stream::Empty<Result<PipelineResponse, Status>>;

    async fn pipeline(
        &self,
        _: Request<tonic::Streaming<PipelineRequest>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

#[tonic::async_trait]
impl Admin for FakeNode {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.statuses.fetch_add(1, Ordering::SeqCst);
        let script = self.script.lock();
        Ok(Response::new(StatusResponse {
            role: script.role.into(),
            epoch: script.status_epoch,
            last_seq: self.applied.load(Ordering::SeqCst),
            node: script.name.clone(),
            primary_address: script.primary_address.clone(),
            lease_millis_left: script.lease_millis_left,
            ..StatusResponse::default()
        }))
    }

    async fn digest(&self, _: Request<DigestRequest>) -> Result<Response<DigestResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn ranges(&self, _: Request<RangesRequest>) -> Result<Response<RangesResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn split_range(
        &self,
        _: Request<SplitRangeRequest>,
    ) -> Result<Response<SplitRangeResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn merge_ranges(
        &self,
        _: Request<MergeRangesRequest>,
    ) -> Result<Response<MergeRangesResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn promote(
        &self,
        _: Request<PromoteRequest>,
    ) -> Result<Response<PromoteResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

/// Cluster records in a `MemCoordinator`, as the agent writes them.
pub(crate) mod records {
    use strata_cluster::{
        ClusterKeys, Coordinator, EpochStart, MemCoordinator, MemberRecord, Role,
    };

    pub(crate) fn keys() -> ClusterKeys {
        ClusterKeys::new("strata", "shop").unwrap()
    }

    pub(crate) async fn member(
        store: &MemCoordinator,
        node: &str,
        address: &str,
        group: &str,
        role: Role,
        epoch: u64,
    ) {
        let record = MemberRecord {
            v: 1,
            node: node.into(),
            address: address.into(),
            group: group.into(),
            role,
            full: true,
            applied_seq: 0,
            epoch,
        };
        store
            .put(&keys().member(node).unwrap(), &record.encode(), None)
            .await
            .unwrap();
    }

    /// Makes `node` the primary of `group` (afresh: a new key, so a new
    /// epoch); returns the epoch.
    pub(crate) async fn primary(store: &MemCoordinator, group: &str, node: &str) -> u64 {
        let key = keys().primary(group).unwrap();
        store.delete(&key).await.unwrap();
        store.put(&key, node.as_bytes(), None).await.unwrap() as u64
    }

    pub(crate) async fn history(store: &MemCoordinator, group: &str, epoch: u64, start_seq: u64) {
        let entry = EpochStart {
            v: 1,
            epoch,
            node: format!("n{epoch}"),
            start_seq,
        };
        store
            .put(
                &keys().history_entry(group, epoch).unwrap(),
                &entry.encode(),
                None,
            )
            .await
            .unwrap();
    }
}
