//! host.toml's `[[mount]]`s and `[swap]`: data disks, network shares and
//! swap, at boot and on `walden config apply`.
//!
//! * [`plan`]: pure. Desired entries, what walden applied before
//!   ([`plan::Applied`]) and what the kernel shows ([`plan::Observed`]:
//!   mountinfo, /proc/swaps, the block devices each `what` resolves to)
//!   -> actions (swapoff, unmount, fsck, mount, swap file, swapon) and a
//!   status row per entry.
//! * [`observe`]: reads mountinfo and /proc/swaps and resolves `LABEL=`,
//!   `UUID=`, `PARTUUID=` and /dev paths by probing superblocks
//!   ([`crate::boot::media`], [`crate::boot::fsprobe`]).
//! * [`system`]: the narrow [`System`] interface (read, probe, e2fsck,
//!   mount, umount, swap file, swapon/off, sleep) and its real
//!   implementation over [`crate::context::Paths`]; a recording fake in
//!   the tests.
//! * [`run`]: one reconcile of a [`Scope`]: wait (bounded) for late disks
//!   or the network, plan, execute, record the outcome in [`MountsState`].
//!
//! Two scopes, two bring-up steps: `mounts` (local disks and swap, after
//! udev settled, before the network) and `network-mounts` (nfs, nfs4,
//! cifs, after the services, where the DHCP clients are, before the
//! guests). A mount that fails fails alone ("nofail"): its row says why,
//! the guests whose files live below it wait ([`MountsState::guest_blocks`]),
//! and bring-up goes on.
//!
//! Rejected designs: mounting through mount(8) and an fstab (one more
//! file to keep in sync with host.toml, and mount(8) waits as long as it
//! likes); deciding "changed" by comparing mountinfo's option strings with
//! host.toml (the kernel rewrites and adds options), instead of
//! remembering what walden mounted with which config.

pub mod error;
pub mod observe;
pub mod options;
pub mod plan;
pub mod run;
pub mod swapfile;
pub mod system;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod run_tests;
#[cfg(test)]
mod sys_tests;

pub use error::MountError;
pub use run::reconcile;
pub use system::SysSystem;

use crate::config::{lexical, Config, MountConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The `where` of the swap's status row.
pub const SWAP_WHERE: &str = "swap";

/// Which `[[mount]]`s a run handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Local disks and the swap (step `mounts`).
    Local,
    /// nfs, nfs4 and cifs shares (step `network-mounts`).
    Network,
}

impl Scope {
    /// Whether `m` belongs to this scope.
    pub fn holds(self, m: &MountConfig) -> bool {
        m.is_network() == (self == Scope::Network)
    }
}

/// State of a mount or the swap in `walden status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountState {
    /// Mounted as host.toml says.
    Mounted,
    /// The swap area is on.
    Active,
    /// Not yet: a network share before the network is up, or an action
    /// about to run.
    Waiting,
    /// Could not be mounted (or turned on); `detail` says why.
    Failed,
}

/// One `[[mount]]` or the `[swap]` in `walden status` (field names are part
/// of the control protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountStatus {
    /// `what` as written ("LABEL=data", "nas:/vm"), or the swap file.
    pub what: String,
    /// The mount point; "swap" for the swap.
    #[serde(rename = "where")]
    pub target: String,
    /// The file system type, when known.
    #[serde(default)]
    pub fstype: Option<String>,
    /// State.
    pub state: MountState,
    /// What was done, or why not.
    #[serde(default)]
    pub detail: Option<String>,
}

/// What the mounts steps keep between runs (in the bring-up state).
#[derive(Debug, Clone, Default)]
pub struct MountsState {
    /// What walden mounted and turned on.
    pub applied: plan::Applied,
    /// Rows of the last local run (mounts and swap).
    pub local: Vec<MountStatus>,
    /// Rows of the last network run.
    pub network: Vec<MountStatus>,
}

impl MountsState {
    /// Every row, local first.
    pub fn statuses(&self) -> Vec<MountStatus> {
        self.local.iter().chain(&self.network).cloned().collect()
    }

    /// Guests that must wait because a file they use (disk, base, kernel,
    /// initrd) lies below a mount that is not mounted: guest -> reason
    /// ("waiting for /srv/data: no disk with LABEL=DATA ...").
    pub fn guest_blocks(&self, config: &Config) -> BTreeMap<String, String> {
        let rows = self.statuses();
        let down: Vec<&MountStatus> = rows
            .iter()
            .filter(|r| r.target != SWAP_WHERE && r.state != MountState::Mounted)
            .collect();
        let mut blocks = BTreeMap::new();
        for g in &config.guests {
            let hit = g.host_paths().into_iter().find_map(|(_, path)| {
                let path = lexical(path);
                down.iter().find(|r| path.starts_with(Path::new(&r.target)))
            });
            if let Some(r) = hit {
                let why = r.detail.as_deref().unwrap_or("not mounted");
                blocks.insert(
                    g.name.to_string(),
                    format!("waiting for {}: {why}", r.target),
                );
            }
        }
        blocks
    }
}
