//! No config disk at boot: the box comes up in maintenance mode (console
//! login included) and a watcher polls the block devices every 2 s; when
//! the config disk appears it wakes the supervisor with SIGHUP, which runs
//! the config part of the bring-up again ([`late_steps`]) without a reboot.
//!
//! The flags are process-wide on purpose: there is one supervisor per
//! process, and the signal handler path (SIGHUP -> `LoopExit::Reload`)
//! carries no data.

use super::bringup::Step;
use crate::boot::cmdline::DeviceSpec;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the watcher scans /sys/class/block.
pub const POLL: Duration = Duration::from_secs(2);

static WATCHING: AtomicBool = AtomicBool::new(false);
static APPEARED: AtomicBool = AtomicBool::new(false);

/// Start watching for `spec` (once per process). Returns false when a
/// watcher already runs or its thread could not be started.
pub fn start(sys: PathBuf, dev: PathBuf, spec: DeviceSpec) -> bool {
    if WATCHING.swap(true, Ordering::SeqCst) {
        return false;
    }
    let spawned = std::thread::Builder::new()
        .name("config-disk-watch".into())
        .spawn(move || loop {
            std::thread::sleep(POLL);
            let (found, _) = crate::boot::media::scan(&sys, &dev, &spec);
            if let Some(f) = found {
                tracing::info!(
                    "config disk {} ({spec}) appeared: running the config bring-up",
                    f.device.display()
                );
                APPEARED.store(true, Ordering::SeqCst);
                let me = nix::unistd::getpid();
                if let Err(e) = nix::sys::signal::kill(me, nix::sys::signal::Signal::SIGHUP) {
                    tracing::error!("cannot wake the supervisor: {e}; reboot to use the disk");
                }
                return;
            }
        });
    if spawned.is_err() {
        WATCHING.store(false, Ordering::SeqCst);
    }
    spawned.is_ok()
}

/// True once, after the watcher saw the config disk appear.
pub fn take_appeared() -> bool {
    let appeared = APPEARED.swap(false, Ordering::SeqCst);
    if appeared {
        WATCHING.store(false, Ordering::SeqCst);
    }
    appeared
}

/// The steps to run once the config disk is there: the appliance table
/// from "config-disk" on, minus what already runs regardless of the config
/// (the console logins).
pub fn late_steps(all: Vec<Step>) -> Vec<Step> {
    all.into_iter()
        .skip_while(|s| s.name != "config-disk")
        .filter(|s| s.name != "consoles")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::{appliance, Mode};

    #[test]
    fn late_steps_start_at_the_config_disk_and_keep_the_logins_out() {
        let names: Vec<&str> = late_steps(appliance::steps(Mode::Pid1))
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names.first(), Some(&"config-disk"));
        assert!(names.contains(&"config") && names.contains(&"services"));
        assert!(names.contains(&"config-generation"));
        assert!(!names.contains(&"consoles") && !names.contains(&"udev"));
    }
}
