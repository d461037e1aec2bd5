//! The `strata.v1.RangeMoves` service: a sharded member's part in moving a
//! range between groups (freeze on the source, copy on the target, drop
//! of a copy the group no longer owns). The steps are driven by a mover
//! (`strata cluster move`, [`crate::mover`]); the protocol is in
//! `docs/design/cluster.md`, "Range moves".
//!
//! Every call needs an admin credential and a sharded member that is its
//! group's primary.

use std::sync::Arc;
use std::time::Duration;

use strata_cluster::show_key;
use strata_proto::v1::range_moves_server::RangeMoves;
use strata_proto::v1::{
    DropRangeRequest, DropRangeResponse, FreezeRequest, FreezeResponse, ImportState,
    ImportStatusRequest, RangeStat, RangeStatsRequest, RangeStatsResponse, StartImportRequest,
    UnfreezeRequest, UnfreezeResponse,
};
use tonic::{Request, Response, Status};

use crate::member::Membership;
use crate::node::Node;
use crate::ownership::Ownership;

/// Who may drive a move.
const ADMINS: &[strata_replication::auth::Role] = &[strata_replication::auth::Role::Admin];

impl Node {
    fn mover_checks<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
    ) -> Result<(Arc<Membership>, Arc<Ownership>), Status> {
        self.allow(request, method, ADMINS, "move ranges")?;
        let member = self.cluster.clone().ok_or_else(|| {
            Status::failed_precondition("range moves need a cluster member (role = \"member\")")
        })?;
        let ownership = member.ownership.clone().ok_or_else(|| {
            Status::failed_precondition(
                "range moves need a sharded member ([cluster] sharded = true)",
            )
        })?;
        if member.current_leadership().is_none() {
            return Err(member.refusal(Status::failed_precondition(format!(
                "not primary: node {} of group {} is not its primary",
                member.node, member.group
            ))));
        }
        Ok((member, ownership))
    }
}

#[tonic::async_trait]
impl RangeMoves for Node {
    async fn freeze(
        &self,
        request: Request<FreezeRequest>,
    ) -> Result<Response<FreezeResponse>, Status> {
        let (member, ownership) = self.mover_checks(&request, "freeze")?;
        let request = request.into_inner();
        let hold = Duration::from_millis(match request.hold_millis {
            0 => 10_000,
            n => n.min(60_000),
        });
        let leadership = member
            .current_leadership()
            .ok_or_else(|| Status::failed_precondition("not primary"))?;
        let db = self.db()?;
        let (seq, freeze) = ownership
            .freeze(
                &db,
                &request.start,
                request.move_id,
                hold,
                leadership.lease(),
            )
            .await?;
        Ok(Response::new(FreezeResponse { seq, freeze }))
    }

    async fn unfreeze(
        &self,
        request: Request<UnfreezeRequest>,
    ) -> Result<Response<UnfreezeResponse>, Status> {
        let (_, ownership) = self.mover_checks(&request, "unfreeze")?;
        let request = request.into_inner();
        let released = ownership.release(&request.start, request.move_id).await;
        Ok(Response::new(UnfreezeResponse { released }))
    }

