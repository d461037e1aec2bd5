//! `strata cluster status`: every range group of a cluster, from etcd's
//! records and each member's own `Admin.Status`; `strata cluster failover
//! --to NODE`: a planned switchover (the primary drains, waits for NODE to
//! catch up, and hands over to it alone).

use strata_client::{Client, ClientConfig, EtcdSource};

use crate::connect::Security;

/// `strata cluster ...`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    pub(crate) command: ClusterCommand,
}

/// The cluster subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub(crate) enum ClusterCommand {
    /// Print each range group: its primary, epoch and lease left, and per
    /// member its role, address, epoch, applied sequence number and lag
    /// behind the primary.
    Status(StatusArgs),
    /// Hand a group over to another member without losing a write: the
    /// primary stops taking writes, waits until the member has applied
    /// everything, and resigns; only that member campaigns.
    Failover(FailoverArgs),
    /// The range map: create it, list it, split or merge ranges.
    Ranges(RangesArgs),
    /// Move a key range to another group online: copy, freeze, flip the
    /// map, drop the old copy. Writes to the range are refused only
    /// during the cut-over.
    Move(MoveArgs),
    /// Print what `apply` would change to bring the live cluster to the
    /// layout FILE (groups, tags, placement rules, range placement).
    Plan(LayoutArgs),
    /// Carry out the plan of FILE step by step (store the layout, create
    /// the map, splits, moves), stopping at the first step that fails;
    /// applying the same file again changes nothing.
    Apply(LayoutArgs),
}

/// `strata cluster plan|apply`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LayoutArgs {
    /// The layout file (TOML; see docs/operations.md "Layout files").
    pub(crate) file: std::path::PathBuf,
    /// etcd client URLs (comma separated).
    #[arg(long, value_delimiter = ',', value_name = "ENDPOINTS", required = true)]
    pub(crate) etcd: Vec<String>,
    /// The prefix of Strata's keys in etcd.
    #[arg(long, default_value = "strata")]
    pub(crate) key_prefix: String,
    #[command(flatten)]
    pub(crate) security: Security,
}

/// Where the cluster is in etcd.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct EtcdArgs {
    /// etcd client URLs (comma separated).
    #[arg(long, value_delimiter = ',', value_name = "ENDPOINTS", required = true)]
    pub(crate) etcd: Vec<String>,
    /// The cluster's name in etcd.
    #[arg(long)]
    pub(crate) cluster: String,
    /// The prefix of Strata's keys in etcd.
    #[arg(long, default_value = "strata")]
    pub(crate) key_prefix: String,
}

impl EtcdArgs {
    fn connect(
        &self,
    ) -> Result<(strata_cluster::EtcdCoordinator, strata_cluster::ClusterKeys), String> {
        let keys = strata_cluster::ClusterKeys::new(&self.key_prefix, &self.cluster)
            .map_err(|e| e.to_string())?;
        let store = strata_cluster::EtcdCoordinator::connect(strata_cluster::EtcdOptions::new(
            self.etcd.clone(),
        ))
        .map_err(|e| format!("etcd at {}: {e}", self.etcd.join(",")))?;
        Ok((store, keys))
    }
}

/// `strata cluster ranges`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RangesArgs {
    #[command(subcommand)]
    pub(crate) command: RangesCommand,
}

/// The range map subcommands. Keys are given as text.
#[derive(clap::Subcommand, Debug, Clone)]
pub(crate) enum RangesCommand {
    /// Create the map: every key in GROUP.
    Init {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The group that owns every key at first.
        #[arg(long)]
        group: String,
    },
    /// Print every range: start, end, group, versions, a move under way.
    List {
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Split the range holding KEY at KEY.
    Split {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The first key of the new right-hand range.
        #[arg(long)]
        at: String,
    },
    /// Merge the range starting at KEY into the one before it.
    Merge {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The start of the right-hand range.
        #[arg(long)]
        at: String,
    },
    /// End a move left marked by a mover that stopped.
    Abort {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The range's start.
        #[arg(long)]
        start: String,
    },
}

/// `strata cluster move`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct MoveArgs {
    #[command(flatten)]
    pub(crate) etcd: EtcdArgs,
    /// The start of the range to move (as text; "" for the first range).
    #[arg(long)]
    pub(crate) start: String,
    /// The group to move it to.
    #[arg(long)]
    pub(crate) to: String,
    /// How long the source's freeze holds if this command dies during
    /// the cut-over, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) hold_ms: u64,
    #[command(flatten)]
    pub(crate) security: Security,
}

