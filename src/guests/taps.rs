//! Names of the host-side tap devices of guest NICs, and the VLAN each must
//! be put on.
//!
//! libvirt (9.x, Debian bookworm) applies `<vlan>` tags only to Open vSwitch
//! ports and refuses them on a Linux bridge, and walden's bridges are Linux
//! bridges with `vlan_filtering`. So the domain XML names every tap device
//! (`<target dev=..>`) deterministically, and after the guest started the
//! network code makes the NIC's VLAN the untagged PVID of that bridge port
//! ([`tap_vlans`] says which). The same list is recorded in the domain's
//! walden metadata for people looking with `virsh dumpxml`.

use crate::config::{GuestConfig, VlanId};
use sha2::{Digest, Sha256};

/// Every guest tap device's name starts with this.
pub const TAP_PREFIX: &str = "wg-";

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The tap device name of NIC `index` (0-based `[[nic]]` position) of
/// guest `guest`: `wg-<guest>-<index>` when that fits in 15 bytes,
/// otherwise `wg-<guest prefix><6 hex digits>.<index>`, the hex digits
/// from SHA-256 of the full guest name.
///
/// The two forms never collide with each other (guest names contain no
/// '.'), the first is unique per (guest, index); two long names with the
/// same prefix collide only when their 24-bit hashes match, which the config
/// check reports (rename one guest).
pub fn tap_name(guest: &str, index: usize) -> String {
    let full = format!("{TAP_PREFIX}{guest}-{index}");
    if full.len() <= IFNAME_MAX {
        return full;
    }
    let digest = Sha256::digest(format!("walden-tap:{guest}").as_bytes());
    let hash = format!("{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2]);
    let suffix = format!(".{index}");
    let keep = IFNAME_MAX.saturating_sub(3 + hash.len() + suffix.len());
    // Guest names are ASCII (config::Name), so any byte index is a char
    // boundary; `get` keeps this panic-free regardless.
    let prefix = guest.get(..keep.min(guest.len())).unwrap_or("");
    format!("{TAP_PREFIX}{prefix}{hash}{suffix}")
}

/// Every NIC's tap device name, in `[[nic]]` order.
pub fn tap_names(guest: &GuestConfig) -> Vec<String> {
    (0..guest.nics.len())
        .map(|i| tap_name(guest.name.as_str(), i))
        .collect()
}

/// (tap device, VLAN) for each NIC of `guest` that has a `vlan`: after the
/// guest starts, the network code makes the VLAN the port's untagged PVID on
/// its bridge (and removes the bridge's default VLAN 1 from the port).
pub fn tap_vlans(guest: &GuestConfig) -> Vec<(String, VlanId)> {
    guest
        .nics
        .iter()
        .enumerate()
        .filter_map(|(i, nic)| nic.vlan.map(|v| (tap_name(guest.name.as_str(), i), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn short_names_are_readable() {
        assert_eq!(tap_name("web", 0), "wg-web-0");
        assert_eq!(tap_name("storage", 12), "wg-storage-12");
        // Exactly 15 bytes still uses the readable form.
        assert_eq!(tap_name("abcdefghij", 0), "wg-abcdefghij-0");
    }

    #[test]
    fn long_names_are_truncated_stable_and_fit() {
        let a = tap_name("storage-primary", 0);
        assert_eq!(a.len(), IFNAME_MAX, "{a}");
        // Pinned (docs/guests.md shows it): a new scheme renames every tap.
        assert_eq!(a, "wg-storf0852e.0");
        assert_eq!(a, tap_name("storage-primary", 0), "stable");
        let max = "x".repeat(63);
        for i in [0, 9, 10, 99, 100, 1000] {
            let n = tap_name(&max, i);
            assert!(n.len() <= IFNAME_MAX, "{n}");
            assert!(n.parse::<crate::config::IfName>().is_ok(), "{n}");
        }
    }

    #[test]
    fn names_are_unique_across_guests_and_nics() {
        // Guests that share long prefixes, and short names that look like
        // truncated ones.
        let guests: Vec<String> = (0..200)
            .map(|i| format!("storage-primary-{i}"))
            .chain((0..50).map(|i| format!("db{i}")))
            .chain(["storage-pri".to_string(), "storage-primar".to_string()])
            .collect();
        let mut seen = HashSet::new();
        for g in &guests {
            for i in 0..4 {
                let n = tap_name(g, i);
                assert!(n.len() <= IFNAME_MAX, "{n}");
                assert!(seen.insert(n.clone()), "{n} twice ({g} nic {i})");
            }
        }
    }
}
