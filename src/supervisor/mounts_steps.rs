//! The "mounts" and "network-mounts" bring-up steps (also run by `walden
//! config apply`): host.toml's `[[mount]]`s and `[swap]` through
//! [`crate::mounts`]. Each reports every entry's outcome in one line and
//! fails when any entry failed, without stopping bring-up; the guests
//! whose files lie on a mount that is not there are handed to the guests
//! step as host blocks (source "mounts").

use super::bringup::{BringUp, StepError, StepOutcome};
use crate::mounts::{reconcile, MountState, Scope, SysSystem};
use std::time::Duration;

/// How long the local step waits for a disk that is not there yet (a
/// late USB disk), as for the config disk.
const LOCAL_WAIT: Duration = Duration::from_secs(10);
/// How long network shares are retried (the DHCP lease may still come).
const NETWORK_WAIT: Duration = Duration::from_secs(30);

/// The host-block source of the mounts steps.
pub const BLOCK_SOURCE: &str = "mounts";

/// "mounts": local disks in path order, then the swap.
pub fn local_step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    step(b, Scope::Local, LOCAL_WAIT)
}

/// "network-mounts": nfs, nfs4 and cifs shares, retried for a while.
pub fn network_step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    step(b, Scope::Network, NETWORK_WAIT)
}

fn step(b: &mut BringUp, scope: Scope, wait: Duration) -> Result<StepOutcome, StepError> {
    let config = b.config.as_ref();
    let wanted = config.is_some_and(|c| {
        c.host.mounts.iter().any(|m| scope.holds(m))
            || (scope == Scope::Local && c.host.swap.is_some())
    });
    let applied = b.mounts.applied.mounts.values().any(|m| scope.holds(m))
        || (scope == Scope::Local && b.mounts.applied.swap.is_some());
    if !wanted && !applied {
        return Ok(StepOutcome::Skipped(match (config, scope) {
            (None, _) => "no config loaded".into(),
            (Some(_), Scope::Local) => {
                "no [[mount]] of a local disk and no [swap] in host.toml".into()
            }
            (Some(_), Scope::Network) => "no network share among the [[mount]]s".into(),
        }));
    }
    let mut sys = SysSystem::new(b.paths.clone());
    let report = reconcile(&mut sys, &mut b.mounts, config, scope, wait);
    b.supervisor.status().lock().mounts = b.mounts.statuses();
    if let Some(c) = config {
        b.host_blocks.insert(BLOCK_SOURCE, b.mounts.guest_blocks(c));
    }
    let failed = report.failed().len();
    let waiting = report
        .rows
        .iter()
        .filter(|r| r.state == MountState::Waiting)
        .count();
    if failed + waiting > 0 {
        Err(StepError::new(format!(
            "{} of {} failed (guests whose files are on them wait): {}",
            failed + waiting,
            report.rows.len(),
            report.summary()
        )))
    } else {
        Ok(StepOutcome::Done(report.summary()))
    }
}
