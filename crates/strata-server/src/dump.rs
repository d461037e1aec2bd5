//! `strata dump` and `strata load`: every key and value of a database in a
//! portable text file, for moving data between versions of Strata or out
//! of it.
//!
//! FORMAT (version 1; also in `docs/format.md`):
//!
//! ```text
//! strata-dump 1\n                         header: the format and its version
//! # any comment\n                         ignored (not checksummed)
//! <hex key>\t<hex value>\n                one line per key, in key order
//! ...
//! end <entries> <xxh3-64 hex>\n           the entry count and the xxh3-64 of
//!                                         every entry line, newline included
//! ```
//!
//! Hex is lowercase, two digits a byte; an empty value is an empty field
//! after the tab (the tab is always there), so an empty value and an
//! absent key differ. Keys are strictly increasing. A dump holds the live
//! state (what a scan returns): deletions and range deletions are already
//! applied, so loading it into an empty database gives the same state and
//! dumping that again gives the same file byte for byte. Nothing follows
//! the `end` line; a file without it (cut short) is refused whole before
//! anything is written.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata::{Db, Options, WriteBatch, WriteOptions};
use strata_proto::v1::{Operation, WriteRequest, operation};
use xxhash_rust::xxh3::Xxh3;

/// The first line of every dump.
const HEADER: &str = "strata-dump 1";

/// `strata dump`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DumpArgs {
    /// The database directory: a stopped node's, a checkpoint, or a
    /// database `strata restore` rebuilt (not a base backup in place: opening
    /// it would change its files).
    #[arg(long)]
    pub(crate) data_dir: PathBuf,
    /// The dump file to write (must not exist).
    #[arg(long)]
    pub(crate) out: PathBuf,
}

/// `strata load`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["data_dir", "node"])))]
pub(crate) struct LoadArgs {
    /// The dump file.
    #[arg(long)]
    pub(crate) file: PathBuf,
    /// Load into a new database here (missing or empty).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Or load into this running primary (host:port or URL).
    #[arg(long)]
    pub(crate) node: Option<String>,
    #[command(flatten)]
    pub(crate) security: crate::connect::Security,
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8], out: &mut String) {
    use std::fmt::Write as _;
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// The bytes of lowercase or uppercase hex text.
fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", char::from(c))),
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    bytes
        .chunks_exact(2)
        .map(|pair| match pair {
            [high, low] => Ok(digit(*high)? << 4 | digit(*low)?),
            _ => Err("odd number of hex digits".into()),
        })
        .collect()
}

