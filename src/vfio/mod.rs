//! PCI passthrough: bind the devices host.toml's `[[vfio]]` entries and the
//! kernel command line's `walden.vfio=` select to vfio-pci, before guests
//! and services start (DESIGN.md section 2, "vfio"; user guide in
//! docs/passthrough.md).
//!
//! Pure parts: [`select`] (entries -> devices), [`plan`] (IOMMU presence,
//! group viability, what to bind/keep/give back). Effect part: [`apply`]
//! writes sysfs through the [`apply::Kernel`] interface. Everything reads
//! and writes below the roots in [`Paths`], so the tests run against a
//! sysfs tree they build in a temporary directory.
//!
//! Two entry points for the bring-up:
//! - [`apply_early`], before udev coldplug: binds `walden.vfio=` devices
//!   before their host drivers are loaded (GPUs that must never see one);
//! - [`apply_config`], after the config is loaded (and again on re-apply):
//!   binds the `[[vfio]]` devices, leaves devices already on vfio-pci
//!   alone, gives devices whose entry was removed back to the host.
//!
//! A device that cannot be bound fails only itself: its status row carries
//! the reason, and [`failed_guests`] names the guests that use it.

// Some report queries are for the guests module, which is wired up later.
#![allow(dead_code)]

pub mod apply;
mod error;
pub mod plan;
pub mod select;
mod state;
mod status;
mod steps;
pub mod sysfs;

#[cfg(test)]
mod tests;

// The guests module (wired up later) uses the failure queries.
#[allow(unused_imports)]
pub use error::{Blocker, VfioError};
#[allow(unused_imports)]
pub use status::{failed_devices, failed_guests, render_table, VfioDeviceStatus, VfioReport};

use crate::config::{GuestConfig, PciAddress, PciRef, VfioDevice, VfioSelect};
use crate::context::Paths;
pub use apply::MODPROBE;
pub use steps::{config_step, early_step};

use apply::{Kernel, RealKernel, Timeouts};
use plan::Wanted;
use select::Selector;
use state::BoundState;
use sysfs::{IommuState, PciDevice};

/// Bind the `walden.vfio=` devices of the kernel command line, before
/// udev coldplug loads host drivers. None when the command line has none.
pub fn apply_early(paths: &Paths) -> Option<VfioReport> {
    apply_early_with(paths, &mut RealKernel::new(paths), Timeouts::default())
}

/// [`apply_early`] with a chosen [`Kernel`] and timeouts (tests use a fake).
pub fn apply_early_with(
    paths: &Paths,
    kernel: &mut dyn Kernel,
    timeouts: Timeouts,
) -> Option<VfioReport> {
    let cmdline = std::fs::read_to_string(paths.proc.join("cmdline")).unwrap_or_default();
    let (selectors, parse_errors) = select::parse_cmdline(&cmdline);
    if selectors.is_empty() && parse_errors.is_empty() {
        return None;
    }
    // Early binding never gives devices back: after a restart of the
    // supervisor the state also lists host.toml's devices.
    let mut report = run(paths, &selectors, &[], false, kernel, timeouts);
    report.devices.extend(
        parse_errors
            .into_iter()
            .map(|e| error_row(select::CMDLINE_ORIGIN, &e)),
    );
    Some(report)
}

/// Bind host.toml's `[[vfio]]` devices (plus the `walden.vfio=` ones, so
/// they are neither given back nor missing from status), give back what
/// walden bound earlier and is no longer selected. `guests` say who uses
/// which device.
pub fn apply_config(paths: &Paths, entries: &[VfioDevice], guests: &[GuestConfig]) -> VfioReport {
    apply_with(
        paths,
        entries,
        guests,
        &mut RealKernel::new(paths),
        Timeouts::default(),
    )
}

/// [`apply_config`] with a chosen [`Kernel`] and timeouts (tests use a fake).
pub fn apply_with(
    paths: &Paths,
    entries: &[VfioDevice],
    guests: &[GuestConfig],
    kernel: &mut dyn Kernel,
    timeouts: Timeouts,
) -> VfioReport {
    let cmdline = std::fs::read_to_string(paths.proc.join("cmdline")).unwrap_or_default();
    let mut selectors = select::from_config(entries);
    // Bad walden.vfio= items were reported by the early step already.
    selectors.extend(select::parse_cmdline(&cmdline).0);
    let users = guests_using(entries, guests);
    run(paths, &selectors, &users, true, kernel, timeouts)
}

/// Per `[[vfio]]` entry, the guests whose `[[pci]]` refers to it (by the
/// entry's address or its label; as the config check matches them).
pub fn guests_using(entries: &[VfioDevice], guests: &[GuestConfig]) -> Vec<Vec<String>> {
    entries
        .iter()
        .map(|e| {
            guests
                .iter()
                .filter(|g| {
                    g.pci.iter().any(|p| match (&p.device, &e.select) {
                        (PciRef::Address(a), VfioSelect::Address(b)) => a == b,
                        (PciRef::Label(l), _) => e.label.as_ref() == Some(l),
                        _ => false,
                    })
                })
                .map(|g| g.name.to_string())
                .collect()
        })
        .collect()
}

