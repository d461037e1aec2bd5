//! The mover: drives one online range move from its group to another,
//! step by step, through etcd and the two primaries' `RangeMoves` calls.
//!
//! Role: the orchestration of `docs/design/cluster.md`, "Range moves":
//! mark the range as moving (compare-and-swap), start the target's copy,
//! wait until it is close, freeze the source, wait until the target has
//! applied up to the freeze, flip the map (compare-and-swap requiring the
//! freeze), stop the copy, release and drop the source's copy.
//!
//! Invariants:
//! - Any failure before the flip aborts the move: the source releases its
//!   freeze by a transaction that ends the move (or its hold does it), so
//!   the range stays where it was and takes writes again.
//! - The source's copy is dropped only after the target's copy has
//!   stopped, so the deletion is never applied on the target.
//! - The mover holds no state of its own: killed at any step, it leaves
//!   the range with its owner (marked as moving until the next move or
//!   abort clears the mark) or already flipped.

use std::time::{Duration, Instant};

use strata_cluster::{
    ClusterKeys, Coordinator, EtcdCoordinator, MemberRecord, RangeMap, abort_move, begin_move,
    flip_move, read_entry, read_map, show_key,
};
use strata_proto::v1::range_moves_client::RangeMovesClient;
use strata_proto::v1::{
    DropRangeRequest, FreezeRequest, ImportState, ImportStatusRequest, StartImportRequest,
    UnfreezeRequest,
};

use crate::connect::{Connected, Security};

/// The mover's settings.
#[derive(Debug, Clone)]
pub(crate) struct MoveOptions {
    /// The copy is "close" when it is at most this many sequence numbers
    /// behind the source's durable log.
    pub(crate) close_records: u64,
    /// How long the copy may take to get close.
    pub(crate) copy_timeout: Duration,
    /// How long the source's freeze holds (the longest the range can be
    /// refused for writes if this mover dies during the cut-over).
    pub(crate) hold: Duration,
    /// Whether a range already marked by another move is taken over (that
    /// move aborted first), as an operator's `move` or `apply` does; the
    /// placement controller leaves such a range alone, so it never aborts
    /// an operator's move under way.
    pub(crate) take_over: bool,
}

impl Default for MoveOptions {
    fn default() -> Self {
        Self {
            close_records: 200,
            copy_timeout: Duration::from_secs(120),
            hold: Duration::from_secs(10),
            take_over: true,
        }
    }
}

/// What a completed move did.
#[derive(Debug, Clone)]
pub(crate) struct MoveReport {
    pub(crate) range: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) id: i64,
    pub(crate) freeze_seq: u64,
    pub(crate) keys_copied: u64,
    pub(crate) records_applied: u64,
    /// From the freeze to the flip: the range took no write meanwhile.
    pub(crate) cut_over: Duration,
    pub(crate) total: Duration,
    /// Whether the source's copy was dropped.
    pub(crate) dropped: bool,
}

/// The address of `group`'s primary, from etcd.
pub(crate) async fn primary_address(
    store: &EtcdCoordinator,
    keys: &ClusterKeys,
    group: &str,
) -> Result<String, String> {
    let primary_key = keys.primary(group).map_err(|e| e.to_string())?;
    let node = store
        .get(&primary_key)
        .await
        .map_err(|e| format!("etcd: {e}"))?
        .ok_or_else(|| format!("group {group} has no primary now"))?;
    let node = String::from_utf8_lossy(&node.value).into_owned();
    let member_key = keys.member(&node).map_err(|e| e.to_string())?;
    let record = store
        .get(&member_key)
        .await
        .map_err(|e| format!("etcd: {e}"))?
        .ok_or_else(|| format!("group {group}'s primary {node} has no member record"))?;
    Ok(MemberRecord::decode(&record.value, &node)
        .map_err(|e| e.to_string())?
        .address)
}

/// How the mover reaches the primaries: with a command's TLS and token
/// settings, or with a member's own (the placement controller).
#[derive(Debug, Clone)]
pub(crate) enum Dial {
    /// `strata cluster move|apply`.
    Cli(Security),
    /// A member's TLS settings and token.
    Node(crate::import::Reach),
}

async fn client(dial: &Dial, address: &str) -> Result<RangeMovesClient<Connected>, String> {
    match dial {
        Dial::Cli(security) => {
            let (channel, token) = security.channel(address).await?;
            Ok(RangeMovesClient::with_interceptor(channel, token))
        }
        Dial::Node(reach) => {
            let channel = crate::connect::dial(address, reach.tls.clone()).await?;
            Ok(RangeMovesClient::with_interceptor(
                channel,
                crate::connect::WithToken::new(reach.token.clone()),
            ))
        }
    }
}

