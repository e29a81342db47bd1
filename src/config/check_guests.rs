//! Checks of the guests against host.toml and each other: bridges, VLANs,
//! MACs, passed-through PCI devices, disks and `after` ordering.

use super::check_host::{interfaces, Kind};
use super::guest::{BootDevice, DiskSource, GuestConfig, PciRef, DEFAULT_BOOT_ORDER};
use super::host::{HostConfig, VfioSelect};
use super::order;
use super::source::{At, Sources};
use std::collections::HashMap;

/// Check every guest against the host and the other guests.
/// `unparsed` names guests whose file could not be parsed: they are not
/// reported as unknown when another guest waits for them.
pub(crate) fn check(host: &HostConfig, guests: &[GuestConfig], unparsed: &[String], src: &Sources) {
    check_nics(host, guests, src);
    check_pci(host, guests, src);
    check_disks(guests, src);
    check_disk_io(guests, src);
    check_boot_order(guests, src);
    check_taps(guests, src);
    check_after(guests, unparsed, src);
    super::check_mounts::check_guest_paths(host, guests, src);
}

/// QEMU refuses `aio=native` on a host page cache: io = "native" needs
/// cache = "none" or "directsync" (the guest would not start otherwise).
fn check_disk_io(guests: &[GuestConfig], src: &Sources) {
    for d in guests.iter().flat_map(|g| &g.disks) {
        if d.io == Some("native") && !matches!(d.cache, Some("none" | "directsync")) {
            src.error(
                &d.at,
                "io",
                "io = \"native\" needs the host page cache off",
                "add cache = \"none\" (or \"directsync\"), or use io = \"io_uring\" or \"threads\"",
            );
        }
    }
}

/// `[boot] order` names only device kinds the guest has.
fn check_boot_order(guests: &[GuestConfig], src: &Sources) {
    for g in guests {
        let missing = |kind| match kind {
            BootDevice::Disk => g.disks.is_empty(),
            BootDevice::Cdrom => g.cdroms.is_empty(),
        };
        // The default order names both; only an explicit one is checked.
        if g.boot_order == DEFAULT_BOOT_ORDER {
            continue;
        }
        if let Some(kind) = g.boot_order.iter().copied().find(|k| missing(*k)) {
            let (name, table) = match kind {
                BootDevice::Disk => ("disk", "[[disk]]"),
                BootDevice::Cdrom => ("cdrom", "[[cdrom]]"),
            };
            src.error(
                &g.at,
                "boot.order",
                format!("boot order names {name:?} but the guest has no {table}"),
                &format!("add a {table} table or remove {name:?} from order"),
            );
        }
    }
}

/// Tap device names of long guest names are shortened with a hash
/// (guests::tap_name); two guests must not end up with the same one.
fn check_taps(guests: &[GuestConfig], src: &Sources) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for g in guests {
        for (i, nic) in g.nics.iter().enumerate() {
            let tap = crate::guests::tap_name(g.name.as_str(), i);
            match seen.get(&tap) {
                Some(first) if *first != g.name.as_str() => src.error(
                    &nic.at,
                    "",
                    format!("tap device name {tap} is also used by guest {first:?}"),
                    "the names are shortened to 15 bytes; rename one of the two guests",
                ),
                _ => {
                    seen.insert(tap, g.name.as_str());
                }
            }
        }
    }
}

fn check_nics(host: &HostConfig, guests: &[GuestConfig], src: &Sources) {
    let ifs = interfaces(&host.network);
    let bridges: Vec<&str> = host
        .network
        .bridges
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    let mut macs: HashMap<_, String> = host
        .network
        .links
        .iter()
        .filter_map(|l| l.match_mac.map(|m| (m, format!("host.toml {}", l.at.key))))
        .collect();
    for g in guests {
        for nic in &g.nics {
            let name = nic.bridge.as_str();
            match ifs.get(name) {
                None => src.error(
                    &nic.at,
                    "bridge",
                    format!("unknown bridge {name:?}"),
                    &if bridges.is_empty() {
                        "host.toml defines no bridge; add a [[network.bridge]]".to_string()
                    } else {
                        format!("bridges in host.toml: {}", bridges.join(", "))
                    },
                ),
                Some((kind, _, _)) if *kind != Kind::Bridge => src.error(
                    &nic.at,
                    "bridge",
                    format!("{name:?} is not a bridge"),
                    "guest NICs plug into a [[network.bridge]] of host.toml",
                ),
                Some(_) => {
                    let filtering = host
                        .network
                        .bridges
                        .iter()
                        .any(|b| b.name == nic.bridge && b.vlan_filtering);
                    if nic.vlan.is_some() && !filtering {
                        src.error(
                            &nic.at,
                            "vlan",
                            format!("bridge {name:?} does not have vlan_filtering"),
                            "set vlan_filtering = true on the bridge in host.toml, or remove vlan",
                        );
                    }
                }
            }
            let here = format!("guest {:?} {}", g.name.as_str(), nic.at.key);
            if let Some(first) = macs.get(&nic.mac) {
                let (sub, hint) = if nic.mac_derived {
                    ("", "the derived MAC collides; set mac = \"52:54:00:..\" explicitly on this NIC")
                } else {
                    ("mac", "every NIC needs its own MAC; change one")
                };
                src.error(
                    &nic.at,
                    sub,
                    format!("MAC {} is also used by {first}", nic.mac),
                    hint,
                );
            } else {
                macs.insert(nic.mac, here);
            }
        }
    }
}

