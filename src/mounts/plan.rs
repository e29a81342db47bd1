//! The plan (pure): desired `[[mount]]`s and `[swap]`, what walden applied
//! before, and what the kernel shows now -> the actions that bring them in
//! line, in a safe order, and a status row for every entry.
//!
//! Order: swapoff (a swap file must be off before its file system goes),
//! unmounts children first, then fsck + mount parents first, then the swap
//! file and swapon. Nothing that already matches is touched; a mount whose
//! options or source changed is unmounted and mounted again, and so is
//! every mount below it and a swap file on it.

use super::options;
use super::{MountState, MountStatus, Scope, SWAP_WHERE};
use crate::config::{lexical, mounts_holding, MountConfig, MountSource, SwapConfig};
use crate::pid1::mountinfo::MountEntry;
use nix::mount::MsFlags;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A local file system found for a `what`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The device node, symlinks resolved (as mountinfo shows it).
    pub device: PathBuf,
    /// The file system its superblock shows (`ext4`, `xfs`, `swap`, ...).
    pub fstype: Option<String>,
}

/// What the kernel shows now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// /proc/self/mountinfo, in mount order.
    pub mounts: Vec<MountEntry>,
    /// /proc/swaps.
    pub swaps: Vec<PathBuf>,
    /// Every local `what` of the desired config (by its text), resolved or
    /// why not.
    pub sources: BTreeMap<String, Result<Resolved, String>>,
}

/// What walden mounted and enabled before (kept between runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Mounts by (lexical) mount point, with the config they were made from.
    pub mounts: BTreeMap<PathBuf, MountConfig>,
    /// The swap config and the file or device that is on.
    pub swap: Option<(SwapConfig, PathBuf)>,
}

/// How to mount one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    /// mount(2) of a block device.
    Local {
        /// The device node.
        device: PathBuf,
        /// The mount point.
        target: PathBuf,
        /// The file system type.
        fstype: String,
        /// Generic flags.
        flags: MsFlags,
        /// File system options.
        data: Option<String>,
    },
    /// Debian's mount helper for a share.
    Network {
        /// mount.nfs, mount.nfs4 or mount.cifs.
        helper: String,
        /// host:/export or //host/share.
        share: String,
        /// The mount point.
        target: PathBuf,
        /// The -o string.
        options: String,
    },
}

impl MountCall {
    /// The mount point.
    pub fn target(&self) -> &Path {
        match self {
            MountCall::Local { target, .. } | MountCall::Network { target, .. } => target,
        }
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// swapoff(2).
    SwapOff { path: PathBuf },
    /// umount(2) of a mount walden made (removed from the config, or to be
    /// mounted again).
    Unmount { target: PathBuf },
    /// `e2fsck -p` before mounting `target`.
    Fsck { device: PathBuf, target: PathBuf },
    /// Mount.
    Mount(MountCall),
    /// Create the swap file when it is missing, of another size, or not a
    /// swap area (fallocate, chmod 600, mkswap); `on` is its mount.
    SwapFile {
        path: PathBuf,
        size: u64,
        on: PathBuf,
    },
    /// swapon(2); `on` is the mount holding a swap file.
    SwapOn { path: PathBuf, on: Option<PathBuf> },
}

/// The actions and the status rows before they run (rows of entries with
/// actions say "waiting" until the runner records the outcome).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In order.
    pub actions: Vec<Action>,
    /// One per desired entry of the scope (and the swap, for the local one).
    pub rows: Vec<MountStatus>,
    /// The swap file or device that is to be on, once found.
    pub swap_path: Option<PathBuf>,
}

fn row(
    what: String,
    target: &Path,
    fstype: Option<&str>,
    state: MountState,
    detail: String,
) -> MountStatus {
    MountStatus {
        what,
        target: target.display().to_string(),
        fstype: fstype.map(str::to_string),
        state,
        detail: Some(detail),
    }
}

/// How one desired mount stands.
enum Verdict {
    /// Mounted as it should be: (detail, fstype mountinfo shows).
    Keep(String, String),
    /// To be mounted (after an unmount when it is mounted now).
    Mount(MountCall),
    /// Cannot be mounted now.
    Failed(String),
}