/// Prints "what: n entries, b bytes" on stderr at most once a second.
struct Progress {
    what: &'static str,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(what: &'static str) -> Self {
        let now = Instant::now();
        Self {
            what,
            started: now,
            last: now,
        }
    }

    fn tick(&mut self, entries: u64, bytes: u64) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            eprintln!(
                "{}: {entries} entries, {bytes} bytes ({:.0} s)",
                self.what,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Writes the dump of `db` (as of one snapshot) to `out`; returns the
/// entry count and the sequence number it reflects.
pub(crate) fn dump_db(db: &Db, out: &mut impl Write) -> Result<(u64, u64), String> {
    let snapshot = db.snapshot();
    let seq = snapshot.seq().get();
    let io = |e: std::io::Error| format!("writing the dump: {e}");
    writeln!(out, "{HEADER}").map_err(io)?;
    writeln!(out, "# as of seq {seq}").map_err(io)?;
    let mut hash = Xxh3::new();
    let mut entries = 0u64;
    let mut bytes = 0u64;
    let mut line = String::new();
    let mut progress = Progress::new("dump");
    let iter = snapshot.scan(..).map_err(|e| format!("scanning: {e}"))?;
    for entry in iter {
        let (key, value) = entry.map_err(|e| format!("scanning after {entries} entries: {e}"))?;
        line.clear();
        hex(&key, &mut line);
        line.push('\t');
        hex(&value, &mut line);
        line.push('\n');
        hash.update(line.as_bytes());
        out.write_all(line.as_bytes()).map_err(io)?;
        entries += 1;
        bytes += (key.len() + value.len()) as u64;
        progress.tick(entries, bytes);
    }
    writeln!(out, "end {entries} {:016x}", hash.digest()).map_err(io)?;
    Ok((entries, seq))
}

/// `strata dump`: into `<out>.partial`, renamed to `out` once complete
/// and synced.
pub(crate) fn dump(args: &DumpArgs) -> Result<(), String> {
    if args.out.exists() {
        return Err(format!("{} exists; give a new file", args.out.display()));
    }
    let db = crate::open_existing(&args.data_dir)?;
    let partial = args.out.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .map_err(|e| format!("creating {}: {e}", partial.display()))?;
    let mut writer = BufWriter::new(file);
    let (entries, seq) = dump_db(&db, &mut writer)?;
    let file = writer
        .into_inner()
        .map_err(|e| format!("writing {}: {e}", partial.display()))?;
    file.sync_all()
        .map_err(|e| format!("syncing {}: {e}", partial.display()))?;
    std::fs::rename(&partial, &args.out).map_err(|e| {
        format!(
            "renaming {} to {}: {e}",
            partial.display(),
            args.out.display()
        )
    })?;
    println!(
        "dumped {entries} entries as of seq {seq} to {}",
        args.out.display()
    );
    db.close().map_err(|e| format!("closing: {e}"))
}

/// One entry of a dump.
type Entry = (Vec<u8>, Vec<u8>);

/// Reads a dump, calling `each` for every entry in order; checks the
/// header, every line, key order, the count and the checksum. Returns the
/// entry count.
fn read_dump(
    path: &Path,
    mut each: impl FnMut(Entry) -> Result<(), String>,
) -> Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut reader = BufReader::new(file);
    let at = |n: u64| format!("{} line {n}", path.display());
    let mut line = String::new();
    let mut number = 0u64;
    let mut read_line = |line: &mut String, number: &mut u64| -> Result<bool, String> {
        line.clear();
        *number += 1;
        let n = reader
            .read_line(line)
            .map_err(|e| format!("{}: {e}", at(*number)))?;
        Ok(n > 0)
    };
    if !read_line(&mut line, &mut number)? || line.trim_end_matches('\n') != HEADER {
        return Err(format!(
            "{}: not a Strata dump (the first line must be {HEADER:?})",
            at(1)
        ));
    }
    let mut hash = Xxh3::new();
    let mut entries = 0u64;
    let mut previous: Option<Vec<u8>> = None;
    loop {
        if !read_line(&mut line, &mut number)? {
            return Err(format!(
                "{}: the dump ends without its `end` line (cut short?); nothing was loaded",
                path.display()
            ));
        }
        let Some(text) = line.strip_suffix('\n') else {
            return Err(format!(
                "{}: the last line has no newline (cut short?)",
                at(number)
            ));
        };
        if text.starts_with('#') {
            continue;
        }
        if let Some(rest) = text.strip_prefix("end ") {
            let mut fields = rest.split(' ');
            let count = fields.next().and_then(|c| c.parse::<u64>().ok());
            let digest = fields.next().and_then(|d| u64::from_str_radix(d, 16).ok());
            if fields.next().is_some() || count.is_none() || digest.is_none() {
                return Err(format!("{}: bad end line {text:?}", at(number)));
            }
            if count != Some(entries) {
                return Err(format!(
                    "{}: the end line counts {} entries, the file holds {entries}",
                    at(number),
                    count.unwrap_or_default()
                ));
            }
            if digest != Some(hash.digest()) {
                return Err(format!(
                    "{}: checksum mismatch: the end line says {:016x}, the entries hash to {:016x}",
                    at(number),
                    digest.unwrap_or_default(),
                    hash.digest()
                ));
            }
            if read_line(&mut line, &mut number)? {
                return Err(format!("{}: text after the end line", at(number)));
            }
            return Ok(entries);
        }
        let Some((key, value)) = text.split_once('\t') else {
            return Err(format!(
                "{}: expected <hex key><TAB><hex value>",
                at(number)
            ));
        };
        let key = unhex(key).map_err(|e| format!("{}: key: {e}", at(number)))?;
        let value = unhex(value).map_err(|e| format!("{}: value: {e}", at(number)))?;
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(format!("{}: keys must be strictly increasing", at(number)));
        }
        hash.update(line.as_bytes());
        entries += 1;
        previous = Some(key.clone());
        each((key, value))?;
    }
}

/// Operations per batch a load writes.
const LOAD_BATCH_ENTRIES: usize = 1000;
/// Bytes of keys and values per batch a load writes (under every batch
/// limit a node accepts by default).
const LOAD_BATCH_BYTES: usize = 1 << 20;

