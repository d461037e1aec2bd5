//! The node's health figures: the process (CPU seconds, resident memory,
//! open file descriptors, threads, from `/proc/self`), the machine's share
//! of it (CPU cores and the memory limit, cgroup-aware), the disk (bytes
//! of the data directory against its file system's size and free space),
//! and how long every fsync of the database's files takes.
//!
//! fsync latency needs no change to the engine: the node opens its
//! database through [`TimedFileSystem`], the real file system with every
//! `sync_data` and directory sync timed into a histogram by file kind
//! (commit log, table, other).
//!
//! Thread safety: every reader here is a pure function of `/proc`, `/sys`
//! or the directory at call time; the histograms are `prometheus-client`'s
//! (atomic). Off Linux the `/proc` figures are absent (`None`), not zero.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use strata::env::{DirLock, File, FileSystem, MapWriter, Mapped, OpenMode};

/// What `/proc/self` says about the process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ProcessFigures {
    /// User plus system CPU time since start, in seconds.
    pub(crate) cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub(crate) resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub(crate) virtual_bytes: u64,
    /// Threads.
    pub(crate) threads: u64,
    /// Open file descriptors.
    pub(crate) open_fds: u64,
    /// The soft limit on open file descriptors (`None`: unlimited).
    pub(crate) max_fds: Option<u64>,
}

/// Fields 14 and 15 (utime, stime, in clock ticks), 20 (threads), 23
/// (vsize, bytes) and 24 (rss, pages) of `/proc/self/stat`, counted after
/// the command name's closing parenthesis (the name may hold spaces).
fn parse_stat(text: &str, ticks_per_second: f64, page_bytes: u64) -> Option<ProcessFigures> {
    let after_name = text.rsplit_once(')')?.1;
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    let utime = field(14)?;
    let stime = field(15)?;
    Some(ProcessFigures {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        threads: field(20)?,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page_bytes),
        open_fds: 0,
        max_fds: None,
    })
}

/// The soft "Max open files" of `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The process's figures now (`None` without `/proc`).
pub(crate) fn process() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as u64;
    let mut figures = parse_stat(&stat, ticks.max(1.0), page)?;
    figures.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    figures.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| parse_max_fds(&l));
    Some(figures)
}

/// CPU cores the process may use (the affinity mask and cgroup quota
/// included, as the standard library counts them).
pub(crate) fn cpu_cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// The memory the process may use: the cgroup limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) if one is set, else the machine's memory.
pub(crate) fn memory_limit_bytes() -> Option<u64> {
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|t| t.trim().parse::<u64>().ok())
    // v1 reports "no limit" as a huge number.
    .find(|&v| v < 1 << 60);
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_mem_total(&m));
    match (cgroup, machine) {
        (Some(c), Some(m)) => Some(c.min(m)),
        (c, m) => c.or(m),
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The data directory and its file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiskFigures {
    /// Bytes of the files under the data directory.
    pub(crate) data_bytes: u64,
    /// The file system's size.
    pub(crate) filesystem_bytes: u64,
    /// Bytes an unprivileged process may still write there.
    pub(crate) filesystem_free_bytes: u64,
}

/// Sums the sizes of every file under `dir` (not following links).
fn directory_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The data directory's figures now (`None` if its file system cannot be
/// asked).
pub(crate) fn disk(data_dir: &Path) -> Option<DiskFigures> {
    let stat = rustix::fs::statvfs(data_dir).ok()?;
    Some(DiskFigures {
        data_bytes: directory_bytes(data_dir),
        filesystem_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
        filesystem_free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
    })
}

/// The label of the fsync histogram: which kind of file was synced.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FsyncLabels {
    /// `wal` (commit-log segments), `table`, `directory` or `other`
    /// (manifest, identity, ranges).
    pub(crate) file: &'static str,
}

/// The fsync latency histograms, by file kind.
pub(crate) type FsyncSeconds = Family<FsyncLabels, Histogram, fn() -> Histogram>;

/// A new, empty fsync histogram family: 10 µs to about 10 s, doubling.
pub(crate) fn fsync_seconds() -> FsyncSeconds {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_01, 2.0, 20)))
}

fn file_kind(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("wal") => "wal",
        Some("sst") => "table",
        _ => "other",
    }
}

