//! Backups and point-in-time restore.
//!
//! A backup directory (the node's `[backup] dir`) holds base backups
//! (`base/<seq>/`: consistent, openable copies, taken online) and the
//! archived log (`log/*.slog`: every committed record, copied as it becomes
//! durable). `strata restore` rebuilds the database as of any sequence
//! number (or time) from the newest base backup at or before it plus the
//! archived records up to it, into a new directory.
//!
//! The archiver is a thread of the node: every `archive_interval_ms` it
//! syncs the log (so writes made without `sync` are archived too), reads
//! every durable record after the last archived one through
//! `Db::log_reader`, and writes them as one sealed segment (several when
//! they exceed `segment_bytes`). It holds a `Db::log_pin` at the first
//! record not yet archived, so the engine keeps those segments until they
//! are copied. It resumes after the newest segment in the archive. If the
//! log no longer holds the records it needs (the node ran without the
//! archiver, or a replica bootstrapped), it counts an error, logs the gap
//! and continues from what the log holds: restores across the gap are
//! refused, and the next base backup makes later points restorable again.
//!
//! Invariants: a file named like a segment or a base backup is whole
//! (written under a temporary name, synced, renamed, directory synced);
//! archived segments never overlap and each starts right after the one
//! before unless the archiver logged a gap; a restore never writes into an
//! existing database (it builds in `<to>.restoring` and renames at the end).

pub(crate) mod segment;
pub(crate) mod set;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use strata::{Db, Options, SeqNo};
use strata_proto::v1::backup_client::BackupClient;
use strata_proto::v1::backup_server::Backup;
use strata_proto::v1::{TakeBackupRequest, TakeBackupResponse};
use strata_replication::SharedDb;
use tonic::{Request, Response, Status};

/// `strata backup`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["node", "data_dir"])))]
pub(crate) struct BackupArgs {
    /// A running node (host:port or URL): the backup goes into its
    /// `[backup] dir`.
    #[arg(long)]
    pub(crate) node: Option<String>,
    #[command(flatten)]
    pub(crate) security: crate::connect::Security,
    /// Or a stopped node's database directory.
    #[arg(long, requires = "to")]
    pub(crate) data_dir: Option<PathBuf>,
    /// With --data-dir: the backup directory to add a base backup to.
    #[arg(long)]
    pub(crate) to: Option<PathBuf>,
}

/// `strata restore`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RestoreArgs {
    /// The backup directory (base backups in base/, the archived log in
    /// log/).
    #[arg(long)]
    pub(crate) archive: PathBuf,
    /// The new database directory (must not exist, or be empty).
    #[arg(long)]
    pub(crate) to: PathBuf,
    /// Restore every write up to this sequence number (a batch is restored
    /// whole or not at all). Default: everything archived.
    #[arg(long, conflicts_with = "to_time")]
    pub(crate) to_seq: Option<u64>,
    /// Or every write the archiver had read by this time (Unix
    /// milliseconds).
    #[arg(long)]
    pub(crate) to_time: Option<u64>,
}

/// `strata prune`: the retention of a backup directory.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct PruneArgs {
    /// The backup directory.
    #[arg(long)]
    pub(crate) archive: PathBuf,
    /// Keep this many of the newest base backups (at least 1), and the
    /// archived log from the oldest of them on.
    #[arg(long)]
    pub(crate) keep: usize,
    /// Only print what would be removed.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// The archiver's figures, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ArchiveFigures {
    /// The last sequence number in the archive.
    pub(crate) last_seq: u64,
    /// Segments written since start.
    pub(crate) segments: u64,
    /// Bytes written since start.
    pub(crate) bytes: u64,
    /// Failed rounds (and gaps) since start.
    pub(crate) errors: u64,
    /// Gaps since start: the log no longer held what the archive lacked.
    pub(crate) gaps: u64,
    /// When a round last caught up with the durable log (Unix ms; 0: never).
    pub(crate) last_success_unix_ms: u64,
    /// The newest base backup's sequence number (0: none).
    pub(crate) backup_seq: u64,
}

/// A node's backup directory and its archiver's state.
#[derive(Debug)]
pub(crate) struct ArchiveState {
    root: PathBuf,
    data_dir: PathBuf,
    interval: Duration,
    segment_bytes: usize,
    log_hold_bytes_max: u64,
    last_seq: AtomicU64,
    gaps: AtomicU64,
    segments: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    last_success_unix_ms: AtomicU64,
    backup_seq: AtomicU64,
    /// One backup at a time.
    backing_up: Mutex<()>,
}

