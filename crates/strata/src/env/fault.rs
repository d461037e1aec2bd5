//! A fault-injecting [`FileSystem`] over a [`MemFileSystem`].
//!
//! Role: crash and error-path tests. [`FaultFileSystem`] forwards every
//! operation to its [`MemFileSystem`] and injects the faults a
//! [`FaultPlan`] asks for: a failing nth sync or directory sync, a failing
//! nth open, `ENOSPC` after a byte budget, and random short writes. Power
//! loss is [`FaultFileSystem::crash`] with a [`CrashMode`].
//!
//! Thread-safety: cheap to clone (clones share the files, the plan and the
//! counters). The plan and counters sit behind one mutex, held across each
//! faulty `write_at`/`sync_data` so that counting is exact. Lock order:
//! fault state, then the memory file system's locks.
//!
//! Invariants:
//! - A failed `sync_data` (or `sync_dir`) leaves the unsynced writes (or
//!   entry changes) visible but never durable: no later sync makes them
//!   durable and a crash loses them, as on Linux after an fsync `EIO`.
//! - Injected errors are raw OS errors (`EIO` = 5, `ENOSPC` = 28), so they
//!   look like the real thing to the engine.
//! - Counters count from the last [`FaultFileSystem::set_plan`] (or crash).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::mem::MemFile;
use super::{CrashMode, DirLock, File, FileSystem, MemFileSystem, OpenMode};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// Which faults a [`FaultFileSystem`] injects. The default injects none.
///
/// Indexes are 0-based and count calls on every file (or directory) since
/// the plan was set.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// The `sync_data` call with this index fails with `EIO`, and the
    /// unsynced writes of that file can never become durable.
    pub fail_sync_at: Option<u64>,
    /// Every `sync_data` call from this index on fails, as above.
    pub fail_all_syncs_after: Option<u64>,
    /// The `sync_dir` call with this index fails with `EIO`, and the
    /// directory's unsynced entry changes can never become durable.
    pub fail_sync_dir_at: Option<u64>,
    /// A budget for the bytes written through `write_at`. The write that
    /// would cross it writes only the bytes that fit and returns `Ok` with
    /// that short count; once the budget is spent, every non-empty
    /// `write_at` fails with `ENOSPC` and writes nothing.
    pub enospc_after_bytes: Option<u64>,
    /// The probability (0.0 to 1.0) that a `write_at` of two or more bytes
    /// writes only a random non-empty proper prefix and returns its length.
    pub short_write_probability: f64,
    /// Seeds the random choices of `short_write_probability`.
    pub seed: u64,
    /// The `open` call with this index fails with `EIO`.
    pub fail_open_at: Option<u64>,
    /// The machine loses power just before the step with this index (a
    /// step: every call that changes files or names: creating or opening
    /// for writing, `write_at`, `set_len`, `allocate`, `sync_data`,
    /// `sync_dir`, `create_dir_all`, `rename`, `remove_file`,
    /// `remove_dir_all`), as [`FaultFileSystem::crash_and_halt`] with
    /// `crash_mode` and `seed`: that call and every later one fail until
    /// [`FaultFileSystem::resume`]. [`FaultStats::steps`] counts the steps,
    /// so a test can crash at each in turn.
    pub crash_at_step: Option<u64>,
    /// How the crash of `crash_at_step` treats unsynced data. Default
    /// (`None`): [`CrashMode::DropUnsynced`].
    pub crash_mode: Option<CrashMode>,
}

impl FaultPlan {
    fn sync_fails(&self, index: u64) -> bool {
        self.fail_sync_at == Some(index)
            || self
                .fail_all_syncs_after
                .is_some_and(|first| index >= first)
    }
}

/// What a [`FaultFileSystem`] saw since its plan was set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// `sync_data` calls, failed ones included.
    pub syncs: u64,
    /// `sync_data` calls that failed by injection.
    pub failed_syncs: u64,
    /// `sync_dir` calls, failed ones included.
    pub dir_syncs: u64,
    /// `sync_dir` calls that failed by injection.
    pub failed_dir_syncs: u64,
    /// Bytes written through `write_at`.
    pub bytes_written: u64,
    /// `write_at` calls cut short by `short_write_probability`.
    pub short_writes: u64,
    /// `write_at` calls that failed with `ENOSPC`.
    pub enospc_errors: u64,
    /// Steps taken (see [`FaultPlan::crash_at_step`]).
    pub steps: u64,
}

