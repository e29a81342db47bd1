//! Reading guests/NAME.toml into [`GuestConfig`].

use super::guest::{
    Boot, BootDevice, CdromConfig, CpuConfig, DiskBus, DiskConfig, DiskFormat, DiskSource,
    Firmware, GuestConfig, GuestPci, NicConfig, NicModel, PciRef, DEFAULT_BOOT_ORDER,
};
use super::ids::{IfName, MacAddr, Name, PciAddress};
use super::reader::{self, Tbl, Val};
use super::service::{RestartPolicy, RESTART};
use super::units::{HumanDuration, Percent, Size};
use std::time::Duration;

const CACHE: &[(&str, &str)] = &[
    ("none", "none"),
    ("writeback", "writeback"),
    ("writethrough", "writethrough"),
    ("directsync", "directsync"),
    ("unsafe", "unsafe"),
];
const IO: &[(&str, &str)] = &[
    ("native", "native"),
    ("threads", "threads"),
    ("io_uring", "io_uring"),
];

/// Read a guest file's root table; `name` is the already validated file stem.
pub(crate) fn read(root: &Tbl<'_>, name: Name) -> GuestConfig {
    reader::schema(root);
    let memory = root
        .req("memory", "e.g. memory = \"2GiB\"")
        .and_then(|v| memory(&v))
        .unwrap_or_default();
    let vcpus = root.opt("vcpus").and_then(|v| v.u32(1, 255)).unwrap_or(1);
    let cpu = root
        .opt("cpu")
        .and_then(|v| v.table())
        .map(cpu)
        .unwrap_or_default();
    let autostart = root.opt("autostart").and_then(|v| v.bool()).unwrap_or(true);
    let after = root
        .opt("after")
        .map(|v| v.parse_list())
        .unwrap_or_default();
    let shutdown_timeout = root
        .opt("shutdown_timeout")
        .and_then(|v| v.parse::<HumanDuration>())
        .map_or(Duration::from_secs(120), |d| d.0);
    let restart = root
        .opt("restart")
        .and_then(|v| v.choice(RESTART))
        .unwrap_or(RestartPolicy::OnFailure);
    let (boot, boot_order) = root
        .opt("boot")
        .and_then(|v| v.table())
        .and_then(boot)
        .unwrap_or((Boot::Firmware(Firmware::Bios), None));
    let each = |key: &'static str| root.opt(key).and_then(|v| v.tables()).unwrap_or_default();
    let disks = each("disk").into_iter().filter_map(disk).collect();
    let cdroms = each("cdrom").into_iter().map(cdrom).collect();
    let nics = each("nic")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| nic(t, &name, i))
        .collect();
    let pci = each("pci").into_iter().filter_map(pci).collect();
    let balloon = root.opt("balloon").and_then(|v| v.bool()).unwrap_or(false);
    let vnc = root.opt("vnc").and_then(|v| v.bool()).unwrap_or(false);
    GuestConfig {
        at: root.at(),
        name,
        memory,
        vcpus,
        cpu,
        autostart,
        after,
        shutdown_timeout,
        restart,
        boot,
        disks,
        cdroms,
        boot_order: boot_order.unwrap_or_else(|| DEFAULT_BOOT_ORDER.to_vec()),
        nics,
        pci,
        balloon,
        vnc,
    }
}

fn memory(v: &Val<'_>) -> Option<Size> {
    let size = v.parse::<Size>()?;
    if size.bytes() < 16 << 20 || size.bytes() % (1 << 20) != 0 {
        return v.error(
            format!("guest memory {size} is not a whole number of MiB of at least 16MiB"),
            "e.g. memory = \"512MiB\" or \"4GiB\"",
        );
    }
    Some(size)
}

