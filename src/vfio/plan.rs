//! What to bind, keep and give back, as a pure function of the selected
//! devices, the devices sysfs shows and what walden bound before.
//!
//! IOMMU group viability (the kernel's rule, which QEMU would otherwise
//! report much later as "group is not viable"): every other member of a
//! selected device's group must be selected too, or have no driver, or be
//! on vfio-pci or pci-stub, or be a PCI bridge.

use super::error::{Blocker, VfioError};
use super::sysfs::{IommuState, PciDevice, STUB_DRIVER, VFIO_DRIVER};
use crate::config::PciAddress;
use std::collections::HashSet;

/// A device to pass through, and where the user selected it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The device.
    pub address: PciAddress,
    /// Selected on the kernel command line (`walden.vfio=`), not host.toml.
    pub from_cmdline: bool,
}

/// What the applier must do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Devices to move to vfio-pci, in address order.
    pub bind: Vec<PciAddress>,
    /// Selected devices already on vfio-pci: nothing to do.
    pub keep: Vec<PciAddress>,
    /// Devices walden bound earlier that are no longer selected: give them
    /// back to their host driver.
    pub unbind: Vec<PciAddress>,
    /// Selected devices that must not (or cannot) be bound, and why. A
    /// refused device already on vfio-pci stays there: the user wanted it
    /// away from the host.
    pub refused: Vec<(PciAddress, VfioError)>,
}

impl Plan {
    /// True when applying it writes nothing.
    pub fn is_noop(&self) -> bool {
        self.bind.is_empty() && self.unbind.is_empty()
    }
}

/// Decide what to do. `previously_bound` are the devices walden's state
/// file says it bound; only those are ever unbound, so devices someone
/// else put on vfio-pci are left alone.
pub fn plan(
    wanted: &[Wanted],
    devices: &[PciDevice],
    previously_bound: &[PciAddress],
    iommu: &IommuState,
) -> Plan {
    let mut out = Plan::default();
    let chosen: HashSet<PciAddress> = wanted.iter().map(|w| w.address).collect();
    for w in wanted {
        let Some(dev) = devices.iter().find(|d| d.address == w.address) else {
            continue; // selection only yields devices that exist
        };
        match viable(w, dev, devices, &chosen, iommu) {
            Err(e) => out.refused.push((w.address, e)),
            Ok(()) if dev.on_vfio() => out.keep.push(w.address),
            Ok(()) => out.bind.push(w.address),
        }
    }
    for &address in previously_bound {
        if chosen.contains(&address) {
            continue;
        }
        let held = devices
            .iter()
            .find(|d| d.address == address)
            .is_some_and(|d| d.on_vfio() || d.driver_override.as_deref() == Some(VFIO_DRIVER));
        if held {
            out.unbind.push(address);
        }
    }
    out.bind.sort();
    out.keep.sort();
    out.unbind.sort();
    out
}

fn viable(
    w: &Wanted,
    dev: &PciDevice,
    devices: &[PciDevice],
    chosen: &HashSet<PciAddress>,
    iommu: &IommuState,
) -> Result<(), VfioError> {
    if !iommu.present {
        return Err(VfioError::NoIommu {
            device: w.address,
            hint: iommu.hint(),
        });
    }
    let group = dev
        .iommu_group
        .ok_or(VfioError::NoGroup { device: w.address })?;
    let blockers: Vec<Blocker> = devices
        .iter()
        .filter(|m| m.iommu_group == Some(group) && m.address != w.address)
        .filter(|m| !chosen.contains(&m.address) && !m.is_bridge())
        .filter(|m| {
            m.driver
                .as_deref()
                .is_some_and(|d| d != VFIO_DRIVER && d != STUB_DRIVER)
        })
        .map(|m| Blocker {
            address: m.address,
            driver: m.driver.clone(),
        })
        .collect();
    if blockers.is_empty() {
        Ok(())
    } else {
        Err(VfioError::GroupNotViable {
            device: w.address,
            group,
            blockers,
            add_to: if w.from_cmdline {
                "walden.vfio="
            } else {
                "[[vfio]]"
            },
        })
    }
}
