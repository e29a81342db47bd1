//! Applying against the fake tree: the writes in order, idempotence,
//! giving devices back, failure isolation, early binding.

use super::fake::{FakeKernel, FakeSysfs};
use crate::config::{from_strs, Config};
use crate::vfio::apply::Timeouts;
use crate::vfio::{apply_early_with, apply_with, failed_devices, failed_guests, VfioReport};
use std::time::Duration;

const NIC: u32 = 0x020000;

const HOST: &str = r#"schema = 1
hostname = "h"
[[vfio]]
pci = "0000:00:03.0"
[[vfio]]
id = "8086:1533"
label = "uplink"
"#;

const STORAGE: &str = r#"schema = 1
memory = "1GiB"
vcpus = 1
[[pci]]
device = "0000:00:03.0"
[[pci]]
label = "uplink"
"#;

const WEB: &str = "schema = 1\nmemory = \"1GiB\"\nvcpus = 1\n";

fn config(host: &str) -> Config {
    from_strs(host, &[("storage", STORAGE), ("web", WEB)]).unwrap_or_else(|d| panic!("{d:?}"))
}

fn no_guests_config() -> Config {
    from_strs("schema = 1\nhostname = \"h\"\n", &[]).unwrap()
}

/// Two e1000e (the first is the host's own), one igb, each in its own group.
fn machine(tmp: &std::path::Path) -> FakeSysfs {
    FakeSysfs::new(tmp)
        .iommu()
        .device("0000:00:02.0", 0x8086, 0x10d3, NIC, Some("e1000e"), Some(2))
        .device("0000:00:03.0", 0x8086, 0x10d3, NIC, Some("e1000e"), Some(3))
        .device("0000:00:04.0", 0x8086, 0x1533, NIC, Some("igb"), Some(4))
}

fn fast() -> Timeouts {
    Timeouts {
        bind: Duration::from_millis(200),
        poll: Duration::from_millis(5),
    }
}

fn apply(fake: &FakeSysfs, kernel: &mut FakeKernel, c: &Config) -> VfioReport {
    apply_with(&fake.paths, &c.host.vfio, &c.guests, kernel, fast())
}

fn w(path: &str, value: &str) -> (String, String) {
    (path.to_string(), value.to_string())
}

#[test]
fn binds_by_address_and_id_in_order_and_reports_each_device() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = machine(tmp.path()).netdev("0000:00:03.0", "eth1");
    let mut k = fake.kernel();
    let r = apply(&fake, &mut k, &config(HOST));
    assert_eq!(
        k.writes,
        vec![
            w("modprobe", "vfio-pci"),
            w("bus/pci/devices/0000:00:03.0/driver_override", "vfio-pci"),
            w("bus/pci/drivers/e1000e/unbind", "0000:00:03.0"),
            w("bus/pci/drivers_probe", "0000:00:03.0"),
            w("bus/pci/devices/0000:00:04.0/driver_override", "vfio-pci"),
            w("bus/pci/drivers/igb/unbind", "0000:00:04.0"),
            w("bus/pci/drivers_probe", "0000:00:04.0"),
        ]
    );
    assert_eq!(fake.driver_of("0000:00:03.0").as_deref(), Some("vfio-pci"));
    assert_eq!(fake.driver_of("0000:00:04.0").as_deref(), Some("vfio-pci"));
    assert_eq!(fake.driver_of("0000:00:02.0").as_deref(), Some("e1000e"));
    assert!(!r.failed(), "{r:?}");
    assert_eq!((r.bound, r.kept, r.unbound), (2, 0, 0));
    assert_eq!(
        r.summary(),
        "2 devices on vfio-pci (2 bound now, 0 already)"
    );
    let d = &r.devices[0];
    assert_eq!(d.address.as_deref(), Some("0000:00:03.0"));
    assert_eq!(d.selected_by, "host.toml vfio[0]");
    assert_eq!(d.vendor_device.as_deref(), Some("8086:10d3"));
    assert_eq!(d.class.as_deref(), Some("020000"));
    assert_eq!(d.iommu_group, Some(3));
    assert_eq!(d.driver_before.as_deref(), Some("e1000e"));
    assert_eq!(d.driver_after.as_deref(), Some("vfio-pci"));
    assert_eq!(d.dev_node.as_deref(), Some("/dev/vfio/3"));
    assert!(d.host_netdevs.is_empty(), "{:?}", d.host_netdevs);
    assert_eq!(d.guests, ["storage"]);
    let d = &r.devices[1];
    assert_eq!(d.address.as_deref(), Some("0000:00:04.0"));
    assert_eq!(d.label.as_deref(), Some("uplink"));
    assert_eq!(d.driver_before.as_deref(), Some("igb"));
    assert_eq!(d.guests, ["storage"]);
    let state = std::fs::read_to_string(fake.paths.run.join("vfio-bound")).unwrap();
    assert_eq!(state, "0000:00:03.0 e1000e\n0000:00:04.0 igb\n");
}

