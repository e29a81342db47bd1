//! The final shutdown: what PID 1 does once the supervisor has stopped the
//! guests and services (or did not in time).
//!
//! Steps, each logged on the console as `walden: ...`:
//! SIGTERM to all processes, wait up to [`TERM_GRACE`], SIGKILL to all,
//! swapoff of every area in /proc/swaps, unmount every mount from
//! /proc/self/mountinfo in reverse order except `/` and the API file systems
//! (busy ones remounted read-only, `MNT_DETACH` only as a last resort), remount
//! `/` read-only, sync, reboot(2).
//!
//! In a child PID namespace (tests, containers) swap and mounts are shared
//! with the host, so only the kill steps, sync and reboot(2) run; reboot(2)
//! in a child PID namespace makes the kernel end the namespace's init: its
//! parent sees it killed by SIGINT for power off and halt, by SIGHUP for reboot.
//!
//! Side effects go through [`Machine`] (the real one is in `machine.rs`, a
//! recording fake in the tests), so the plan is unit-tested without root.

use super::mountinfo::{parse_mountinfo, parse_swaps, MountEntry};
use super::Action;
use nix::sys::signal::Signal;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long processes get between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for processes to vanish after SIGKILL (D-state stragglers
/// must not hold the power off forever).
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Unmount passes: a pass that unmounts a child can free its parent.
const UNMOUNT_PASSES: usize = 4;

/// Which PID namespace PID 1 runs in; decides how much of the machine it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The machine's real init: owns swap, mounts and the reboot.
    InitialNamespace,
    /// Init of a child PID namespace: owns only its processes.
    ChildNamespace,
}

/// Inode number of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel).
pub const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

impl Scope {
    /// Detect the scope from `<proc>/self/ns/pid`. When that cannot be read
    /// (no /proc yet) assume the initial namespace: skipping the unmounts on a
    /// real machine could lose data, while a container that lacks /proc also
    /// lacks the privileges to unmount the host.
    pub fn detect(proc: &Path) -> Scope {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(proc.join("self/ns/pid")) {
            Ok(meta) if meta.ino() != PROC_PID_INIT_INO => Scope::ChildNamespace,
            _ => Scope::InitialNamespace,
        }
    }
}

/// The side effects of the final shutdown.
pub trait Machine {
    /// Write one line to the console (the caller leaves out the `walden: ` prefix).
    fn log(&self, line: &str);
    /// `kill(-1, signal)`: every process but PID 1 itself (in its namespace).
    fn kill_all(&self, signal: Signal) -> io::Result<()>;
    /// Reap children until none are left or `timeout` passes; true when none are left.
    fn wait_all_exited(&self, timeout: Duration) -> bool;
    /// Text of /proc/swaps.
    fn read_swaps(&self) -> io::Result<String>;
    /// swapoff(2) one area.
    fn swapoff(&self, path: &Path) -> io::Result<()>;
    /// Text of /proc/self/mountinfo.
    fn read_mountinfo(&self) -> io::Result<String>;
    /// umount2(2); `detach` adds MNT_DETACH.
    fn umount(&self, target: &Path, detach: bool) -> io::Result<()>;
    /// Remount `target` read-only (MS_REMOUNT | MS_RDONLY).
    fn remount_ro(&self, target: &Path) -> io::Result<()>;
    /// sync(2).
    fn sync(&self);
    /// reboot(2) for `action`; returns only when it failed.
    fn reboot(&self, action: Action) -> io::Error;
}

/// Mount points the shutdown never unmounts: the kernel API file systems
/// (and everything below /proc, /sys and /dev: pts, cgroup, securityfs...).
const API_TREES: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Whether the final shutdown leaves `mount_point` mounted.
pub fn is_kept(mount_point: &Path) -> bool {
    mount_point == Path::new("/")
        || mount_point == Path::new("/run")
        || API_TREES.iter().any(|tree| mount_point.starts_with(tree))
}