/// Plan `scope`'s part of `mounts` and `swap` (swap only in the local scope).
pub fn plan(
    mounts: &[MountConfig],
    swap: Option<&SwapConfig>,
    applied: &Applied,
    observed: &Observed,
    scope: Scope,
) -> Plan {
    let mut desired: Vec<&MountConfig> = mounts.iter().filter(|m| scope.holds(m)).collect();
    desired.sort_by_key(|m| {
        let t = lexical(&m.target);
        (t.components().count(), t)
    });
    let on_now = |t: &Path| observed.mounts.iter().rev().find(|e| e.mount_point == t);
    // Mount points that get unmounted (removed or redone) or mounted now:
    // whatever is mounted below them is redone too.
    let mut unmounting: BTreeSet<PathBuf> = BTreeSet::new();
    let mut mounting: BTreeSet<PathBuf> = BTreeSet::new();
    let mut failed: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (t, _) in applied.mounts.iter().filter(|(_, m)| scope.holds(m)) {
        if !desired.iter().any(|d| lexical(&d.target) == *t) && on_now(t).is_some() {
            unmounting.insert(t.clone());
        }
    }
    let mut verdicts = Vec::new();
    for m in &desired {
        let t = lexical(&m.target);
        let strictly_below = |p: &PathBuf| t.starts_with(p) && *p != t;
        let moving = unmounting.iter().chain(&mounting).any(strictly_below);
        // An outer [[mount]] that failed, or (of the other scope) is not there.
        let parent = failed
            .iter()
            .find(|(p, _)| strictly_below(p))
            .map(|(p, why)| format!("{} is not mounted ({why})", p.display()))
            .or_else(|| {
                mounts_holding(mounts, &t)
                    .into_iter()
                    .map(|o| lexical(&o.target))
                    .filter(|p| strictly_below(p) && !mounting.contains(p))
                    .find(|p| on_now(p).is_none())
                    .map(|p| format!("{} is not mounted", p.display()))
            });
        let v = match (on_now(&t), parent) {
            (None, Some(why)) => Verdict::Failed(format!("not mounted: {why}")),
            (None, None) => call(m, observed).map_or_else(Verdict::Failed, Verdict::Mount),
            (Some(e), _) => {
                let ours = applied.mounts.get(&t);
                match call(m, observed) {
                    _ if ours == Some(*m) && !moving => {
                        Verdict::Keep(format!("mounted from {}", e.source), e.fs_type.clone())
                    }
                    Ok(c) if ours.is_some() || (same_source(&c, &e.source) && moving) => {
                        unmounting.insert(t.clone());
                        Verdict::Mount(c)
                    }
                    Ok(c) if same_source(&c, &e.source) => Verdict::Keep(
                        format!("already mounted from {}", e.source),
                        e.fs_type.clone(),
                    ),
                    Ok(_) => Verdict::Failed(format!(
                        "{} is mounted at {} (not by walden); unmount it or choose another `where`",
                        e.source,
                        t.display()
                    )),
                    Err(why) => Verdict::Failed(why),
                }
            }
        };
        match &v {
            Verdict::Failed(why) => {
                failed.insert(t.clone(), why.clone());
            }
            Verdict::Mount(_) => {
                mounting.insert(t.clone());
            }
            Verdict::Keep(..) => {}
        }
        verdicts.push((m, v));
    }
    let mut swap_part = Plan::default();
    if scope == Scope::Local {
        let moving: BTreeSet<PathBuf> = unmounting.union(&mounting).cloned().collect();
        swap_plan(
            swap,
            applied,
            observed,
            mounts,
            &moving,
            &failed,
            &mut swap_part,
        );
    }
    // Swap off first (it may sit on a mount that goes), on last.
    let (offs, ons): (Vec<Action>, Vec<Action>) = swap_part
        .actions
        .into_iter()
        .partition(|a| matches!(a, Action::SwapOff { .. }));
    let mut plan = Plan {
        actions: offs,
        rows: Vec::new(),
        swap_path: swap_part.swap_path,
    };
    let mut unmounts: Vec<&PathBuf> = unmounting.iter().collect();
    unmounts.sort_by_key(|t| std::cmp::Reverse(t.components().count()));
    plan.actions.extend(
        unmounts
            .into_iter()
            .map(|t| Action::Unmount { target: t.clone() }),
    );
    for (m, v) in verdicts {
        let what = m.what.to_string();
        let target = lexical(&m.target);
        let configured = m.fstype.as_deref();
        let r = match v {
            Verdict::Keep(detail, fs) => row(what, &target, Some(&fs), MountState::Mounted, detail),
            Verdict::Failed(why) => row(what, &target, configured, MountState::Failed, why),
            Verdict::Mount(c) => {
                let fs = match &c {
                    MountCall::Local {
                        device,
                        fstype,
                        target,
                        ..
                    } => {
                        if fstype.starts_with("ext") {
                            plan.actions.push(Action::Fsck {
                                device: device.clone(),
                                target: target.clone(),
                            });
                        }
                        Some(fstype.clone())
                    }
                    MountCall::Network { .. } => m.fstype.clone(),
                };
                plan.actions.push(Action::Mount(c));
                row(
                    what,
                    &target,
                    fs.as_deref(),
                    MountState::Waiting,
                    "to be mounted".into(),
                )
            }
        };
        plan.rows.push(r);
    }
    plan.actions.extend(ons);
    plan.rows.extend(swap_part.rows);
    plan
}