impl ArchiveState {
    /// The state of the backup directory `root` of the node on `data_dir`.
    pub(crate) fn new(
        root: PathBuf,
        data_dir: PathBuf,
        interval: Duration,
        segment_bytes: usize,
        log_hold_bytes_max: u64,
    ) -> Self {
        let backup_seq = set::list_bases(&root)
            .ok()
            .and_then(|b| b.last().map(|b| b.seq))
            .unwrap_or(0);
        Self {
            root,
            data_dir,
            interval,
            segment_bytes,
            log_hold_bytes_max,
            last_seq: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_success_unix_ms: AtomicU64::new(0),
            backup_seq: AtomicU64::new(backup_seq),
            backing_up: Mutex::new(()),
        }
    }

    /// The figures now.
    pub(crate) fn figures(&self) -> ArchiveFigures {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ArchiveFigures {
            last_seq: load(&self.last_seq),
            segments: load(&self.segments),
            bytes: load(&self.bytes),
            errors: load(&self.errors),
            gaps: load(&self.gaps),
            last_success_unix_ms: load(&self.last_success_unix_ms),
            backup_seq: load(&self.backup_seq),
        }
    }
}

/// The sequence number after the newest archived segment in `root` (1 for
/// an empty archive); removes temporary files a crash left.
fn archive_next(root: &Path) -> Result<u64, String> {
    let log = root.join("log");
    std::fs::create_dir_all(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let mut next = 1;
    for entry in std::fs::read_dir(&log).map_err(|e| format!("reading {}: {e}", log.display()))? {
        let entry = entry.map_err(|e| format!("reading {}: {e}", log.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        } else if let Some((_, last)) = segment::parse_file_name(&name) {
            next = next.max(last + 1);
        }
    }
    Ok(next)
}

/// Writes one sealed segment of `entries` into `root/log`.
fn write_segment(
    root: &Path,
    database_id: u128,
    entries: &[segment::Entry],
) -> Result<u64, String> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(0);
    };
    let log = root.join("log");
    let name = segment::file_name(first.first_seq, last.last_seq);
    let tmp = log.join(format!("{name}.tmp"));
    let bytes = segment::encode(database_id, entries);
    {
        use std::io::Write as _;
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, log.join(&name))
        .map_err(|e| format!("renaming {} into place: {e}", tmp.display()))?;
    set::sync_dir(&log)?;
    Ok(bytes.len() as u64)
}

/// The archiver: a thread until `stop` is set; one last round then.
pub(crate) fn start_archiver(
    state: Arc<ArchiveState>,
    db: SharedDb,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Where the archive ends: read again each round until it can be
        // (a backup disk mounted late).
        let mut resume: Option<u64> = None;
        let mut next = 0;
        let mut pin: Option<(Arc<Db>, strata::replication::LogPin)> = None;
        let mut hold = true;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if resume.is_none() {
                match archive_next(&state.root) {
                    Ok(found) => {
                        resume = Some(found);
                        next = found;
                        state
                            .last_seq
                            .store(found.saturating_sub(1), Ordering::Relaxed);
                    }
                    Err(error) => {
                        state.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(%error, "the archiver cannot read its directory; retrying next round");
                    }
                }
            }
            if resume.is_some()
                && let Some(db) = db.get()
            {
                match archive_round(&state, &db, &mut next, &mut pin, hold) {
                    Ok(()) => {
                        hold = true;
                        state
                            .last_success_unix_ms
                            .store(set::now_ms(), Ordering::Relaxed);
                    }
                    Err(error) => {
                        state.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(%error, "archiving failed; retrying next round");
                        // A failing archiver must not fill the node's disk.
                        let held = strata::replication::LogSource::of(&db)
                            .lag(SeqNo(next.saturating_sub(1)))
                            .bytes;
                        if hold && held > state.log_hold_bytes_max {
                            hold = false;
                            pin = None;
                            tracing::error!(
                                held_bytes = held,
                                max = state.log_hold_bytes_max,
                                "archiving keeps failing with more log than [backup] log_hold_bytes_max not archived: no longer holding the log (the archive will have a gap; take a new base backup once archiving works)"
                            );
                        }
                    }
                }
            }
            if stopping {
                return;
            }
            let deadline = std::time::Instant::now() + state.interval;
            while std::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20).min(state.interval));
            }
        }
    })
}

