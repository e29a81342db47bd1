//! Group viability, the IOMMU hint, keep/bind/unbind decisions (pure).

use crate::config::{PciAddress, PciId};
use crate::vfio::plan::{plan, Plan, Wanted};
use crate::vfio::sysfs::{cpu_vendor, CpuVendor, FirmwareIommu, IommuState, PciDevice};

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn dev(a: &str, class: u32, driver: Option<&str>, group: Option<u32>) -> PciDevice {
    PciDevice {
        address: addr(a),
        id: PciId {
            vendor: 0x10de,
            device: 0x1b80,
        },
        class,
        driver: driver.map(str::to_string),
        iommu_group: group,
        driver_override: None,
    }
}

fn iommu() -> IommuState {
    IommuState {
        present: true,
        firmware: FirmwareIommu::Dmar,
        cpu: CpuVendor::Intel,
        cmdline: "intel_iommu=on".into(),
    }
}

fn want(a: &str) -> Wanted {
    Wanted {
        address: addr(a),
        from_cmdline: false,
    }
}

fn run(wanted: &[Wanted], devices: &[PciDevice], before: &[&str], iommu: &IommuState) -> Plan {
    let before: Vec<PciAddress> = before.iter().map(|a| addr(a)).collect();
    plan(wanted, devices, &before, iommu)
}

fn refusal(p: &Plan) -> String {
    assert_eq!(p.refused.len(), 1, "{:?}", p.refused);
    p.refused[0].1.to_string()
}

const GPU: u32 = 0x030000;
const AUDIO: u32 = 0x040300;
const BRIDGE: u32 = 0x060400;

#[test]
fn a_device_alone_in_its_group_is_bound() {
    let devices = [dev("0000:01:00.0", GPU, Some("nouveau"), Some(1))];
    let p = run(&[want("0000:01:00.0")], &devices, &[], &iommu());
    assert_eq!(p.bind, [addr("0000:01:00.0")]);
    assert!(p.refused.is_empty() && p.keep.is_empty() && p.unbind.is_empty());
}

#[test]
fn a_group_member_used_by_the_host_refuses_with_members_and_drivers() {
    let devices = [
        dev("0000:03:00.0", GPU, Some("nouveau"), Some(14)),
        dev("0000:03:00.1", AUDIO, Some("snd_hda_intel"), Some(14)),
        dev("0000:04:00.0", GPU, Some("e1000e"), Some(15)),
    ];
    let p = run(&[want("0000:03:00.0")], &devices, &[], &iommu());
    assert!(p.bind.is_empty());
    assert_eq!(
        refusal(&p),
        "0000:03:00.0 shares IOMMU group 14 with 0000:03:00.1 (snd_hda_intel); \
         add it to [[vfio]] too or move the card to another slot"
    );
}

#[test]
fn several_blockers_are_all_listed() {
    let devices = [
        dev("0000:03:00.0", GPU, None, Some(14)),
        dev("0000:03:00.1", AUDIO, Some("snd_hda_intel"), Some(14)),
        dev("0000:03:00.2", 0x0c0330, Some("xhci_hcd"), Some(14)),
    ];
    let p = run(&[want("0000:03:00.0")], &devices, &[], &iommu());
    assert_eq!(
        refusal(&p),
        "0000:03:00.0 shares IOMMU group 14 with 0000:03:00.1 (snd_hda_intel), 0000:03:00.2 (xhci_hcd); \
         add them to [[vfio]] too or move the card to another slot"
    );
}

#[test]
fn a_command_line_device_says_to_extend_walden_vfio() {
    let devices = [
        dev("0000:03:00.0", GPU, None, Some(14)),
        dev("0000:03:00.1", AUDIO, Some("snd_hda_intel"), Some(14)),
    ];
    let w = Wanted {
        address: addr("0000:03:00.0"),
        from_cmdline: true,
    };
    let p = run(&[w], &devices, &[], &iommu());
    assert!(refusal(&p).contains("add it to walden.vfio= too"));
}

#[test]
fn bridges_driverless_stub_and_vfio_members_and_selected_members_are_fine() {
    let devices = [
        dev("0000:00:01.0", BRIDGE, Some("pcieport"), Some(14)),
        dev("0000:03:00.0", GPU, Some("nouveau"), Some(14)),
        dev("0000:03:00.1", AUDIO, Some("snd_hda_intel"), Some(14)),
        dev("0000:03:00.2", 0x0c0330, None, Some(14)),
        dev("0000:03:00.3", 0x0c8000, Some("pci-stub"), Some(14)),
        dev("0000:03:00.4", 0x0c8000, Some("vfio-pci"), Some(14)),
    ];
    let p = run(
        &[want("0000:03:00.0"), want("0000:03:00.1")],
        &devices,
        &[],
        &iommu(),
    );
    assert!(p.refused.is_empty(), "{:?}", p.refused);
    assert_eq!(p.bind, [addr("0000:03:00.0"), addr("0000:03:00.1")]);
}

