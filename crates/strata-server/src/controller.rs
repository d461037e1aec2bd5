//! The placement controller: run by whichever sharded member holds the
//! cluster's `controller` key in etcd (won by a transaction under the
//! member's lease, as a group's primary key is; never a consensus of
//! Strata's own), it splits large or hot ranges and moves ranges to keep
//! the placement rules and balance bytes and writes across groups.
//!
//! Role: gathering and acting. Each round (every `controller_interval_ms`)
//! the holder reads the map and the stored layout, asks every group's
//! primary for its ranges' figures (`RangeMoves.RangeStats`), takes one
//! action from [`strata_cluster::decide`] and carries it out: a split by
//! compare-and-swap, a move with the same mover as `strata cluster move`.
//!
//! Invariants:
//! - At most one controller acts at a time: a round starts only while its
//!   key's lease is proven valid; a holder that loses it stops after the
//!   step under way (each step is itself a compare-and-swap, so a step of
//!   an old holder racing a new one loses, never corrupts).
//! - The controller never breaks a placement rule (see `decide`).

use std::time::Duration;

use strata_cluster::{
    Action, Campaign, ClusterKeys, Coordinator, EtcdCoordinator, Layout, PlacementConfig,
    RangeFigures, campaign, decide, read_map, split,
};
use tokio::sync::watch;

use crate::mover::{Dial, MoveOptions, Mover, primary_address, range_stats};

/// The controller's settings (`[cluster]` fields, see `config.rs`).
#[derive(Debug, Clone)]
pub(crate) struct ControllerConfig {
    pub(crate) node: String,
    pub(crate) interval: Duration,
    pub(crate) placement: PlacementConfig,
}

/// The controller's key, `controller` under the cluster's root (its
/// value: the holder's node name; its lease: the holder's).
fn controller_key(keys: &ClusterKeys) -> Vec<u8> {
    let mut key = keys.root().to_vec();
    key.extend_from_slice(b"controller");
    key
}

/// Campaigns for the controller key and, while holding it, runs rounds,
/// until `stop`.
pub(crate) async fn run(
    store: EtcdCoordinator,
    keys: ClusterKeys,
    dial: Dial,
    config: ControllerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let key = controller_key(&keys);
    let ttl = (config.interval * 2).max(Duration::from_secs(5));
    let mover = Mover {
        store: store.clone(),
        keys: keys.clone(),
        dial: dial.clone(),
        // An operator's move or apply under way is never aborted by it.
        options: MoveOptions {
            take_over: false,
            ..MoveOptions::default()
        },
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let won = tokio::select! {
            r = campaign(&store, &key, config.node.as_bytes(), ttl) => r,
            _ = stop.changed() => return,
        };
        let leadership = match won {
            Ok(Campaign::Won(leadership)) => leadership,
            Ok(Campaign::Lost { lease, .. }) => {
                let _ = store.revoke_lease(lease).await;
                tokio::select! {
                    () = tokio::time::sleep(config.interval) => continue,
                    _ = stop.changed() => return,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "placement controller: campaigning for the controller key");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        tracing::info!(node = %config.node, "placement controller: this node runs the controller");
        loop {
            if leadership.keep_alive(&store).await.is_err() || !leadership.is_valid() {
                tracing::warn!("placement controller: lost the controller key");
                break;
            }
            if let Err(error) = round(&store, &keys, &dial, &mover, &config).await {
                tracing::warn!(%error, "placement controller: round failed");
            }
            tokio::select! {
                () = tokio::time::sleep(config.interval) => {}
                _ = stop.changed() => {
                    let _ = leadership.resign(&store).await;
                    return;
                }
            }
        }
    }
}

/// One round: figures, one decision, one action.
async fn round(
    store: &EtcdCoordinator,
    keys: &ClusterKeys,
    dial: &Dial,
    mover: &Mover,
    config: &ControllerConfig,
) -> Result<(), String> {
    let Some(map) = read_map(store, keys).await.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let layout = match store.get(&keys.layout()).await.map_err(|e| e.to_string())? {
        Some(kv) => Some(Layout::decode(&kv.value).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut names = map.groups();
    if let Some(layout) = &layout {
        for g in &layout.groups {
            if !names.contains(&g.name) {
                names.push(g.name.clone());
            }
        }
    }
    let mut figures = Vec::new();
    let mut groups = Vec::new();
    for group in names {
        let Ok(address) = primary_address(store, keys, &group).await else {
            continue;
        };
        match range_stats(dial, &address).await {
            Ok(stats) => {
                groups.push(group);
                figures.extend(stats.ranges.into_iter().map(|r| RangeFigures {
                    start: r.start,
                    bytes: r.bytes,
                    keys: r.keys,
                    writes_per_sec: r.writes_per_sec,
                    middle: (!r.middle.is_empty()).then_some(r.middle),
                }));
            }
            Err(error) => tracing::debug!(%group, %error, "placement controller: no figures"),
        }
    }
    let Some(action) = decide(&map, layout.as_ref(), &figures, &groups, &config.placement) else {
        return Ok(());
    };
    match action {
        Action::Split { at, why } => {
            tracing::info!(at = %strata_cluster::show_key(&at), %why, "placement controller: split");
            split(store, keys, &map, &at)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Action::Move { start, to, why } => {
            tracing::info!(start = %strata_cluster::show_key(&start), %to, %why, "placement controller: move");
            mover
                .move_range(&start, &to, &mut |line: &str| {
                    tracing::info!("placement controller: {line}");
                })
                .await
                .map(|report| {
                    tracing::info!(range = %report.range, from = %report.from, to = %report.to, cut_over_ms = report.cut_over.as_millis() as u64, "placement controller: moved");
                })
        }
    }
}