/// Moves `next` to the oldest record the log holds: a gap in the archive
/// (counted and logged), except for a new archive of an existing database,
/// which starts where its log does.
fn skip_gap(state: &ArchiveState, next: &mut u64, oldest_retained: u64) {
    if state.segments.load(Ordering::Relaxed) == 0 && *next == 1 {
        tracing::info!(
            from = oldest_retained,
            "the archive starts where the log does: take a base backup"
        );
    } else {
        tracing::error!(
            missing_from = *next,
            missing_to = oldest_retained.saturating_sub(1),
            "the log no longer holds records the archive lacks: the archive has a gap; take a new base backup"
        );
        state.errors.fetch_add(1, Ordering::Relaxed);
        state.gaps.fetch_add(1, Ordering::Relaxed);
    }
    *next = oldest_retained;
}

/// One round: sync, read every durable record from `next`, seal segments.
/// With `hold`, the log is pinned from `next` on (released otherwise).
fn archive_round(
    state: &ArchiveState,
    db: &Arc<Db>,
    next: &mut u64,
    pin: &mut Option<(Arc<Db>, strata::replication::LogPin)>,
    hold: bool,
) -> Result<(), String> {
    if !hold {
        *pin = None;
    } else if !pin.as_ref().is_some_and(|(held, _)| Arc::ptr_eq(held, db)) {
        *pin = None;
        let held = match strata::replication::LogSource::of(db).pin(SeqNo(*next)) {
            Err(strata::Error::LogTruncated {
                oldest_retained, ..
            }) => {
                skip_gap(state, next, oldest_retained);
                strata::replication::LogSource::of(db).pin(SeqNo(*next))
            }
            other => other,
        }
        .map_err(|e| format!("pinning the log at {}: {e}", *next))?;
        *pin = Some((Arc::clone(db), held));
    }
    // Writes made without sync become durable, so they are archived too.
    if db.poisoned().is_none() {
        db.sync().map_err(|e| format!("syncing the log: {e}"))?;
    }
    if *next > db.durable_seq().get() {
        return Ok(());
    }
    let mut reader = match strata::replication::LogSource::of(db).read_from(SeqNo(*next)) {
        Err(strata::Error::LogTruncated {
            oldest_retained, ..
        }) => {
            skip_gap(state, next, oldest_retained);
            strata::replication::LogSource::of(db).read_from(SeqNo(*next))
        }
        other => other,
    }
    .map_err(|e| format!("reading the log from {}: {e}", *next))?;
    let database_id = db.database_id();
    let mut pending: Vec<segment::Entry> = Vec::new();
    let mut pending_bytes = 0;
    let seal = |pending: &mut Vec<segment::Entry>, next: &mut u64| -> Result<(), String> {
        let Some(last) = pending.last().map(|e| e.last_seq) else {
            return Ok(());
        };
        let bytes = write_segment(&state.root, database_id, pending)?;
        pending.clear();
        *next = last + 1;
        state.last_seq.store(last, Ordering::Relaxed);
        state.segments.fetch_add(1, Ordering::Relaxed);
        state.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some((_, p)) = pin.as_ref() {
            p.advance(SeqNo(last + 1))
                .map_err(|e| format!("advancing the log pin: {e}"))?;
        }
        Ok(())
    };
    while let Some(record) = reader
        .next(Duration::ZERO)
        .map_err(|e| format!("reading the log at {}: {e}", reader.position().get()))?
    {
        pending_bytes += record.bytes.len();
        pending.push(segment::Entry {
            archived_ms: set::now_ms(),
            first_seq: record.first_seq.get(),
            last_seq: record.last_seq.get(),
            record: record.bytes,
        });
        if pending_bytes >= state.segment_bytes {
            seal(&mut pending, next)?;
            pending_bytes = 0;
        }
    }
    seal(&mut pending, next)
}

/// Takes a base backup of `db` (on `data_dir`) into `root`: a checkpoint
/// beside the data directory (tables hard-linked, so it costs little),
/// copied file by file into the backup directory, then removed.
pub(crate) fn take_base(db: &Db, data_dir: &Path, root: &Path) -> Result<(set::Base, u64), String> {
    remove_stale_checkpoints(data_dir);
    let checkpoint = data_dir.with_extension(format!("backup-{}", set::now_ms()));
    let seq = db
        .checkpoint(&checkpoint)
        .map_err(|e| format!("checkpoint into {}: {e}", checkpoint.display()))?;
    let stored = set::store_base(root, &checkpoint, seq.get(), db.database_id());
    let _ = std::fs::remove_dir_all(&checkpoint);
    stored
}

