//! Opening a database: lock, identity, version set, tables, then the
//! commit log's recovery; nothing is written before everything is read
//! and checked.

use super::*;

impl Db {
    /// Opens the database in `dir`, creating it if
    /// [`Options::create_if_missing`], and recovers: the version set from
    /// the manifest, then every write after the last flush from the commit
    /// log.
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle has it open;
    /// [`Error::InvalidArgument`] for invalid options, or if it is missing
    /// (and may not be created) or exists (and [`Options::error_if_exists`]);
    /// [`Error::Corruption`] for damage recovery may not repair (naming file
    /// and offset); [`Error::Io`]. A failed open deletes nothing.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = Arc::clone(&options.file_system);
        if options.create_if_missing {
            fs.create_dir_all(&dir)
                .map_err(|e| Error::io("create directory", &dir, e))?;
        } else if !fs.exists(&dir).map_err(|e| Error::io("stat", &dir, e))? {
            return Err(Error::InvalidArgument(format!(
                "no database at {}",
                dir.display()
            )));
        }
        let lock_path = dir.join("LOCK");
        let lock = fs.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked {
                path: lock_path.clone(),
            },
            _ => Error::io("lock", &lock_path, e),
        })?;
        let database_id = match identity::read(&*fs, &dir)? {
            Some(_) if options.error_if_exists => {
                return Err(Error::InvalidArgument(format!(
                    "a database already exists at {}",
                    dir.display()
                )));
            }
            Some(id) => id,
            None if options.create_if_missing => identity::create(&*fs, &dir)?,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "no database at {}",
                    dir.display()
                )));
            }
        };

        // Read and check everything before writing anything: the version
        // set, every table it names, then the log (whose recovery may cut
        // a torn tail); only then is the manifest rewritten and are
        // orphans deleted.
        let mut versions = VersionSet::open(Arc::clone(&fs), &dir, database_id)?;
        versions.set_initial_ranges(RangeMap::with_split_points(&options.initial_split_points));
        let flushed_seq = versions.flushed_seq();
        let block_cache_bytes = options.block_cache_bytes;
        let tables = TableCache::new(block_cache_bytes);
        let current = versions.current();
        for meta in current.levels.iter().flatten() {
            let path = dir.join(strata_format::manifest::table_file_name(meta.number));
            tables.get_or_open(&*fs, &path, meta.number, meta.size)?;
        }
        let memtable = Arc::new(Memtable::new(options.memtable_bytes_max));
        let retain = crate::ranges::KeyIntervals::new(&options.retain_ranges);
        let wal_options = WalOptions {
            segment_bytes_max: options.wal_segment_bytes_max,
            sync_interval: options.wal_sync_interval,
            recovery_mode: options.recovery_mode,
            require_replay_from: true,
            ..WalOptions::default()
        };
        let opened = Wal::open(
            Arc::clone(&fs),
            dir.join("wal"),
            database_id,
            wal_options,
            SeqNo(flushed_seq + 1),
            |batch| {
                apply_batch(&memtable, &batch, &retain, None);
                Ok(())
            },
        );
        let (wal, recovery) = match (
            opened,
            &versions.torn_manifest_tail,
            versions.replayed_manifest_path(),
        ) {
            // The log lacks records the cut manifest edit claimed were in
            // tables: the edit was durable, so it was damage, not a tear.
            (
                Err(Error::Corruption {
                    detail,
                    source: Some(source),
                    ..
                }),
                Some(torn),
                Some(manifest),
            ) if matches!(
                source.kind,
                strata_format::DecodeErrorKind::RecordsMissing { .. }
            ) =>
            {
                return Err(Error::corruption_msg(
                    manifest,
                    0,
                    format!(
                        "the manifest's last edit failed its checks ({torn}) and was taken for a torn write, \
                         but the commit log no longer holds what that edit recorded ({detail}): the edit was \
                         durable and is damaged"
                    ),
                ));
            }
            (opened, _, _) => opened?,
        };
        versions.finish_open()?;
        if !retain.is_everything() {
            let current = versions.current();
            let mut edit = strata_format::manifest::VersionEdit::default();
            for (level, tables) in current.levels.iter().enumerate() {
                for table in tables {
                    if !retain.overlaps(table.smallest_user_key(), table.largest_user_key()) {
                        edit.deleted.push((level as u8, table.number));
                    }
                }
            }
            if !edit.deleted.is_empty() {
                versions.log_and_apply(edit)?;
                versions.delete_obsolete()?;
            }
        }
        wal.release_below(SeqNo(flushed_seq + 1))?;
        let mut recovery = recovery;
        recovery.manifest_torn_tail = versions.torn_manifest_tail.take();
        let visible = recovery.next_seq.get().saturating_sub(1);
        let current = versions.current();
        let router = Arc::new(Router::new(Arc::clone(&current.ranges)));
        let view = ReadView {
            active: Arc::clone(&memtable),
            frozen: Vec::new(),
            version: Arc::clone(&current),
            router: Arc::clone(&router),
        };
        let inner = Arc::new(Inner {
            dir,
            options,
            fs,
            wal,
            write_gate: RwLock::new(()),
            mem: RwLock::new(MemState {
                active: memtable,
                frozen: VecDeque::new(),
            }),
            view: arc_swap::ArcSwap::from_pointee(view),
            view_publish: Mutex::new(()),
            versions: Mutex::new(versions),
            current: RwLock::new(current),
            tables,
            visibility: Visibility::new(visible),
            snapshots: Mutex::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
            recovery,
            work: Mutex::new(background::Work::default()),
            work_changed: Condvar::new(),
            counters: Counters::default(),
            flushed: std::sync::atomic::AtomicU64::new(flushed_seq),
            log_bytes_since_check: std::sync::atomic::AtomicU64::new(0),
            stall_hint: AtomicBool::new(true),
            follower: RwLock::new(None),
            replication_apply: Mutex::new(()),
            replicated: port::ReplicationCounters::default(),
            wal_database_id: database_id,
            retain: retain.clone(),
            batch_limit: std::sync::atomic::AtomicUsize::new(usize::MAX),
            batch_limit_why: parking_lot::Mutex::new(String::new()),
            router: RwLock::new(router),
            rates: Rates::default(),
            layout: RwLock::new(()),
            _lock: lock,
        });
        background::refresh_stall_hint(&inner);
        let threads = background::start(&inner)?;
        inner.freeze_if_full(0);
        Ok(Db { inner, threads })
    }
}