#[test]
fn a_second_apply_writes_nothing_and_still_shows_the_driver_before() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = machine(tmp.path());
    apply(&fake, &mut fake.kernel(), &config(HOST));
    let mut k = fake.kernel();
    let r = apply(&fake, &mut k, &config(HOST));
    assert!(k.writes.is_empty(), "{:?}", k.writes);
    assert_eq!((r.bound, r.kept, r.unbound), (0, 2, 0));
    assert_eq!(r.devices[0].driver_before.as_deref(), Some("e1000e"));
    assert_eq!(r.devices[0].driver_after.as_deref(), Some("vfio-pci"));
}

#[test]
fn removing_an_entry_gives_the_device_back_to_its_host_driver() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = machine(tmp.path());
    apply(&fake, &mut fake.kernel(), &config(HOST));
    let only_first = "schema = 1\nhostname = \"h\"\n[[vfio]]\npci = \"0000:00:03.0\"\n";
    let c = from_strs(only_first, &[]).unwrap();
    let mut k = fake.kernel();
    let r = apply(&fake, &mut k, &c);
    assert_eq!(
        k.writes,
        vec![
            w("bus/pci/devices/0000:00:04.0/driver_override", "\n"),
            w("bus/pci/drivers/vfio-pci/unbind", "0000:00:04.0"),
            w("bus/pci/drivers_probe", "0000:00:04.0"),
        ]
    );
    assert_eq!(fake.driver_of("0000:00:04.0").as_deref(), Some("igb"));
    assert_eq!(fake.driver_of("0000:00:03.0").as_deref(), Some("vfio-pci"));
    assert_eq!((r.bound, r.kept, r.unbound), (0, 1, 1));
    assert!(
        r.summary().ends_with("1 given back to the host"),
        "{}",
        r.summary()
    );
    let state = std::fs::read_to_string(fake.paths.run.join("vfio-bound")).unwrap();
    assert_eq!(state, "0000:00:03.0 e1000e\n");
    // And with no entries at all, the last one goes back too.
    apply(&fake, &mut fake.kernel(), &no_guests_config());
    assert_eq!(fake.driver_of("0000:00:03.0").as_deref(), Some("e1000e"));
}

#[test]
fn a_device_open_by_a_guest_is_not_given_back() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = machine(tmp.path());
    apply(&fake, &mut fake.kernel(), &config(HOST));
    let fake = fake.process_holding(4242, "qemu-system-x86", 4);
    let c = from_strs(
        "schema = 1\nhostname = \"h\"\n[[vfio]]\npci = \"0000:00:03.0\"\n",
        &[],
    )
    .unwrap();
    let mut k = fake.kernel();
    let r = apply(&fake, &mut k, &c);
    assert!(k.writes.is_empty(), "{:?}", k.writes);
    assert_eq!(fake.driver_of("0000:00:04.0").as_deref(), Some("vfio-pci"));
    let row = r
        .devices
        .iter()
        .find(|d| d.address.as_deref() == Some("0000:00:04.0"))
        .unwrap();
    assert_eq!(
        row.error.as_deref(),
        Some("0000:00:04.0: not given back to the host: IOMMU group 4 is open by pid 4242 (qemu-system-x86); stop the guest using it first")
    );
    // Still recorded, so a later apply gives it back once the guest is gone.
    let state = std::fs::read_to_string(fake.paths.run.join("vfio-bound")).unwrap();
    assert!(state.contains("0000:00:04.0 igb"), "{state}");
}