/// Removes checkpoints a crash during a backup left beside the data
/// directory (`<data_dir>.backup-<ms>`; best effort).
fn remove_stale_checkpoints(data_dir: &Path) {
    let (Some(parent), Some(name)) = (data_dir.parent(), data_dir.file_stem()) else {
        return;
    };
    let prefix = format!("{}.backup-", name.to_string_lossy());
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if let Ok(entries) = std::fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The `Backup` service of a node with a `[backup]` section.
#[derive(Debug, Clone)]
pub(crate) struct BackupService {
    pub(crate) node: crate::node::Node,
    pub(crate) state: Arc<ArchiveState>,
}

#[tonic::async_trait]
impl Backup for BackupService {
    async fn take_backup(
        &self,
        request: Request<TakeBackupRequest>,
    ) -> Result<Response<TakeBackupResponse>, Status> {
        self.node
            .auth
            .authenticate(&request)
            .and_then(|p| p.require(&[strata_replication::auth::Role::Admin], "take a backup"))?;
        let db =
            self.node.db.get().ok_or_else(|| {
                Status::unavailable("the node has no database yet (bootstrapping)")
            })?;
        let state = Arc::clone(&self.state);
        let answer = tokio::task::spawn_blocking(move || {
            let _one = state.backing_up.lock();
            let (base, bytes) = take_base(&db, &state.data_dir, &state.root)?;
            state.backup_seq.fetch_max(base.seq, Ordering::Relaxed);
            Ok::<_, String>(TakeBackupResponse {
                seq: base.seq,
                dir: base.dir.display().to_string(),
                bytes,
                archived_seq: state.last_seq.load(Ordering::Relaxed),
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "backup failed");
            Status::internal(format!("backup failed: {e}"))
        })?;
        tracing::info!(seq = answer.seq, dir = %answer.dir, bytes = answer.bytes, "base backup taken");
        Ok(Response::new(answer))
    }
}

/// `strata backup`.
pub(crate) fn backup(args: &BackupArgs) -> Result<(), String> {
    if let (Some(data_dir), Some(to)) = (&args.data_dir, &args.to) {
        let db = crate::open_existing(data_dir)?;
        let (base, bytes) = take_base(&db, data_dir, to)?;
        println!(
            "base backup of everything up to seq {} in {} ({bytes} bytes)",
            base.seq,
            base.dir.display()
        );
        return db.close().map_err(|e| format!("closing: {e}"));
    }
    let Some(node) = &args.node else {
        return Err("give --node, or --data-dir with --to".into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async {
        let (channel, token) = args.security.channel(node).await?;
        let mut client = BackupClient::with_interceptor(channel, token);
        let answer = client
            .take_backup(TakeBackupRequest {})
            .await
            .map_err(|e| match e.code() {
                tonic::Code::Unimplemented => format!(
                    "{node} takes no backups: give its config a [backup] section"
                ),
                code => format!("{code:?}: {}", e.message()),
            })?
            .into_inner();
        println!(
            "base backup of everything up to seq {} in {} on the node ({} bytes; archived up to seq {})",
            answer.seq, answer.dir, answer.bytes, answer.archived_seq
        );
        Ok(())
    })
}

/// `strata prune`: removes base backups older than the newest `keep`, and
/// archived segments wholly at or before the oldest base backup kept (no
/// restore can use them any more). Partial backups and temporary segments
/// a crash left are removed too.
pub(crate) fn prune(args: &PruneArgs) -> Result<(), String> {
    if args.keep == 0 {
        return Err(
            "--keep must be at least 1: a backup directory without a base backup restores nothing"
                .into(),
        );
    }
    let bases = set::list_bases(&args.archive)?;
    if bases.is_empty() {
        println!(
            "nothing to prune: no base backup in {}",
            args.archive.display()
        );
        return Ok(());
    }
    let cut = bases.len().saturating_sub(args.keep);
    let (old, kept) = bases.split_at(cut);
    let Some(oldest_kept) = kept.first() else {
        return Ok(());
    };
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for base in old {
        if !args.dry_run {
            std::fs::remove_dir_all(&base.dir)
                .map_err(|e| format!("removing {}: {e}", base.dir.display()))?;
        }
        println!(
            "{verb} base backup {} (seq {})",
            base.dir.display(),
            base.seq
        );
    }
    let mut segments = 0;
    for (_, last, path) in list_segments(&args.archive)? {
        if last <= oldest_kept.seq {
            if !args.dry_run {
                std::fs::remove_file(&path)
                    .map_err(|e| format!("removing {}: {e}", path.display()))?;
            }
            segments += 1;
        }
    }
    if !args.dry_run {
        let _ = archive_next(&args.archive);
        set::remove_partials(&args.archive.join("base"));
    }
    println!(
        "{verb} {segments} archived segments up to seq {}; restores reach back to seq {} (base backup {})",
        oldest_kept.seq,
        oldest_kept.seq,
        oldest_kept.dir.display()
    );
    Ok(())
}

/// What a restore aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Seq(u64),
    Time(u64),
    Latest,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Restored {
    /// The base backup it started from (0: an empty database).
    pub(crate) base_seq: u64,
    /// Every write up to this is in the restored database.
    pub(crate) seq: u64,
    /// Archived records applied.
    pub(crate) records: u64,
}

/// `strata restore`.
pub(crate) fn restore(args: &RestoreArgs) -> Result<(), String> {
    let target = match (args.to_seq, args.to_time) {
        (Some(seq), _) => Target::Seq(seq),
        (None, Some(ms)) => Target::Time(ms),
        (None, None) => Target::Latest,
    };
    let restored = restore_into(&args.archive, &args.to, target)?;
    println!(
        "restored {} to seq {} (base backup at seq {}, then {} archived records)",
        args.to.display(),
        restored.seq,
        restored.base_seq,
        restored.records
    );
    Ok(())
}

/// The archived segments in `root/log`, by first sequence number.
fn list_segments(root: &Path) -> Result<Vec<(u64, u64, PathBuf)>, String> {
    let log = root.join("log");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&log) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("reading {}: {e}", log.display())),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", log.display()))?;
        if let Some((first, last)) = segment::parse_file_name(&entry.file_name().to_string_lossy())
        {
            out.push((first, last, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn restore_into(root: &Path, to: &Path, target: Target) -> Result<Restored, String> {
    if to.exists()
        && std::fs::read_dir(to)
            .map_err(|e| format!("reading {}: {e}", to.display()))?
            .next()
            .is_some()
    {
        return Err(format!(
            "{} is not empty: restore goes into a new directory only",
            to.display()
        ));
    }
    let staging = {
        let mut name = to.as_os_str().to_os_string();
        name.push(".restoring");
        PathBuf::from(name)
    };
    if staging.exists() {
        return Err(format!(
            "{} exists (an interrupted restore?): remove it first",
            staging.display()
        ));
    }
    let bases = set::list_bases(root)?;
    let segments = list_segments(root)?;
    let base = bases
        .iter()
        .rev()
        .find(|b| match target {
            Target::Seq(seq) => b.seq <= seq,
            Target::Time(ms) => b.time_unix_ms <= ms,
            Target::Latest => true,
        })
        .cloned();
    if base.is_none() && segments.first().is_none_or(|(first, _, _)| *first != 1) {
        return Err(format!(
            "no base backup in {} at or before the target ({target:?}), and the archived log does not start at seq 1",
            root.join("base").display()
        ));
    }
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let result = rebuild(base.as_ref(), &segments, &staging, target);
    let restored = match result {
        Ok(restored) => restored,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    if to.exists() {
        std::fs::remove_dir(to).map_err(|e| format!("replacing empty {}: {e}", to.display()))?;
    }
    std::fs::rename(&staging, to)
        .map_err(|e| format!("renaming {} to {}: {e}", staging.display(), to.display()))?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        set::sync_dir(parent)?;
    }
    Ok(restored)
}

/// Batches applied per `apply_replicated` call in a restore, at most.
const RESTORE_GROUP_BYTES: usize = 4 << 20;

fn rebuild(
    base: Option<&set::Base>,
    segments: &[(u64, u64, PathBuf)],
    staging: &Path,
    target: Target,
) -> Result<Restored, String> {
    if let Some(base) = base {
        set::copy_base(base, staging)?;
    }
    let db = Db::open(staging, Options::default())
        .map_err(|e| format!("opening the restored database {}: {e}", staging.display()))?;
    let base_seq = db.last_seq().get();
    if let Some(base) = base {
        if base_seq < base.seq {
            return Err(format!(
                "base backup {} opens at seq {base_seq}, its descriptor says {}",
                base.dir.display(),
                base.seq
            ));
        }
        if db.database_id() != base.database_id {
            return Err(format!(
                "base backup {} has another database id",
                base.dir.display()
            ));
        }
    }
    let end = match target {
        Target::Seq(seq) => seq,
        Target::Time(_) | Target::Latest => u64::MAX,
    };
    let mut next = base_seq + 1;
    let mut records = 0u64;
    let mut last_progress = std::time::Instant::now();
    let mut database_id = base.map(|b| b.database_id);
    'segments: while next <= end {
        let Some((_, last, path)) = segments
            .iter()
            .find(|(first, last, _)| *first <= next && next <= *last)
        else {
            let after = segments.iter().find(|(first, _, _)| *first > next);
            match (after, target) {
                (Some((first, _, _)), _) => {
                    return Err(format!(
                        "the archive has a gap: no segment holds seq {next}; the next one starts at seq {first}: {} is missing",
                        segment::file_name(next, first - 1)
                    ));
                }
                (None, Target::Seq(seq)) => {
                    return Err(format!(
                        "the archive ends at seq {}: it cannot restore to seq {seq} (missing {})",
                        next - 1,
                        segment::file_name(next, seq)
                    ));
                }
                (None, _) => break,
            }
        };
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let decoded = segment::decode(&bytes)
            .map_err(|e| format!("archive segment {}: {e}", path.display()))?;
        if *database_id.get_or_insert(decoded.database_id) != decoded.database_id {
            return Err(format!(
                "archive segment {} belongs to another database ({:032x})",
                path.display(),
                decoded.database_id
            ));
        }
        let mut group: Vec<Vec<u8>> = Vec::new();
        let mut group_bytes = 0;
        let mut stop = false;
        for entry in &decoded.entries {
            if entry.last_seq < next {
                continue;
            }
            let beyond = match target {
                Target::Seq(seq) => entry.last_seq > seq,
                Target::Time(ms) => entry.archived_ms > ms,
                Target::Latest => false,
            };
            if beyond {
                stop = true;
                break;
            }
            if entry.first_seq != next {
                return Err(format!(
                    "archive segment {}: a record starts at seq {}, expected {next}",
                    path.display(),
                    entry.first_seq
                ));
            }
            segment::record_seqs(&entry.record)
                .map_err(|e| format!("archive segment {}: {e}", path.display()))?;
            group_bytes += entry.record.len();
            group.push(entry.record.clone());
            next = entry.last_seq + 1;
            records += 1;
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = std::time::Instant::now();
                eprintln!(
                    "restore: at seq {}, {records} archived records applied",
                    next - 1
                );
            }
            if group_bytes >= RESTORE_GROUP_BYTES {
                apply(&db, &mut group)?;
                group_bytes = 0;
            }
        }
        apply(&db, &mut group)?;
        if stop || *last >= end {
            break 'segments;
        }
    }
    let seq = db.last_seq().get();
    db.sync()
        .map_err(|e| format!("syncing the restored database: {e}"))?;
    db.close()
        .map_err(|e| format!("closing the restored database: {e}"))?;
    Ok(Restored {
        base_seq,
        seq,
        records,
    })
}

fn apply(db: &Db, group: &mut Vec<Vec<u8>>) -> Result<(), String> {
    if group.is_empty() {
        return Ok(());
    }
    // The archive holds the log's records verbatim (framed): verified once
    // and appended as they are, like replicated records.
    let mut records = Vec::with_capacity(group.len());
    for framed in group.drain(..) {
        records.push(
            strata::replication::VerifiedRecord::verify(framed)
                .map_err(|e| format!("an archived record: {e}"))?,
        );
    }
    let expected_last = records.last().map(|r| r.last_seq());
    let applied = strata::replication::Follower::of(db)
        .apply(records)
        .map_err(|e| format!("applying archived records: {e}"))?;
    if Some(applied) != expected_last {
        return Err(format!(
            "applying archived records stopped at seq {} before {}",
            applied.get(),
            expected_last.map_or(0, SeqNo::get)
        ));
    }
    Ok(())
}
