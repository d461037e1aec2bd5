//! The client subcommands (`put`, `delete`, `delete-range`, `get`, `scan`,
//! `status`, `digest`, `ranges`, `split`, `merge`, `promote`) against a
//! running node.
//!
//! Keys and values are printed with non-printable bytes, quotes and
//! backslashes escaped (`\xNN`, `\"`, `\\`), so binary keys stay on one
//! line and can be told apart.

use strata_proto::v1::{
    DigestRequest, GetRequest, KeyRange, MergeRangesRequest, Operation, PromoteRequest,
    RangesRequest, ScanRequest, SplitRangeRequest, StatusRequest, WriteRequest, operation,
};

use crate::Command;

/// `strata scan`: which keys, in which order, how many, how fresh.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ScanArgs {
    #[command(flatten)]
    pub(crate) node: crate::connect::NodeArgs,
    /// Keys from this one on (inclusive; default: the first key).
    #[arg(long, conflicts_with = "prefix")]
    pub(crate) start: Option<String>,
    /// Keys below this one (exclusive; default: to the end).
    #[arg(long, conflicts_with = "prefix")]
    pub(crate) end: Option<String>,
    /// Only keys that start with this.
    #[arg(long)]
    pub(crate) prefix: Option<String>,
    /// Largest key first.
    #[arg(long)]
    pub(crate) reverse: bool,
    /// At most this many entries (0: every one).
    #[arg(long, default_value_t = 1000)]
    pub(crate) limit: u64,
    /// Read at or after this commit token: the node waits until it has
    /// applied it (read your writes, also on a replica).
    #[arg(long, default_value_t = 0)]
    pub(crate) min_seq: u64,
    /// How long the node may wait for --min-seq, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub(crate) timeout_ms: u64,
}

/// The first key after every key that starts with `prefix` (`None`: no
/// such key, the prefix is empty or all 0xFF).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `bytes` for a terminal: printable ASCII as is, the rest escaped.
pub(crate) fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Entries per `Scan` call.
const SCAN_PAGE: u64 = 10_000;

/// Pages through `Kv.Scan`, printing each entry as `key<TAB>value`, then
/// a summary line. Every page after the first waits for the first page's
/// sequence number, so a scan never goes back in time (on a replica too);
/// pages are separate reads, so writes between pages may show in later
/// pages.
async fn scan(args: ScanArgs) -> Result<(), String> {
    let describe = |e: tonic::Status| format!("{:?}: {}", e.code(), e.message());
    let mut kv = args.node.kv().await?;
    let (mut start, mut end) = match &args.prefix {
        Some(prefix) => (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes())),
        None => (
            args.start.clone().unwrap_or_default().into_bytes(),
            args.end.clone().map(String::into_bytes),
        ),
    };
    let mut printed = 0u64;
    let mut min_seq = args.min_seq;
    let mut seq = 0;
    let mut more = true;
    while more && (args.limit == 0 || printed < args.limit) {
        let want = if args.limit == 0 {
            SCAN_PAGE
        } else {
            (args.limit - printed).min(SCAN_PAGE)
        };
        if end.as_ref().is_some_and(|e| *e <= start) {
            break;
        }
        let page = kv
            .scan(ScanRequest {
                start: start.clone(),
                end: end.clone().unwrap_or_default(),
                unbounded: end.is_none(),
                limit: want as u32,
                reverse: args.reverse,
                min_seq,
                timeout_millis: args.timeout_ms,
                ..ScanRequest::default()
            })
            .await
            .map_err(describe)?
            .into_inner();
        if seq == 0 {
            seq = page.seq;
        }
        min_seq = min_seq.max(page.seq);
        more = page.more;
        for entry in &page.entries {
            println!("{}\t{}", show(&entry.key), show(&entry.value));
        }
        printed += page.entries.len() as u64;
        match page.entries.last() {
            Some(last) if args.reverse => end = Some(last.key.clone()),
            Some(last) => {
                start = last.key.clone();
                start.push(0);
            }
            None => break,
        }
    }
    let left_out = if more {
        ", more left out by --limit"
    } else {
        ""
    };
    println!("({printed} entries at seq {seq}{left_out})");
    Ok(())
}