    async fn start_import(
        &self,
        request: Request<StartImportRequest>,
    ) -> Result<Response<ImportState>, Status> {
        let (member, ownership) = self.mover_checks(&request, "start_import")?;
        let request = request.into_inner();
        let map = ownership
            .map_at(request.move_id, Duration::from_secs(3))
            .await?;
        let entry = map
            .starting_at(&request.start)
            .filter(|e| {
                e.mod_revision == request.move_id
                    && e.moving.as_ref().is_some_and(|m| m.to == member.group)
            })
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "the range starting at {} is not marked as moving to group {} by move {}",
                    show_key(&request.start),
                    member.group,
                    request.move_id
                ))
            })?
            .clone();
        if !(request.source_address.starts_with("http://")
            || request.source_address.starts_with("https://"))
        {
            return Err(Status::invalid_argument(
                "source_address must start with http:// or https://",
            ));
        }
        let state = member
            .imports
            .start(
                self.clone(),
                ownership.watch(),
                member.group.clone(),
                entry.start,
                entry.end,
                request.move_id,
                request.source_address,
            )
            .await;
        Ok(Response::new(state))
    }

    async fn import_status(
        &self,
        request: Request<ImportStatusRequest>,
    ) -> Result<Response<ImportState>, Status> {
        let (member, _) = self.mover_checks(&request, "import_status")?;
        let request = request.into_inner();
        Ok(Response::new(
            member.imports.status(&request.start, request.move_id),
        ))
    }

    async fn stop_import(
        &self,
        request: Request<ImportStatusRequest>,
    ) -> Result<Response<ImportState>, Status> {
        self.allow(&request, "stop_import", ADMINS, "move ranges")?;
        let member = self
            .cluster
            .clone()
            .ok_or_else(|| Status::failed_precondition("not a cluster member"))?;
        let request = request.into_inner();
        Ok(Response::new(
            member.imports.stop(&request.start, request.move_id).await,
        ))
    }

    async fn range_stats(
        &self,
        request: Request<RangeStatsRequest>,
    ) -> Result<Response<RangeStatsResponse>, Status> {
        let (_, ownership) = self.mover_checks(&request, "range_stats")?;
        let limit = match request.into_inner().scan_limit {
            0 => 100_000,
            n => n.min(10_000_000),
        } as usize;
        let map = ownership
            .map()
            .ok_or_else(|| Status::unavailable("no range map yet"))?;
        let db = self.db()?;
        let (writes, seconds) = ownership.take_writes();
        let group = ownership.group().to_string();
        let ranges = tokio::task::spawn_blocking(move || -> Result<Vec<RangeStat>, Status> {
            let snapshot = db.snapshot();
            let mut out = Vec::new();
            for entry in map.entries().iter().filter(|e| e.group == group) {
                let end = match &entry.end {
                    Some(end) => std::ops::Bound::Excluded(end.as_slice()),
                    None => std::ops::Bound::Unbounded,
                };
                let iter = snapshot
                    .scan((std::ops::Bound::Included(entry.start.as_slice()), end))
                    .map_err(|e| Status::internal(e.to_string()))?;
                let (mut keys, mut bytes, mut complete) = (0u64, 0u64, true);
                let mut seen: Vec<Vec<u8>> = Vec::new();
                for item in iter {
                    let (key, value) = item.map_err(|e| Status::internal(e.to_string()))?;
                    if keys as usize == limit {
                        complete = false;
                        break;
                    }
                    keys += 1;
                    bytes += (key.len() + value.len()) as u64;
                    seen.push(key);
                }
                let middle = seen
                    .get(seen.len() / 2)
                    .filter(|k| k.as_slice() > entry.start.as_slice())
                    .cloned()
                    .unwrap_or_default();
                let written = writes.get(&entry.start).copied().unwrap_or(0);
                out.push(RangeStat {
                    start: entry.start.clone(),
                    end: entry.end.clone().unwrap_or_default(),
                    unbounded: entry.end.is_none(),
                    keys,
                    bytes,
                    complete,
                    middle,
                    writes: written,
                    writes_per_sec: if seconds > 0.0 {
                        written as f64 / seconds
                    } else {
                        0.0
                    },
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(RangeStatsResponse {
            map_revision: ownership.map().map_or(0, |m| m.revision()),
            ranges,
        }))
    }

    async fn drop_range(
        &self,
        request: Request<DropRangeRequest>,
    ) -> Result<Response<DropRangeResponse>, Status> {
        let (_, ownership) = self.mover_checks(&request, "drop_range")?;
        let request = request.into_inner();
        let map = ownership
            .map()
            .ok_or_else(|| Status::unavailable("no range map yet"))?;
        let entry = map
            .starting_at(&request.start)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "no range starts at {}",
                    show_key(&request.start)
                ))
            })?
            .clone();
        if entry.group == ownership.group()
            || entry
                .moving
                .as_ref()
                .is_some_and(|m| m.to == ownership.group())
        {
            return Err(Status::failed_precondition(format!(
                "range {} is group {}'s (or moving to it): not dropped",
                entry.describe(),
                ownership.group()
            )));
        }
        let db = self.db()?;
        let Some(batch) = crate::import::range_deletion(&db, &entry.start, entry.end.as_deref())
            .map_err(|e| Status::internal(e.to_string()))?
        else {
            return Ok(Response::new(DropRangeResponse { seq: 0 }));
        };
        let (min_sync, timeout) = self.member_sync();
        let response = self.commit_local(batch, true, min_sync, timeout).await?;
        tracing::info!(range = %entry.describe(), seq = response.seq, "dropped this node's copy of a range its group no longer owns");
        Ok(Response::new(DropRangeResponse { seq: response.seq }))
    }
}
