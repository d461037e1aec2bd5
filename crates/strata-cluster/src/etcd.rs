//! [`Coordinator`] over etcd's v3 gRPC API.
//!
//! Role: a thin translation of the trait to etcd's KV, Lease and Watch
//! services (the subset in `proto/etcd/v3.proto`, compiled at build time
//! without a system `protoc`). Requests go to any of the configured
//! members (tonic balances over them; a member that does not answer is
//! skipped after its connection fails), every request under a deadline, so
//! a partitioned node learns it cannot reach etcd within
//! [`EtcdOptions::request_timeout`] rather than hanging.
//!
//! Invariants:
//! - No call waits longer than the request timeout for an answer; a
//!   timeout is [`Error::Unavailable`], whose outcome is unknown.
//! - Nothing from the network is indexed or unwrapped: missing fields are
//!   errors naming the call.

use std::collections::VecDeque;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::coordinator::{
    CompareOp, CompareTarget, Coordinator, Error, EventKind, KeyValue, Lease, LeaseId, Op, Result,
    Revision, Txn, TxnOutcome, Watch, WatchEvent, prefix_end,
};

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]
mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::watch_client::WatchClient;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The deadline of every request. Default: 2 s.
    pub request_timeout: Duration,
    /// The deadline to open a connection. Default: 1 s.
    pub connect_timeout: Duration,
}

impl EtcdOptions {
    /// Options for `endpoints` with the default deadlines.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// The etcd coordinator. Cloning shares the connections.
///
/// # Examples
///
/// ```no_run
/// use strata_cluster::{Coordinator, EtcdCoordinator, EtcdOptions};
/// # async fn run() -> Result<(), strata_cluster::Error> {
/// let etcd = EtcdCoordinator::connect(EtcdOptions::new(["http://127.0.0.1:2379"]))?;
/// etcd.put(b"strata/demo", b"hello", None).await?;
/// assert!(etcd.get(b"strata/demo").await?.is_some());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EtcdCoordinator {
    channel: Channel,
    endpoints: String,
    timeout: Duration,
}

impl EtcdCoordinator {
    /// Connects (lazily: the first request opens the connection) to the
    /// members in `options`. Fails only on a malformed endpoint.
    pub fn connect(options: EtcdOptions) -> Result<EtcdCoordinator> {
        let endpoints = options.endpoints.join(",");
        if options.endpoints.is_empty() {
            return Err(Error::Unavailable {
                endpoint: endpoints,
                detail: "no etcd endpoint configured".into(),
            });
        }
        let mut list = Vec::new();
        for url in &options.endpoints {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| Error::Unavailable {
                    endpoint: url.clone(),
                    detail: format!("not a valid endpoint URL: {e}"),
                })?
                .connect_timeout(options.connect_timeout)
                .timeout(options.request_timeout)
                .tcp_nodelay(true);
            list.push(endpoint);
        }
        let channel = Channel::balance_list(list.into_iter());
        Ok(EtcdCoordinator {
            channel,
            endpoints,
            timeout: options.request_timeout,
        })
    }

    fn unavailable(&self, what: &str, status: &tonic::Status) -> Error {
        Error::Unavailable {
            endpoint: self.endpoints.clone(),
            detail: format!("{what}: {} ({:?})", status.message(), status.code()),
        }
    }

    /// Maps a failed call: transport trouble is `Unavailable`, anything
    /// the server decided is `Rejected` (or `LeaseExpired`).
    fn error(&self, what: &'static str, status: tonic::Status) -> Error {
        use tonic::Code;
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                self.unavailable(what, &status)
            }
            Code::NotFound if status.message().contains("lease not found") => {
                Error::LeaseExpired { id: 0 }
            }
            _ => Error::Rejected {
                what,
                detail: format!("{} ({:?})", status.message(), status.code()),
            },
        }
    }

    async fn deadline<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.error(what, status)),
            Err(_) => Err(Error::Unavailable {
                endpoint: self.endpoints.clone(),
                detail: format!("{what}: no answer within {:?}", self.timeout),
            }),
        }
    }
}

fn revision_of(header: Option<&pb::ResponseHeader>, what: &'static str) -> Result<Revision> {
    header.map(|h| h.revision).ok_or(Error::Rejected {
        what,
        detail: "the response has no header".into(),
    })
}

fn from_pb(kv: pb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: (kv.lease != 0).then_some(LeaseId(kv.lease)),
    }
}