/// Select, plan, execute, record state, and build the status rows.
fn run(
    paths: &Paths,
    selectors: &[Selector],
    users: &[Vec<String>],
    give_back: bool,
    kernel: &mut dyn Kernel,
    timeouts: Timeouts,
) -> VfioReport {
    let devices = sysfs::read_devices(&paths.sys);
    let iommu = IommuState::read(&paths.sys, &paths.proc);
    let selection = select::select(selectors, &devices);
    let mut state = BoundState::load(&paths.run);
    let recorded = state.clone();
    let wanted: Vec<Wanted> = selection
        .selected
        .iter()
        .map(|s| Wanted {
            address: s.address,
            from_cmdline: selectors[s.selector].entry.is_none(),
        })
        .collect();
    let previously = if give_back {
        state.addresses()
    } else {
        Vec::new()
    };
    let plan = plan::plan(&wanted, &devices, &previously, &iommu);
    if give_back {
        // Forget devices that left vfio-pci by other means (or vanished):
        // they are no longer walden's to give back.
        state
            .devices
            .retain(|a, _| plan.unbind.contains(a) || wanted.iter().any(|w| w.address == *a));
    }
    let mut applied = apply::execute(&plan, &devices, paths, kernel, timeouts);
    let mut errors: Vec<(PciAddress, VfioError)> = plan.refused;
    let mut report = VfioReport {
        kept: plan.keep.len(),
        ..VfioReport::default()
    };
    for (address, result) in applied.bound.drain(..) {
        match result {
            Ok(()) => {
                let before = find(&devices, address).and_then(|d| d.driver.clone());
                state.devices.insert(address, before);
                report.bound += 1;
            }
            Err(e) => errors.push((address, e)),
        }
    }
    for (address, result) in applied.unbound.drain(..) {
        match result {
            Ok(()) => {
                state.devices.remove(&address);
                report.unbound += 1;
                tracing::info!(device = %address, "given back to the host");
            }
            Err(e) => errors.push((address, e)),
        }
    }
    // Kept devices walden did not bind itself (bound before walden ran)
    // are not recorded, so they are never given back behind someone's back.
    if state == recorded {
        // Nothing changed: write nothing (a no-op apply stays a no-op).
    } else if let Err(e) = state.save(&paths.run) {
        tracing::warn!(
            "cannot record bound devices in {}: {e}; removing a [[vfio]] entry will not give its device back until reboot",
            BoundState::path(&paths.run).display()
        );
    }
    for s in &selection.selected {
        let sel = &selectors[s.selector];
        let err = errors
            .iter()
            .position(|(a, _)| *a == s.address)
            .map(|i| errors.remove(i).1);
        let before = match state.devices.get(&s.address) {
            Some(d) => d.clone(),
            None => find(&devices, s.address).and_then(|d| d.driver.clone()),
        };
        let now = sysfs::read_device(&paths.sys, s.address);
        let mut row = device_row(sel, now.as_ref(), before, paths);
        row.address = Some(s.address.to_string());
        row.guests = sel
            .entry
            .and_then(|i| users.get(i))
            .cloned()
            .unwrap_or_default();
        row.error = err.map(|e| e.to_string());
        report.devices.push(row);
    }
    for (si, e) in &selection.errors {
        let mut row = error_row(&selectors[*si].origin, e);
        row.label = selectors[*si].label.clone();
        row.guests = selectors[*si]
            .entry
            .and_then(|i| users.get(i))
            .cloned()
            .unwrap_or_default();
        report.devices.push(row);
    }
    // What is left are failed unbinds of devices no longer selected.
    for (address, e) in errors {
        let now = sysfs::read_device(&paths.sys, address);
        let mut row = error_row("removed from [[vfio]]", &e);
        row.address = Some(address.to_string());
        row.driver_after = now.and_then(|d| d.driver);
        report.devices.push(row);
    }
    for row in report.devices.iter().filter(|r| r.error.is_some()) {
        tracing::error!(
            device = row.address.as_deref().unwrap_or("-"),
            "{}",
            row.error.as_deref().unwrap_or("")
        );
    }
    report
}

fn find(devices: &[PciDevice], address: PciAddress) -> Option<&PciDevice> {
    devices.iter().find(|d| d.address == address)
}

fn device_row(
    sel: &Selector,
    now: Option<&PciDevice>,
    driver_before: Option<String>,
    paths: &Paths,
) -> VfioDeviceStatus {
    let group = now.and_then(|d| d.iommu_group);
    // Shown as the path inside the machine, whatever root the test uses.
    let node = group
        .filter(|g| sysfs::group_node(&paths.dev, *g).exists())
        .map(|g| format!("/dev/vfio/{g}"));
    VfioDeviceStatus {
        address: now.map(|d| d.address.to_string()),
        selected_by: sel.origin.clone(),
        vendor_device: now.map(|d| d.id.to_string()),
        class: now.map(|d| format!("{:06x}", d.class)),
        iommu_group: group,
        driver_before,
        driver_after: now.and_then(|d| d.driver.clone()),
        dev_node: node,
        host_netdevs: now
            .map(|d| sysfs::net_interfaces(&paths.sys, d.address))
            .unwrap_or_default(),
        label: sel.label.clone(),
        guests: Vec::new(),
        error: None,
    }
}

fn error_row(origin: &str, e: &VfioError) -> VfioDeviceStatus {
    VfioDeviceStatus {
        address: None,
        selected_by: origin.to_string(),
        vendor_device: None,
        class: None,
        iommu_group: None,
        driver_before: None,
        driver_after: None,
        dev_node: None,
        host_netdevs: Vec::new(),
        label: None,
        guests: Vec::new(),
        error: Some(e.to_string()),
    }
}
