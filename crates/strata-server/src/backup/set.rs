//! A backup directory: base backups (`base/<seq:020>/`, each a complete,
//! openable database with a `BACKUP` descriptor) and the archived log
//! (`log/*.slog`, see [`super::segment`]).
//!
//! The descriptor (FORMAT, version 1, text):
//!
//! ```text
//! strata-backup 1
//! seq <every write up to it is in the backup>
//! time_unix_ms <when it was taken>
//! database_id <hex>
//! file <path relative to the backup> <bytes> <xxh3-64 hex>     one per file
//! end <xxh3-64 hex of every line above, newlines included>
//! ```
//!
//! A base backup is built in `base/.partial-*`, every file and the
//! descriptor synced, then renamed to `base/<seq>` and `base/` synced: a
//! directory with a `<seq>` name is whole; a `.partial-*` one (left by a
//! crash) is never read and is removed by the next backup.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

/// The descriptor's file name inside a base backup.
pub(crate) const DESCRIPTOR: &str = "BACKUP";
const HEADER: &str = "strata-backup 1";

/// A base backup, as its descriptor describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Base {
    /// Its directory.
    pub(crate) dir: PathBuf,
    /// Every write up to and including this is in it.
    pub(crate) seq: u64,
    /// When it was taken.
    pub(crate) time_unix_ms: u64,
    /// The database's id.
    pub(crate) database_id: u128,
    /// Its files: relative path, length, xxh3-64.
    pub(crate) files: Vec<(String, u64, u64)>,
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Syncs a directory (its entries: created and renamed files).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing directory {}: {e}", dir.display()))
}

/// Every file under `dir`, as paths relative to it, sorted.
fn files_under(dir: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let here = dir.join(&relative);
        let entries =
            std::fs::read_dir(&here).map_err(|e| format!("reading {}: {e}", here.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", here.display()))?;
            let name = relative.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
            if kind.is_dir() {
                pending.push(name);
            } else {
                out.push(name.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies `from` to `to` (a new file), syncs it; returns its length and
/// xxh3-64.
pub(crate) fn copy_file(from: &Path, to: &Path) -> Result<(u64, u64), String> {
    use std::io::Read as _;
    let mut source =
        std::fs::File::open(from).map_err(|e| format!("opening {}: {e}", from.display()))?;
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| format!("creating {}: {e}", to.display()))?;
    let mut hash = Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut length = 0u64;
    loop {
        let n = source
            .read(&mut buffer)
            .map_err(|e| format!("reading {}: {e}", from.display()))?;
        let Some(chunk) = buffer.get(..n) else { break };
        if chunk.is_empty() {
            break;
        }
        hash.update(chunk);
        target
            .write_all(chunk)
            .map_err(|e| format!("writing {}: {e}", to.display()))?;
        length += n as u64;
    }
    target
        .sync_all()
        .map_err(|e| format!("syncing {}: {e}", to.display()))?;
    Ok((length, hash.digest()))
}

/// The descriptor text of `base`.
fn describe(base: &Base) -> String {
    let mut text = format!(
        "{HEADER}\nseq {}\ntime_unix_ms {}\ndatabase_id {:032x}\n",
        base.seq, base.time_unix_ms, base.database_id
    );
    for (path, length, hash) in &base.files {
        text.push_str(&format!("file {path} {length} {hash:016x}\n"));
    }
    let digest = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    text.push_str(&format!("end {digest:016x}\n"));
    text
}

/// Parses a descriptor (`dir` is where it was read from).
pub(crate) fn parse_descriptor(text: &str, dir: &Path) -> Result<Base, String> {
    let at = || format!("{}", dir.join(DESCRIPTOR).display());
    let (body, end) = text
        .trim_end_matches('\n')
        .rsplit_once('\n')
        .ok_or_else(|| format!("{}: too short", at()))?;
    let body = format!("{body}\n");
    let stored = end
        .strip_prefix("end ")
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .ok_or_else(|| format!("{}: no end line (cut short?)", at()))?;
    let actual = xxhash_rust::xxh3::xxh3_64(body.as_bytes());
    if stored != actual {
        return Err(format!(
            "{}: checksum mismatch (end says {stored:016x}, the lines hash to {actual:016x})",
            at()
        ));
    }
    let mut lines = body.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!("{}: not a version-1 backup descriptor", at()));
    }
    let mut field = |name: &str| -> Result<String, String> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(' '))
            .map(str::to_string)
            .ok_or_else(|| format!("{}: expected a {name} line", at()))
    };
    let bad = |what: &str| format!("{}: bad {what}", at());
    let seq = field("seq")?.parse().map_err(|_| bad("seq"))?;
    let time_unix_ms = field("time_unix_ms")?
        .parse()
        .map_err(|_| bad("time_unix_ms"))?;
    let database_id =
        u128::from_str_radix(&field("database_id")?, 16).map_err(|_| bad("database_id"))?;
    let mut files = Vec::new();
    for line in lines {
        let mut parts = line.splitn(4, ' ');
        let (Some("file"), Some(path), Some(length), Some(hash)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{}: bad line {line:?}", at()));
        };
        let length = length.parse().map_err(|_| bad("file length"))?;
        let hash = u64::from_str_radix(hash, 16).map_err(|_| bad("file checksum"))?;
        if path.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(format!("{}: file path {path:?} leaves the backup", at()));
        }
        files.push((path.to_string(), length, hash));
    }
    Ok(Base {
        dir: dir.to_path_buf(),
        seq,
        time_unix_ms,
        database_id,
        files,
    })
}

