//! guests/NAME.toml: one virtual machine per file; NAME is the file stem.

use super::ids::{IfName, MacAddr, Name, PciAddress, VlanId};
use super::service::RestartPolicy;
use super::source::At;
use super::units::{Percent, Size};
use std::path::PathBuf;
use std::time::Duration;

/// Everything one guest file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// Origin (the file; key empty).
    pub at: At,
    /// Guest name: the file stem.
    pub name: Name,
    /// Memory.
    pub memory: Size,
    /// Virtual CPUs (default 1).
    pub vcpus: u32,
    /// CPU weight and ceiling.
    pub cpu: CpuConfig,
    /// Start at boot (default true).
    pub autostart: bool,
    /// Guests that must be running before this one starts.
    pub after: Vec<Name>,
    /// Time between the ACPI shutdown request and a forced stop (default 120s).
    pub shutdown_timeout: Duration,
    /// Restart policy (default on-failure).
    pub restart: RestartPolicy,
    /// How it boots.
    pub boot: Boot,
    /// `[[disk]]`.
    pub disks: Vec<DiskConfig>,
    /// `[[cdrom]]`: SATA CD-ROM drives, each with an ISO image or empty.
    pub cdroms: Vec<CdromConfig>,
    /// `[boot] order`: what the firmware tries, first to last (default:
    /// the disks, then the CD-ROMs; an empty disk falls through to the
    /// installer ISO, an installed one boots).
    pub boot_order: Vec<BootDevice>,
    /// `[[nic]]`.
    pub nics: Vec<NicConfig>,
    /// `[[pci]]`: passed-through host devices.
    pub pci: Vec<GuestPci>,
    /// Add a memory balloon device (default false).
    pub balloon: bool,
    /// Add a VNC console on localhost (default false).
    pub vnc: bool,
}

impl GuestConfig {
    /// Every host file the guest uses (disk images, their bases, ISO
    /// images, the direct-boot kernel and initrd) with its key in the guest file
    /// (`disk[0].path`, `boot.kernel`): what must be there before it starts.
    pub fn host_paths(&self) -> Vec<(String, &std::path::Path)> {
        let mut out = Vec::new();
        for d in &self.disks {
            if let DiskSource::File { path, base, .. } = &d.source {
                out.push((d.at.sub("path"), path.as_path()));
                if let Some(b) = base {
                    out.push((d.at.sub("base"), b.as_path()));
                }
            }
        }
        for c in &self.cdroms {
            if let Some(p) = &c.path {
                out.push((c.at.sub("path"), p.as_path()));
            }
        }
        if let Boot::Kernel { kernel, initrd, .. } = &self.boot {
            out.push(("boot.kernel".to_string(), kernel.as_path()));
            if let Some(i) = initrd {
                out.push(("boot.initrd".to_string(), i.as_path()));
            }
        }
        out
    }
}

/// `cpu = { weight = .., max = ".." }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuConfig {
    /// Relative CPU weight 1..=10000 (cgroup cpu.weight; the default is 100).
    pub weight: Option<u32>,
    /// Ceiling as a percentage of the guest's own vcpus (1..=100): "50%" of a
    /// 4-vcpu guest is two host CPUs' worth of time.
    pub max: Option<Percent>,
}

/// Firmware for guests that boot from a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS.
    Bios,
    /// OVMF.
    Uefi,
}

/// `[boot]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Boot from the disks with this firmware (default bios).
    Firmware(Firmware),
    /// Direct kernel boot.
    Kernel {
        /// Kernel image.
        kernel: PathBuf,
        /// Initial ramdisk.
        initrd: Option<PathBuf>,
        /// Kernel command line.
        cmdline: Option<String>,
    },
}

/// A `[[cdrom]]`: a read-only SATA CD-ROM drive (q35's AHCI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdromConfig {
    /// Origin in the guest file.
    pub at: At,
    /// The ISO image in the drive; `None`: an empty drive (`walden guest
    /// insert` puts one in while the guest runs).
    pub path: Option<PathBuf>,
}

/// What a firmware boot can try (`[boot] order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// The `[[disk]]`s, in file order.
    Disk,
    /// The `[[cdrom]]`s, in file order.
    Cdrom,
}

/// The default `[boot] order`.
pub const DEFAULT_BOOT_ORDER: [BootDevice; 2] = [BootDevice::Disk, BootDevice::Cdrom];

/// Disk image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// qcow2 (default).
    Qcow2,
    /// raw.
    Raw,
}

/// Where a disk's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// An image file.
    File {
        /// The image.
        path: PathBuf,
        /// Backing image: `path` is created as a thin qcow2 overlay on it when missing.
        base: Option<PathBuf>,
        /// Size for creating `path` when missing (or growing the overlay).
        size: Option<Size>,
        /// Image format.
        format: DiskFormat,
    },
    /// A whole block device.
    Device(PathBuf),
}

/// Disk bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk (default).
    Virtio,
    /// virtio-scsi.
    Scsi,
}

/// A `[[disk]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Origin in the guest file.
    pub at: At,
    /// Data source.
    pub source: DiskSource,
    /// Read-only to the guest.
    pub read_only: bool,
    /// Bus.
    pub bus: DiskBus,
    /// libvirt cache mode ("none", "writeback", ...), when set.
    pub cache: Option<&'static str>,
    /// libvirt io mode ("native", "threads", "io_uring"), when set.
    pub io: Option<&'static str>,
}

/// NIC device models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    /// virtio-net (default).
    Virtio,
    /// Intel e1000.
    E1000,
    /// Realtek rtl8139.
    Rtl8139,
}

/// A `[[nic]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    /// Origin in the guest file.
    pub at: At,
    /// The host bridge it is plugged into.
    pub bridge: IfName,
    /// Untagged VLAN of its bridge port (vlan_filtering bridges only).
    pub vlan: Option<VlanId>,
    /// MAC address: as given, or derived with [`MacAddr::derive`].
    pub mac: MacAddr,
    /// True when `mac` was derived.
    pub mac_derived: bool,
    /// Device model.
    pub model: NicModel,
}

/// A host PCI device a `[[pci]]` entry passes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PciRef {
    /// `device = "0000:03:00.0"`.
    Address(PciAddress),
    /// `label = ".."`: a labelled `[[vfio]]` entry of host.toml.
    Label(Name),
}

/// A `[[pci]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPci {
    /// Origin in the guest file.
    pub at: At,
    /// The device.
    pub device: PciRef,
}