/// The mount call for `m`, or why it cannot be made.
fn call(m: &MountConfig, observed: &Observed) -> Result<MountCall, String> {
    let target = lexical(&m.target);
    if let MountSource::Network(share) = &m.what {
        let fstype = m.fstype.as_deref().unwrap_or("nfs");
        return Ok(MountCall::Network {
            helper: format!("mount.{fstype}"),
            share: share.clone(),
            target,
            options: options::network(&m.options, m.read_only),
        });
    }
    let r = match observed.sources.get(&m.what.to_string()) {
        Some(Ok(r)) => r,
        Some(Err(why)) => return Err(why.clone()),
        None => return Err(format!("{} was not looked for", m.what)),
    };
    let fstype = match (&m.fstype, &r.fstype) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) if f != "swap" && f != "iso9660" => f.clone(),
        (None, _) => {
            let device = r.device.clone();
            return Err(super::MountError::UnknownFs { device }.to_string());
        }
    };
    let (flags, data) = options::local(&m.options, m.read_only);
    Ok(MountCall::Local {
        device: r.device.clone(),
        target,
        fstype,
        flags,
        data,
    })
}

/// Whether what mountinfo shows as the source is what `c` would mount.
fn same_source(c: &MountCall, source: &str) -> bool {
    match c {
        MountCall::Local { device, .. } => device == Path::new(source),
        MountCall::Network { share, .. } => share == source,
    }
}

/// The swap's part of the plan: actions into `plan.actions` (swapoffs and
/// swapons; the caller orders them), its row into `plan.rows`.
fn swap_plan(
    swap: Option<&SwapConfig>,
    applied: &Applied,
    observed: &Observed,
    mounts: &[MountConfig],
    moving: &BTreeSet<PathBuf>,
    failed: &BTreeMap<PathBuf, String>,
    plan: &mut Plan,
) {
    let active = |p: &Path| observed.swaps.iter().any(|s| s == p);
    // Where the desired swap is, or why it cannot be.
    let holder = |p: &Path| mounts_holding(mounts, p).last().map(|m| lexical(&m.target));
    let wanted: Option<(PathBuf, Result<(), String>, String)> = swap.map(|s| match s {
        SwapConfig::File { path, .. } => {
            let path = lexical(path);
            let ok = match holder(&path) {
                Some(on) => match failed.get(&on) {
                    Some(why) => Err(format!("waiting for {}: {why}", on.display())),
                    None => Ok(()),
                },
                None => Err("the swap file is on no [[mount]] (see `walden config check`)".into()),
            };
            (path.clone(), ok, path.display().to_string())
        }
        SwapConfig::Device(src) => match observed.sources.get(&src.to_string()) {
            Some(Ok(r)) => (r.device.clone(), Ok(()), src.to_string()),
            Some(Err(why)) => (PathBuf::new(), Err(why.clone()), src.to_string()),
            None => (
                PathBuf::new(),
                Err(format!("{src} was not looked for")),
                src.to_string(),
            ),
        },
    });
    let moves = |p: &Path| moving.iter().any(|t| p.starts_with(t));
    let mut off = false;
    if let Some((old_cfg, old_path)) = &applied.swap {
        let same = wanted
            .as_ref()
            .is_some_and(|(p, ok, _)| ok.is_ok() && p == old_path)
            && swap == Some(old_cfg);
        if active(old_path) && (!same || moves(old_path)) {
            plan.actions.push(Action::SwapOff {
                path: old_path.clone(),
            });
            off = true;
        }
    }
    let (Some(s), Some((path, ok, what))) = (swap, wanted) else {
        return;
    };
    let state_row = |state, detail: String| {
        row(
            what.clone(),
            Path::new(SWAP_WHERE),
            Some("swap"),
            state,
            detail,
        )
    };
    if let Err(why) = ok {
        plan.rows.push(state_row(MountState::Failed, why));
        return;
    }
    plan.swap_path = Some(path.clone());
    if active(&path) && !off {
        plan.rows
            .push(state_row(MountState::Active, "swap on".into()));
        return;
    }
    let on = holder(&path);
    if let (SwapConfig::File { size, .. }, Some(on)) = (s, &on) {
        plan.actions.push(Action::SwapFile {
            path: path.clone(),
            size: size.0,
            on: on.clone(),
        });
    }
    plan.actions.push(Action::SwapOn {
        path,
        on: on.filter(|_| matches!(s, SwapConfig::File { .. })),
    });
    plan.rows
        .push(state_row(MountState::Waiting, "to be turned on".into()));
}