/// A file system that times every fsync into [`FsyncSeconds`] and
/// otherwise does what `inner` does.
#[derive(Debug)]
pub(crate) struct TimedFileSystem {
    inner: Arc<dyn FileSystem>,
    fsync_seconds: FsyncSeconds,
}

impl TimedFileSystem {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn FileSystem>, fsync_seconds: FsyncSeconds) -> Self {
        Self {
            inner,
            fsync_seconds,
        }
    }
}

/// A file whose `sync_data` is timed.
#[derive(Debug)]
struct TimedFile {
    inner: Arc<dyn File>,
    histogram: Histogram,
}

impl File for TimedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let started = Instant::now();
        let result = self.inner.sync_data();
        self.histogram.observe(started.elapsed().as_secs_f64());
        result
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64) -> std::io::Result<()> {
        self.inner.allocate(len)
    }
    fn map_writer(&self, len: u64) -> std::io::Result<Option<Box<dyn MapWriter>>> {
        self.inner.map_writer(len)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
}

impl FileSystem for TimedFileSystem {
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Arc<dyn File>> {
        let inner = self.inner.open(path, mode)?;
        let histogram = self
            .fsync_seconds
            .get_or_create(&FsyncLabels {
                file: file_kind(path),
            })
            .clone();
        Ok(Arc::new(TimedFile { inner, histogram }))
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        let started = Instant::now();
        let result = self.inner.sync_dir(path);
        self.fsync_seconds
            .get_or_create(&FsyncLabels { file: "directory" })
            .observe(started.elapsed().as_secs_f64());
        result
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn is_dir(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.is_dir(path)
    }
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn DirLock>> {
        self.inner.lock(path)
    }
    fn map(&self, path: &Path) -> std::io::Result<Mapped> {
        self.inner.map(path)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.hard_link(from, to)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid ... : utime=250 stime=50 threads=7
        // vsize=4096000 rss=300.
        let mut fields = vec!["0"; 50];
        fields[0] = "S";
        fields[14 - 3] = "250";
        fields[15 - 3] = "50";
        fields[20 - 3] = "7";
        fields[23 - 3] = "4096000";
        fields[24 - 3] = "300";
        let text = format!("42 (a (b) c) {}", fields.join(" "));
        let figures = parse_stat(&text, 100.0, 4096).unwrap();
        assert_eq!(figures.cpu_seconds, 3.0);
        assert_eq!(figures.threads, 7);
        assert_eq!(figures.virtual_bytes, 4_096_000);
        assert_eq!(figures.resident_bytes, 300 * 4096);
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(parse_stat("", 100.0, 4096), None);
        assert_eq!(parse_stat("1 (x) S 1 2", 100.0, 4096), None);
        assert_eq!(parse_max_fds("nothing"), None);
        assert_eq!(parse_mem_total("MemTotal: lots"), None);
    }

    #[test]
    fn limits_and_meminfo_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_mem_total("MemTotal:        8000 kB\nMemFree: 1 kB\n"),
            Some(8000 * 1024)
        );
    }

    #[test]
    fn this_process_has_figures() {
        let figures = process().unwrap();
        assert!(figures.threads >= 1);
        assert!(figures.resident_bytes > 0);
        assert!(figures.open_fds > 0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), [0u8; 1000]).unwrap();
        let disk = disk(dir.path()).unwrap();
        assert_eq!(disk.data_bytes, 1000);
        assert!(disk.filesystem_bytes >= disk.filesystem_free_bytes);
    }

    #[test]
    fn fsyncs_through_the_timed_file_system_are_counted_by_kind() {
        let histograms = fsync_seconds();
        let fs = TimedFileSystem::new(Arc::new(strata::RealFileSystem), histograms.clone());
        let dir = tempfile::tempdir().unwrap();
        let db = strata::Db::open(
            dir.path().join("db"),
            strata::Options {
                file_system: Arc::new(fs),
                ..strata::Options::default()
            },
        )
        .unwrap();
        db.write(
            {
                let mut b = strata::WriteBatch::new();
                b.put(b"k", b"v");
                b
            },
            &strata::WriteOptions { sync: true },
        )
        .unwrap();
        db.close().unwrap();
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("fsync_seconds", "test", histograms);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let wal_count = text
            .lines()
            .find(|l| l.starts_with("fsync_seconds_count{file=\"wal\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap();
        assert!(wal_count >= 1, "{text}");
    }
}
