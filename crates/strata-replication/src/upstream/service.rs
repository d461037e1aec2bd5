//! The `strata.v1.Replication` gRPC service: the checks of a Subscribe
//! (credential, replica id, database, epoch, history) before its pump
//! starts, and the snapshot calls.

use super::pump::Pump;
use super::*;

/// Opens the log at the replica's position and checks it continues the
/// replica's history. Returns the reader (positioned after the replica's
/// last record) and the hash of that record.
fn open_position(
    db: &Db,
    applied: u64,
    applied_hash: &[u8],
    filter: Option<&RangeFilter>,
) -> Result<(LogReader, Option<[u8; 8]>), Status> {
    let truncated = |e: Error| match e {
        Error::LogTruncated {
            requested,
            oldest_retained,
        } => Status::failed_precondition(format!(
            "this node's log no longer holds sequence number {requested} (the oldest retained is {oldest_retained}): bootstrap from a snapshot"
        )),
        Error::BeyondEnd { requested, next } => Status::out_of_range(format!(
            "sequence number {requested} is beyond this node's log (next is {next})"
        )),
        other => Status::internal(other.to_string()),
    };
    if applied == 0 {
        let oldest = LogSource::of(db).oldest_retained();
        if oldest.get() > 1 {
            return Err(Status::failed_precondition(format!(
                "this node's log starts at sequence number {}: an empty replica must bootstrap from a snapshot",
                oldest.get()
            )));
        }
        return Ok((
            LogSource::of(db).read_from(SeqNo(1)).map_err(truncated)?,
            None,
        ));
    }
    let mut reader = LogSource::of(db)
        .read_from(SeqNo(applied))
        .map_err(truncated)?;
    let record = reader
        .next(Duration::from_secs(5))
        .map_err(truncated)?
        .ok_or_else(|| {
            Status::unavailable(format!("the record holding {applied} is not readable yet"))
        })?;
    let payload = strata_format::wal::decode_record(&record.bytes)
        .map_err(|e| Status::internal(format!("this node's log record at {applied}: {e}")))?
        .payload;
    let hash = RangeFilter::shown_hash(filter, payload)
        .map_err(|e| Status::internal(format!("this node's log record at {applied}: {e}")))?;
    if record.last_seq.get() != applied {
        return Err(crate::wire::diverged(Status::aborted(format!(
            "forked history: the replica's last batch ends at {applied}, but this node's batch holding {applied} spans {}..={}",
            record.first_seq.get(),
            record.last_seq.get()
        ))));
    }
    if !applied_hash.is_empty() && applied_hash != hash {
        return Err(crate::wire::diverged(Status::aborted(format!(
            "forked history: the replica's batch ending at {applied} differs from this node's (hash mismatch)"
        ))));
    }
    Ok((reader, Some(hash)))
}

type UpstreamStream = Pin<Box<dyn Stream<Item = Result<UpstreamMessage, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for Upstream {
    type SubscribeStream = UpstreamStream;
    type FetchSnapshotStream = ChunkStream;

    async fn subscribe(
        &self,
        request: Request<tonic::Streaming<ReplicaMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let result = self.subscribe_checked(request).await;
        self.count_refusal("subscribe", &result);
        result
    }

    async fn begin_snapshot(
        &self,
        request: Request<BeginSnapshotRequest>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        let result = self.begin_snapshot_checked(request).await;
        self.count_refusal("begin_snapshot", &result);
        result
    }

    async fn fetch_snapshot(
        &self,
        request: Request<FetchSnapshotRequest>,
    ) -> Result<Response<Self::FetchSnapshotStream>, Status> {
        let result = self.fetch_snapshot_checked(request);
        self.count_refusal("fetch_snapshot", &result);
        result
    }
}

