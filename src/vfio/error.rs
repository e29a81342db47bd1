//! The vfio module's error type: every message names the device or config
//! entry and says what to do.

use crate::config::{PciAddress, PciId};
use std::path::PathBuf;

/// A group member that keeps a device's IOMMU group from being passed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// The member's address.
    pub address: PciAddress,
    /// Its current driver, if any.
    pub driver: Option<String>,
}

/// Everything that can go wrong selecting, checking, binding or unbinding.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// No IOMMU is active, so no device can be passed through.
    #[error("{device}: no IOMMU is enabled, so it cannot be passed through; {hint}")]
    NoIommu {
        /// The device that was selected.
        device: PciAddress,
        /// What to change (kernel command line option and firmware setting).
        hint: String,
    },
    /// An IOMMU is active but the device has no group.
    #[error("{device}: has no IOMMU group although an IOMMU is enabled; the IOMMU does not cover this slot, try another slot or check the firmware's VT-d/AMD-Vi setting")]
    NoGroup {
        /// The device.
        device: PciAddress,
    },
    /// A `pci = ..` entry names a device this machine does not have.
    #[error(
        "{origin}: no PCI device {address} on this machine; `lspci -D` lists the addresses{near}"
    )]
    NoSuchAddress {
        /// The config entry ("host.toml vfio[0]" or "walden.vfio").
        origin: String,
        /// The address asked for.
        address: PciAddress,
        /// ", devices on bus ..: .." when that bus has devices, else "".
        near: String,
    },
    /// An `id = ..` entry matches no device.
    #[error("{origin}: no PCI device with id {id} on this machine; {others}")]
    NoSuchId {
        /// The config entry.
        origin: String,
        /// The id asked for.
        id: PciId,
        /// The ids this vendor does have here, or a note that it has none.
        others: String,
    },
    /// An `id = ..` entry without `index`/`all` matches several devices.
    #[error("{origin}: {count} devices have id {id} ({list}); add index = N (from 0, in this order) or all = true")]
    AmbiguousId {
        /// The config entry.
        origin: String,
        /// The id.
        id: PciId,
        /// How many matched.
        count: usize,
        /// Their addresses.
        list: String,
    },
    /// `index = N` is past the matching devices.
    #[error("{origin}: index = {index} but only {count} device(s) have id {id} ({list}); index counts from 0")]
    IndexOutOfRange {
        /// The config entry.
        origin: String,
        /// The id.
        id: PciId,
        /// The index asked for.
        index: u32,
        /// How many matched.
        count: usize,
        /// Their addresses.
        list: String,
    },
    /// Two entries select the same device.
    #[error("{origin}: {address} is already selected by {first}; list each device once")]
    Duplicate {
        /// The later entry.
        origin: String,
        /// The device.
        address: PciAddress,
        /// The entry that selected it first.
        first: String,
    },
    /// Another device in the group is still used by the host.
    #[error("{device} shares IOMMU group {group} with {}; add {} to {add_to} too or move the card to another slot", list_blockers(.blockers), if .blockers.len() == 1 { "it" } else { "them" })]
    GroupNotViable {
        /// The device that was selected.
        device: PciAddress,
        /// Its IOMMU group.
        group: u32,
        /// Members that are neither selected, nor driver-less/vfio-pci/pci-stub, nor bridges.
        blockers: Vec<Blocker>,
        /// Where the user selects devices: "[[vfio]]" or "walden.vfio=".
        add_to: &'static str,
    },
    /// A `walden.vfio=` value does not parse.
    #[error("walden.vfio: {value:?} is neither a PCI address (0000:03:00.0) nor a vendor:device id (10de:1b80)")]
    Cmdline {
        /// The offending item.
        value: String,
    },
    /// Reading or writing a sysfs file failed.
    #[error("{device}: cannot write {value:?} to {}: {source}", path.display())]
    Write {
        /// The device being changed.
        device: PciAddress,
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The error.
        source: std::io::Error,
    },
    /// vfio-pci could not be loaded.
    #[error("cannot load the vfio-pci module: {reason}; check that the image's kernel has it (lib/modules/*/kernel/drivers/vfio)")]
    Module {
        /// Why.
        reason: String,
    },
    /// The device did not end up on vfio-pci.
    #[error("{device}: not bound to vfio-pci within {secs}s (driver now: {}); see the kernel log (dmesg) for vfio-pci's reason", .driver.as_deref().unwrap_or("none"))]
    BindTimeout {
        /// The device.
        device: PciAddress,
        /// How long we waited.
        secs: u64,
        /// Its driver at the end.
        driver: Option<String>,
    },
    /// The group's device node did not appear.
    #[error("{device}: bound to vfio-pci but {} did not appear within {secs}s; is devtmpfs mounted on /dev?", path.display())]
    NoDevNode {
        /// The device.
        device: PciAddress,
        /// The missing node.
        path: PathBuf,
        /// How long we waited.
        secs: u64,
    },
    /// Unbinding refused: a process (a guest's QEMU) holds the group open.
    #[error("{device}: not given back to the host: IOMMU group {group} is open by pid {pid} ({comm}); stop the guest using it first")]
    InUse {
        /// The device.
        device: PciAddress,
        /// Its group.
        group: u32,
        /// The process holding /dev/vfio/<group>.
        pid: u32,
        /// Its command name.
        comm: String,
    },
}

fn list_blockers(blockers: &[Blocker]) -> String {
    blockers
        .iter()
        .map(|b| {
            format!(
                "{} ({})",
                b.address,
                b.driver.as_deref().unwrap_or("no driver")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