fn cpu(t: Tbl<'_>) -> CpuConfig {
    let weight = t.opt("weight").and_then(|v| v.u32(1, 10000));
    let max = t.opt("max").and_then(|v| {
        let p = v.parse::<Percent>()?;
        if p.0 == 0 || p.0 > 100 {
            return v.error(
                format!("{p} is out of range"),
                "max is a share of the guest's own vcpus: use 1% to 100%",
            );
        }
        Some(p)
    });
    t.finish();
    CpuConfig { weight, max }
}

/// `[boot]`: how the guest boots, and `order` when given.
fn boot(t: Tbl<'_>) -> Option<(Boot, Option<Vec<BootDevice>>)> {
    let firmware = t
        .opt("firmware")
        .and_then(|v| v.choice(&[("bios", Firmware::Bios), ("uefi", Firmware::Uefi)]));
    let order = t.opt("order").and_then(|v| boot_order(&v));
    let kernel = t.opt("kernel").and_then(|v| v.abs_path());
    let initrd = t.opt("initrd").and_then(|v| v.abs_path());
    let cmdline = t.opt("cmdline").and_then(|v| v.str().map(str::to_string));
    let has = |k| t.opt(k).is_some();
    let out = if has("kernel") {
        if has("firmware") {
            t.error(
                "give `firmware` or `kernel`, not both",
                "direct kernel boot needs no firmware choice; remove one",
            );
        }
        if has("order") {
            t.error(
                "`order` does not apply to a direct kernel boot",
                "QEMU starts the kernel itself; remove order, or kernel to boot from the disks or CD-ROMs",
            );
        }
        kernel.map(|kernel| Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        })
    } else {
        if has("initrd") || has("cmdline") {
            t.error(
                "`initrd` and `cmdline` need `kernel`",
                "add kernel = \"/var/lib/walden/boot/vmlinuz\" or remove them",
            );
        }
        Some(Boot::Firmware(firmware.unwrap_or(Firmware::Bios)))
    };
    t.finish();
    // A kernel boot's `order` was refused above: nothing more to check.
    let order = order.filter(|_| matches!(out, Some(Boot::Firmware(_))));
    out.map(|b| (b, order))
}

/// `order = ["cdrom", "disk"]`: each device kind once.
fn boot_order(v: &Val<'_>) -> Option<Vec<BootDevice>> {
    const KINDS: &[(&str, BootDevice)] =
        &[("disk", BootDevice::Disk), ("cdrom", BootDevice::Cdrom)];
    let items = v.array()?;
    let mut order = Vec::new();
    for item in &items {
        let kind = item.choice(KINDS)?;
        if order.contains(&kind) {
            return item.error(
                "listed twice",
                "name each of \"disk\" and \"cdrom\" at most once",
            );
        }
        order.push(kind);
    }
    if order.is_empty() {
        return v.error(
            "an empty boot order boots nothing",
            "e.g. order = [\"cdrom\", \"disk\"] to boot an installer ISO first",
        );
    }
    Some(order)
}

/// `[[cdrom]]`: `path` to an ISO image, or nothing for an empty drive.
fn cdrom(t: Tbl<'_>) -> CdromConfig {
    let path = t.opt("path").and_then(|v| v.abs_path());
    let at = t.at();
    t.finish();
    CdromConfig { at, path }
}

