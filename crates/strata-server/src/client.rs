//! The client subcommands (`put`, `get`, `status`, `digest`, `ranges`,
//! `split`, `merge`, `promote`) against a running node.

use strata_proto::v1::{
    DigestRequest, GetRequest, KeyRange, MergeRangesRequest, Operation, PromoteRequest,
    RangesRequest, SplitRangeRequest, StatusRequest, WriteRequest, operation,
};

use crate::Command;

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
            | Command::Inspect { .. } => {
                Err("not a client command".into())
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
