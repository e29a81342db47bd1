//! One reconcile of a scope: wait (bounded) for late disks, plan, execute
//! the actions through [`System`] (network mounts retried until their
//! deadline), and record rows and what was applied in [`MountsState`].

use super::observe::observe;
use super::plan::{plan, Action, Observed};
use super::system::System;
use super::{MountState, MountStatus, MountsState, Scope, SWAP_WHERE};
use crate::config::{lexical, Config, MountConfig, SwapConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often to look again for a late disk.
const RESCAN: Duration = Duration::from_millis(250);
/// Between two tries of a network mount.
const NETWORK_RETRY: Duration = Duration::from_secs(2);

/// What a reconcile did, for the step's line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The rows of the scope after the run.
    pub rows: Vec<MountStatus>,
    /// Mounts removed from the config that were unmounted (or swap turned off).
    pub removed: Vec<String>,
}

impl Report {
    /// Rows that failed.
    pub fn failed(&self) -> Vec<&MountStatus> {
        self.rows
            .iter()
            .filter(|r| r.state == MountState::Failed)
            .collect()
    }

    /// One clear line: each entry's outcome.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let state = match r.state {
                    MountState::Mounted => "mounted",
                    MountState::Active => "on",
                    MountState::Waiting => "waiting",
                    MountState::Failed => "FAILED",
                };
                let detail = r.detail.as_deref().unwrap_or("");
                if r.target == SWAP_WHERE {
                    format!("swap {} {state} ({detail})", r.what)
                } else {
                    format!("{} {} {state} ({detail})", r.target, r.what)
                }
            })
            .collect();
        parts.extend(self.removed.iter().map(|r| format!("{r} removed")));
        if parts.is_empty() {
            "nothing to mount".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Bring `scope` in line with `config` (None: nothing wanted, so undo what
/// walden applied). `wait` bounds the wait for late disks (local) or for
/// the network (network mounts are retried until then).
pub fn reconcile(
    sys: &mut dyn System,
    state: &mut MountsState,
    config: Option<&Config>,
    scope: Scope,
    wait: Duration,
) -> Report {
    let mounts: &[MountConfig] = config.map_or(&[], |c| &c.host.mounts);
    let swap = config.and_then(|c| c.host.swap.as_ref());
    let start = Instant::now();
    let deadline = start + wait;
    // Counted rather than timed, so a fake machine's instant sleeps end it.
    let rescans = wait.as_millis() / RESCAN.as_millis();
    let mut waited = Duration::ZERO;
    let mut pass = 0;
    let p = loop {
        // Counted sleeps, or the clock when probing took time too.
        let shown = waited.max(start.elapsed());
        let observed = match observe(&*sys, mounts, swap, scope, shown) {
            Ok(o) => o,
            Err(e) => {
                let row = |m: &MountConfig| MountStatus {
                    what: m.what.to_string(),
                    target: lexical(&m.target).display().to_string(),
                    fstype: m.fstype.clone(),
                    state: MountState::Failed,
                    detail: Some(e.to_string()),
                };
                let rows = mounts.iter().filter(|m| scope.holds(m)).map(row).collect();
                let report = Report {
                    rows,
                    removed: vec![],
                };
                return finish(state, scope, mounts, None, report);
            }
        };
        let p = plan(mounts, swap, &state.applied, &observed, scope);
        let missing = missing_disks(&observed);
        if scope == Scope::Network || !missing || pass >= rescans || Instant::now() >= deadline {
            break p;
        }
        if pass == 0 {
            tracing::info!(
                "waiting up to {} s for disks: {}",
                wait.as_secs(),
                missing_list(&observed)
            );
        }
        sys.sleep(RESCAN);
        waited += RESCAN;
        pass += 1;
    };
    let mut ex = Exec {
        sys,
        rows: p.rows,
        down: BTreeMap::new(),
        notes: BTreeMap::new(),
        removed: Vec::new(),
        deadline,
        tries: (wait.as_millis() / NETWORK_RETRY.as_millis()).max(1) as u32,
    };
    for r in ex.rows.iter().filter(|r| r.state == MountState::Failed) {
        ex.down.insert(
            PathBuf::from(&r.target),
            r.detail.clone().unwrap_or_default(),
        );
    }
    for action in p.actions {
        ex.run(action, state, mounts, swap);
    }
    let report = Report {
        rows: ex.rows,
        removed: ex.removed,
    };
    let swap_on = swap.zip(p.swap_path);
    finish(state, scope, mounts, swap_on, report)
}

/// A local `what` resolved to nothing (worth waiting for a late disk).
fn missing_disks(o: &Observed) -> bool {
    o.sources.values().any(|r| r.is_err())
}

fn missing_list(o: &Observed) -> String {
    o.sources
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(s, _)| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Record what is mounted and on now, and the rows.
fn finish(
    state: &mut MountsState,
    scope: Scope,
    mounts: &[MountConfig],
    swap: Option<(&SwapConfig, PathBuf)>,
    report: Report,
) -> Report {
    for r in &report.rows {
        let target = lexical(Path::new(&r.target));
        if r.target == SWAP_WHERE {
            if let (MountState::Active, Some((cfg, path))) = (r.state, &swap) {
                state.applied.swap = Some(((*cfg).clone(), path.clone()));
            }
        } else if r.state == MountState::Mounted {
            if let Some(m) = mounts.iter().find(|m| lexical(&m.target) == target) {
                state.applied.mounts.insert(target, m.clone());
            }
        }
    }
    match scope {
        Scope::Local => {
            state.local = report.rows.clone();
            // Shares come after the network: say so until their step ran.
            let mut network = Vec::new();
            for m in mounts.iter().filter(|m| m.is_network()) {
                let target = lexical(&m.target).display().to_string();
                network.push(
                    state
                        .network
                        .iter()
                        .find(|r| r.target == target)
                        .cloned()
                        .unwrap_or(MountStatus {
                            what: m.what.to_string(),
                            target,
                            fstype: m.fstype.clone(),
                            state: MountState::Waiting,
                            detail: Some(
                                "mounted once the network is up (step network-mounts)".into(),
                            ),
                        }),
                );
            }
            state.network = network;
        }
        Scope::Network => state.network = report.rows.clone(),
    }
    report
}

struct Exec<'a> {
    sys: &'a mut dyn System,
    rows: Vec<MountStatus>,
    /// Mount points that are not there (failed now or before), with why.
    down: BTreeMap<PathBuf, String>,
    /// e2fsck's note per mount point, for its row.
    notes: BTreeMap<PathBuf, String>,
    removed: Vec<String>,
    deadline: Instant,
    /// How often a network mount is tried at most.
    tries: u32,
}

impl Exec<'_> {
    fn set(&mut self, target: &Path, state: MountState, detail: String) {
        let shown = target.display().to_string();
        match self.rows.iter_mut().find(|r| r.target == shown) {
            Some(r) => (r.state, r.detail) = (state, Some(detail)),
            None => self.rows.push(MountStatus {
                what: String::new(),
                target: shown,
                fstype: None,
                state,
                detail: Some(detail),
            }),
        }
    }

    /// Why `target` cannot be worked on: it or a mount above it is down.
    fn blocked(&self, target: &Path) -> Option<String> {
        self.down
            .iter()
            .filter(|(d, _)| target.starts_with(d))
            .max_by_key(|(d, _)| d.components().count())
            .map(|(d, why)| {
                if d == target {
                    why.clone()
                } else {
                    format!("not mounted: {} is not ({why})", d.display())
                }
            })
    }

    fn fail(&mut self, target: &Path, why: String) {
        tracing::error!(target = %target.display(), "{why}");
        self.set(target, MountState::Failed, why.clone());
        self.down.insert(target.to_path_buf(), why);
    }

    fn run(
        &mut self,
        action: Action,
        state: &mut MountsState,
        mounts: &[MountConfig],
        swap: Option<&SwapConfig>,
    ) {
        let swap_row = Path::new(SWAP_WHERE);
        match action {
            Action::SwapOff { path } => match self.sys.swapoff(&path) {
                Ok(()) => {
                    state.applied.swap = None;
                    if swap.is_none() {
                        self.removed.push(format!("swap {}", path.display()));
                    }
                }
                Err(e) => self.set(swap_row, MountState::Failed, e.to_string()),
            },
            Action::Unmount { target } => match self.sys.unmount(&target) {
                Ok(()) => {
                    if let Some(m) = state.applied.mounts.remove(&target) {
                        if !mounts.iter().any(|d| lexical(&d.target) == target) {
                            self.removed
                                .push(format!("{} {}", target.display(), m.what));
                        }
                    }
                }
                Err(e) => {
                    let what = state
                        .applied
                        .mounts
                        .get(&target)
                        .map(|m| m.what.to_string())
                        .unwrap_or_default();
                    self.fail(&target, e.to_string());
                    if let Some(r) = self
                        .rows
                        .iter_mut()
                        .find(|r| r.target == target.display().to_string())
                    {
                        if r.what.is_empty() {
                            r.what = what;
                        }
                    }
                }
            },
            Action::Fsck { device, target } => {
                if let Some(why) = self.blocked(&target) {
                    return self.fail(&target, why);
                }
                match self.sys.fsck(&device) {
                    Ok(note) => {
                        self.notes.insert(target, note);
                    }
                    Err(e) => self.fail(&target, e.to_string()),
                }
            }
            Action::Mount(call) => {
                let target = call.target().to_path_buf();
                if let Some(why) = self.blocked(&target) {
                    return self.fail(&target, why);
                }
                let network = matches!(call, super::plan::MountCall::Network { .. });
                let mut tries = 0;
                let result = loop {
                    tries += 1;
                    match self.sys.mount(&call) {
                        Ok(()) => break Ok(()),
                        Err(e)
                            if network
                                && tries < self.tries
                                && Instant::now() + NETWORK_RETRY < self.deadline =>
                        {
                            tracing::info!(target = %target.display(), "{e}; trying again");
                            self.sys.sleep(NETWORK_RETRY);
                        }
                        Err(e) => break Err(e),
                    }
                };
                match result {
                    Ok(()) => {
                        let mut detail = match &call {
                            super::plan::MountCall::Local { device, .. } => {
                                format!("mounted {}", device.display())
                            }
                            super::plan::MountCall::Network { .. } => "mounted".to_string(),
                        };
                        if let Some(note) = self.notes.get(&target) {
                            detail = format!("{detail}; {note}");
                        }
                        if tries > 1 {
                            detail = format!("{detail} (try {tries})");
                        }
                        self.set(&target, MountState::Mounted, detail);
                    }
                    Err(e) if network => {
                        self.fail(&target, format!("{e} (gave up after {tries} tries)"))
                    }
                    Err(e) => self.fail(&target, e.to_string()),
                }
            }
            Action::SwapFile { path, size, on } => {
                if let Some(why) = self.blocked(&on) {
                    let why = format!("waiting for {}: {why}", on.display());
                    return self.fail(swap_row, why);
                }
                match self.sys.swap_file(&path, size) {
                    Ok(Some(note)) => {
                        self.notes.insert(swap_row.to_path_buf(), note);
                    }
                    Ok(None) => {}
                    Err(e) => self.fail(swap_row, e.to_string()),
                }
            }
            Action::SwapOn { path, on } => {
                if let Some(why) = on.as_deref().and_then(|on| self.blocked(on)) {
                    let on = on.unwrap_or_default();
                    return self.fail(swap_row, format!("waiting for {}: {why}", on.display()));
                }
                if let Some(why) = self.blocked(swap_row) {
                    return self.fail(swap_row, why);
                }
                match self.sys.swapon(&path) {
                    Ok(()) => {
                        let detail = match self.notes.get(swap_row) {
                            Some(note) => format!("swap on; {note}"),
                            None => "swap on".to_string(),
                        };
                        self.set(swap_row, MountState::Active, detail);
                    }
                    Err(e) => self.fail(swap_row, e.to_string()),
                }
            }
        }
    }
}