#[test]
fn a_device_already_on_vfio_pci_is_kept_and_nothing_is_written() {
    let devices = [dev("0000:03:00.0", GPU, Some("vfio-pci"), Some(14))];
    let p = run(
        &[want("0000:03:00.0")],
        &devices,
        &["0000:03:00.0"],
        &iommu(),
    );
    assert_eq!(p.keep, [addr("0000:03:00.0")]);
    assert!(p.is_noop());
}

#[test]
fn devices_walden_bound_and_no_longer_selected_are_given_back() {
    let mut other = dev("0000:05:00.0", GPU, Some("vfio-pci"), Some(16));
    other.driver_override = Some("vfio-pci".into());
    let devices = [
        dev("0000:03:00.0", GPU, Some("vfio-pci"), Some(14)),
        dev("0000:04:00.0", GPU, Some("vfio-pci"), Some(15)),
        other,
    ];
    // 03 is still selected, 04 was bound by walden, 05 by someone else.
    let p = run(
        &[want("0000:03:00.0")],
        &devices,
        &["0000:03:00.0", "0000:04:00.0", "0000:09:00.0"],
        &iommu(),
    );
    assert_eq!(p.unbind, [addr("0000:04:00.0")]);
    assert_eq!(p.keep, [addr("0000:03:00.0")]);
}

#[test]
fn without_an_iommu_every_device_is_refused_with_the_right_hint() {
    use FirmwareIommu::{Dmar, Ivrs, None as NoTable};
    let devices = [dev("0000:03:00.0", GPU, Some("nouveau"), None)];
    let cases: &[(FirmwareIommu, CpuVendor, &str, &str)] = &[
        (Dmar, CpuVendor::Amd, "quiet",
         "add intel_iommu=on to the kernel command line (the firmware announces VT-d (Intel Virtualization \
          Technology for Directed I/O) in its ACPI DMAR table; keep it enabled in the firmware setup)"),
        (Dmar, CpuVendor::Intel, "quiet intel_iommu=on",
         "the kernel command line has intel_iommu=on and the firmware announces VT-d (Intel Virtualization \
          Technology for Directed I/O), yet no IOMMU started; check `dmesg | grep -i -e DMAR -e IOMMU` and \
          the VT-d (Intel Virtualization Technology for Directed I/O) setting in the firmware setup"),
        (Dmar, CpuVendor::Intel, "quiet intel_iommu=off",
         "change intel_iommu=off to intel_iommu=on on the kernel command line and keep VT-d (Intel \
          Virtualization Technology for Directed I/O) enabled in the firmware setup"),
        (Dmar, CpuVendor::Intel, "intel_iommu=on,sm_off",
         "the kernel command line has intel_iommu=on and the firmware announces VT-d (Intel Virtualization \
          Technology for Directed I/O), yet no IOMMU started; check `dmesg | grep -i -e DMAR -e IOMMU` and \
          the VT-d (Intel Virtualization Technology for Directed I/O) setting in the firmware setup"),
        (NoTable, CpuVendor::Intel, "quiet",
         "enable VT-d (Intel Virtualization Technology for Directed I/O) in the firmware setup (the firmware \
          announces no IOMMU: no ACPI DMAR table) and add intel_iommu=on to the kernel command line"),
        (Ivrs, CpuVendor::Amd, "",
         "add amd_iommu=on to the kernel command line (the firmware announces AMD-Vi / IOMMU in its ACPI \
          IVRS table; keep it enabled in the firmware setup)"),
        (NoTable, CpuVendor::Amd, "amd_iommu=on",
         "the kernel command line has amd_iommu=on but the firmware announces no IOMMU (no ACPI IVRS \
          table): enable AMD-Vi / IOMMU in the firmware setup"),
        (NoTable, CpuVendor::Other, "",
         "add intel_iommu=on (Intel) or amd_iommu=on (AMD) to the kernel command line and enable VT-d or \
          AMD-Vi/IOMMU in the firmware setup"),
    ];
    for (firmware, cpu, cmdline, hint) in cases {
        let state = IommuState {
            present: false,
            firmware: *firmware,
            cpu: *cpu,
            cmdline: cmdline.to_string(),
        };
        let p = run(&[want("0000:03:00.0")], &devices, &[], &state);
        assert_eq!(
            refusal(&p),
            format!("0000:03:00.0: no IOMMU is enabled, so it cannot be passed through; {hint}"),
            "{firmware:?} {cpu:?} {cmdline:?}"
        );
        assert!(p.bind.is_empty());
    }
}

#[test]
fn a_device_without_a_group_under_an_iommu_is_refused() {
    let devices = [dev("0000:03:00.0", GPU, Some("nouveau"), None)];
    let p = run(&[want("0000:03:00.0")], &devices, &[], &iommu());
    assert!(refusal(&p).starts_with("0000:03:00.0: has no IOMMU group"));
}

#[test]
fn cpu_vendor_comes_from_cpuinfo() {
    assert_eq!(
        cpu_vendor("processor\t: 0\nvendor_id\t: GenuineIntel\n"),
        CpuVendor::Intel
    );
    assert_eq!(cpu_vendor("vendor_id : AuthenticAMD\n"), CpuVendor::Amd);
    assert_eq!(cpu_vendor("CPU implementer : 0x41\n"), CpuVendor::Other);
}