pub(crate) fn run(command: Command) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let describe = |e: tonic::Status| format!("{:?}: {}", e.code(), e.message());
        match command {
            Command::Serve { .. }
            | Command::Verify { .. }
            | Command::Checkpoint { .. }
            | Command::Bench(_)
            | Command::Certs(_)
            | Command::Token(_)
            | Command::Inspect { .. }
            | Command::Dump(_)
            | Command::Load(_)
            | Command::Backup(_)
            | Command::Restore(_)
            | Command::Prune(_) => {
                Err("not a client command".into())
            }
            Command::Scan(args) => scan(args).await,
            Command::Delete { node, sync, key } => {
                let seq = write_one(&node, sync, operation::Kind::Delete, key.into_bytes(), Vec::new()).await?;
                println!("seq {seq}");
                Ok(())
            }
            Command::DeleteRange { node, sync, start, end } => {
                if end.as_bytes() <= start.as_bytes() {
                    return Err(format!("delete-range: END {end:?} must be above START {start:?}"));
                }
                let seq = write_one(&node, sync, operation::Kind::DeleteRange, start.into_bytes(), end.into_bytes()).await?;
                println!("seq {seq}");
                Ok(())
            }
            Command::Put { node, sync, key, value } => {
                let mut kv = node.kv().await?;
                let answer = kv
                    .write(WriteRequest {
                        operations: vec![Operation {
                            kind: operation::Kind::Put as i32,
                            key: key.into_bytes(),
                            value: value.into_bytes(),
                        }],
                        sync,
                        ..WriteRequest::default()
                    })
                    .await
                    .map_err(describe)?
                    .into_inner();
                println!("seq {}", answer.seq);
                Ok(())
            }
            Command::Get { node, min_seq, timeout_ms, key } => {
                let mut kv = node.kv().await?;
                let answer = kv
                    .get(GetRequest {
                        key: key.into_bytes(),
                        min_seq,
                        timeout_millis: timeout_ms,
                        ..GetRequest::default()
                    })
                    .await
                    .map_err(describe)?
                    .into_inner();
                if answer.found {
                    println!("{} (at seq {})", String::from_utf8_lossy(&answer.value), answer.seq);
                } else {
                    println!("(not found at seq {})", answer.seq);
                }
                Ok(())
            }
            Command::Digest { node, seq, start, end, timeout_ms } => {
                let mut admin = node.admin().await?;
                let range = (start.is_some() || end.is_some()).then(|| KeyRange {
                    start: start.unwrap_or_default().into_bytes(),
                    unbounded: end.is_none(),
                    end: end.unwrap_or_default().into_bytes(),
                });
                let d = admin
                    .digest(DigestRequest { seq, range, timeout_millis: timeout_ms })
                    .await
                    .map_err(describe)?
                    .into_inner();
                println!("seq {}  digest {:016x}  keys {}", d.seq, d.digest, d.keys);
                for r in d.ranges {
                    let end = if r.unbounded { "end".to_string() } else { format!("{:?}", String::from_utf8_lossy(&r.end)) };
                    println!(
                        "range {}  [{:?}, {end})  digest {:016x}  keys {}",
                        r.range_id,
                        String::from_utf8_lossy(&r.start),
                        r.digest,
                        r.keys
                    );
                }
                Ok(())
            }
            Command::Ranges { node } => {
                let mut admin = node.admin().await?;
                let ranges = admin.ranges(RangesRequest {}).await.map_err(describe)?.into_inner();
                for r in ranges.ranges {
                    let end = if r.unbounded { "end".to_string() } else { format!("{:?}", String::from_utf8_lossy(&r.end)) };
                    println!(
                        "range {}  [{:?}, {end})  {} bytes  ~{} keys  {} writes ({:.0}/s)  last seq {}  ({})",
                        r.id,
                        String::from_utf8_lossy(&r.start),
                        r.table_bytes,
                        r.approximate_keys,
                        r.writes,
                        r.writes_per_sec,
                        r.last_applied_seq,
                        r.origin
                    );
                }
                Ok(())
            }
            Command::Split { node, at } => {
                let mut admin = node.admin().await?;
                let split = admin
                    .split_range(SplitRangeRequest { at: at.into_bytes() })
                    .await
                    .map_err(describe)?
                    .into_inner();
                println!("split into ranges {} and {}", split.left, split.right);
                Ok(())
            }
            Command::Merge { node, left, right } => {
                let mut admin = node.admin().await?;
                let merged = admin
                    .merge_ranges(MergeRangesRequest { left, right })
                    .await
                    .map_err(describe)?
                    .into_inner();
                println!("merged into range {}", merged.merged);
                Ok(())
            }
            Command::Promote { node } => {
                let mut admin = node.admin().await?;
                let promoted = admin.promote(PromoteRequest {}).await.map_err(describe)?.into_inner();
                println!("promoted: now a primary at epoch {}", promoted.epoch);
                Ok(())
            }
            Command::Status { node } => {
                let mut admin = node.admin().await?;
                let s = admin.status(StatusRequest {}).await.map_err(describe)?.into_inner();
                println!("role {}  epoch {}  last_seq {}  durable_seq {}", s.role, s.epoch, s.last_seq, s.durable_seq);
                if s.role == "replica" {
                    println!(
                        "upstream {}  upstream_durable_seq {}  applied {}  reconnects {}  upstream shutdowns {}  bootstraps {}  refusals {} (credential {}){}",
                        s.upstream,
                        s.upstream_durable_seq,
                        s.records_applied,
                        s.reconnects,
                        s.upstream_shutdowns,
                        s.bootstraps,
                        s.refusals,
                        s.credential_refusals,
                        if s.last_error.is_empty() { String::new() } else { format!("  last error: {}", s.last_error) }
                    );
                }
                for r in s.replicas {
                    println!(
                        "replica {}  connected {}  applied {}  lag {} records / {} bytes / {} ms",
                        r.id, r.connected, r.applied_seq, r.lag_records, r.lag_bytes, r.lag_millis
                    );
                }
                Ok(())
            }
        }
    })
}

/// Writes one operation; returns the commit token.
async fn write_one(
    node: &crate::connect::NodeArgs,
    sync: bool,
    kind: operation::Kind,
    key: Vec<u8>,
    value: Vec<u8>,
) -> Result<u64, String> {
    let mut kv = node.kv().await?;
    let answer = kv
        .write(WriteRequest {
            operations: vec![Operation {
                kind: kind as i32,
                key,
                value,
            }],
            sync,
            ..WriteRequest::default()
        })
        .await
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
        .into_inner();
    Ok(answer.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
