//! One stream with the upstream: subscribe from the applied position,
//! take records in groups, apply each group through the engine's
//! follower, acknowledge.

use super::connect::connect;
use super::verify::take_record;
use super::*;

/// One stream: subscribe, then verify and apply until it ends.
pub(super) async fn session(shared: &Arc<Shared>) -> End {
    let Some(db) = shared.db.get() else {
        return End::Bootstrap("no database".into());
    };
    let mut client = match connect(&shared.config).await {
        Ok(client) => client,
        Err(why) => return End::Retry(why),
    };
    let (tx, rx) = mpsc::channel(16);
    let mut applied = db.last_seq().get();
    let mut link = *shared.last_hash.lock();
    let subscribe = ReplicaMessage {
        kind: Some(replica_message::Kind::Subscribe(Subscribe {
            replica_id: shared.config.replica_id.clone(),
            database_id: db.database_id().to_le_bytes().to_vec(),
            applied_seq: applied,
            applied_hash: link.map(|h| h.to_vec()).unwrap_or_default(),
            epoch: shared.epoch.get(),
            ranges: crate::ranges_to_proto(&shared.config.ranges),
            transient: false,
        })),
    };
    if tx.send(subscribe).await.is_err() {
        return End::Retry("outbound stream closed".into());
    }
    let request = with_token(&shared.config, ReceiverStream::new(rx));
    let mut inbound = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return classify(&shared.config, &status),
    };
    // The Welcome first.
    match inbound.message().await {
        Ok(Some(UpstreamMessage {
            kind: Some(upstream_message::Kind::Welcome(welcome)),
        })) => {
            if crate::wire::parse_database_id(&welcome.database_id) != Some(db.database_id()) {
                return End::Bootstrap("the upstream serves another database".into());
            }
            if welcome.epoch < shared.epoch.get() {
                return End::Refused(format!(
                    "the upstream serves epoch {}, older than the epoch {} this replica followed",
                    welcome.epoch,
                    shared.epoch.get()
                ));
            }
            if let Err(e) = shared.epoch.raise_to(welcome.epoch) {
                return End::Retry(format!("recording the epoch: {e}"));
            }
            shared
                .upstream_durable
                .store(welcome.durable_seq, Ordering::Relaxed);
            shared.freshness.lock().heard(welcome.durable_seq);
        }
        Ok(_) => return End::Retry("the upstream's first message was not a Welcome".into()),
        Err(status) => return classify(&shared.config, &status),
    }
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return End::Stopped;
        }
        let first = tokio::select! {
            message = inbound.message() => message,
            () = shared.stopped.notified() => return End::Stopped,
        };
        let mut group: Vec<VerifiedRecord> = Vec::new();
        let mut group_hash = link;
        let mut next = Some(first);
        // How the stream ended, once the records before the end are applied.
        let mut ended = None;
        while let Some(message) = next.take() {
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) => {
                    ended = Some(End::Retry("the upstream ended the stream".into()));
                    break;
                }
                Err(status) => {
                    ended = Some(classify(&shared.config, &status));
                    break;
                }
            };
            match message.kind {
                Some(upstream_message::Kind::Record(record)) => {
                    if let Err(end) =
                        take_record(shared, record, &mut applied, &mut group_hash, &mut group)
                    {
                        return end;
                    }
                }
                Some(upstream_message::Kind::Records(batch)) => {
                    for record in batch.records {
                        if let Err(end) =
                            take_record(shared, record, &mut applied, &mut group_hash, &mut group)
                        {
                            return end;
                        }
                    }
                }
                Some(upstream_message::Kind::Heartbeat(heartbeat)) => {
                    shared
                        .upstream_durable
                        .store(heartbeat.durable_seq, Ordering::Relaxed);
                    shared.freshness.lock().heard(heartbeat.durable_seq);
                }
                _ => return End::Retry("unexpected message from the upstream".into()),
            }
            if group.len() < shared.config.max_group {
                // Take whatever has already arrived, without waiting.
                if let Ok(more) = tokio::time::timeout(Duration::ZERO, inbound.message()).await {
                    next = Some(more);
                }
            }
        }
        if group.is_empty() {
            match ended {
                Some(end) => return end,
                None => continue,
            }
        }
        let count = group.len() as u64;
        let apply_db = Arc::clone(&db);
        let applied_result =
            tokio::task::spawn_blocking(move || Follower::of(&apply_db).apply(group)).await;
        match applied_result {
            Ok(Ok(last)) if last.get() == applied => {}
            Ok(Ok(last)) => {
                return End::Retry(format!(
                    "applied up to {} of a group ending at {applied}",
                    last.get()
                ));
            }
            Ok(Err(error)) => return End::Retry(format!("applying: {error}")),
            Err(error) => return End::Retry(format!("applying: {error}")),
        }
        link = group_hash;
        *shared.last_hash.lock() = link;
        if let Some(pin) = shared.pin.lock().as_ref() {
            let _ = pin.advance(SeqNo(applied.max(1)));
        }
        shared.counters.records.fetch_add(count, Ordering::Relaxed);
        shared.counters.groups.fetch_add(1, Ordering::Relaxed);
        let ack = ReplicaMessage {
            kind: Some(replica_message::Kind::Ack(Ack {
                durable_seq: db.durable_seq().get().min(applied),
                applied_seq: applied,
            })),
        };
        // A full outbound buffer only delays an ack; the next one covers it.
        let _ = tx.try_send(ack);
        if let Some(end) = ended {
            return end;
        }
    }
}