/// The figures of every range `address`'s group owns.
pub(crate) async fn range_stats(
    dial: &Dial,
    address: &str,
) -> Result<strata_proto::v1::RangeStatsResponse, String> {
    client(dial, address)
        .await?
        .range_stats(strata_proto::v1::RangeStatsRequest::default())
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("range figures from {address}: {}", s.message()))
}

/// The mover of one cluster.
pub(crate) struct Mover {
    pub(crate) store: EtcdCoordinator,
    pub(crate) keys: ClusterKeys,
    pub(crate) dial: Dial,
    pub(crate) options: MoveOptions,
}

impl Mover {
    /// The map now.
    pub(crate) async fn map(&self) -> Result<RangeMap, String> {
        read_map(&self.store, &self.keys)
            .await
            .map_err(|e| format!("reading the range map: {e}"))?
            .ok_or_else(|| "the cluster has no range map (strata cluster ranges init)".to_string())
    }

    /// Ends a move left marked (a mover that died): the source releases
    /// its freeze, or the mark is cleared directly.
    pub(crate) async fn abort(&self, start: &[u8]) -> Result<(), String> {
        let entry = read_entry(&self.store, &self.keys, start)
            .await
            .map_err(|e| e.to_string())?;
        let Some(moving) = entry.moving.clone() else {
            return Ok(());
        };
        let id = entry.mod_revision;
        // The source's release ends the move (or finds it ended) and takes
        // writes again; if the source cannot be reached, the mark is cleared
        // below and the freeze ends with its hold.
        if let Ok(address) = primary_address(&self.store, &self.keys, &entry.group).await
            && let Ok(mut source) = client(&self.dial, &address).await
        {
            let _ = source
                .unfreeze(UnfreezeRequest {
                    start: start.to_vec(),
                    move_id: id,
                })
                .await;
        }
        abort_move(&self.store, &self.keys, start)
            .await
            .map_err(|e| format!("aborting move {id}: {e}"))?;
        if let Ok(address) = primary_address(&self.store, &self.keys, &moving.to).await
            && let Ok(mut target) = client(&self.dial, &address).await
        {
            let stop = ImportStatusRequest {
                start: start.to_vec(),
                move_id: id,
            };
            if target.stop_import(stop).await.is_ok() {
                let _ = target
                    .drop_range(DropRangeRequest {
                        start: start.to_vec(),
                    })
                    .await;
            }
        }
        tracing::info!(range = %entry.describe(), move_id = id, "move aborted: the range stays with {}", entry.group);
        Ok(())
    }