#[test]
fn without_an_iommu_nothing_is_written_and_only_the_users_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::new(tmp.path())
        .device("0000:00:03.0", 0x8086, 0x10d3, NIC, Some("e1000e"), None)
        .netdev("0000:00:03.0", "eth1")
        .device("0000:00:04.0", 0x8086, 0x1533, NIC, Some("igb"), None);
    let mut k = fake.kernel();
    let r = apply(&fake, &mut k, &config(HOST));
    assert!(k.writes.is_empty(), "{:?}", k.writes);
    assert!(r.failed());
    assert!(r.errors().contains(
        "0000:00:03.0: no IOMMU is enabled, so it cannot be passed through; enable VT-d (Intel Virtualization \
         Technology for Directed I/O) in the firmware setup (the firmware announces no IOMMU: no ACPI DMAR table) \
         and add intel_iommu=on to the kernel command line"
    ), "{}", r.errors());
    let guests = failed_guests(&r.devices);
    assert_eq!(guests.len(), 1);
    assert_eq!(guests[0].0, "storage");
    assert!(
        guests[0]
            .1
            .starts_with("PCI passthrough: 0000:00:03.0: no IOMMU"),
        "{}",
        guests[0].1
    );
    let devices: Vec<String> = failed_devices(&r.devices)
        .iter()
        .map(|d| d.0.to_string())
        .collect();
    assert_eq!(devices, ["0000:00:03.0", "0000:00:04.0"]);
    assert_eq!(r.devices[0].driver_after.as_deref(), Some("e1000e"));
    assert_eq!(r.devices[0].host_netdevs, ["eth1"]);
}

#[test]
fn the_firmware_table_decides_the_hint_and_the_option_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    // QEMU's TCG CPU says AuthenticAMD while the machine has an Intel IOMMU.
    let fake = FakeSysfs::new(tmp.path())
        .cpu("AuthenticAMD")
        .acpi_table("DMAR")
        .device("0000:00:03.0", 0x8086, 0x10d3, NIC, Some("e1000e"), None);
    let c = from_strs(
        "schema = 1\nhostname = \"h\"\n[[vfio]]\npci = \"0000:00:03.0\"\n",
        &[],
    )
    .unwrap();
    let r = apply(&fake, &mut fake.kernel(), &c);
    assert!(
        r.errors()
            .contains("add intel_iommu=on to the kernel command line (the firmware announces VT-d"),
        "{}",
        r.errors()
    );
}

#[test]
fn a_refused_device_does_not_stop_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    // 00:03.0 shares group 3 with a host sound card; 00:04.0 is alone.
    let fake = machine(tmp.path()).device(
        "0000:00:1b.0",
        0x8086,
        0x293e,
        0x040300,
        Some("snd_hda_intel"),
        Some(3),
    );
    let mut k = fake.kernel();
    let r = apply(&fake, &mut k, &config(HOST));
    assert_eq!(fake.driver_of("0000:00:03.0").as_deref(), Some("e1000e"));
    assert_eq!(fake.driver_of("0000:00:04.0").as_deref(), Some("vfio-pci"));
    assert_eq!(r.bound, 1);
    assert_eq!(
        r.devices[0].error.as_deref(),
        Some("0000:00:03.0 shares IOMMU group 3 with 0000:00:1b.0 (snd_hda_intel); add it to [[vfio]] too or move the card to another slot")
    );
    assert!(r.devices[1].error.is_none());
    assert!(
        !k.writes.iter().any(|(p, _)| p.contains("0000:00:03.0")),
        "{:?}",
        k.writes
    );
}

#[test]
fn an_entry_matching_nothing_fails_its_guest_only() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::new(tmp.path()).iommu().device(
        "0000:00:03.0",
        0x8086,
        0x10d3,
        NIC,
        Some("e1000e"),
        Some(3),
    );
    let r = apply(&fake, &mut fake.kernel(), &config(HOST));
    assert_eq!(fake.driver_of("0000:00:03.0").as_deref(), Some("vfio-pci"));
    let row = r.devices.iter().find(|d| d.address.is_none()).unwrap();
    assert_eq!(row.selected_by, "host.toml vfio[1]");
    assert_eq!(row.label.as_deref(), Some("uplink"));
    assert!(row
        .error
        .as_deref()
        .unwrap()
        .contains("no PCI device with id 8086:1533"));
    assert_eq!(failed_guests(&r.devices)[0].0, "storage");
    assert!(failed_devices(&r.devices).is_empty());
}

#[test]
fn a_probe_that_does_not_bind_times_out_and_hands_the_device_back() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = machine(tmp.path());
    let mut k = fake.kernel();
    k.probe_fails = true;
    let c = from_strs(
        "schema = 1\nhostname = \"h\"\n[[vfio]]\npci = \"0000:00:03.0\"\n",
        &[],
    )
    .unwrap();
    let r = apply(&fake, &mut k, &c);
    assert_eq!(
        r.devices[0].error.as_deref(),
        Some("0000:00:03.0: not bound to vfio-pci within 0s (driver now: none); see the kernel log (dmesg) for vfio-pci's reason")
    );
    assert_eq!(
        &k.writes[4..],
        &[
            w("bus/pci/devices/0000:00:03.0/driver_override", "\n"),
            w("bus/pci/drivers_probe", "0000:00:03.0"),
        ]
    );
    assert_eq!(fake.driver_of("0000:00:03.0").as_deref(), Some("e1000e"));
    let state = std::fs::read_to_string(fake.paths.run.join("vfio-bound")).unwrap_or_default();
    assert!(!state.contains("00:03.0"), "{state}");
}

