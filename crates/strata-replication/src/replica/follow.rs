//! The follow loop: connect (with backoff and jitter), run sessions,
//! bootstrap when told to; opening and adopting the replica's database.

use super::bootstrap::{BootstrapFailed, bootstrap};
use super::session::session;
use super::*;

pub(super) fn open_follower(config: &ReplicaConfig) -> Result<Db, Error> {
    let db = Db::open(&config.data_dir, config.options.clone())?;
    fence_follower(config, &db);
    Ok(db)
}

/// Refuses local writes on `db`, naming the upstream.
pub(super) fn fence_follower(config: &ReplicaConfig, db: &Db) {
    Follower::of(db).fence(format!(
        "this node is a replica of {}; write to the primary",
        config.upstream
    ));
}

/// Installs `db` as the replica's database: pins its log at its position
/// and finds the hash of its last record (from its log, else `known`).
pub(super) fn adopt(shared: &Shared, db: Arc<Db>, known: Option<[u8; 8]>) -> Result<(), Error> {
    let last = db.last_seq();
    let mut hash = known;
    if last.get() > 0
        && let Ok(mut reader) = LogSource::of(&db).read_from(last)
        && let Ok(Some(record)) = reader.next(Duration::from_millis(100))
        && record.last_seq == last
        && let Ok(view) = strata_format::wal::decode_record(&record.bytes)
    {
        hash = Some(record_hash(view.payload));
    }
    let pin = LogSource::of(&db).pin(SeqNo(last.get().max(1))).ok();
    *shared.pin.lock() = pin;
    *shared.last_hash.lock() = hash;
    shared.db.set(db);
    Ok(())
}

pub(super) async fn follow(shared: Arc<Shared>) {
    let config = &shared.config;
    let mut backoff = config.backoff_initial;
    let mut discard = config.discard_local;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let applied_before = shared.counters.records.load(Ordering::Relaxed);
        let end = if shared.db.get().is_none() {
            End::Bootstrap("no database yet".into())
        } else if discard {
            discard = false;
            End::Diverged("told to discard the local history".into())
        } else {
            session(&shared).await
        };
        if shared.counters.records.load(Ordering::Relaxed) > applied_before {
            backoff = config.backoff_initial;
        }
        let wait = match end {
            End::Stopped => return,
            End::Retry(why) => {
                tracing::warn!(upstream = %config.upstream, reason = %why, "replication stream ended; reconnecting");
                shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                *shared.last_error.lock() = Some(why);
                backoff
            }
            End::GoingAway => {
                tracing::info!(upstream = %config.upstream, "the upstream is shutting down; reconnecting");
                shared
                    .counters
                    .upstream_shutdowns
                    .fetch_add(1, Ordering::Relaxed);
                backoff
            }
            End::Refused(why) => {
                tracing::error!(upstream = %config.upstream, reason = %why, "upstream refused: this replica will not follow it");
                shared.counters.refusals.fetch_add(1, Ordering::Relaxed);
                *shared.last_error.lock() = Some(format!("refused: {why}"));
                config.backoff_max
            }
            End::Denied(why) => {
                denied(&shared, &why);
                config.backoff_max
            }
            End::Diverged(why) => {
                tracing::warn!(upstream = %config.upstream, reason = %why, "this replica's history diverged from the upstream's: replacing it with a snapshot");
                shared.counters.divergences.fetch_add(1, Ordering::Relaxed);
                match bootstrap(&shared).await {
                    Ok(()) => {
                        backoff = config.backoff_initial;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(upstream = %config.upstream, reason = %why, %error, "bootstrap after divergence failed; retrying");
                        // Still diverged: the next session is refused again.
                        *shared.last_error.lock() = Some(format!(
                            "bootstrap after divergence ({why}) failed: {error}"
                        ));
                        discard = true;
                        backoff
                    }
                }
            }
            End::Bootstrap(why) => match bootstrap(&shared).await {
                Ok(()) => {
                    tracing::info!(upstream = %config.upstream, reason = %why, "bootstrapped from a snapshot");
                    backoff = config.backoff_initial;
                    continue;
                }
                Err(BootstrapFailed::Denied(error)) => {
                    denied(&shared, &format!("bootstrap ({why}): {error}"));
                    config.backoff_max
                }
                Err(BootstrapFailed::Other(error)) => {
                    tracing::warn!(upstream = %config.upstream, reason = %why, %error, "bootstrap failed; retrying");
                    shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    *shared.last_error.lock() = Some(format!("bootstrap ({why}) failed: {error}"));
                    backoff
                }
            },
        };
        // Jitter: 50% to 100% of the wait.
        let jitter = 0.5 + (rand_fraction() * 0.5);
        let wait = wait.mul_f64(jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.stopped.notified() => {}
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// Counts and reports a refusal of this replica's credential.
fn denied(shared: &Shared, why: &str) {
    tracing::error!(upstream = %shared.config.upstream, reason = %why, "the upstream refused this replica's credential; retrying slowly");
    shared.counters.refusals.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .credential_refusals
        .fetch_add(1, Ordering::Relaxed);
    *shared.last_error.lock() = Some(format!("credential refused: {why}"));
}

fn rand_fraction() -> f64 {
    // Enough randomness for jitter without a dependency: the clock's
    // nanoseconds.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}
