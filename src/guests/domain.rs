//! Guest config -> libvirt domain XML, as a pure function.
//!
//! [`domain_xml`] is deterministic: the same [`GuestConfig`] and
//! [`DomainEnv`] give byte-identical XML, so comparing two outputs (or the
//! `hash` in the walden metadata, which libvirt keeps verbatim while it
//! reformats the rest) tells whether a guest's definition changed.
//! The reference for users is docs/guests.md.

use super::env::{DomainEnv, DomainType};
use super::taps::tap_name;
use super::xml::Xml;
use crate::config::{
    Boot, BootDevice, DiskBus, DiskFormat, DiskSource, Firmware, GuestConfig, NicModel, PciAddress,
    PciRef, DEFAULT_BOOT_ORDER,
};
use sha2::{Digest, Sha256};
use std::path::Path;

/// XML namespace of the walden element in `<metadata>`.
pub const METADATA_NS: &str = "urn:walden:guest:1";

/// cputune period (microseconds) used with a `cpu.max` ceiling.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Placeholder the hash replaces; never valid output on its own.
const HASH_PLACEHOLDER: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Why a guest's domain XML cannot be built on this host.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    /// A `[[pci]] label` that resolves to no device here.
    #[error("guest {guest}: {at}: vfio label {label:?} resolves to no PCI device on this host; `walden status` shows why its [[vfio]] entry selected nothing")]
    UnknownPciLabel {
        /// Guest name.
        guest: String,
        /// The `[[pci]]` entry ("guests/NAME.toml pci[0]").
        at: String,
        /// The label.
        label: String,
    },
}

/// The libvirt domain XML of `guest` on a host described by `env`.
pub fn domain_xml(guest: &GuestConfig, env: &DomainEnv) -> Result<String, DomainError> {
    let name = guest.name.as_str();
    let pci = pci_devices(guest, env)?;
    let mut x = Xml::new();
    x.open("domain", &[("type", env.domain_type.as_str())]);
    x.text("name", &[], name);
    x.text("uuid", &[], &uuid(name));
    metadata(&mut x, guest);
    let kib = (guest.memory.bytes() / 1024).to_string();
    x.text("memory", &[("unit", "KiB")], &kib);
    x.text("currentMemory", &[("unit", "KiB")], &kib);
    x.text("vcpu", &[("placement", "static")], &guest.vcpus.to_string());
    cputune(&mut x, guest);
    os(&mut x, guest, env);
    x.open("features", &[]);
    x.empty("acpi", &[]);
    x.empty("apic", &[]);
    x.close("features");
    if env.domain_type == DomainType::Kvm {
        // The guest sees the host CPU's features; walden guests never migrate.
        x.empty("cpu", &[("mode", "host-passthrough")]);
    }
    x.empty("clock", &[("offset", "utc")]);
    // libvirt itself never restarts a guest: walden's restart policy decides.
    x.text("on_poweroff", &[], "destroy");
    x.text("on_reboot", &[], "restart");
    x.text("on_crash", &[], "destroy");
    x.open("devices", &[]);
    x.text("emulator", &[], &path(&env.emulator));
    disks(&mut x, guest);
    for (i, nic) in guest.nics.iter().enumerate() {
        x.open("interface", &[("type", "bridge")]);
        x.empty("mac", &[("address", &nic.mac.to_string())]);
        x.empty("source", &[("bridge", nic.bridge.as_str())]);
        x.empty("target", &[("dev", &tap_name(name, i))]);
        let model = match nic.model {
            NicModel::Virtio => "virtio",
            NicModel::E1000 => "e1000",
            NicModel::Rtl8139 => "rtl8139",
        };
        x.empty("model", &[("type", model)]);
        x.close("interface");
    }
    for a in pci {
        // managed='no': walden binds the device to vfio-pci itself (vfio module).
        x.open(
            "hostdev",
            &[("mode", "subsystem"), ("type", "pci"), ("managed", "no")],
        );
        x.open("source", &[]);
        x.empty(
            "address",
            &[
                ("domain", &format!("0x{:04x}", a.domain)),
                ("bus", &format!("0x{:02x}", a.bus)),
                ("slot", &format!("0x{:02x}", a.device)),
                ("function", &format!("0x{:x}", a.function)),
            ],
        );
        x.close("source");
        x.close("hostdev");
    }
    let log = path(&env.serial_log_dir.join(format!("{name}.log")));
    x.open("serial", &[("type", "pty")]);
    x.empty("log", &[("file", &log), ("append", "on")]);
    x.empty("target", &[("port", "0")]);
    x.close("serial");
    x.open("console", &[("type", "pty")]);
    x.empty("target", &[("type", "serial"), ("port", "0")]);
    x.close("console");
    if guest.vnc {
        x.open(
            "graphics",
            &[
                ("type", "vnc"),
                ("autoport", "yes"),
                ("listen", "127.0.0.1"),
            ],
        );
        x.empty("listen", &[("type", "address"), ("address", "127.0.0.1")]);
        x.close("graphics");
        x.open("video", &[]);
        x.empty("model", &[("type", "vga")]);
        x.close("video");
    }
    let balloon = if guest.balloon { "virtio" } else { "none" };
    x.empty("memballoon", &[("model", balloon)]);
    x.close("devices");
    x.close("domain");
    let doc = x.finish();
    let hash = format!("sha256:{:x}", Sha256::digest(doc.as_bytes()));
    // The placeholder precedes every user-provided text (it is in
    // <metadata>, right after <uuid>), so the first match is ours.
    Ok(doc.replacen(HASH_PLACEHOLDER, &hash, 1))
}