/// `strata load`: the whole file is checked first (nothing is written
/// from a damaged or truncated dump), then written in batches.
pub(crate) fn load(args: &LoadArgs) -> Result<(), String> {
    let entries = read_dump(&args.file, |_| Ok(()))?;
    let mut progress = Progress::new("load");
    let mut loaded = 0u64;
    let mut bytes = 0u64;
    if let Some(dir) = &args.data_dir {
        if dir.exists()
            && std::fs::read_dir(dir)
                .map_err(|e| format!("reading {}: {e}", dir.display()))?
                .next()
                .is_some()
        {
            return Err(format!(
                "{} is not empty: load into a new database directory",
                dir.display()
            ));
        }
        let db = Db::open(dir, Options::default())
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut batch = WriteBatch::new();
        let mut batch_bytes = 0;
        read_dump(&args.file, |(key, value)| {
            batch.put(&key, &value);
            batch_bytes += key.len() + value.len();
            loaded += 1;
            bytes += (key.len() + value.len()) as u64;
            if batch.len() >= LOAD_BATCH_ENTRIES || batch_bytes >= LOAD_BATCH_BYTES {
                db.write(std::mem::take(&mut batch), &WriteOptions::default())
                    .map_err(|e| format!("writing to {}: {e}", dir.display()))?;
                batch_bytes = 0;
            }
            progress.tick(loaded, bytes);
            Ok(())
        })?;
        if !batch.is_empty() {
            db.write(batch, &WriteOptions::default())
                .map_err(|e| format!("writing to {}: {e}", dir.display()))?;
        }
        db.sync()
            .map_err(|e| format!("syncing {}: {e}", dir.display()))?;
        db.close()
            .map_err(|e| format!("closing {}: {e}", dir.display()))?;
        println!("loaded {entries} entries into {}", dir.display());
        return Ok(());
    }
    let Some(node) = &args.node else {
        return Err("give --data-dir or --node".into());
    };
    let node = crate::connect::NodeArgs {
        node: node.clone(),
        security: args.security.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let mut kv = runtime.block_on(node.kv())?;
    let mut send = |batch: Vec<Entry>, sync: bool, loaded: u64| -> Result<u64, String> {
        let operations = batch
            .into_iter()
            .map(|(key, value)| Operation {
                kind: operation::Kind::Put as i32,
                key,
                value,
            })
            .collect();
        runtime
            .block_on(kv.write(WriteRequest {
                operations,
                sync,
                ..WriteRequest::default()
            }))
            .map(|answer| answer.into_inner().seq)
            .map_err(|e| {
                format!(
                    "writing to {} after {loaded} entries: {:?}: {}",
                    node.node,
                    e.code(),
                    e.message()
                )
            })
    };
    // One batch in memory at a time; the last one synced makes every
    // earlier one durable.
    let mut current = Vec::new();
    let mut current_bytes = 0;
    let mut last_seq = 0;
    read_dump(&args.file, |entry| {
        current_bytes += entry.0.len() + entry.1.len();
        bytes += (entry.0.len() + entry.1.len()) as u64;
        current.push(entry);
        loaded += 1;
        if current.len() >= LOAD_BATCH_ENTRIES || current_bytes >= LOAD_BATCH_BYTES {
            last_seq = send(std::mem::take(&mut current), loaded == entries, loaded)?;
            current_bytes = 0;
        }
        progress.tick(loaded, bytes);
        Ok(())
    })?;
    if !current.is_empty() {
        last_seq = send(current, true, loaded)?;
    }
    println!(
        "loaded {entries} entries into {} (seq {last_seq})",
        node.node
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_every_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut text = String::new();
        hex(&bytes, &mut text);
        assert_eq!(unhex(&text).unwrap(), bytes);
        assert_eq!(unhex("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn bad_hex_is_an_error_not_a_panic() {
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
        assert!(unhex("é0").is_err());
    }

    fn dump_text(text: &str) -> Result<Vec<Entry>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        read_dump(&path, |e| {
            out.push(e);
            Ok(())
        })
        .map(|_| out)
    }

    #[test]
    fn damaged_dumps_are_refused_naming_the_line() {
        let mut good = String::from("strata-dump 1\n");
        let mut hash = Xxh3::new();
        for line in ["61\t\n", "62\t7a\n"] {
            hash.update(line.as_bytes());
            good.push_str(line);
        }
        good.push_str(&format!("end 2 {:016x}\n", hash.digest()));
        assert_eq!(
            dump_text(&good).unwrap(),
            vec![(b"a".to_vec(), Vec::new()), (b"b".to_vec(), b"z".to_vec())]
        );
        let cut = good.lines().take(3).collect::<Vec<_>>().join("\n") + "\n";
        assert!(
            dump_text(&cut)
                .unwrap_err()
                .contains("without its `end` line")
        );
        let flipped = good.replace("62\t7a", "62\t7b");
        assert!(
            dump_text(&flipped)
                .unwrap_err()
                .contains("checksum mismatch")
        );
        let unordered = good.replace("61\t\n62", "63\t\n62");
        assert!(dump_text(&unordered).unwrap_err().contains("line 3"));
        assert!(
            dump_text("hello\n")
                .unwrap_err()
                .contains("not a Strata dump")
        );
        assert!(
            dump_text(&(good.clone() + "x\n"))
                .unwrap_err()
                .contains("after the end")
        );
    }
}