    /// Moves the range starting at `start` to group `to`.
    pub(crate) async fn move_range(
        &self,
        start: &[u8],
        to: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<MoveReport, String> {
        let began = Instant::now();
        let map = self.map().await?;
        let entry = map
            .starting_at(start)
            .ok_or_else(|| format!("no range starts at {}", show_key(start)))?
            .clone();
        if entry.group == to {
            return Err(format!(
                "range {} is already in group {to}",
                entry.describe()
            ));
        }
        if let Some(moving) = &entry.moving
            && !self.options.take_over
        {
            return Err(format!(
                "range {} is being moved to {} by another move ({}); left alone",
                entry.describe(),
                moving.to,
                entry.mod_revision
            ));
        }
        if entry.moving.is_some() {
            progress(&format!(
                "range {} is marked by an earlier move; aborting it first",
                entry.describe()
            ));
            self.abort(start).await?;
        }
        let map = self.map().await?;
        let source_address = primary_address(&self.store, &self.keys, &entry.group).await?;
        let target_address = primary_address(&self.store, &self.keys, to).await?;
        let id = begin_move(&self.store, &self.keys, &map, start, to)
            .await
            .map_err(|e| format!("marking the move: {e}"))?;
        progress(&format!(
            "move {id}: range {} from {} ({source_address}) to {to} ({target_address})",
            entry.describe(),
            entry.group
        ));
        match self
            .cut_over(
                start,
                id,
                &entry.group,
                to,
                &source_address,
                &target_address,
                progress,
            )
            .await
        {
            Ok(mut report) => {
                report.range = entry.describe();
                report.total = began.elapsed();
                Ok(report)
            }
            Err(error) => {
                progress(&format!("move {id} failed: {error}; aborting"));
                if let Err(abort) = self.abort(start).await {
                    return Err(format!(
                        "{error}; the abort failed too ({abort}): the range stays with {} (its freeze ends by itself within {} ms)",
                        entry.group,
                        self.options.hold.as_millis()
                    ));
                }
                Err(format!(
                    "{error} (aborted: the range stays with {})",
                    entry.group
                ))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn cut_over(
        &self,
        start: &[u8],
        id: i64,
        from: &str,
        to: &str,
        source_address: &str,
        target_address: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<MoveReport, String> {
        let mut source = client(&self.dial, source_address).await?;
        let mut target = client(&self.dial, target_address).await?;
        let ask = || ImportStatusRequest {
            start: start.to_vec(),
            move_id: id,
        };
        target
            .start_import(StartImportRequest {
                start: start.to_vec(),
                move_id: id,
                source_address: source_address.to_string(),
            })
            .await
            .map_err(|s| format!("starting the copy on {to}: {}", s.message()))?;
        progress(&format!("move {id}: copy started on {to}"));
        let copying = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let state = status(&mut target, ask()).await?;
            if state.state == "tailing"
                && state.source_durable_seq <= state.applied_source_seq + self.options.close_records
            {
                break;
            }
            if copying.elapsed() > self.options.copy_timeout {
                return Err(format!(
                    "the copy did not get close within {} s ({})",
                    self.options.copy_timeout.as_secs(),
                    describe(&state)
                ));
            }
            if last_report.elapsed() > Duration::from_secs(1) {
                progress(&format!("copying: {}", describe(&state)));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let frozen_at = Instant::now();
        let freeze = source
            .freeze(FreezeRequest {
                start: start.to_vec(),
                move_id: id,
                hold_millis: self.options.hold.as_millis() as u64,
            })
            .await
            .map_err(|s| format!("freezing the range on {from}: {}", s.message()))?
            .into_inner();
        progress(&format!(
            "move {id}: frozen on {from} at sequence number {}",
            freeze.seq
        ));
        let deadline = self.options.hold.saturating_sub(Duration::from_secs(2));
        let state = loop {
            let state = status(&mut target, ask()).await?;
            if state.applied_source_seq >= freeze.seq {
                progress(&format!("move {id}: the copy reached {}", freeze.seq));
                break state;
            }
            if frozen_at.elapsed() > deadline {
                return Err(format!(
                    "the copy did not reach the freeze at {} in time ({})",
                    freeze.seq,
                    describe(&state)
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        match flip_move(&self.store, &self.keys, start, id, &freeze.freeze).await {
            Ok(_) => {}
            Err(strata_cluster::Error::Unavailable { .. }) => {
                // The outcome is unknown: what the entry says decides.
                let entry = read_entry(&self.store, &self.keys, start)
                    .await
                    .map_err(|e| format!("reading the range after an unknown flip: {e}"))?;
                if !(entry.group == to && entry.mod_revision > id) {
                    return Err("the flip's outcome was unknown and it did not happen".into());
                }
            }
            Err(e) => return Err(format!("flipping the map: {e}")),
        }
        let cut_over = frozen_at.elapsed();
        progress(&format!(
            "move {id}: flipped to {to} at source sequence number {} ({} ms without writes)",
            freeze.seq,
            cut_over.as_millis()
        ));
        // After the flip nothing can undo the move; what follows cleans up.
        let stopped = target.stop_import(ask()).await.is_ok();
        let _ = source
            .unfreeze(UnfreezeRequest {
                start: start.to_vec(),
                move_id: id,
            })
            .await;
        let dropped = stopped
            && source
                .drop_range(DropRangeRequest {
                    start: start.to_vec(),
                })
                .await
                .is_ok();
        if !dropped {
            progress(&format!(
                "the source {from} keeps its copy of the range (not served: the range is {to}'s)"
            ));
        }
        Ok(MoveReport {
            range: String::new(),
            from: from.to_string(),
            to: to.to_string(),
            id,
            freeze_seq: freeze.seq,
            keys_copied: state.keys_copied,
            records_applied: state.records_applied,
            cut_over,
            total: Duration::ZERO,
            dropped,
        })
    }
}

async fn status(
    target: &mut RangeMovesClient<Connected>,
    ask: ImportStatusRequest,
) -> Result<ImportState, String> {
    let state = target
        .import_status(ask)
        .await
        .map_err(|s| format!("asking the target for the copy: {}", s.message()))?
        .into_inner();
    match state.state.as_str() {
        "failed" => Err(format!("the copy failed: {}", state.error)),
        "stopped" | "" => Err(format!(
            "the copy is not running on the target ({})",
            describe(&state)
        )),
        _ => Ok(state),
    }
}

fn describe(state: &ImportState) -> String {
    format!(
        "{}, {} keys copied, {} records applied, at source {} of {}",
        if state.state.is_empty() {
            "none"
        } else {
            &state.state
        },
        state.keys_copied,
        state.records_applied,
        state.applied_source_seq,
        state.source_durable_seq
    )
}