/// The walden config hash ("sha256:<64 hex>") recorded in a domain XML,
/// ours or libvirt's reformatted copy of it (`virsh dumpxml`).
pub fn config_hash(xml: &str) -> Option<&str> {
    xml.match_indices("hash=").find_map(|(i, _)| {
        // Skip `hash=` and the opening quote (either kind).
        let value = xml.get(i + 6..i + 6 + HASH_PLACEHOLDER.len())?;
        let hex = value.strip_prefix("sha256:")?;
        hex.bytes().all(|b| b.is_ascii_hexdigit()).then_some(value)
    })
}

/// The guest's libvirt UUID: the first 16 bytes of
/// SHA-256("walden-guest:<name>") as an RFC 9562 version 8 UUID, so a
/// guest keeps its UUID for as long as it keeps its name.
pub fn uuid(name: &str) -> String {
    let d = Sha256::digest(format!("walden-guest:{name}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// CPU time (microseconds per `period_us`) of a `max = "<pct>%"` ceiling on
/// a guest with `vcpus` vcpus, for the whole domain: `period * vcpus * pct / 100`.
pub fn cpu_quota(period_us: u64, vcpus: u32, pct: u32) -> u64 {
    period_us * u64::from(vcpus) * u64::from(pct) / 100
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn metadata(x: &mut Xml, guest: &GuestConfig) {
    x.open("metadata", &[]);
    let attrs = [("xmlns:walden", METADATA_NS), ("hash", HASH_PLACEHOLDER)];
    if guest.nics.is_empty() {
        x.empty("walden:guest", &attrs);
        x.close("metadata");
        return;
    }
    x.open("walden:guest", &attrs);
    for (i, nic) in guest.nics.iter().enumerate() {
        let tap = tap_name(guest.name.as_str(), i);
        let index = i.to_string();
        let vlan = nic.vlan.map(|v| v.to_string());
        let mut attrs = vec![
            ("index", index.as_str()),
            ("tap", tap.as_str()),
            ("bridge", nic.bridge.as_str()),
        ];
        if let Some(v) = &vlan {
            attrs.push(("vlan", v));
        }
        x.empty("walden:nic", &attrs);
    }
    x.close("walden:guest");
    x.close("metadata");
}

fn cputune(x: &mut Xml, guest: &GuestConfig) {
    if guest.cpu.weight.is_none() && guest.cpu.max.is_none() {
        return;
    }
    x.open("cputune", &[]);
    if let Some(w) = guest.cpu.weight {
        // libvirt writes shares to cgroup v2 cpu.weight unchanged (1..=10000).
        x.text("shares", &[], &w.to_string());
    }
    if let Some(max) = guest.cpu.max {
        // global_*: one ceiling for the whole domain; <period>/<quota> would
        // apply to each vcpu thread separately.
        x.text("global_period", &[], &CPU_PERIOD_US.to_string());
        let quota = cpu_quota(CPU_PERIOD_US, guest.vcpus, max.0);
        x.text("global_quota", &[], &quota.to_string());
    }
    x.close("cputune");
}

fn os(x: &mut Xml, guest: &GuestConfig, env: &DomainEnv) {
    x.open("os", &[]);
    x.text("type", &[("arch", "x86_64"), ("machine", "q35")], "hvm");
    match &guest.boot {
        Boot::Firmware(Firmware::Bios) if !per_device_boot(guest) => {
            x.empty("boot", &[("dev", "hd")])
        }
        Boot::Firmware(Firmware::Bios) => {}
        Boot::Firmware(Firmware::Uefi) => {
            x.text(
                "loader",
                &[("readonly", "yes"), ("type", "pflash")],
                &path(&env.ovmf_code),
            );
            let nvram = env
                .nvram_dir
                .join(format!("{}_VARS.fd", guest.name.as_str()));
            x.text(
                "nvram",
                &[("template", &path(&env.ovmf_vars_template))],
                &path(&nvram),
            );
            if !per_device_boot(guest) {
                x.empty("boot", &[("dev", "hd")]);
            }
        }
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            x.text("kernel", &[], &path(kernel));
            if let Some(i) = initrd {
                x.text("initrd", &[], &path(i));
            }
            if let Some(c) = cmdline {
                x.text("cmdline", &[], c);
            }
        }
    }
    x.close("os");
}

/// Whether the boot order is given per device (`<boot order=N/>` on each
/// disk and CD-ROM) instead of `<os><boot dev="hd"/>`: a firmware boot
/// with CD-ROMs or a `[boot] order`. libvirt takes one or the other; a
/// guest with neither keeps the domain XML it always had.
fn per_device_boot(guest: &GuestConfig) -> bool {
    matches!(guest.boot, Boot::Firmware(_))
        && (!guest.cdroms.is_empty() || guest.boot_order != DEFAULT_BOOT_ORDER)
}

/// The `<boot order>` of each disk and each CD-ROM (1-based; `None`: not
/// booted from), following `[boot] order`.
fn boot_orders(guest: &GuestConfig) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
    let (mut disks, mut cdroms) = (
        vec![None; guest.disks.len()],
        vec![None; guest.cdroms.len()],
    );
    if !per_device_boot(guest) {
        return (disks, cdroms);
    }
    let mut next = 1;
    for kind in &guest.boot_order {
        let slots = match kind {
            BootDevice::Disk => &mut disks,
            BootDevice::Cdrom => &mut cdroms,
        };
        for slot in slots.iter_mut() {
            *slot = Some(next);
            next += 1;
        }
    }
    (disks, cdroms)
}

fn disks(x: &mut Xml, guest: &GuestConfig) {
    let (disk_boot, cdrom_boot) = boot_orders(guest);
    let (mut vd, mut sd) = (0, 0);
    let mut scsi = false;
    for (d, boot) in guest.disks.iter().zip(disk_boot) {
        let (kind, format, source_attr, source) = match &d.source {
            DiskSource::File {
                path: p, format, ..
            } => {
                let f = match format {
                    DiskFormat::Qcow2 => "qcow2",
                    DiskFormat::Raw => "raw",
                };
                ("file", f, "file", path(p))
            }
            DiskSource::Device(p) => ("block", "raw", "dev", path(p)),
        };
        x.open("disk", &[("type", kind), ("device", "disk")]);
        let mut driver = vec![("name", "qemu"), ("type", format)];
        if let Some(c) = d.cache {
            driver.push(("cache", c));
        }
        if let Some(io) = d.io {
            driver.push(("io", io));
        }
        x.empty("driver", &driver);
        x.empty("source", &[(source_attr, &source)]);
        let (dev, bus) = match d.bus {
            DiskBus::Virtio => (disk_name("vd", &mut vd), "virtio"),
            DiskBus::Scsi => {
                scsi = true;
                (disk_name("sd", &mut sd), "scsi")
            }
        };
        x.empty("target", &[("dev", &dev), ("bus", bus)]);
        if d.read_only {
            x.empty("readonly", &[]);
        }
        boot_element(x, boot);
        x.close("disk");
    }
    // CD-ROMs on SATA (q35's built-in AHCI), named after the SCSI disks:
    // both are sdX to libvirt.
    for (c, boot) in guest.cdroms.iter().zip(cdrom_boot) {
        x.open("disk", &[("type", "file"), ("device", "cdrom")]);
        x.empty("driver", &[("name", "qemu"), ("type", "raw")]);
        if let Some(iso) = &c.path {
            x.empty("source", &[("file", &path(iso))]);
        }
        x.empty(
            "target",
            &[("dev", &disk_name("sd", &mut sd)), ("bus", "sata")],
        );
        x.empty("readonly", &[]);
        boot_element(x, boot);
        x.close("disk");
    }
    if scsi {
        x.empty(
            "controller",
            &[("type", "scsi"), ("index", "0"), ("model", "virtio-scsi")],
        );
    }
}

fn boot_element(x: &mut Xml, order: Option<usize>) {
    if let Some(n) = order {
        x.empty("boot", &[("order", &n.to_string())]);
    }
}

/// The target name of CD-ROM `index` (0-based) of `guest`, as
/// [`domain_xml`] names it: what `walden guest eject|insert` changes.
pub fn cdrom_target(guest: &GuestConfig, index: usize) -> Option<String> {
    let scsi = guest
        .disks
        .iter()
        .filter(|d| d.bus == DiskBus::Scsi)
        .count();
    (index < guest.cdroms.len()).then(|| {
        let mut n = scsi + index;
        disk_name("sd", &mut n)
    })
}

/// The XML of CD-ROM `index` of `guest` holding `iso` (`None`: empty), for
/// libvirt's device update of a running guest.
pub fn cdrom_xml(guest: &GuestConfig, index: usize, iso: Option<&Path>) -> Option<String> {
    let target = cdrom_target(guest, index)?;
    let mut x = Xml::new();
    x.open("disk", &[("type", "file"), ("device", "cdrom")]);
    x.empty("driver", &[("name", "qemu"), ("type", "raw")]);
    if let Some(iso) = iso {
        x.empty("source", &[("file", &path(iso))]);
    }
    x.empty("target", &[("dev", &target), ("bus", "sata")]);
    x.empty("readonly", &[]);
    x.close("disk");
    Some(x.finish())
}

/// The next target name with `prefix`: vda..vdz, vdaa.. (libvirt's scheme).
fn disk_name(prefix: &str, counter: &mut usize) -> String {
    let mut n = *counter;
    *counter += 1;
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.reverse();
    format!("{prefix}{}", String::from_utf8_lossy(&letters))
}

fn pci_devices(guest: &GuestConfig, env: &DomainEnv) -> Result<Vec<PciAddress>, DomainError> {
    let mut out = Vec::new();
    for p in &guest.pci {
        match &p.device {
            PciRef::Address(a) => out.push(*a),
            PciRef::Label(l) => match env.pci.get(l.as_str()) {
                Some(list) if !list.is_empty() => out.extend(list.iter().copied()),
                _ => {
                    return Err(DomainError::UnknownPciLabel {
                        guest: guest.name.to_string(),
                        at: p.at.to_string(),
                        label: l.to_string(),
                    })
                }
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "domain_tests.rs"]
mod tests;
