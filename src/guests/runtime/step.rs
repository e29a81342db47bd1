//! The "guests" bring-up step: connect to libvirt, define every guest of
//! the config, start the autostart ones in `after` order and wait until
//! each runs or failed; then keep watching them in the background.

use super::backend::Backend;
use super::handle::GuestHandle;
use super::libvirt::{Libvirt, QEMU_PID_DIR, SYSTEM_URI};
use super::policy::Policy;
use super::table::GuestState;
use crate::guests::env::{DomainEnv, DomainType};
use crate::supervisor::bringup::{BringUp, StepError, StepOutcome};
use std::sync::Arc;
use std::time::Duration;

/// How long bring-up waits for the autostart guests to run.
pub const GUESTS_READY: Duration = Duration::from_secs(120);

/// The "guests" step.
pub fn guests_step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let Some(config) = b.config.clone() else {
        return Ok(StepOutcome::Skipped("no config loaded".into()));
    };
    let status = b.supervisor.status().clone();
    let handle = match &b.guests {
        Some(h) => h.clone(),
        None => {
            let pid_dir = b.paths.root.join(QEMU_PID_DIR.trim_start_matches('/'));
            let hv = Libvirt::new(SYSTEM_URI, Some(pid_dir));
            let env = DomainEnv::new(DomainType::detect(&b.paths.dev));
            let h = GuestHandle::new(
                Arc::new(hv),
                Backend::new(env, Some(status.clone())),
                Policy::default(),
            );
            // A NIC with `vlan` on a vlan_filtering bridge: its tap gets
            // that VLAN as the port's only (untagged) VLAN once it exists.
            h.set_on_start(Arc::new(|guest| {
                for (tap, vlan) in crate::guests::tap_vlans(guest) {
                    crate::net::set_port_vlan(&tap, vlan.get())
                        .map_err(|e| format!("VLAN {} on {tap}: {e}", vlan.get()))?;
                }
                Ok(())
            }));
            let shown = h.clone();
            status.set_refresher("guests", Box::new(move |s| s.guests = shown.statuses()));
            b.guests = Some(h.clone());
            h
        }
    };
    // What other steps (mounts, ...) keep from starting, as they last saw it.
    for (source, blocks) in &b.host_blocks {
        handle.set_host_blocks(source, blocks.clone());
    }
    if config.guests.is_empty() && handle.statuses().is_empty() {
        // Watching from now on: `walden config apply` may add guests.
        handle
            .spawn_monitor()
            .map_err(|e| StepError::new(e.to_string()))?;
        return Ok(StepOutcome::Skipped("no guests in the config".into()));
    }
    // At boot and again on `walden config apply` (which may remove every
    // guest: they are shut down and undefined here).
    let report = handle
        .reconcile(&config, b.restart_changed)
        .map_err(|e| StepError::new(e.to_string()))?;
    // Turns run on this thread until settled: no waitpid(-1) of the
    // supervisor loop races disk preparation (qemu-img) meanwhile.
    let settled = handle.settle(GUESTS_READY);
    handle
        .spawn_monitor()
        .map_err(|e| StepError::new(e.to_string()))?;
    let rows = handle.statuses();
    let running = rows
        .iter()
        .filter(|g| g.state == GuestState::Running)
        .count();
    let mut problems: Vec<String> = report.errors.clone();
    for g in &rows {
        // A guest the config no longer has is being shut down and
        // undefined: that is the apply working, not a problem.
        let removed = !config.guests.iter().any(|c| c.name.as_str() == g.name);
        if removed {
            continue;
        }
        if g.state == GuestState::Failed || (g.autostart && g.state != GuestState::Running) {
            problems.push(format!(
                "{} {}: {}",
                g.name,
                serde_json::to_value(g.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                g.last_error.as_deref().unwrap_or("-")
            ));
        }
    }
    if problems.is_empty() {
        Ok(StepOutcome::Done(format!(
            "{running} of {} guests running",
            rows.len()
        )))
    } else {
        Err(StepError::new(format!(
            "{running} of {} guests running{}; {}; see `walden guest list`",
            rows.len(),
            if settled { "" } else { " (gave up waiting)" },
            problems.join("; ")
        )))
    }
}
