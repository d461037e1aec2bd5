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

mod cluster;
mod route;

pub(crate) use cluster::ClusterArgs;
pub(crate) use route::Target;

/// `strata scan`: which keys, in which order, how many, how fresh.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ScanArgs {
    #[command(flatten)]
    pub(crate) node: Target,
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
    #[arg(long, default_value_t = 0, conflicts_with = "token")]
    pub(crate) min_seq: u64,
    /// Read after this write (EPOCH:SEQ, as put prints it), from a replica
    /// whose history holds it.
    #[arg(long)]
    pub(crate) token: Option<strata_client::Token>,
    /// Read from any replica rather than the primary.
    #[arg(long)]
    pub(crate) replicas: bool,
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

/// Where a scan's pages come from: one node directly, or the group
/// through `strata-client`.
enum Pages {
    Direct(strata_proto::v1::kv_client::KvClient<crate::connect::Connected>),
    Routed(strata_client::Client, strata_client::ReadPolicy),
}

/// One page: its entries, sequence number, epoch and whether more is left.
struct Page {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    seq: u64,
    epoch: u64,
    more: bool,
}

impl Pages {
    async fn next(
        &mut self,
        request: ScanRequest,
        first: Option<(u64, u64)>,
    ) -> Result<Page, String> {
        match self {
            Pages::Direct(kv) => {
                let page = kv
                    .scan(request)
                    .await
                    .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
                    .into_inner();
                Ok(Page {
                    entries: page.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                    seq: page.seq,
                    epoch: page.epoch,
                    more: page.more,
                })
            }
            Pages::Routed(client, policy) => {
                // Later pages read at or after the first page, from a
                // history that holds it.
                let policy = match (*policy, first) {
                    (strata_client::ReadPolicy::Replicas { .. }, Some((epoch, seq))) => {
                        strata_client::ReadPolicy::Replicas {
                            token: Some(strata_client::Token { epoch, seq }),
                        }
                    }
                    (policy, _) => policy,
                };
                let range = strata_client::ScanRange::new(
                    request.start,
                    (!request.unbounded).then_some(request.end),
                )
                .limit(request.limit)
                .reverse(request.reverse);
                let page = client
                    .scan(range, policy)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Page {
                    entries: page.entries,
                    seq: page.seq,
                    epoch: page.epoch,
                    more: page.more,
                })
            }
        }
    }
}

/// The read policy of a routed read.
fn policy(token: Option<strata_client::Token>, replicas: bool) -> strata_client::ReadPolicy {
    if token.is_some() || replicas {
        strata_client::ReadPolicy::Replicas { token }
    } else {
        strata_client::ReadPolicy::Primary
    }
}

const ROUTED_MIN_SEQ: &str =
    "with several --node or --etcd, read after a write with --token EPOCH:SEQ (as put prints it)";

/// Pages through `Kv.Scan`, printing each entry as `key<TAB>value`, then
/// a summary line. Every page after the first waits for the first page's
/// sequence number, so a scan never goes back in time (on a replica too);
/// pages are separate reads, so writes between pages may show in later
/// pages.
async fn scan(args: ScanArgs) -> Result<(), String> {
    if let Some(sharded) = args.node.sharded()? {
        return sharded_scan(&sharded, &args).await;
    }
    let direct = args
        .node
        .single()
        .filter(|_| args.token.is_none() && !args.replicas);
    let routed = direct.is_none();
    let mut pages = match direct {
        Some(node) => Pages::Direct(node.kv().await?),
        None if args.min_seq != 0 => return Err(ROUTED_MIN_SEQ.into()),
        None => Pages::Routed(
            args.node
                .client(std::time::Duration::from_millis(args.timeout_ms))?,
            policy(args.token, args.replicas),
        ),
    };
    let (mut start, mut end) = match &args.prefix {
        Some(prefix) => (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes())),
        None => (
            args.start.clone().unwrap_or_default().into_bytes(),
            args.end.clone().map(String::into_bytes),
        ),
    };
    let mut printed = 0u64;
    let mut min_seq = args.min_seq;
    let mut first = None;
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
        let page = pages
            .next(
                ScanRequest {
                    start: start.clone(),
                    end: end.clone().unwrap_or_default(),
                    unbounded: end.is_none(),
                    limit: want as u32,
                    reverse: args.reverse,
                    min_seq,
                    timeout_millis: args.timeout_ms,
                    ..ScanRequest::default()
                },
                first,
            )
            .await?;
        if first.is_none() {
            first = Some((page.epoch, page.seq));
        }
        min_seq = min_seq.max(page.seq);
        more = page.more;
        for (key, value) in &page.entries {
            println!("{}\t{}", show(key), show(value));
        }
        printed += page.entries.len() as u64;
        match page.entries.last() {
            Some((last, _)) if args.reverse => end = Some(last.clone()),
            Some((last, _)) => {
                start = last.clone();
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
    let (epoch, seq) = first.unwrap_or_default();
    if routed {
        println!("({printed} entries at seq {seq}, epoch {epoch}{left_out})");
    } else {
        println!("({printed} entries at seq {seq}{left_out})");
    }
    Ok(())
}

/// A scan over the groups of a sharded cluster, in one call of the
/// sharded client (pieces cut at range boundaries, concatenated in key
/// order), at most `--limit` entries (default 1000).
async fn sharded_scan(
    client: &strata_client::ShardedClient,
    args: &ScanArgs,
) -> Result<(), String> {
    if args.token.is_some() || args.min_seq != 0 {
        return Err(
            "a token read on a sharded cluster: name the token's group with --group".into(),
        );
    }
    let (start, end) = match &args.prefix {
        Some(prefix) => (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes())),
        None => (
            args.start.clone().unwrap_or_default().into_bytes(),
            args.end.clone().map(String::into_bytes),
        ),
    };
    let limit = if args.limit == 0 {
        1000
    } else {
        args.limit.min(100_000)
    };
    let range = strata_client::ScanRange::new(start, end)
        .limit(limit as u32)
        .reverse(args.reverse);
    let read = if args.replicas {
        strata_client::ShardedRead::Replicas { token: None }
    } else {
        strata_client::ShardedRead::Primary
    };
    let answer = client.scan(range, read).await.map_err(|e| e.to_string())?;
    for (key, value) in &answer.entries {
        println!("{}\t{}", show(key), show(value));
    }
    let groups: Vec<String> = answer.pieces.iter().map(|p| p.group.clone()).collect();
    println!(
        "({} entries from {} piece(s) in groups {}{})",
        answer.entries.len(),
        answer.pieces.len(),
        groups.join(","),
        if answer.more {
            ", more left out by --limit"
        } else {
            ""
        }
    );
    Ok(())
}

