//! What `walden status` and `walden net show` report about each managed
//! link: kind, state, addresses, members or ports, VLANs. Built from an
//! [`Observed`] and the config; pure.

use super::observed::{LinkKind, Observed, ObservedLink, PortVlan};
use crate::config::NetworkConfig;
use serde::{Deserialize, Serialize};

/// One managed link as the kernel has it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Name (the configured one; a NIC still under its kernel name shows that).
    pub name: String,
    /// "device", "bond", "bridge", "vlan", "veth", ...; the configured kind
    /// when the link is missing.
    pub kind: String,
    /// "up", "down", or "missing" (in host.toml, not in the kernel).
    pub state: String,
    /// Current MAC.
    pub mac: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Bond or bridge it is enslaved to.
    pub master: Option<String>,
    /// Addresses with prefix (static, DHCP and SLAAC alike).
    pub addresses: Vec<String>,
    /// Bond members or bridge ports (including guests' taps).
    pub members: Vec<String>,
    /// Bridge VLAN entries ("20", "1 pvid untagged"), or for a VLAN
    /// interface its id and parent ("20 on br0").
    pub vlans: Vec<String>,
    /// A DHCP client runs on it.
    pub dhcp: bool,
}

/// The config's interfaces (final names, kinds, DHCP) in config order.
fn configured(config: &NetworkConfig, observed: &Observed) -> Vec<(String, &'static str, bool)> {
    let mut out = Vec::new();
    for l in &config.links {
        // A NIC found by MAC but not renamed yet still shows.
        let name = l
            .match_mac
            .and_then(|m| observed.by_mac(m))
            .map_or_else(|| l.name.to_string(), |o| o.name.clone());
        out.push((name, "device", l.ip.dhcp));
    }
    out.extend(
        config
            .bonds
            .iter()
            .map(|b| (b.name.to_string(), "bond", b.ip.dhcp)),
    );
    out.extend(
        config
            .bridges
            .iter()
            .map(|b| (b.name.to_string(), "bridge", b.ip.dhcp)),
    );
    out.extend(
        config
            .vlans
            .iter()
            .map(|v| (v.name.to_string(), "vlan", v.ip.dhcp)),
    );
    out
}

/// Status of every link the config names, plus links walden created that
/// the config no longer names.
pub fn link_status(config: &NetworkConfig, observed: &Observed) -> Vec<LinkStatus> {
    let mut out: Vec<LinkStatus> = configured(config, observed)
        .into_iter()
        .map(|(name, kind, dhcp)| match observed.by_name(&name) {
            Some(l) => one(l, observed, dhcp),
            None => LinkStatus {
                name,
                kind: kind.to_string(),
                state: "missing".into(),
                mac: None,
                mtu: None,
                master: None,
                addresses: Vec::new(),
                members: Vec::new(),
                vlans: Vec::new(),
                dhcp,
            },
        })
        .collect();
    for l in &observed.links {
        if l.is_ours() && !out.iter().any(|s| s.name == l.name) {
            out.push(one(l, observed, false));
        }
    }
    out
}

fn one(l: &ObservedLink, observed: &Observed, dhcp: bool) -> LinkStatus {
    let name_of = |i: u32| {
        observed
            .by_index(i)
            .map_or_else(|| format!("#{i}"), |l| l.name.clone())
    };
    let vlans = match (&l.kind, &l.vlan) {
        (LinkKind::Vlan, Some(v)) => vec![format!("{} on {}", v.id, name_of(v.parent))],
        _ => l.bridge_vlans.iter().map(vlan_text).collect(),
    };
    LinkStatus {
        name: l.name.clone(),
        kind: l.kind.as_str().to_string(),
        state: if l.up { "up" } else { "down" }.into(),
        mac: l.mac.map(|m| m.to_string()),
        mtu: Some(l.mtu),
        master: l.master.map(name_of),
        addresses: observed
            .addresses_of(l.index)
            .map(|a| a.net.to_string())
            .collect(),
        members: observed
            .links
            .iter()
            .filter(|m| m.master == Some(l.index))
            .map(|m| m.name.clone())
            .collect(),
        vlans,
        dhcp,
    }
}

fn vlan_text(v: &PortVlan) -> String {
    let mut s = v.vid.to_string();
    if v.pvid {
        s.push_str(" pvid");
    }
    if v.untagged {
        s.push_str(" untagged");
    }
    s
}

/// A table for people: one line per link, details indented below.
pub fn render(links: &[LinkStatus]) -> String {
    let mut out = String::new();
    for l in links {
        out.push_str(&format!("{:<15} {:<7} {:<7}", l.name, l.kind, l.state));
        if let Some(mtu) = l.mtu {
            out.push_str(&format!(" mtu {mtu}"));
        }
        if let Some(mac) = &l.mac {
            out.push_str(&format!(" {mac}"));
        }
        if let Some(m) = &l.master {
            out.push_str(&format!(" in {m}"));
        }
        if l.dhcp {
            out.push_str(" dhcp");
        }
        out.push('\n');
        let rows = [
            ("addresses", &l.addresses),
            ("members", &l.members),
            ("vlans", &l.vlans),
        ];
        for (what, items) in rows {
            if !items.is_empty() {
                out.push_str(&format!("    {what}: {}\n", items.join(", ")));
            }
        }
    }
    out
}