fn disk(t: Tbl<'_>) -> Option<DiskConfig> {
    let path = t.opt("path").and_then(|v| v.abs_path());
    let device = t.opt("device").and_then(|v| {
        let p = v.abs_path()?;
        if !p.starts_with("/dev") {
            return v.error(
                format!("{} is not under /dev", p.display()),
                "use a stable name such as \"/dev/disk/by-id/..\"",
            );
        }
        Some(p)
    });
    let base = t.opt("base").and_then(|v| v.abs_path());
    let size = t.opt("size").and_then(|v| v.parse::<Size>());
    let format = t
        .opt("format")
        .and_then(|v| v.choice(&[("qcow2", DiskFormat::Qcow2), ("raw", DiskFormat::Raw)]));
    let read_only = t.opt("read_only").and_then(|v| v.bool()).unwrap_or(false);
    let bus = t
        .opt("bus")
        .and_then(|v| v.choice(&[("virtio", DiskBus::Virtio), ("scsi", DiskBus::Scsi)]))
        .unwrap_or(DiskBus::Virtio);
    let cache = t.opt("cache").and_then(|v| v.choice(CACHE));
    let io = t.opt("io").and_then(|v| v.choice(IO));
    let has = |k| t.opt(k).is_some();
    let hint = "give path = \"/var/lib/walden/vm/NAME.qcow2\" or device = \"/dev/disk/by-id/..\"";
    let source = match (has("path"), has("device")) {
        (true, true) => {
            t.error("give `path` or `device`, not both", hint);
            None
        }
        (false, false) => {
            t.error("a [[disk]] needs `path` or `device`", hint);
            None
        }
        (true, false) => {
            if has("base") && format == Some(DiskFormat::Raw) {
                t.error(
                    "a disk with `base` is a qcow2 overlay",
                    "remove format = \"raw\" or base",
                );
            }
            path.map(|path| DiskSource::File {
                path,
                base,
                size,
                format: format.unwrap_or(DiskFormat::Qcow2),
            })
        }
        (false, true) => {
            for key in ["base", "size", "format"] {
                if has(key) {
                    t.error(
                        format!("`{key}` does not apply to a block device"),
                        &format!("remove {key} or use path = .. for an image file"),
                    );
                }
            }
            device.map(DiskSource::Device)
        }
    };
    let at = t.at();
    t.finish();
    Some(DiskConfig {
        at,
        source: source?,
        read_only,
        bus,
        cache,
        io,
    })
}

fn nic(t: Tbl<'_>, guest: &Name, index: usize) -> Option<NicConfig> {
    let bridge = t
        .req(
            "bridge",
            "name a [[network.bridge]] of host.toml, e.g. bridge = \"br0\"",
        )
        .and_then(|v| v.parse::<IfName>());
    let vlan = t.opt("vlan").and_then(|v| v.vlan());
    let mac = t.opt("mac").and_then(|v| {
        let m = v.parse::<MacAddr>()?;
        if m.is_multicast() {
            return v.error(
                format!("{m} is a multicast address"),
                "the lowest bit of the first byte must be 0, e.g. 52:54:00:..",
            );
        }
        Some(m)
    });
    let model = t
        .opt("model")
        .and_then(|v| {
            v.choice(&[
                ("virtio", NicModel::Virtio),
                ("e1000", NicModel::E1000),
                ("rtl8139", NicModel::Rtl8139),
            ])
        })
        .unwrap_or(NicModel::Virtio);
    let explicit = t.opt("mac").is_some();
    let at = t.at();
    t.finish();
    Some(NicConfig {
        at,
        bridge: bridge?,
        vlan,
        mac: mac.unwrap_or_else(|| MacAddr::derive(guest.as_str(), index)),
        mac_derived: !explicit,
        model,
    })
}

fn pci(t: Tbl<'_>) -> Option<GuestPci> {
    let device = t.opt("device").and_then(|v| v.parse::<PciAddress>());
    let label = t.opt("label").and_then(|v| v.parse::<Name>());
    let hint = "give device = \"0000:03:00.0\" or label = \"hba\" (a [[vfio]] label in host.toml)";
    let out = match (t.opt("device").is_some(), t.opt("label").is_some()) {
        (true, true) => {
            t.error("give `device` or `label`, not both", hint);
            None
        }
        (false, false) => {
            t.error("a [[pci]] entry needs `device` or `label`", hint);
            None
        }
        (true, false) => device.map(PciRef::Address),
        (false, true) => label.map(PciRef::Label),
    };
    let at = t.at();
    t.finish();
    Some(GuestPci { at, device: out? })
}
