//! Reading PCI devices, IOMMU groups and the IOMMU's state from a sysfs root
//! (and /proc), as kata's `pcipath_to_sysfs(root, ..)`: every path is built
//! from a root passed in, so tests read a tree they made themselves.
//!
//! Layout read (as the kernel presents it):
//!
//! ```text
//! <sys>/bus/pci/devices/0000:03:00.0/{vendor,device,class}   "0x8086\n"
//! <sys>/bus/pci/devices/0000:03:00.0/driver       -> ../../../bus/pci/drivers/e1000e
//! <sys>/bus/pci/devices/0000:03:00.0/iommu_group  -> ../../../kernel/iommu_groups/14
//! <sys>/bus/pci/devices/0000:03:00.0/driver_override   "(null)\n" or "vfio-pci\n"
//! <sys>/kernel/iommu_groups/14/devices/0000:03:00.0
//! <sys>/class/iommu/dmar0                              (one per IOMMU unit)
//! <sys>/firmware/acpi/tables/DMAR (Intel) or IVRS (AMD)   (firmware's IOMMU)
//! ```

use crate::config::{PciAddress, PciId};
use std::fs;
use std::path::{Path, PathBuf};

/// The driver walden binds devices to.
pub const VFIO_DRIVER: &str = "vfio-pci";
/// A placeholder driver that also keeps the host away from a device.
pub const STUB_DRIVER: &str = "pci-stub";

/// One PCI device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// Its address.
    pub address: PciAddress,
    /// Vendor and device id.
    pub id: PciId,
    /// 24-bit class code (base class, subclass, programming interface).
    pub class: u32,
    /// The bound driver's name.
    pub driver: Option<String>,
    /// Its IOMMU group, when an IOMMU covers it.
    pub iommu_group: Option<u32>,
    /// `driver_override`, when set.
    pub driver_override: Option<String>,
}

impl PciDevice {
    /// PCI-to-PCI bridges (class 0x0604xx) may stay with the host: vfio
    /// accepts them in a group (they carry no DMA of their own).
    pub fn is_bridge(&self) -> bool {
        self.class >> 8 == 0x0604
    }

    /// True when the device is bound to vfio-pci.
    pub fn on_vfio(&self) -> bool {
        self.driver.as_deref() == Some(VFIO_DRIVER)
    }
}

/// `<sys>/bus/pci/devices`.
pub fn devices_dir(sys: &Path) -> PathBuf {
    sys.join("bus/pci/devices")
}

/// `<sys>/bus/pci/devices/<addr>`.
pub fn device_dir(sys: &Path, address: PciAddress) -> PathBuf {
    devices_dir(sys).join(address.to_string())
}

/// `<sys>/bus/pci/drivers/<driver>`.
pub fn driver_dir(sys: &Path, driver: &str) -> PathBuf {
    sys.join("bus/pci/drivers").join(driver)
}

/// `<dev>/vfio/<group>`: the node QEMU opens.
pub fn group_node(dev: &Path, group: u32) -> PathBuf {
    dev.join("vfio").join(group.to_string())
}

/// The network interfaces on a device (`<device>/net/*`), sorted.
pub fn net_interfaces(sys: &Path, address: PciAddress) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(device_dir(sys, address).join("net"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every PCI device under `<sys>/bus/pci/devices`, in address order.
/// Entries that do not look like devices are skipped with a warning.
pub fn read_devices(sys: &Path) -> Vec<PciDevice> {
    let dir = devices_dir(sys);
    let Ok(entries) = fs::read_dir(&dir) else {
        tracing::warn!("cannot read {}: no PCI bus visible", dir.display());
        return Vec::new();
    };
    let mut out: Vec<PciDevice> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let address = name.parse::<PciAddress>().ok()?;
            let dev = read_device(sys, address);
            if dev.is_none() {
                tracing::warn!("skipping {}: unreadable vendor/device/class", name);
            }
            dev
        })
        .collect();
    out.sort_by_key(|d| d.address);
    out
}

/// One device, re-read (after binding, to see where it ended up).
pub fn read_device(sys: &Path, address: PciAddress) -> Option<PciDevice> {
    let dir = device_dir(sys, address);
    let hex = |file: &str| -> Option<u32> {
        let text = fs::read_to_string(dir.join(file)).ok()?;
        let t = text.trim();
        u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
    };
    let id = PciId {
        vendor: u16::try_from(hex("vendor")?).ok()?,
        device: u16::try_from(hex("device")?).ok()?,
    };
    let class = hex("class")?;
    let driver = link_name(&dir.join("driver"));
    let iommu_group = link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok());
    let driver_override = fs::read_to_string(dir.join("driver_override"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "(null)");
    Some(PciDevice {
        address,
        id,
        class,
        driver,
        iommu_group,
        driver_override,
    })
}

/// The last component of a symlink's target ("e1000e", "14").
fn link_name(link: &Path) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Which CPU vendor the machine has: decides which IOMMU hint to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVendor {
    /// GenuineIntel: VT-d, `intel_iommu=on`.
    Intel,
    /// AuthenticAMD: AMD-Vi, `amd_iommu=on`.
    Amd,
    /// Anything else or unreadable.
    Other,
}