/// Writes `batch` through the client; prints its token as `epoch:seq`.
async fn routed_write(target: &Target, batch: strata_client::WriteBatch) -> Result<(), String> {
    if let Some(sharded) = target.sharded()? {
        let token = sharded.write(batch).await.map_err(|e| e.to_string())?;
        println!("token {token}");
        return Ok(());
    }
    let client = target.client(std::time::Duration::from_secs(1))?;
    let token = client.write(batch).await.map_err(|e| e.to_string())?;
    println!("token {token}");
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
            Command::Cluster(args) => cluster::run(args).await,
            Command::Delete { node: target, sync, key } => {
                let Some(node) = target.single() else {
                    return routed_write(&target, strata_client::WriteBatch::new().delete(key.as_bytes()).sync(sync)).await;
                };
                let seq = write_one(&node, sync, operation::Kind::Delete, key.into_bytes(), Vec::new()).await?;
                println!("seq {seq}");
                Ok(())
            }
            Command::DeleteRange { node: target, sync, start, end } => {
                if end.as_bytes() <= start.as_bytes() {
                    return Err(format!("delete-range: END {end:?} must be above START {start:?}"));
                }
                let Some(node) = target.single() else {
                    let batch = strata_client::WriteBatch::new().delete_range(start.as_bytes(), end.as_bytes());
                    return routed_write(&target, batch.sync(sync)).await;
                };
                let seq = write_one(&node, sync, operation::Kind::DeleteRange, start.into_bytes(), end.into_bytes()).await?;
                println!("seq {seq}");
                Ok(())
            }
            Command::Put { node: target, sync, key, value } => {
                let Some(node) = target.single() else {
                    let batch = strata_client::WriteBatch::new().put(key.as_bytes(), value.as_bytes());
                    return routed_write(&target, batch.sync(sync)).await;
                };
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
            Command::Get { node: target, min_seq, token, replicas, timeout_ms, key } => {
                let Some(node) = target.single().filter(|_| token.is_none() && !replicas) else {
                    if min_seq != 0 {
                        return Err(ROUTED_MIN_SEQ.into());
                    }
                    if let Some(sharded) = target.sharded()? {
                        if token.is_some() {
                            return Err("a token read on a sharded cluster: name the token's group with --group".into());
                        }
                        let read = if replicas {
                            strata_client::ShardedRead::Replicas { token: None }
                        } else {
                            strata_client::ShardedRead::Primary
                        };
                        let got = sharded.get(key.as_bytes(), read).await.map_err(|e| e.to_string())?;
                        let answer = got.answer;
                        match answer.value {
                            Some(value) => println!(
                                "{} (group {}, at seq {}, epoch {}, from {})",
                                String::from_utf8_lossy(&value), got.group, answer.seq, answer.epoch, answer.node
                            ),
                            None => println!("(not found in group {} at seq {}, epoch {}, from {})", got.group, answer.seq, answer.epoch, answer.node),
                        }
                        return Ok(());
                    }
                    let client = target.client(std::time::Duration::from_millis(timeout_ms))?;
                    let answer = client.get(key.as_bytes(), policy(token, replicas)).await.map_err(|e| e.to_string())?;
                    match answer.value {
                        Some(value) => println!(
                            "{} (at seq {}, epoch {}, from {})",
                            String::from_utf8_lossy(&value), answer.seq, answer.epoch, answer.node
                        ),
                        None => println!("(not found at seq {}, epoch {}, from {})", answer.seq, answer.epoch, answer.node),
                    }
                    return Ok(());
                };
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
                if !s.node.is_empty() {
                    println!(
                        "member {} of group {}  primary {} ({})  lease left {} ms  fenced writes {}  not-primary writes {}  discarded records {}",
                        s.node,
                        s.group,
                        if s.primary_node.is_empty() { "unknown" } else { &s.primary_node },
                        s.primary_address,
                        s.lease_millis_left,
                        s.fenced_writes,
                        s.not_primary_writes,
                        s.discarded_records
                    );
                }
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
