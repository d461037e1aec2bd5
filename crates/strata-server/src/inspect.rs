//! `strata inspect FILE`: a log segment (`*.wal`), a table (`*.sst`) or a
//! manifest (`MANIFEST-*`) decoded for humans, with the codecs of
//! `strata-format` (no database is opened; the file is only read).
//! Damage is reported with its offset, never hidden.

use std::fmt::Write as _;
use std::path::Path;

use strata_format::manifest::{MANIFEST_HEADER_LEN, ManifestHeader, VersionEdit};
use strata_format::table::TableReader;
use strata_format::wal::{
    BatchOp, RecordType, SEGMENT_HEADER_LEN, SegmentHeader, decode_batch, decode_record,
};

fn show(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(48)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > 48 {
        format!("\"{shown}...\" ({} bytes)", bytes.len())
    } else {
        format!("\"{shown}\"")
    }
}

pub(crate) fn run(path: &Path, verbose: bool) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = if name.ends_with(".wal") {
        segment(&bytes, verbose)
    } else if name.ends_with(".sst") {
        table(&bytes, verbose)
    } else if name.starts_with("MANIFEST-") {
        manifest(&bytes)
    } else {
        return Err(format!(
            "{}: not a log segment (*.wal), table (*.sst) or manifest (MANIFEST-*)",
            path.display()
        ));
    };
    print!("{}", text.map_err(|e| format!("{}: {e}", path.display()))?);
    Ok(())
}

fn segment(bytes: &[u8], verbose: bool) -> Result<String, String> {
    let mut out = String::new();
    let header = SegmentHeader::decode(bytes).map_err(|e| format!("segment header: {e}"))?;
    let _ = writeln!(
        out,
        "log segment {} of database {:032x}, first seq {}",
        header.segment_number, header.database_id, header.first_seq
    );
    let mut offset = SEGMENT_HEADER_LEN;
    let (mut batches, mut ops) = (0u64, 0u64);
    while offset < bytes.len() {
        let rest = bytes.get(offset..).unwrap_or_default();
        if rest.iter().all(|&b| b == 0) {
            let _ = writeln!(
                out,
                "zero-filled from offset {offset} to the end ({} bytes)",
                rest.len()
            );
            break;
        }
        let record = match decode_record(rest) {
            Ok(record) => record,
            Err(e) => {
                let _ = writeln!(out, "stops at offset {offset}: {}", e.at(offset as u64));
                break;
            }
        };
        if record.record_type == RecordType::Batch {
            match decode_batch(record.payload) {
                Ok(batch) => {
                    batches += 1;
                    ops += u64::from(batch.count);
                    let _ = writeln!(
                        out,
                        "@{offset}: batch seq {}..={} ({} ops, {} bytes)",
                        batch.first_seq,
                        batch.last_seq(),
                        batch.count,
                        record.framed_len
                    );
                    if verbose {
                        for (seq, op) in (batch.first_seq..).zip(batch.ops()) {
                            let line = match op {
                                BatchOp::Put { key, value } => {
                                    format!("put {} = {}", show(key), show(value))
                                }
                                BatchOp::Delete { key } => format!("delete {}", show(key)),
                                BatchOp::DeleteRange { start, end } => {
                                    format!("delete_range [{}, {})", show(start), show(end))
                                }
                                BatchOp::Skip => "skip (withheld by replication)".to_string(),
                            };
                            let _ = writeln!(out, "    {seq}: {line}");
                        }
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "@{offset}: a batch record that does not decode: {e}");
                }
            }
        } else {
            let _ = writeln!(
                out,
                "@{offset}: record of type {:?} ({} bytes)",
                record.record_type, record.framed_len
            );
        }
        offset += record.framed_len;
    }
    let _ = writeln!(out, "{batches} batches, {ops} operations");
    Ok(out)
}

fn table(bytes: &[u8], verbose: bool) -> Result<String, String> {
    let mut out = String::new();
    let reader = TableReader::open(bytes, bytes.len() as u64).map_err(|e| format!("table: {e}"))?;
    let _ = writeln!(
        out,
        "table of {} bytes, {} data blocks",
        bytes.len(),
        reader.data_blocks().count()
    );
    let _ = writeln!(out, "properties: {:#?}", reader.properties());
    match reader.verify() {
        Ok(()) => {
            let _ = writeln!(out, "every block checks out");
        }
        Err(e) => {
            let _ = writeln!(out, "DAMAGED: {e}");
        }
    }
    if verbose {
        let mut iter = reader.iter();
        let mut more = iter.seek_to_first().map_err(|e| e.to_string())?;
        while more {
            if let Some((key, value)) = iter.current() {
                let _ = writeln!(
                    out,
                    "    {} seq {} {:?} = {}",
                    show(key.user_key),
                    key.seq,
                    key.kind,
                    show(value)
                );
            }
            more = iter.next().map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

fn manifest(bytes: &[u8]) -> Result<String, String> {
    let mut out = String::new();
    let header = ManifestHeader::decode(bytes).map_err(|e| format!("manifest header: {e}"))?;
    let _ = writeln!(
        out,
        "manifest {} of database {:032x}",
        header.manifest_number, header.database_id
    );
    let mut offset = MANIFEST_HEADER_LEN;
    let mut edits = 0;
    while offset < bytes.len() {
        let rest = bytes.get(offset..).unwrap_or_default();
        let record = match decode_record(rest) {
            Ok(record) => record,
            Err(e) => {
                let _ = writeln!(out, "stops at offset {offset}: {}", e.at(offset as u64));
                break;
            }
        };
        edits += 1;
        match VersionEdit::decode(record.payload) {
            Ok(edit) => {
                let _ = writeln!(out, "@{offset}: {edit:?}");
            }
            Err(e) => {
                let _ = writeln!(out, "@{offset}: an edit that does not decode: {e}");
            }
        }
        offset += record.framed_len;
    }
    let _ = writeln!(out, "{edits} edits");
    Ok(out)
}