/// The unmount order: mountinfo lists parents before children, so the
/// reverse unmounts children first. `/`, /run and the API trees are left out.
pub fn plan_unmounts(mounts: &[MountEntry]) -> Vec<PathBuf> {
    mounts
        .iter()
        .rev()
        .filter(|m| !is_kept(&m.mount_point))
        .map(|m| m.mount_point.clone())
        .collect()
}

/// Run the final shutdown for `action`; returns the reboot(2) error, since a
/// successful reboot does not return.
pub fn final_shutdown(machine: &dyn Machine, action: Action, scope: Scope) -> io::Error {
    kill_everything(machine);
    match scope {
        Scope::InitialNamespace => {
            swapoff_all(machine);
            unmount_all(machine);
            machine.log("remounting / read-only");
            if let Err(err) = machine.remount_ro(Path::new("/")) {
                machine.log(&format!("remounting / read-only failed: {err}"));
            }
        }
        Scope::ChildNamespace => {
            machine.log("not the initial PID namespace: leaving swap and mounts alone")
        }
    }
    machine.log("sync");
    machine.sync();
    machine.log(action.verb());
    machine.reboot(action)
}

fn kill_everything(machine: &dyn Machine) {
    machine.log("sending SIGTERM to all processes");
    // ESRCH just means nothing is left.
    let _ = machine.kill_all(Signal::SIGTERM);
    machine.wait_all_exited(TERM_GRACE);
    // Always sent, even when all went: cheap, and the console shows every step.
    machine.log("sending SIGKILL");
    let _ = machine.kill_all(Signal::SIGKILL);
    if !machine.wait_all_exited(KILL_GRACE) {
        machine.log("some processes survived SIGKILL (stuck in the kernel?); carrying on");
    }
}

fn swapoff_all(machine: &dyn Machine) {
    machine.log("swapoff");
    let areas = match machine.read_swaps() {
        Ok(text) => parse_swaps(&text),
        Err(err) => {
            machine.log(&format!("cannot read /proc/swaps: {err}; skipping swapoff"));
            return;
        }
    };
    for area in areas {
        machine.log(&format!("swapoff {}", area.display()));
        if let Err(err) = machine.swapoff(&area) {
            machine.log(&format!("swapoff {} failed: {err}", area.display()));
        }
    }
}

/// Already gone (a parent was detached, or it vanished): nothing to do.
fn is_gone(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT))
}

fn unmount_all(machine: &dyn Machine) {
    let mounts = match machine.read_mountinfo().map(|text| parse_mountinfo(&text)) {
        Ok(Ok(mounts)) => mounts,
        Ok(Err(err)) => {
            machine.log(&format!("{err}; skipping unmounts"));
            return;
        }
        Err(err) => {
            machine.log(&format!("cannot read mountinfo: {err}; skipping unmounts"));
            return;
        }
    };
    let mut pending = plan_unmounts(&mounts);
    let mut failed: Vec<(PathBuf, io::Error)> = Vec::new();
    for pass in 0..UNMOUNT_PASSES {
        failed.clear();
        for target in &pending {
            let retry = if pass == 0 { "" } else { " (retry)" };
            machine.log(&format!("unmounting {}{retry}", target.display()));
            match machine.umount(target, false) {
                Ok(()) => {}
                Err(err) if is_gone(&err) => {}
                Err(err) => failed.push((target.clone(), err)),
            }
        }
        let progress = failed.len() < pending.len();
        pending = failed.iter().map(|(t, _)| t.clone()).collect();
        if pending.is_empty() || !progress {
            break;
        }
    }
    for (target, err) in failed {
        let shown = target.display();
        machine.log(&format!(
            "unmounting {shown} failed: {err}; remounting it read-only"
        ));
        let Err(ro_err) = machine.remount_ro(&target) else {
            continue;
        };
        machine.log(&format!(
            "remounting {shown} read-only failed: {ro_err}; detaching it (MNT_DETACH) as a last resort"
        ));
        if let Err(err) = machine.umount(&target, true) {
            machine.log(&format!("detaching {shown} failed: {err}"));
        }
    }
}

#[cfg(test)]
#[path = "shutdown_tests.rs"]
mod tests;