/// Makes a base backup of the checkpoint in `checkpoint` (consistent at
/// `seq`) in `root/base/<seq>`: copies and checksums every file, writes
/// the descriptor, renames it into place. Returns it and the bytes copied.
pub(crate) fn store_base(
    root: &Path,
    checkpoint: &Path,
    seq: u64,
    database_id: u128,
) -> Result<(Base, u64), String> {
    let base_root = root.join("base");
    std::fs::create_dir_all(&base_root)
        .map_err(|e| format!("creating {}: {e}", base_root.display()))?;
    remove_partials(&base_root);
    let time_unix_ms = now_ms();
    let staging = base_root.join(format!(".partial-{time_unix_ms}-{}", std::process::id()));
    std::fs::create_dir(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let mut files = Vec::new();
    let mut bytes = 0;
    for relative in files_under(checkpoint)? {
        let to = staging.join(&relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let (length, hash) = copy_file(&checkpoint.join(&relative), &to)?;
        bytes += length;
        files.push((relative, length, hash));
    }
    for dir in [staging.join("wal"), staging.clone()] {
        if dir.exists() {
            sync_dir(&dir)?;
        }
    }
    let final_dir = base_root.join(format!("{seq:020}"));
    let base = Base {
        dir: final_dir.clone(),
        seq,
        time_unix_ms,
        database_id,
        files,
    };
    let descriptor = staging.join(DESCRIPTOR);
    let mut file = std::fs::File::create(&descriptor)
        .map_err(|e| format!("creating {}: {e}", descriptor.display()))?;
    file.write_all(describe(&base).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("writing {}: {e}", descriptor.display()))?;
    sync_dir(&staging)?;
    if final_dir.exists() {
        // Nothing was written since that backup: it holds the same.
        let _ = std::fs::remove_dir_all(&staging);
        return Ok((base, 0));
    }
    std::fs::rename(&staging, &final_dir).map_err(|e| {
        format!(
            "renaming {} to {}: {e}",
            staging.display(),
            final_dir.display()
        )
    })?;
    sync_dir(&base_root)?;
    Ok((base, bytes))
}

/// Removes `.partial-*` directories a crash left (best effort).
pub(crate) fn remove_partials(base_root: &Path) {
    if let Ok(entries) = std::fs::read_dir(base_root) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".partial-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Every whole base backup in `root`, oldest first (directories being
/// built are skipped; a damaged descriptor is an error naming it).
pub(crate) fn list_bases(root: &Path) -> Result<Vec<Base>, String> {
    let base_root = root.join("base");
    let mut bases = Vec::new();
    let Ok(entries) = std::fs::read_dir(&base_root) else {
        return Ok(bases);
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", base_root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.parse::<u64>().is_err() {
            continue;
        }
        let dir = entry.path();
        let text = std::fs::read_to_string(dir.join(DESCRIPTOR))
            .map_err(|e| format!("reading {}: {e}", dir.join(DESCRIPTOR).display()))?;
        bases.push(parse_descriptor(&text, &dir)?);
    }
    bases.sort_by_key(|b| b.seq);
    Ok(bases)
}

/// Copies `base` into `to`, checking every file's length and checksum
/// against the descriptor.
pub(crate) fn copy_base(base: &Base, to: &Path) -> Result<u64, String> {
    let mut bytes = 0;
    for (relative, length, hash) in &base.files {
        let target = to.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let source = base.dir.join(relative);
        let (copied, copied_hash) = copy_file(&source, &target)?;
        if (copied, copied_hash) != (*length, *hash) {
            return Err(format!(
                "base backup file {} is damaged: {copied} bytes hashing to {copied_hash:016x}, the descriptor says {length} bytes, {hash:016x}",
                source.display()
            ));
        }
        bytes += copied;
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn random_descriptor_text_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
        let alphabet =
            b"strata-backup 1\nseq time_unix_ms database_id file end 0123456789abcdef ./";
        for _ in 0..20_000 {
            let text: String = (0..rng.random_range(0..120))
                .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
                .collect();
            let _ = parse_descriptor(&text, Path::new("/b"));
        }
    }

    #[test]
    fn descriptors_round_trip_and_damage_is_refused() {
        let base = Base {
            dir: PathBuf::from("/b"),
            seq: 42,
            time_unix_ms: 7,
            database_id: 0xabc,
            files: vec![("wal/1.wal".into(), 10, 0xff), ("IDENTITY".into(), 3, 1)],
        };
        let text = describe(&base);
        assert_eq!(parse_descriptor(&text, Path::new("/b")).unwrap(), base);
        let damaged = text.replace("seq 42", "seq 43");
        assert!(
            parse_descriptor(&damaged, Path::new("/b"))
                .unwrap_err()
                .contains("checksum")
        );
        let cut = text.lines().take(3).collect::<Vec<_>>().join("\n");
        assert!(parse_descriptor(&cut, Path::new("/b")).is_err());
        assert!(parse_descriptor("", Path::new("/b")).is_err());
    }
}