/// `strata cluster failover`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct FailoverArgs {
    #[command(flatten)]
    pub(crate) etcd: EtcdArgs,
    /// The range group to hand over.
    #[arg(long)]
    pub(crate) group: String,
    /// The member to hand it to.
    #[arg(long)]
    pub(crate) to: String,
    /// How long to wait for the hand-over, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) timeout_ms: u64,
}

/// `strata cluster status`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) etcd: EtcdArgs,
    #[command(flatten)]
    pub(crate) security: Security,
}

pub(crate) async fn run(args: ClusterArgs) -> Result<(), String> {
    match args.command {
        ClusterCommand::Status(args) => status(args).await,
        ClusterCommand::Failover(args) => failover(args).await,
        ClusterCommand::Ranges(args) => ranges(args).await,
        ClusterCommand::Move(args) => move_range(args).await,
        ClusterCommand::Plan(args) => layout(args, false).await,
        ClusterCommand::Apply(args) => layout(args, true).await,
    }
}

/// Reads a layout file.
pub(crate) fn read_layout(file: &std::path::Path) -> Result<strata_cluster::Layout, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let layout: strata_cluster::Layout =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    layout
        .check()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(layout)
}

async fn layout(args: LayoutArgs, apply: bool) -> Result<(), String> {
    use strata_cluster::{Change, Coordinator, Layout, MemberRecord, create_map, read_map, split};
    let layout = read_layout(&args.file)?;
    let etcd = EtcdArgs {
        etcd: args.etcd.clone(),
        cluster: layout.cluster.clone(),
        key_prefix: args.key_prefix.clone(),
    };
    let (store, keys) = etcd.connect()?;
    let live = |store: strata_cluster::EtcdCoordinator, keys: strata_cluster::ClusterKeys| async move {
        let map = read_map(&store, &keys).await.map_err(|e| e.to_string())?;
        let stored = match store.get(&keys.layout()).await.map_err(|e| e.to_string())? {
            Some(kv) => Some(Layout::decode(&kv.value).map_err(|e| e.to_string())?),
            None => None,
        };
        let (records, _) = store
            .list(&keys.members())
            .await
            .map_err(|e| e.to_string())?;
        let members: Vec<MemberRecord> = records
            .iter()
            .filter_map(|kv| {
                MemberRecord::decode(&kv.value, &String::from_utf8_lossy(&kv.key)).ok()
            })
            .collect();
        Ok::<_, String>((map, stored, members))
    };
    let (map, stored, members) = live(store.clone(), keys.clone()).await?;
    let plan = strata_cluster::plan(&layout, map.as_ref(), stored.as_ref(), &members)
        .map_err(|e| e.to_string())?;
    for warning in &plan.warnings {
        println!("! {warning}");
    }
    if plan.changes.is_empty() {
        println!(
            "no changes: cluster {} matches {}",
            layout.cluster,
            args.file.display()
        );
        return Ok(());
    }
    let n = plan.changes.len();
    if !apply {
        println!(
            "{n} change(s) to bring cluster {} to {}:",
            layout.cluster,
            args.file.display()
        );
        for change in &plan.changes {
            println!("  {change}");
        }
        return Ok(());
    }
    let mover = crate::mover::Mover {
        store: store.clone(),
        keys: keys.clone(),
        dial: crate::mover::Dial::Cli(args.security.clone()),
        options: crate::mover::MoveOptions::default(),
    };
    for (i, change) in plan.changes.iter().enumerate() {
        println!("step {}/{n}: {change}", i + 1);
        let done: Result<String, String> = match change {
            Change::StoreLayout => store
                .put(&keys.layout(), &layout.encode(), None)
                .await
                .map(|r| format!("stored (revision {r})"))
                .map_err(|e| e.to_string()),
            Change::CreateMap { group } => create_map(&store, &keys, group)
                .await
                .map(|r| format!("created (revision {r})"))
                .map_err(|e| e.to_string()),
            Change::Split { at } => match mover.map().await {
                Ok(map) => split(&store, &keys, &map, at)
                    .await
                    .map(|r| format!("split (revision {r})"))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
            Change::Move { start, to, .. } => mover
                .move_range(start, to, &mut |line: &str| println!("    {line}"))
                .await
                .map(|r| {
                    format!(
                        "moved: {} keys copied, cut-over {} ms, {} ms in all",
                        r.keys_copied,
                        r.cut_over.as_millis(),
                        r.total.as_millis()
                    )
                }),
        };
        match done {
            Ok(what) => println!("    {what}"),
            Err(error) => {
                return Err(format!(
                    "step {}/{n} ({change}) failed: {error}; steps 1 to {} are done and the cluster is consistent: run `strata cluster apply` again to go on",
                    i + 1,
                    i
                ));
            }
        }
    }
    println!(
        "applied {n} change(s): cluster {} matches {}",
        layout.cluster,
        args.file.display()
    );
    Ok(())
}

async fn ranges(args: RangesArgs) -> Result<(), String> {
    use strata_cluster::{create_map, merge, read_map, show_key, split};
    let etcd = match &args.command {
        RangesCommand::Init { etcd, .. }
        | RangesCommand::List { etcd }
        | RangesCommand::Split { etcd, .. }
        | RangesCommand::Merge { etcd, .. }
        | RangesCommand::Abort { etcd, .. } => etcd.clone(),
    };
    let (store, keys) = etcd.connect()?;
    let map = || async {
        read_map(&store, &keys)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the cluster has no range map (strata cluster ranges init)".to_string())
    };
    match args.command {
        RangesCommand::Init { group, .. } => {
            let revision = create_map(&store, &keys, &group)
                .await
                .map_err(|e| e.to_string())?;
            println!("range map created: every key in group {group} (revision {revision})");
        }
        RangesCommand::List { .. } => {
            let map = map().await?;
            println!("range map at revision {}", map.revision());
            println!(
                "{:<24} {:<24} {:<12} {:>6} {:>6}  moving",
                "start", "end", "group", "split", "move"
            );
            for e in map.entries() {
                println!(
                    "{:<24} {:<24} {:<12} {:>6} {:>6}  {}",
                    show_key(&e.start),
                    e.end.as_deref().map_or("end".to_string(), show_key),
                    e.group,
                    e.split_version,
                    e.move_version,
                    e.moving.as_ref().map_or("-".to_string(), |m| format!(
                        "to {} (move {})",
                        m.to, e.mod_revision
                    ))
                );
            }
        }
        RangesCommand::Split { at, .. } => {
            let revision = split(&store, &keys, &map().await?, at.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            println!("split at {} (revision {revision})", show_key(at.as_bytes()));
        }
        RangesCommand::Merge { at, .. } => {
            let revision = merge(&store, &keys, &map().await?, at.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "merged the range at {} into the one before it (revision {revision})",
                show_key(at.as_bytes())
            );
        }
        RangesCommand::Abort { start, .. } => {
            let mover = crate::mover::Mover {
                store,
                keys,
                dial: crate::mover::Dial::Cli(Security::default()),
                options: crate::mover::MoveOptions::default(),
            };
            mover.abort(start.as_bytes()).await?;
            println!(
                "no move marks the range at {} now",
                show_key(start.as_bytes())
            );
        }
    }
    Ok(())
}

async fn move_range(args: MoveArgs) -> Result<(), String> {
    let (store, keys) = args.etcd.connect()?;
    let mover = crate::mover::Mover {
        store,
        keys,
        dial: crate::mover::Dial::Cli(args.security.clone()),
        options: crate::mover::MoveOptions {
            hold: std::time::Duration::from_millis(args.hold_ms.clamp(1000, 60_000)),
            ..crate::mover::MoveOptions::default()
        },
    };
    let report = mover
        .move_range(args.start.as_bytes(), &args.to, &mut |line: &str| {
            eprintln!("{line}");
        })
        .await?;
    println!(
        "moved {} from {} to {} (move {}): {} keys copied, {} log records applied, cut-over {} ms at source seq {}, {} ms in all{}",
        report.range,
        report.from,
        report.to,
        report.id,
        report.keys_copied,
        report.records_applied,
        report.cut_over.as_millis(),
        report.freeze_seq,
        report.total.as_millis(),
        if report.dropped {
            ""
        } else {
            "; the source kept its copy (not served)"
        }
    );
    Ok(())
}

/// Asks for the switchover (a key under a lease of this command's, so an
/// abandoned request goes away by itself) and waits until the group's
/// primary key names the target.
async fn failover(args: FailoverArgs) -> Result<(), String> {
    use std::time::{Duration, Instant};
    use strata_cluster::{Coordinator, MemberRecord, Switchover};
    let endpoints = args.etcd.etcd.join(",");
    let (store, keys) = args.etcd.connect()?;
    let member_key = keys.member(&args.to).map_err(|e| e.to_string())?;
    let member = store
        .get(&member_key)
        .await
        .map_err(|e| format!("etcd at {endpoints}: {e}"))?
        .ok_or_else(|| {
            format!(
                "no member {} in cluster {} (is it running?)",
                args.to, args.etcd.cluster
            )
        })?;
    let record = MemberRecord::decode(&member.value, &args.to).map_err(|e| e.to_string())?;
    if record.group != args.group {
        return Err(format!(
            "member {} is in group {}, not {}",
            args.to, record.group, args.group
        ));
    }
    if !record.full {
        return Err(format!(
            "member {} holds only some key ranges: it cannot become primary",
            args.to
        ));
    }
    let primary_key = keys.primary(&args.group).map_err(|e| e.to_string())?;
    let holder = |kv: Option<strata_cluster::KeyValue>| {
        kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    };
    let current = holder(store.get(&primary_key).await.map_err(|e| e.to_string())?);
    if current.as_deref() == Some(args.to.as_str()) {
        println!("{} is already the primary of {}", args.to, args.group);
        return Ok(());
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let lease = store
        .grant_lease(timeout + Duration::from_secs(5))
        .await
        .map_err(|e| format!("etcd at {endpoints}: {e}"))?;
    let switchover_key = keys.switchover(&args.group).map_err(|e| e.to_string())?;
    let request = Switchover {
        v: 1,
        to: args.to.clone(),
    };
    let asked = Instant::now();
    store
        .put(&switchover_key, &request.encode(), Some(lease.id))
        .await
        .map_err(|e| format!("etcd at {endpoints}: {e}"))?;
    let outcome = loop {
        let now = holder(store.get(&primary_key).await.map_err(|e| e.to_string())?);
        if now.as_deref() == Some(args.to.as_str()) {
            break Ok(asked.elapsed());
        }
        if asked.elapsed() > timeout {
            break Err(format!(
                "{} did not become primary of {} within {} ms (primary now: {}); the request is withdrawn",
                args.to,
                args.group,
                args.timeout_ms,
                now.unwrap_or_else(|| "none".into())
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Withdrawn either way (revoking the lease deletes the key).
    let _ = store.revoke_lease(lease.id).await;
    let took = outcome?;
    println!(
        "{} is the primary of {} (from {}), {} ms after the request",
        args.to,
        args.group,
        current.unwrap_or_else(|| "none".into()),
        took.as_millis()
    );
    Ok(())
}

async fn status(args: StatusArgs) -> Result<(), String> {
    // The report covers every group; the source's group only has to be a
    // valid name.
    let mut source = EtcdSource::new(args.etcd.etcd.clone(), args.etcd.cluster.clone(), "all");
    source.key_prefix = args.etcd.key_prefix.clone();
    let mut config = ClientConfig::etcd(source);
    let (tls, bearer) = args.security.client_settings()?;
    config.tls = tls;
    config.bearer = bearer;
    let client = Client::new(config).map_err(|e| e.to_string())?;
    let groups = client.cluster_status().await.map_err(|e| e.to_string())?;
    if groups.is_empty() {
        return Err(format!(
            "no member records under {}/{}/members/ in etcd at {}: is the cluster name right?",
            args.etcd.key_prefix,
            args.etcd.cluster,
            args.etcd.etcd.join(",")
        ));
    }
    for group in &groups {
        print!("{group}");
    }
    Ok(())
}