impl Upstream {
    async fn subscribe_checked(
        &self,
        request: Request<tonic::Streaming<ReplicaMessage>>,
    ) -> Result<Response<UpstreamStream>, Status> {
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(going_away());
        }
        // Read before the check, so a reload right after it is noticed.
        let auth_generation = self.shared.config.auth.generation();
        let principal = self.authorize(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.shared.config.subscribe_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Subscribe message in time"))??
            .ok_or_else(|| Status::invalid_argument("the stream ended before a Subscribe"))?;
        let Some(replica_message::Kind::Subscribe(sub)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message must be a Subscribe",
            ));
        };
        if !valid_replica_id(&sub.replica_id) {
            return Err(Status::invalid_argument(
                "replica_id must be 1 to 128 bytes of [A-Za-z0-9._-]",
            ));
        }
        if let Some(ids) = &principal.replica_ids
            && !ids.contains(&sub.replica_id)
        {
            return Err(Status::permission_denied(
                "replica_id is not the one this credential names",
            ));
        }
        let db = self.db()?;
        let own_id = db.database_id();
        if sub.database_id.is_empty() {
            if sub.applied_seq != 0 {
                return Err(Status::invalid_argument(
                    "applied_seq is set but database_id is empty",
                ));
            }
        } else {
            let id = parse_database_id(&sub.database_id)
                .ok_or_else(|| Status::invalid_argument("database_id must be 16 bytes"))?;
            if id != own_id {
                return Err(Status::failed_precondition(format!(
                    "the replica holds database {id:032x}, this node serves {own_id:032x}: bootstrap from a snapshot"
                )));
            }
        }
        let wanted = crate::ranges_from_proto(&sub.ranges)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !crate::covers(&principal.ranges, &wanted) {
            return Err(Status::permission_denied(
                "the replica asks for key ranges its credential does not allow",
            ));
        }
        if !crate::covers(&self.shared.config.holds_ranges, &wanted) {
            return Err(Status::permission_denied(
                "the replica asks for key ranges this node does not hold",
            ));
        }
        let epoch = self.shared.epoch.get();
        if sub.epoch > epoch {
            return Err(Status::aborted(format!(
                "the replica has followed epoch {}, newer than this node's epoch {epoch}: it must not follow an older primary",
                sub.epoch
            )));
        }
        let durable = db.durable_seq().get();
        if sub.applied_seq > durable {
            return Err(crate::wire::diverged(Status::out_of_range(format!(
                "the replica has applied up to {}, beyond this node's durable log ({durable}): a replaced history or the wrong upstream",
                sub.applied_seq
            ))));
        }
        let applied = sub.applied_seq;
        let position_db = Arc::clone(&db);
        let applied_hash = sub.applied_hash.clone();
        // A range-limited credential is shown only its ranges' operations.
        let filter = RangeFilter::new(&principal.ranges);
        let position_filter = filter.clone();
        let (reader, prev) = tokio::task::spawn_blocking(move || {
            open_position(
                &position_db,
                applied,
                &applied_hash,
                position_filter.as_ref(),
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let pin = LogSource::of(&db).pin(SeqNo(applied.max(1))).map_err(|e| {
            Status::failed_precondition(format!("cannot hold the log for the replica: {e}"))
        })?;

        tracing::info!(replica = %sub.replica_id, applied, epoch, "replica subscribed");
        let stream_id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut slots = self.shared.slots.lock();
            let slot = slots.entry(sub.replica_id.clone()).or_insert_with(|| Slot {
                stream: 0,
                cancel: Arc::new(AtomicBool::new(false)),
                connected: false,
                pin: None,
                durable: 0,
                applied: 0,
                sent: 0,
                in_flight: VecDeque::new(),
                transient: sub.transient,
            });
            slot.cancel.store(true, Ordering::Release); // ends an older stream
            slot.stream = stream_id;
            slot.cancel = Arc::clone(&cancel);
            slot.connected = true;
            slot.pin = Some(pin);
            slot.applied = applied;
            // What the replica reports now (it may have been rebuilt).
            slot.durable = applied;
            slot.sent = applied;
            slot.in_flight.clear();
            slot.transient = sub.transient;
        }

        let (tx, rx) = mpsc::channel(self.shared.config.stream_buffer.max(1));
        let welcome = UpstreamMessage {
            kind: Some(upstream_message::Kind::Welcome(Welcome {
                database_id: own_id.to_le_bytes().to_vec(),
                epoch,
                durable_seq: durable,
            })),
        };
        tx.try_send(Ok(welcome))
            .map_err(|_| Status::internal("stream buffer"))?;

        let pump = Pump {
            upstream: self.clone(),
            db,
            id: sub.replica_id.clone(),
            stream: stream_id,
            cancel: Arc::clone(&cancel),
            tx,
            prev,
            filter,
            principal,
            auth_generation,
        };
        std::thread::Builder::new()
            .name("strata-ship".into())
            .spawn(move || pump.run(reader))
            .map_err(|e| Status::internal(format!("spawning the log pump: {e}")))?;

        let acks = self.clone();
        let id = sub.replica_id;
        tokio::spawn(async move {
            // Acks until a second Subscribe, an empty message, the end, or
            // a broken stream: then this stream is over.
            while let Ok(Some(ReplicaMessage {
                kind: Some(replica_message::Kind::Ack(ack)),
            })) = inbound.message().await
            {
                if acks.on_ack(&id, stream_id, &ack).is_err() {
                    break;
                }
            }
            acks.disconnect(&id, stream_id);
        });

        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn begin_snapshot_checked(
        &self,
        request: Request<BeginSnapshotRequest>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        let principal = self.authorize(&request)?;
        let request = request.into_inner();
        if let Some(ids) = &principal.replica_ids
            && !ids.contains(&request.replica_id)
        {
            return Err(Status::permission_denied(
                "replica_id is not the one this credential names",
            ));
        }
        if !valid_replica_id(&request.replica_id) {
            return Err(Status::invalid_argument(
                "replica_id must be 1 to 128 bytes of [A-Za-z0-9._-]",
            ));
        }
        let db = self.db()?;
        let epoch = self.shared.epoch.get();
        let snapshots = self.shared.snapshots.clone();
        // A range-limited credential gets a snapshot cut to its ranges.
        let ranges = principal.ranges;
        let info = tokio::task::spawn_blocking(move || snapshots.begin(&db, epoch, &ranges))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(info))
    }

    fn fetch_snapshot_checked(
        &self,
        request: Request<FetchSnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let principal = self.authorize(&request)?;
        let request = request.into_inner();
        let rx = self.shared.snapshots.fetch(
            &request,
            self.shared.config.chunk_bytes,
            &principal.ranges,
        )?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
