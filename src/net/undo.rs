//! Undoing what a removed key did: `mtu` taken out of an interface puts it
//! back to the default MTU, instead of leaving the old value in the kernel
//! until the next boot. Pure: the previous and the new `[network]` in, the
//! config to apply out.
//!
//! Only an `mtu` that walden itself set (the previous applied config had
//! it) is reset; an interface whose MTU was never configured keeps whatever
//! the kernel or driver chose. The default is Ethernet's 1500 for NICs,
//! bonds and bridges, and for a VLAN interface the MTU of the link it sits
//! on (what the kernel gives a new VLAN).

use crate::config::{Addressing, NetworkConfig};

/// Ethernet's MTU, the kernel's default for NICs, bonds and bridges.
pub const DEFAULT_MTU: u32 = 1500;

/// `new` with an explicit default MTU on every interface whose `mtu`
/// `previous` set and `new` no longer does.
pub fn with_mtu_resets(new: &NetworkConfig, previous: Option<&NetworkConfig>) -> NetworkConfig {
    let mut out = new.clone();
    let Some(prev) = previous else {
        return out;
    };
    let had_mtu = |name: &str| mtus(prev).any(|(n, mtu)| n == name && mtu.is_some());
    let reset = |name: &str, ip: &mut Addressing| {
        if ip.mtu.is_none() && had_mtu(name) {
            ip.mtu = Some(DEFAULT_MTU);
        }
    };
    for l in &mut out.links {
        reset(l.name.as_str(), &mut l.ip);
    }
    for b in &mut out.bonds {
        reset(b.name.as_str(), &mut b.ip);
    }
    for b in &mut out.bridges {
        reset(b.name.as_str(), &mut b.ip);
    }
    // A VLAN follows its link: the link's MTU as it will be after this apply.
    let parents: Vec<(String, Option<u32>)> = mtus(&out).map(|(n, m)| (n.to_string(), m)).collect();
    for v in &mut out.vlans {
        if v.ip.mtu.is_none() && had_mtu(v.name.as_str()) {
            v.ip.mtu = parents
                .iter()
                .find(|(n, _)| n == v.link.as_str())
                .and_then(|(_, m)| *m)
                .or(Some(DEFAULT_MTU));
        }
    }
    out
}

/// Every interface's name and configured MTU.
fn mtus(c: &NetworkConfig) -> impl Iterator<Item = (&str, Option<u32>)> {
    let links = c.links.iter().map(|l| (l.name.as_str(), l.ip.mtu));
    let bonds = c.bonds.iter().map(|b| (b.name.as_str(), b.ip.mtu));
    let bridges = c.bridges.iter().map(|b| (b.name.as_str(), b.ip.mtu));
    let vlans = c.vlans.iter().map(|v| (v.name.as_str(), v.ip.mtu));
    links.chain(bonds).chain(bridges).chain(vlans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(host_net: &str) -> NetworkConfig {
        let text = format!("schema = 1\nhostname = \"h\"\n{host_net}");
        crate::config::from_strs(&text, &[]).unwrap().host.network
    }

    const JUMBO: &str = r#"
[[network.link]]
name = "eth0"
mtu = 9000
[[network.bridge]]
name = "br0"
ports = ["eth0"]
mtu = 9000
[[network.vlan]]
name = "storage"
link = "br0"
id = 20
mtu = 9000
"#;

    const PLAIN: &str = r#"
[[network.link]]
name = "eth0"
[[network.bridge]]
name = "br0"
ports = ["eth0"]
[[network.vlan]]
name = "storage"
link = "br0"
id = 20
"#;

    #[test]
    fn a_removed_mtu_goes_back_to_the_default() {
        let out = with_mtu_resets(&net(PLAIN), Some(&net(JUMBO)));
        assert_eq!(out.links[0].ip.mtu, Some(1500));
        assert_eq!(out.bridges[0].ip.mtu, Some(1500));
        assert_eq!(out.vlans[0].ip.mtu, Some(1500), "follows br0");
    }

    #[test]
    fn a_vlan_follows_its_link_and_unset_mtus_stay_unset() {
        // The bridge keeps 9000; only the VLAN's own mtu went away.
        let keep_bridge = JUMBO.replacen("id = 20\nmtu = 9000", "id = 20", 1);
        let out = with_mtu_resets(&net(&keep_bridge), Some(&net(JUMBO)));
        assert_eq!(out.vlans[0].ip.mtu, Some(9000));
        // Never configured: not touched (first boot, or no mtu ever).
        assert_eq!(with_mtu_resets(&net(PLAIN), None), net(PLAIN));
        assert_eq!(with_mtu_resets(&net(PLAIN), Some(&net(PLAIN))), net(PLAIN));
    }
}