struct Faults {
    plan: FaultPlan,
    rng: SmallRng,
    stats: FaultStats,
    opens: u64,
}

/// Whether the simulated machine is down (see
/// [`FaultFileSystem::crash_and_halt`]); shared by clones. Every operation
/// holds it shared from its check to its end, and a crash takes it
/// exclusively, so no operation that started before the crash lands after
/// it.
type Halted = Arc<parking_lot::RwLock<bool>>;

impl Faults {
    fn new(plan: FaultPlan) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(plan.seed),
            plan,
            stats: FaultStats::default(),
            opens: 0,
        }
    }
}

/// A [`MemFileSystem`] that injects the faults of a [`FaultPlan`].
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "internals")] {
/// use std::path::Path;
/// use strata::env::{FaultFileSystem, FaultPlan, FileSystem, OpenMode};
///
/// let fs = FaultFileSystem::new();
/// fs.set_plan(FaultPlan { fail_sync_at: Some(0), ..FaultPlan::default() });
/// let file = fs.open(Path::new("wal"), OpenMode::CreateNew)?;
/// file.write_all_at(b"record", 0)?;
/// assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(5));
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct FaultFileSystem {
    mem: MemFileSystem,
    faults: Arc<Mutex<Faults>>,
    halted: Halted,
}

impl Default for FaultFileSystem {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FaultFileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults = self.faults.lock();
        f.debug_struct("FaultFileSystem")
            .field("mem", &self.mem)
            .field("plan", &faults.plan)
            .field("stats", &faults.stats)
            .finish()
    }
}

impl FaultFileSystem {
    /// An empty file system with no faults planned.
    pub fn new() -> Self {
        Self {
            mem: MemFileSystem::new(),
            faults: Arc::new(Mutex::new(Faults::new(FaultPlan::default()))),
            halted: Halted::default(),
        }
    }

    /// The underlying file system (for inspection and damage in tests).
    pub fn inner(&self) -> &MemFileSystem {
        &self.mem
    }

    /// Replaces the plan and resets the counters and statistics.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.faults.lock() = Faults::new(plan);
    }

    /// What happened since the plan was set.
    pub fn stats(&self) -> FaultStats {
        self.faults.lock().stats.clone()
    }

    /// Simulates power loss ([`MemFileSystem::crash`]), then clears the plan
    /// and the counters: the restarted process sees a healthy disk.
    pub fn crash(&self, mode: CrashMode, seed: u64) {
        self.mem.crash(mode, seed);
        self.set_plan(FaultPlan::default());
    }

    /// Simulates power loss as [`FaultFileSystem::crash`] and keeps the
    /// machine down: every operation fails (with "halted") until
    /// [`FaultFileSystem::resume`]. This stops threads of the crashed
    /// process that are still running in a test from writing to the
    /// post-crash disk, which no real process could do.
    pub fn crash_and_halt(&self, mode: CrashMode, seed: u64) {
        let mut halted = self.halted.write();
        *halted = true;
        self.crash(mode, seed);
    }

    /// Brings the machine back up after [`FaultFileSystem::crash_and_halt`].
    pub fn resume(&self) {
        *self.halted.write() = false;
    }

    fn check_up(&self) -> io::Result<parking_lot::RwLockReadGuard<'_, bool>> {
        check_up(&self.halted)
    }

    fn step(&self) -> io::Result<()> {
        step(&self.faults, &self.mem, &self.halted)
    }
}

