//! What the domain XML needs from the host at run time: the hypervisor
//! type, firmware and emulator paths, log and NVRAM directories, and the
//! host addresses of labelled `[[vfio]]` devices.

use crate::config::{HostConfig, PciAddress, VfioSelect};
use crate::vfio::VfioReport;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// QEMU system emulator in the image.
pub const EMULATOR: &str = "/usr/bin/qemu-system-x86_64";
/// OVMF code (Debian's `ovmf` package, 4 MiB flash layout, no secure boot).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template copied per guest by libvirt.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Where libvirt keeps each UEFI guest's variable store.
pub const NVRAM_DIR: &str = "/var/lib/libvirt/qemu/nvram";
/// Serial console logs, one `NAME.log` per guest.
pub const SERIAL_LOG_DIR: &str = "/var/log/walden/guests";

/// libvirt domain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainType {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's TCG emulation (no usable /dev/kvm, e.g. nested without VMX).
    Qemu,
    /// libvirt's `test:///default` driver (lifecycle tests only).
    Test,
}

impl DomainType {
    /// KVM when `<dev>/kvm` opens read-write, QEMU (TCG) otherwise.
    /// `dev` is the devtmpfs root ([`crate::context::Paths::dev`]).
    pub fn detect(dev: &Path) -> Self {
        let kvm = dev.join("kvm");
        match OpenOptions::new().read(true).write(true).open(&kvm) {
            Ok(_) => DomainType::Kvm,
            Err(e) => {
                tracing::info!(
                    "{} cannot be opened read-write ({e}): guests run under QEMU emulation (TCG), much slower",
                    kvm.display()
                );
                DomainType::Qemu
            }
        }
    }

    /// The `<domain type=..>` value.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
            DomainType::Test => "test",
        }
    }
}

/// Host facts the domain XML depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEnv {
    /// kvm or qemu (see [`DomainType::detect`]).
    pub domain_type: DomainType,
    /// QEMU binary.
    pub emulator: PathBuf,
    /// OVMF code image for `firmware = "uefi"`.
    pub ovmf_code: PathBuf,
    /// OVMF variable store template.
    pub ovmf_vars_template: PathBuf,
    /// Directory of the per-guest variable stores (`NAME_VARS.fd`).
    pub nvram_dir: PathBuf,
    /// Directory of the serial console logs (`NAME.log`).
    pub serial_log_dir: PathBuf,
    /// `[[vfio]]` label -> the host devices it selected (several for an
    /// `all = true` entry).
    pub pci: BTreeMap<String, Vec<PciAddress>>,
}

impl DomainEnv {
    /// The appliance's paths (Debian packages) with `domain_type` and no
    /// PCI labels; set [`DomainEnv::pci`] from [`DomainEnv::pci_labels`] or
    /// [`DomainEnv::pci_labels_from_vfio`].
    pub fn new(domain_type: DomainType) -> Self {
        Self {
            domain_type,
            emulator: EMULATOR.into(),
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars_template: OVMF_VARS.into(),
            nvram_dir: NVRAM_DIR.into(),
            serial_log_dir: SERIAL_LOG_DIR.into(),
            pci: BTreeMap::new(),
        }
    }

    /// Labels of host.toml `[[vfio]]` entries that select by address. An
    /// entry that selects by `id` has no address until the machine's
    /// devices are scanned: use [`DomainEnv::pci_labels_from_vfio`] then.
    pub fn pci_labels(host: &HostConfig) -> BTreeMap<String, Vec<PciAddress>> {
        host.vfio
            .iter()
            .filter_map(|d| match (&d.label, d.select) {
                (Some(label), VfioSelect::Address(a)) => Some((label.to_string(), vec![a])),
                _ => None,
            })
            .collect()
    }

    /// Labels of the devices the vfio step bound (or found on vfio-pci),
    /// including those selected by `id`; devices that failed are left out,
    /// so a guest using one gets [`super::DomainError::UnknownPciLabel`].
    pub fn pci_labels_from_vfio(report: &VfioReport) -> BTreeMap<String, Vec<PciAddress>> {
        let mut out: BTreeMap<String, Vec<PciAddress>> = BTreeMap::new();
        for row in report.devices.iter().filter(|r| r.error.is_none()) {
            let (Some(label), Some(address)) = (&row.label, &row.address) else {
                continue;
            };
            if let Ok(address) = address.parse::<PciAddress>() {
                out.entry(label.clone()).or_default().push(address);
            }
        }
        for addresses in out.values_mut() {
            addresses.sort();
            addresses.dedup();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::VfioDeviceStatus;

    #[test]
    fn detect_needs_a_read_write_kvm_node() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(DomainType::detect(tmp.path()), DomainType::Qemu);
        std::fs::write(tmp.path().join("kvm"), "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(DomainType::detect(tmp.path()), DomainType::Kvm);
    }

    fn row(address: &str, label: &str, error: Option<&str>) -> VfioDeviceStatus {
        VfioDeviceStatus {
            address: Some(address.into()),
            selected_by: "host.toml vfio[0]".into(),
            vendor_device: None,
            class: None,
            iommu_group: None,
            driver_before: None,
            driver_after: Some("vfio-pci".into()),
            dev_node: None,
            host_netdevs: Vec::new(),
            label: Some(label.into()),
            guests: Vec::new(),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn vfio_report_labels_group_devices_and_skip_failures() {
        let report = VfioReport {
            devices: vec![
                row("0000:05:00.0", "nics", None),
                row("0000:04:00.0", "nics", None),
                row("0000:03:00.0", "hba", Some("IOMMU group not viable")),
            ],
            ..VfioReport::default()
        };
        let labels = DomainEnv::pci_labels_from_vfio(&report);
        let nics: Vec<String> = labels["nics"].iter().map(|a| a.to_string()).collect();
        assert_eq!(nics, ["0000:04:00.0", "0000:05:00.0"]);
        assert!(!labels.contains_key("hba"));
    }
}