fn compare_to_pb(c: crate::coordinator::Compare) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget as Target, TargetUnion};
    let result = match c.op {
        CompareOp::Equal => CompareResult::Equal,
        CompareOp::NotEqual => CompareResult::NotEqual,
        CompareOp::Greater => CompareResult::Greater,
        CompareOp::Less => CompareResult::Less,
    };
    let (target, union) = match c.target {
        CompareTarget::Version(v) => (Target::Version, TargetUnion::Version(v)),
        CompareTarget::CreateRevision(r) => (Target::Create, TargetUnion::CreateRevision(r)),
        CompareTarget::ModRevision(r) => (Target::Mod, TargetUnion::ModRevision(r)),
        CompareTarget::Value(v) => (Target::Value, TargetUnion::Value(v)),
        CompareTarget::Lease(l) => (Target::Lease, TargetUnion::Lease(l)),
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: c.key,
        target_union: Some(union),
    }
}

fn op_to_pb(op: Op) -> pb::RequestOp {
    use pb::request_op::Request;
    let request = match op {
        Op::Put { key, value, lease } => Request::RequestPut(pb::PutRequest {
            key,
            value,
            lease: lease.map_or(0, |l| l.0),
        }),
        Op::Delete { key } => Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key,
            range_end: Vec::new(),
        }),
    };
    pb::RequestOp {
        request: Some(request),
    }
}

/// Appends a watch response's events to `pending`, in order.
fn queue_events(pending: &mut VecDeque<WatchEvent>, events: Vec<pb::Event>) -> Result<()> {
    for event in events {
        let Some(kv) = event.kv else {
            return Err(Error::WatchEnded {
                detail: "a watch event without its key".into(),
            });
        };
        let kind = if event.r#type == pb::event::EventType::Delete as i32 {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        pending.push_back(WatchEvent {
            kind,
            kv: from_pb(kv),
        });
    }
    Ok(())
}

/// A watch on etcd: one Watch stream carrying one watcher.
#[derive(Debug)]
pub struct EtcdWatch {
    /// Kept open: dropping it would end the request half of the stream.
    _requests: tokio::sync::mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
    pending: VecDeque<WatchEvent>,
}

impl Watch for EtcdWatch {
    async fn next(&mut self) -> Result<WatchEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let response = match self.responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(Error::WatchEnded {
                        detail: "etcd closed the watch stream".into(),
                    });
                }
                Err(status) => {
                    return Err(Error::WatchEnded {
                        detail: format!("{} ({:?})", status.message(), status.code()),
                    });
                }
            };
            if response.canceled {
                return Err(if response.compact_revision > 0 {
                    Error::Compacted {
                        requested: 0,
                        compacted: response.compact_revision,
                    }
                } else {
                    Error::WatchEnded {
                        detail: format!("etcd canceled the watch: {}", response.cancel_reason),
                    }
                });
            }
            queue_events(&mut self.pending, response.events)?;
        }
    }
}