#[test]
fn a_module_that_does_not_load_fails_each_device_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = machine(tmp.path());
    let mut k = fake.kernel();
    k.module_error = Some("modprobe: FATAL: Module vfio-pci not found".into());
    let r = apply(&fake, &mut k, &config(HOST));
    assert_eq!(k.writes, vec![w("modprobe", "vfio-pci")]);
    assert_eq!(failed_devices(&r.devices).len(), 2);
    assert!(r.devices[0].error.as_deref().unwrap().starts_with(
        "cannot load the vfio-pci module: modprobe: FATAL: Module vfio-pci not found"
    ));
}

#[test]
fn early_binding_takes_command_line_devices_before_any_host_driver() {
    let tmp = tempfile::tempdir().unwrap();
    // Before coldplug: the GPU has no driver yet; nouveau is its host driver.
    let fake = machine(tmp.path())
        .device("0000:01:00.0", 0x10de, 0x1b80, 0x030000, None, Some(1))
        .host_driver("0000:01:00.0", "nouveau")
        .cmdline("quiet intel_iommu=on walden.vfio=10de:1b80");
    let mut k = fake.kernel();
    let r = apply_early_with(&fake.paths, &mut k, fast()).unwrap();
    assert_eq!(
        k.writes,
        vec![
            w("modprobe", "vfio-pci"),
            w("bus/pci/devices/0000:01:00.0/driver_override", "vfio-pci"),
            w("bus/pci/drivers_probe", "0000:01:00.0"),
        ]
    );
    assert!(!r.failed(), "{r:?}");
    assert_eq!(r.devices[0].selected_by, "walden.vfio");
    assert_eq!(fake.driver_of("0000:01:00.0").as_deref(), Some("vfio-pci"));
    // The config apply keeps it (it is still selected by the command line)
    // and binds host.toml's devices next to it.
    let mut k = fake.kernel();
    let r = apply(&fake, &mut k, &config(HOST));
    assert!(
        !k.writes.iter().any(|(p, _)| p.contains("01:00.0")),
        "{:?}",
        k.writes
    );
    assert_eq!((r.bound, r.kept), (2, 1));
    let gpu = r
        .devices
        .iter()
        .find(|d| d.selected_by == "walden.vfio")
        .unwrap();
    assert_eq!(gpu.driver_before, None);
    assert_eq!(gpu.driver_after.as_deref(), Some("vfio-pci"));
    // A second early pass (supervisor restarted) gives nothing back.
    let mut k = fake.kernel();
    apply_early_with(&fake.paths, &mut k, fast()).unwrap();
    assert!(k.writes.is_empty(), "{:?}", k.writes);
    assert_eq!(fake.driver_of("0000:00:03.0").as_deref(), Some("vfio-pci"));
}

#[test]
fn no_walden_vfio_parameter_means_no_early_step() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = machine(tmp.path());
    assert!(apply_early_with(&fake.paths, &mut fake.kernel(), fast()).is_none());
    let fake = fake.cmdline("walden.vfio=gpu");
    let r = apply_early_with(&fake.paths, &mut fake.kernel(), fast()).unwrap();
    assert!(
        r.errors().contains("\"gpu\" is neither a PCI address"),
        "{}",
        r.errors()
    );
}

#[test]
fn a_device_taken_off_vfio_pci_by_hand_is_forgotten_not_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = machine(tmp.path());
    let one = "schema = 1\nhostname = \"h\"\n[[vfio]]\npci = \"0000:00:03.0\"\n";
    apply(&fake, &mut fake.kernel(), &from_strs(one, &[]).unwrap());
    // The admin moves it back by hand.
    let dev = fake.paths.sys.join("bus/pci/devices/0000:00:03.0");
    std::fs::remove_file(dev.join("driver")).unwrap();
    std::fs::write(dev.join("driver_override"), "(null)\n").unwrap();
    let mut k = fake.kernel();
    let r = apply(&fake, &mut k, &no_guests_config());
    assert!(k.writes.is_empty(), "{:?}", k.writes);
    assert_eq!(r.unbound, 0);
    let state = std::fs::read_to_string(fake.paths.run.join("vfio-bound")).unwrap();
    assert_eq!(state, "");
}