/// Which IOMMU the firmware announces in its ACPI tables (present even
/// while the kernel leaves the IOMMU off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareIommu {
    /// An ACPI DMAR table: Intel VT-d.
    Dmar,
    /// An ACPI IVRS table: AMD-Vi.
    Ivrs,
    /// Neither: switched off in the firmware setup, or not there.
    None,
}

/// What walden knows about the IOMMU before binding anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuState {
    /// An IOMMU is active (`<sys>/class/iommu/*` or any IOMMU group exists).
    pub present: bool,
    /// What the firmware announces (`<sys>/firmware/acpi/tables/{DMAR,IVRS}`).
    pub firmware: FirmwareIommu,
    /// The CPU vendor, from `<proc>/cpuinfo` (when the firmware announces nothing).
    pub cpu: CpuVendor,
    /// The kernel command line (`<proc>/cmdline`).
    pub cmdline: String,
}

impl IommuState {
    /// Read the IOMMU state from sysfs and procfs.
    pub fn read(sys: &Path, proc: &Path) -> Self {
        let non_empty = |p: PathBuf| {
            fs::read_dir(p)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        };
        let present =
            non_empty(sys.join("class/iommu")) || non_empty(sys.join("kernel/iommu_groups"));
        let tables = sys.join("firmware/acpi/tables");
        let firmware = if tables.join("DMAR").exists() {
            FirmwareIommu::Dmar
        } else if tables.join("IVRS").exists() {
            FirmwareIommu::Ivrs
        } else {
            FirmwareIommu::None
        };
        let cpuinfo = fs::read_to_string(proc.join("cpuinfo")).unwrap_or_default();
        let cmdline = fs::read_to_string(proc.join("cmdline")).unwrap_or_default();
        Self {
            present,
            firmware,
            cpu: cpu_vendor(&cpuinfo),
            cmdline: cmdline.trim().to_string(),
        }
    }

    /// What to do when no IOMMU is active: the kernel command line option
    /// (unless it is given already) and the firmware setting. The firmware's
    /// ACPI table decides between Intel and AMD; without one, the CPU does.
    pub fn hint(&self) -> String {
        const INTEL: (&str, &str, &str) = (
            "intel_iommu=on",
            "VT-d (Intel Virtualization Technology for Directed I/O)",
            "DMAR",
        );
        const AMD: (&str, &str, &str) = ("amd_iommu=on", "AMD-Vi / IOMMU", "IVRS");
        let (option, setting, table) = match (self.firmware, self.cpu) {
            (FirmwareIommu::Dmar, _) | (FirmwareIommu::None, CpuVendor::Intel) => INTEL,
            (FirmwareIommu::Ivrs, _) | (FirmwareIommu::None, CpuVendor::Amd) => AMD,
            (FirmwareIommu::None, CpuVendor::Other) => {
                return "add intel_iommu=on (Intel) or amd_iommu=on (AMD) to the kernel command line and enable VT-d or AMD-Vi/IOMMU in the firmware setup".into()
            }
        };
        let key = option.trim_end_matches("on");
        let values: Vec<&str> = self
            .cmdline
            .split_whitespace()
            .filter_map(|w| w.strip_prefix(key))
            .flat_map(|v| v.split(','))
            .collect();
        let given = values.contains(&"on");
        if values.contains(&"off") && !given {
            return format!(
                "change {key}off to {option} on the kernel command line and keep {setting} enabled in the firmware setup"
            );
        }
        match (self.firmware != FirmwareIommu::None, given) {
            (true, false) => format!(
                "add {option} to the kernel command line (the firmware announces {setting} in its ACPI {table} table; keep it enabled in the firmware setup)"
            ),
            (true, true) => format!(
                "the kernel command line has {option} and the firmware announces {setting}, yet no IOMMU started; check `dmesg | grep -i -e DMAR -e IOMMU` and the {setting} setting in the firmware setup"
            ),
            (false, false) => format!(
                "enable {setting} in the firmware setup (the firmware announces no IOMMU: no ACPI {table} table) and add {option} to the kernel command line"
            ),
            (false, true) => format!(
                "the kernel command line has {option} but the firmware announces no IOMMU (no ACPI {table} table): enable {setting} in the firmware setup"
            ),
        }
    }
}

/// The `vendor_id` of /proc/cpuinfo's first processor.
pub fn cpu_vendor(cpuinfo: &str) -> CpuVendor {
    let vendor = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("vendor_id"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, v)| v.trim());
    match vendor {
        Some("GenuineIntel") => CpuVendor::Intel,
        Some("AuthenticAMD") => CpuVendor::Amd,
        _ => CpuVendor::Other,
    }
}

/// A process holding `/dev/vfio/<group>` open (a guest's QEMU), found by
/// reading `<proc>/<pid>/fd/*`: (pid, command name).
pub fn group_user(proc: &Path, group: u32) -> Option<(u32, String)> {
    let wanted = PathBuf::from(format!("/dev/vfio/{group}"));
    for entry in fs::read_dir(proc).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == wanted))
        {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some((pid, comm.trim().to_string()));
        }
    }
    None
}
