//! Bootstrapping from a snapshot: begin one on the upstream, fetch and
//! check every file into the engine's staging, then install it (the
//! engine's atomic switch) and open it.

use super::connect::connect;
use super::*;

/// Replaces the replica's database with a snapshot of the upstream's.
pub(super) async fn bootstrap(shared: &Arc<Shared>) -> Result<(), BootstrapFailed> {
    let config = &shared.config;
    let mut client = connect(config).await?;
    let info = client
        .begin_snapshot(with_token(
            config,
            BeginSnapshotRequest {
                replica_id: config.replica_id.clone(),
            },
        ))
        .await
        .map_err(|s| call_failed("begin snapshot", &s))?
        .into_inner();
    check_info(&info)?;
    let install =
        SnapshotInstall::begin(Arc::clone(&shared.fs), &config.data_dir, &info.snapshot_id)
            .map_err(|e| format!("staging the snapshot: {e}"))?;
    let total: u64 = info.files.iter().map(|f| f.size).sum();
    tracing::info!(
        snapshot = %info.snapshot_id,
        seq = info.seq,
        files = info.files.len(),
        bytes = total,
        "bootstrapping from a snapshot"
    );
    let mut fetched = 0u64;
    for (index, file) in info.files.iter().enumerate() {
        fetch_file(config, &mut client, &info.snapshot_id, file, &install).await?;
        fetched += file.size;
        tracing::info!(
            file = %file.path,
            done = index + 1,
            of = info.files.len(),
            bytes = fetched,
            total,
            "snapshot file fetched and checked"
        );
    }
    // Every file is here and checked: swap the directories.
    let old = shared.db.take();
    *shared.pin.lock() = None;
    if let Some(old) = old {
        // Wait for readers to let go of the old database (its lock).
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(old);
    }
    let install_shared = Arc::clone(shared);
    let known = <[u8; 8]>::try_from(info.seq_hash.as_slice()).ok();
    let epoch = info.epoch;
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let config = &install_shared.config;
        install
            .commit()
            .map_err(|e| format!("installing the snapshot: {e}"))?;
        install_shared
            .epoch
            .raise_to(epoch)
            .map_err(|e| format!("recording the epoch: {e}"))?;
        let db = open_follower(config).map_err(|e| format!("opening the snapshot: {e}"))?;
        // Counted before readers can see the new database.
        install_shared
            .counters
            .bootstraps
            .fetch_add(1, Ordering::Relaxed);
        adopt(&install_shared, Arc::new(db), known).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(BootstrapFailed::Other)
}

fn check_info(info: &SnapshotInfo) -> Result<(), String> {
    if crate::wire::parse_database_id(&info.database_id).is_none() {
        return Err("the snapshot's database_id is not 16 bytes".into());
    }
    if info.snapshot_id.is_empty() || !safe_relative_path(&info.snapshot_id) {
        return Err("the snapshot has no usable id".into());
    }
    if !info.files.iter().any(|f| f.path == "CURRENT") {
        return Err("the snapshot lists no CURRENT file".into());
    }
    for file in &info.files {
        if !safe_relative_path(&file.path) {
            return Err(format!("the snapshot lists an unsafe path {:?}", file.path));
        }
    }
    Ok(())
}

async fn fetch_file(
    config: &ReplicaConfig,
    client: &mut ReplicationClient<Channel>,
    snapshot_id: &str,
    file: &strata_proto::v1::SnapshotFile,
    install: &SnapshotInstall,
) -> Result<(), BootstrapFailed> {
    let wanted = strata::replication::SnapshotFile {
        path: file.path.clone(),
        size: file.size,
        crc32: file.crc32,
    };
    let mut staged = install.file(&wanted).map_err(|e| e.to_string())?;
    let mut have = staged.staged_len();
    if have < file.size {
        let mut chunks = client
            .fetch_snapshot(with_token(
                config,
                FetchSnapshotRequest {
                    snapshot_id: snapshot_id.to_string(),
                    path: file.path.clone(),
                    offset: have,
                },
            ))
            .await
            .map_err(|s| call_failed(&format!("fetch {}", file.path), &s))?
            .into_inner();
        while let Some(chunk) = chunks
            .message()
            .await
            .map_err(|s| call_failed(&format!("fetch {}", file.path), &s))?
        {
            if chunk.offset != have || have + chunk.data.len() as u64 > file.size {
                return Err(format!(
                    "fetch {}: a chunk at {} of {} bytes does not continue at {have} within {} bytes",
                    file.path,
                    chunk.offset,
                    chunk.data.len(),
                    file.size
                )
                .into());
            }
            staged
                .append(chunk.offset, &chunk.data)
                .map_err(|e| e.to_string())?;
            have += chunk.data.len() as u64;
        }
    }
    staged.finish().map_err(|e| e.to_string())?;
    Ok(())
}

/// Why a bootstrap failed.
pub(super) enum BootstrapFailed {
    /// The upstream refused this replica's credential.
    Denied(String),
    /// Anything else (retried with backoff).
    Other(String),
}

impl From<String> for BootstrapFailed {
    fn from(why: String) -> Self {
        Self::Other(why)
    }
}

impl std::fmt::Display for BootstrapFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(why) | Self::Other(why) => f.write_str(why),
        }
    }
}

/// A failed call of a bootstrap, telling credential refusals apart.
pub(super) fn call_failed(what: &str, status: &Status) -> BootstrapFailed {
    let why = format!("{what}: {:?}: {}", status.code(), status.message());
    if credential_refused(status) {
        BootstrapFailed::Denied(why)
    } else {
        BootstrapFailed::Other(why)
    }
}