impl Coordinator for EtcdCoordinator {
    type Watch = EtcdWatch;

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let request = pb::LeaseGrantRequest {
            ttl: i64::try_from(secs.max(1)).unwrap_or(i64::MAX),
            id: 0,
        };
        let mut client = LeaseClient::new(self.channel.clone());
        let response = self
            .deadline("lease grant", client.lease_grant(request))
            .await?;
        if !response.error.is_empty() {
            return Err(Error::Rejected {
                what: "lease grant",
                detail: response.error,
            });
        }
        Ok(Lease {
            id: LeaseId(response.id),
            ttl: Duration::from_secs(u64::try_from(response.ttl).unwrap_or(0)),
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let mut client = LeaseClient::new(self.channel.clone());
        let request = tokio_stream::once(pb::LeaseKeepAliveRequest { id: lease.0 });
        let mut responses = self
            .deadline("lease keep-alive", client.lease_keep_alive(request))
            .await?;
        let answer = tokio::time::timeout(self.timeout, responses.message()).await;
        match answer {
            Ok(Ok(Some(response))) if response.ttl > 0 => Ok(Duration::from_secs(
                u64::try_from(response.ttl).unwrap_or(0),
            )),
            Ok(Ok(Some(_))) => Err(Error::LeaseExpired { id: lease.0 }),
            Ok(Ok(None)) => Err(Error::Unavailable {
                endpoint: self.endpoints.clone(),
                detail: "lease keep-alive: the stream ended without an answer".into(),
            }),
            Ok(Err(status)) => Err(match self.error("lease keep-alive", status) {
                Error::LeaseExpired { .. } => Error::LeaseExpired { id: lease.0 },
                other => other,
            }),
            Err(_) => Err(Error::Unavailable {
                endpoint: self.endpoints.clone(),
                detail: format!("lease keep-alive: no answer within {:?}", self.timeout),
            }),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut client = LeaseClient::new(self.channel.clone());
        match self
            .deadline(
                "lease revoke",
                client.lease_revoke(pb::LeaseRevokeRequest { id: lease.0 }),
            )
            .await
        {
            Ok(_) | Err(Error::LeaseExpired { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let mut client = KvClient::new(self.channel.clone());
        let request = pb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let response = self.deadline("get", client.range(request)).await?;
        Ok(response.kvs.into_iter().next().map(from_pb))
    }

    async fn list(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, Revision)> {
        let mut client = KvClient::new(self.channel.clone());
        let request = pb::RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        };
        let response = self.deadline("list", client.range(request)).await?;
        let revision = revision_of(response.header.as_ref(), "list")?;
        if response.more {
            return Err(Error::Rejected {
                what: "list",
                detail: "etcd answered part of the range (more is set) without a limit".into(),
            });
        }
        Ok((response.kvs.into_iter().map(from_pb).collect(), revision))
    }

    async fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        let mut client = KvClient::new(self.channel.clone());
        let request = pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: lease.map_or(0, |l| l.0),
        };
        let response = match self.deadline("put", client.put(request)).await {
            Err(Error::LeaseExpired { .. }) => {
                return Err(Error::LeaseExpired {
                    id: lease.map_or(0, |l| l.0),
                });
            }
            other => other?,
        };
        revision_of(response.header.as_ref(), "put")
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        let mut client = KvClient::new(self.channel.clone());
        let request = pb::DeleteRangeRequest {
            key: key.to_vec(),
            range_end: Vec::new(),
        };
        let response = self
            .deadline("delete", client.delete_range(request))
            .await?;
        Ok(response.deleted > 0)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let leases: Vec<i64> = txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| match op {
                Op::Put {
                    lease: Some(id), ..
                } => Some(id.0),
                _ => None,
            })
            .collect();
        let request = pb::TxnRequest {
            compare: txn.compare.into_iter().map(compare_to_pb).collect(),
            success: txn.success.into_iter().map(op_to_pb).collect(),
            failure: txn.failure.into_iter().map(op_to_pb).collect(),
        };
        let mut client = KvClient::new(self.channel.clone());
        let response = match self.deadline("transaction", client.txn(request)).await {
            Err(Error::LeaseExpired { .. }) => {
                return Err(Error::LeaseExpired {
                    id: leases.first().copied().unwrap_or(0),
                });
            }
            other => other?,
        };
        Ok(TxnOutcome {
            succeeded: response.succeeded,
            revision: revision_of(response.header.as_ref(), "transaction")?,
        })
    }

    async fn watch(&self, prefix: &[u8], start: Revision) -> Result<EtcdWatch> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: prefix.to_vec(),
                    range_end: prefix_end(prefix),
                    start_revision: start,
                    progress_notify: false,
                },
            )),
        };
        tx.send(create).await.map_err(|_| Error::WatchEnded {
            detail: "the watch request channel closed".into(),
        })?;
        let mut client = WatchClient::new(self.channel.clone());
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut responses = self.deadline("watch", client.watch(stream)).await?;
        // The first answer confirms (or refuses) the watcher.
        let first = tokio::time::timeout(self.timeout, responses.message()).await;
        let mut pending = VecDeque::new();
        match first {
            Ok(Ok(Some(response))) => {
                if response.canceled {
                    return Err(if response.compact_revision > 0 {
                        Error::Compacted {
                            requested: start,
                            compacted: response.compact_revision,
                        }
                    } else {
                        Error::Rejected {
                            what: "watch",
                            detail: response.cancel_reason,
                        }
                    });
                }
                queue_events(&mut pending, response.events)?;
            }
            Ok(Ok(None)) => {
                return Err(Error::WatchEnded {
                    detail: "etcd closed the watch stream before confirming it".into(),
                });
            }
            Ok(Err(status)) => return Err(self.error("watch", status)),
            Err(_) => {
                return Err(Error::Unavailable {
                    endpoint: self.endpoints.clone(),
                    detail: format!("watch: not confirmed within {:?}", self.timeout),
                });
            }
        }
        Ok(EtcdWatch {
            _requests: tx,
            responses,
            pending,
        })
    }
}