impl FileSystem for FaultFileSystem {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        if mode != OpenMode::Read {
            self.step()?;
        }
        let _up = self.check_up()?;
        {
            let mut faults = self.faults.lock();
            let index = faults.opens;
            faults.opens += 1;
            if faults.plan.fail_open_at == Some(index) {
                return Err(io::Error::from_raw_os_error(EIO));
            }
        }
        let inner = self.mem.open_file(path, mode)?;
        Ok(Arc::new(FaultFile {
            inner,
            mem: self.mem.clone(),
            faults: Arc::clone(&self.faults),
            halted: Arc::clone(&self.halted),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        let _up = self.check_up()?;
        self.mem.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let _up = self.check_up()?;
        self.mem.list_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        let _up = self.check_up()?;
        self.mem.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        let _up = self.check_up()?;
        self.mem.remove_file(path)
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        let _up = self.check_up()?;
        self.mem.is_dir(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        let _up = self.check_up()?;
        self.mem.remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        let _up = self.check_up()?;
        let mut faults = self.faults.lock();
        let index = faults.stats.dir_syncs;
        faults.stats.dir_syncs += 1;
        if faults.plan.fail_sync_dir_at == Some(index) {
            self.mem.discard_dir_pending(path)?;
            faults.stats.failed_dir_syncs += 1;
            return Err(io::Error::from_raw_os_error(EIO));
        }
        self.mem.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let _up = self.check_up()?;
        self.mem.exists(path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let _up = self.check_up()?;
        self.mem.lock(path)
    }

    fn map(&self, path: &Path) -> io::Result<super::Mapped> {
        let _up = self.check_up()?;
        self.mem.map(path)
    }
}

/// An open file of a [`FaultFileSystem`].
#[derive(Debug)]
struct FaultFile {
    inner: MemFile,
    mem: MemFileSystem,
    faults: Arc<Mutex<Faults>>,
    halted: Halted,
}

impl FaultFile {
    fn check_up(&self) -> io::Result<parking_lot::RwLockReadGuard<'_, bool>> {
        check_up(&self.halted)
    }

    fn step(&self) -> io::Result<()> {
        step(&self.faults, &self.mem, &self.halted)
    }
}

/// Counts one step and, if the plan says so, loses power before it (see
/// [`FaultPlan::crash_at_step`]). Called before the operation takes its
/// [`check_up`] guard (a crash takes the halt lock exclusively).
fn step(faults: &Mutex<Faults>, mem: &MemFileSystem, halted: &Halted) -> io::Result<()> {
    if *halted.read() {
        return Ok(());
    }
    let crash = {
        let mut faults = faults.lock();
        let index = faults.stats.steps;
        faults.stats.steps += 1;
        (faults.plan.crash_at_step == Some(index)).then(|| {
            (
                faults.plan.crash_mode.unwrap_or(CrashMode::DropUnsynced),
                faults.plan.seed,
            )
        })
    };
    if let Some((mode, seed)) = crash {
        let mut down = halted.write();
        *down = true;
        mem.crash(mode, seed);
        *faults.lock() = Faults::new(FaultPlan::default());
        return Err(io::Error::other(
            "the simulated machine lost power (crash_at_step)",
        ));
    }
    Ok(())
}

/// Fails if the machine is halted; the returned guard keeps a crash from
/// happening until the operation holding it is over.
fn check_up(halted: &Halted) -> io::Result<parking_lot::RwLockReadGuard<'_, bool>> {
    let guard = halted.read();
    if *guard {
        return Err(io::Error::other(
            "the simulated machine is halted after a crash",
        ));
    }
    Ok(guard)
}

impl File for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let _up = self.check_up()?;
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.step()?;
        let _up = self.check_up()?;
        let mut faults = self.faults.lock();
        let mut len = buf.len();
        if len == 0 {
            return self.inner.write_at(buf, offset);
        }
        if let Some(budget) = faults.plan.enospc_after_bytes {
            let room = budget.saturating_sub(faults.stats.bytes_written);
            if room == 0 {
                faults.stats.enospc_errors += 1;
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            len = len.min(usize::try_from(room).unwrap_or(usize::MAX));
        }
        let probability = faults.plan.short_write_probability;
        if len > 1 && probability > 0.0 && faults.rng.random_bool(probability.min(1.0)) {
            len = faults.rng.random_range(1..len);
            faults.stats.short_writes += 1;
        }
        let written = self.inner.write_at(buf.get(..len).unwrap_or(buf), offset)?;
        faults.stats.bytes_written += written as u64;
        Ok(written)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.step()?;
        let _up = self.check_up()?;
        let mut faults = self.faults.lock();
        let index = faults.stats.syncs;
        faults.stats.syncs += 1;
        if faults.plan.sync_fails(index) {
            self.inner.discard_unsynced()?;
            faults.stats.failed_syncs += 1;
            return Err(io::Error::from_raw_os_error(EIO));
        }
        self.inner.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        let _up = self.check_up()?;
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.step()?;
        let _up = self.check_up()?;
        self.inner.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.step()?;
        let _up = self.check_up()?;
        self.inner.allocate(len)
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("plan", &self.plan)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const MODES: [CrashMode; 4] = [
        CrashMode::DropUnsynced,
        CrashMode::KeepPrefix,
        CrashMode::GarbleSectors,
        CrashMode::Random,
    ];

    /// A file system with a durable, empty file `wal`, and that file.
    fn fs_with_file() -> (FaultFileSystem, Arc<dyn File>) {
        let fs = FaultFileSystem::new();
        let file = fs.open(Path::new("wal"), OpenMode::CreateNew).unwrap();
        fs.sync_dir(Path::new("")).unwrap();
        (fs, file)
    }

    fn plan() -> FaultPlan {
        FaultPlan::default()
    }

    #[test]
    fn nth_sync_fails_with_eio_and_its_bytes_never_become_durable() {
        for mode in MODES {
            let (fs, file) = fs_with_file();
            fs.set_plan(FaultPlan {
                fail_sync_at: Some(1),
                ..plan()
            });
            file.write_all_at(b"kept", 0).unwrap();
            file.sync_data().unwrap();
            file.write_all_at(b"lost", 4).unwrap();
            assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(5));
            // Like dirty pages marked clean: still visible, never durable.
            assert_eq!(fs.inner().read_file(Path::new("wal")).unwrap(), b"keptlost");
            file.write_all_at(b"later", 8).unwrap();
            file.sync_data().unwrap();
            assert_eq!(
                fs.inner().read_file(Path::new("wal")).unwrap(),
                b"keptlostlater"
            );
            fs.crash(mode, 3);
            assert_eq!(
                fs.inner().read_file(Path::new("wal")).unwrap(),
                b"kept\0\0\0\0later"
            );
            assert_eq!(fs.inner().unsynced_bytes(), 0);
        }
    }

    #[test]
    fn bytes_of_a_failed_sync_are_lost_by_a_crash() {
        for mode in MODES {
            for seed in 0..16 {
                let (fs, file) = fs_with_file();
                fs.set_plan(FaultPlan {
                    fail_sync_at: Some(0),
                    ..plan()
                });
                file.write_all_at(&[7; 1000], 0).unwrap();
                assert!(file.sync_data().is_err());
                assert_eq!(fs.inner().unsynced_bytes(), 0);
                fs.crash(mode, seed);
                assert_eq!(
                    fs.inner().read_file(Path::new("wal")).unwrap(),
                    b"",
                    "{mode:?} {seed}"
                );
            }
        }
    }

    #[test]
    fn every_sync_from_the_nth_fails() {
        let (fs, file) = fs_with_file();
        fs.set_plan(FaultPlan {
            fail_all_syncs_after: Some(2),
            ..plan()
        });
        for index in 0..5u8 {
            file.write_all_at(&[index], u64::from(index)).unwrap();
            assert_eq!(file.sync_data().is_ok(), index < 2, "sync {index}");
        }
        let stats = fs.stats();
        assert_eq!((stats.syncs, stats.failed_syncs), (5, 3));
        assert_eq!(fs.inner().durable_len(Path::new("wal")).unwrap(), 2);
    }

    #[test]
    fn enospc_after_n_bytes() {
        let (fs, file) = fs_with_file();
        fs.set_plan(FaultPlan {
            enospc_after_bytes: Some(10),
            ..plan()
        });
        assert_eq!(file.write_at(&[1; 6], 0).unwrap(), 6);
        assert_eq!(file.write_at(&[2; 6], 6).unwrap(), 4);
        assert_eq!(
            file.write_at(&[3; 6], 10).unwrap_err().raw_os_error(),
            Some(28)
        );
        assert_eq!(file.write_at(&[], 10).unwrap(), 0);
        assert_eq!(file.len().unwrap(), 10);
        let stats = fs.stats();
        assert_eq!((stats.bytes_written, stats.enospc_errors), (10, 1));
    }

    #[test]
    fn write_all_at_stops_at_enospc_after_filling_the_budget() {
        let (fs, file) = fs_with_file();
        fs.set_plan(FaultPlan {
            enospc_after_bytes: Some(10),
            ..plan()
        });
        let error = file.write_all_at(&[1; 25], 0).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28));
        assert_eq!(file.len().unwrap(), 10);
    }

    #[test]
    fn short_writes_with_write_all_at_still_write_everything() {
        let (fs, file) = fs_with_file();
        fs.set_plan(FaultPlan {
            short_write_probability: 0.5,
            seed: 9,
            ..plan()
        });
        let content: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        for (index, record) in content.chunks(64).enumerate() {
            file.write_all_at(record, index as u64 * 64).unwrap();
        }
        assert_eq!(fs.inner().read_file(Path::new("wal")).unwrap(), content);
        let stats = fs.stats();
        assert!(stats.short_writes > 0);
        assert_eq!(stats.bytes_written, 4096);
    }

    #[test]
    fn short_write_is_a_non_empty_proper_prefix() {
        let (fs, file) = fs_with_file();
        fs.set_plan(FaultPlan {
            short_write_probability: 1.0,
            seed: 1,
            ..plan()
        });
        for round in 0..50 {
            let written = file.write_at(&[0; 8], 0).unwrap();
            assert!((1..8).contains(&written), "round {round}: {written}");
        }
        assert_eq!(file.write_at(&[0], 0).unwrap(), 1);
    }

    #[test]
    fn dir_sync_failure_leaves_entries_undurable() {
        let fs = FaultFileSystem::new();
        fs.set_plan(FaultPlan {
            fail_sync_dir_at: Some(0),
            ..plan()
        });
        let file = fs.open(Path::new("a"), OpenMode::CreateNew).unwrap();
        file.write_all_at(b"data", 0).unwrap();
        file.sync_data().unwrap();
        assert_eq!(
            fs.sync_dir(Path::new("")).unwrap_err().raw_os_error(),
            Some(5)
        );
        assert!(fs.exists(Path::new("a")).unwrap());
        fs.sync_dir(Path::new("")).unwrap();
        let stats = fs.stats();
        assert_eq!((stats.dir_syncs, stats.failed_dir_syncs), (2, 1));
        fs.crash(CrashMode::KeepPrefix, 0);
        assert!(!fs.exists(Path::new("a")).unwrap());
    }

    #[test]
    fn nth_open_fails_with_eio() {
        let (fs, _file) = fs_with_file();
        fs.set_plan(FaultPlan {
            fail_open_at: Some(1),
            ..plan()
        });
        fs.open(Path::new("wal"), OpenMode::Read).unwrap();
        let error = fs.open(Path::new("wal"), OpenMode::Read).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(5));
        fs.open(Path::new("wal"), OpenMode::Read).unwrap();
    }

    #[test]
    fn crash_clears_the_plan_and_kills_old_handles() {
        let (fs, file) = fs_with_file();
        fs.set_plan(FaultPlan {
            fail_all_syncs_after: Some(0),
            ..plan()
        });
        fs.crash(CrashMode::DropUnsynced, 0);
        assert_eq!(fs.stats(), FaultStats::default());
        assert!(
            file.write_at(b"x", 0)
                .unwrap_err()
                .to_string()
                .contains("crashed")
        );
        let file = fs.open(Path::new("wal"), OpenMode::ReadWrite).unwrap();
        file.write_all_at(b"x", 0).unwrap();
        file.sync_data().unwrap();
    }

    #[test]
    fn set_plan_resets_the_counters() {
        let (fs, file) = fs_with_file();
        file.sync_data().unwrap();
        file.write_all_at(b"abc", 0).unwrap();
        assert_eq!(fs.stats().syncs, 1);
        fs.set_plan(FaultPlan {
            fail_sync_at: Some(0),
            ..plan()
        });
        assert_eq!(fs.stats(), FaultStats::default());
        assert!(file.sync_data().is_err());
    }
}