fn check_pci(host: &HostConfig, guests: &[GuestConfig], src: &Sources) {
    let mut owner: HashMap<usize, String> = HashMap::new();
    for g in guests {
        for p in &g.pci {
            let found = host.vfio.iter().position(|d| match (&p.device, &d.select) {
                (PciRef::Address(a), VfioSelect::Address(b)) => a == b,
                (PciRef::Label(l), _) => d.label.as_ref() == Some(l),
                _ => false,
            });
            let Some(index) = found else {
                match &p.device {
                    PciRef::Address(a) => src.error(
                        &p.at,
                        "device",
                        format!("{a} is not listed under [[vfio]] in host.toml"),
                        &format!(
                            "add [[vfio]] pci = \"{a}\" to host.toml so it is bound to vfio-pci"
                        ),
                    ),
                    PciRef::Label(l) => src.error(
                        &p.at,
                        "label",
                        format!("no [[vfio]] entry in host.toml has label {:?}", l.as_str()),
                        "add label = \"..\" to the [[vfio]] entry or fix the name",
                    ),
                }
                continue;
            };
            let here = format!("guest {:?}", g.name.as_str());
            match owner.get(&index) {
                Some(first) => src.error_first(
                    &p.at,
                    &["device", "label"],
                    format!("this device is already passed through to {first}"),
                    "a PCI device can belong to one guest only",
                ),
                None => {
                    owner.insert(index, here);
                }
            }
        }
    }
}

fn check_disks(guests: &[GuestConfig], src: &Sources) {
    let mut seen: HashMap<&std::path::Path, (String, bool)> = HashMap::new();
    for g in guests {
        for d in &g.disks {
            let (path, sub) = match &d.source {
                DiskSource::File { path, .. } => (path.as_path(), "path"),
                DiskSource::Device(p) => (p.as_path(), "device"),
            };
            match seen.get(path) {
                Some((first, ro)) if !(*ro && d.read_only) => src.error(
                    &d.at,
                    sub,
                    format!("{} is also used by {first}", path.display()),
                    "give each guest its own disk, or mark every use read_only = true",
                ),
                Some(_) => {}
                None => {
                    seen.insert(
                        path,
                        (
                            format!("guest {:?} {}", g.name.as_str(), d.at.key),
                            d.read_only,
                        ),
                    );
                }
            }
        }
    }
}

fn check_after(guests: &[GuestConfig], unparsed: &[String], src: &Sources) {
    let index: HashMap<&str, usize> = guests
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.as_str(), i))
        .collect();
    let mut edges = vec![Vec::new(); guests.len()];
    for (i, g) in guests.iter().enumerate() {
        for a in &g.after {
            let sub = src.element_sub(&g.at, "after", a.as_str());
            match index.get(a.as_str()) {
                Some(&j) => {
                    edges[i].push(j);
                    if g.autostart && !guests[j].autostart {
                        src.warning(
                            &g.at,
                            &sub,
                            format!("{:?} has autostart = false; this guest will wait for it to be started", a.as_str()),
                            "set autostart = true on it, or remove it from after",
                        );
                    }
                }
                None if unparsed.iter().any(|u| u == a.as_str()) => {}
                None => src.error(
                    &g.at,
                    &sub,
                    format!("unknown guest {:?}", a.as_str()),
                    &format!(
                        "there is no guests/{}.toml; fix the name or add the guest",
                        a.as_str()
                    ),
                ),
            }
        }
    }
    for cycle in order::cycles(&edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| guests[i].name.as_str()).collect();
        let first: &At = &guests[cycle[0]].at;
        let next = names.get(1).copied().unwrap_or(names[0]);
        let sub = src.element_sub(first, "after", next);
        src.error(
            first,
            &sub,
            format!(
                "guests wait for each other in a cycle: {} -> {}",
                names.join(" -> "),
                names[0]
            ),
            "remove one of the `after` entries on the cycle",
        );
    }
}
