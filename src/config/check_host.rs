//! Checks across the entries of host.toml: interface names and references,
//! enslaved interfaces, vfio entries, services and mounts.

use super::host::{HostConfig, VfioSelect};
use super::ids::{IfName, LinkRef, VlanId};
use super::network::{Addressing, NetworkConfig};
use super::order;
use super::source::{At, Sources};
use std::collections::HashMap;

/// Interface kinds, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Link,
    Bond,
    Bridge,
    Vlan,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Link => "a link",
            Kind::Bond => "a bond",
            Kind::Bridge => "a bridge",
            Kind::Vlan => "a VLAN interface",
        }
    }
}

/// Every interface defined in `[network]`, by name.
pub(crate) fn interfaces(net: &NetworkConfig) -> HashMap<&str, (Kind, &At, &Addressing)> {
    let mut map = HashMap::new();
    let all = net
        .links
        .iter()
        .map(|l| (&l.name, Kind::Link, &l.at, &l.ip))
        .chain(
            net.bonds
                .iter()
                .map(|b| (&b.name, Kind::Bond, &b.at, &b.ip)),
        )
        .chain(
            net.bridges
                .iter()
                .map(|b| (&b.name, Kind::Bridge, &b.at, &b.ip)),
        )
        .chain(
            net.vlans
                .iter()
                .map(|v| (&v.name, Kind::Vlan, &v.at, &v.ip)),
        );
    for (name, kind, at, ip) in all {
        map.entry(name.as_str()).or_insert((kind, at, ip));
    }
    map
}

/// Check host.toml as a whole; fills in the bridges' implied VLANs.
pub(crate) fn check(host: &mut HostConfig, src: &Sources) {
    check_names(&host.network, src);
    check_enslaved(&host.network, src);
    check_vlans(&mut host.network, src);
    check_routes(&host.network, src);
    check_vfio(host, src);
    check_services(host, src);
    super::check_mounts::check_host(host, src);
}

fn check_names(net: &NetworkConfig, src: &Sources) {
    let mut seen: HashMap<&str, &At> = HashMap::new();
    let all = net
        .links
        .iter()
        .map(|l| (&l.name, &l.at))
        .chain(net.bonds.iter().map(|b| (&b.name, &b.at)))
        .chain(net.bridges.iter().map(|b| (&b.name, &b.at)))
        .chain(net.vlans.iter().map(|v| (&v.name, &v.at)));
    for (name, at) in all {
        if let Some(first) = seen.insert(name.as_str(), at) {
            src.error(
                at,
                "name",
                format!(
                    "duplicate interface name {:?} (also {})",
                    name.as_str(),
                    first.key
                ),
                "interface names must be unique across links, bonds, bridges and VLANs; rename one",
            );
        }
    }
    let mut macs = HashMap::new();
    for l in &net.links {
        if let Some(mac) = l.match_mac {
            if let Some(first) = macs.insert(mac, &l.at) {
                src.error(
                    &l.at,
                    "match",
                    format!("MAC {mac} is already matched by {}", first.key),
                    "each NIC can be matched by one [[network.link]] only",
                );
            }
        }
    }
}

const LINK_HINT: &str =
    "define it under [[network.link]] (name = \"..\"), or refer to the NIC by MAC (\"mac:52:54:00:..\")";

/// Bond members and bridge ports: they must exist, be of a kind that can be
/// enslaved, carry no addresses, and be used once.
fn check_enslaved(net: &NetworkConfig, src: &Sources) {
    let ifs = interfaces(net);
    // Resolve `mac:` references to a link that matches the MAC, so the same
    // NIC written two ways is still caught.
    let by_mac: HashMap<_, _> = net
        .links
        .iter()
        .filter_map(|l| l.match_mac.map(|m| (m, l.name.as_str())))
        .collect();
    let mut used: HashMap<String, String> = HashMap::new();
    let mut claim = |r: &LinkRef, owner: &str, at: &At, sub: &[&str], allowed: &[Kind]| {
        let identity = match r {
            LinkRef::Mac(m) => by_mac
                .get(m)
                .map_or_else(|| r.to_string(), |n| n.to_string()),
            LinkRef::Name(n) => {
                match ifs.get(n.as_str()) {
                    None => {
                        src.error_first(
                            at,
                            sub,
                            format!("unknown link {:?}", n.as_str()),
                            LINK_HINT,
                        );
                        return;
                    }
                    Some((kind, _, _)) if !allowed.contains(kind) => {
                        src.error_first(
                            at,
                            sub,
                            format!("{:?} is {} and cannot be enslaved to {owner}", n.as_str(), kind.noun()),
                            "bond members must be links; bridge ports must be links, bonds or VLAN interfaces",
                        );
                        return;
                    }
                    Some((_, _, ip)) if ip.has_address() => {
                        src.error_first(
                            at,
                            sub,
                            format!(
                                "{:?} has addresses or dhcp but is enslaved to {owner}",
                                n.as_str()
                            ),
                            &format!("move its addresses/dhcp to {owner}"),
                        );
                    }
                    Some(_) => {}
                }
                n.to_string()
            }
        };
        if identity == owner {
            src.error_first(
                at,
                sub,
                format!("{owner} cannot be a port of itself"),
                "remove it",
            );
            return;
        }
        match used.get(&identity) {
            Some(first) => src.error_first(
                at,
                sub,
                format!("{:?} is already enslaved to {first}", r.to_string()),
                "an interface can belong to one bond or bridge only",
            ),
            None => {
                used.insert(identity, owner.to_string());
            }
        }
    };
    for b in &net.bonds {
        for m in &b.members {
            let sub = src.element_sub(&b.at, "members", &m.to_string());
            claim(m, b.name.as_str(), &b.at, &[&sub], &[Kind::Link]);
        }
    }
    for br in &net.bridges {
        if !br.vlan_filtering && !br.vlans.is_empty() {
            src.error(
                &br.at,
                "vlans",
                format!("bridge VLANs need vlan_filtering on {}", br.name.as_str()),
                "set vlan_filtering = true on the bridge or remove vlans (without filtering the bridge carries every VLAN)",
            );
        }
        for p in &br.ports {
            claim(
                &p.link,
                br.name.as_str(),
                &p.at,
                &["name", ""],
                &[Kind::Link, Kind::Bond, Kind::Vlan],
            );
            if !br.vlan_filtering && (p.pvid.is_some() || !p.tagged.is_empty()) {
                src.error_first(
                    &p.at,
                    &["pvid", "tagged"],
                    format!("port VLANs need vlan_filtering on {}", br.name.as_str()),
                    "set vlan_filtering = true on the bridge or remove pvid/tagged",
                );
            }
        }
    }
}

/// VLAN interfaces sit on a defined link, bond or bridge; on a filtering
/// bridge their id joins the bridge's own VLANs.
fn check_vlans(net: &mut NetworkConfig, src: &Sources) {
    let mut implied: Vec<(IfName, VlanId)> = Vec::new();
    {
        let ifs = interfaces(net);
        let mut pairs = HashMap::new();
        for v in &net.vlans {
            match ifs.get(v.link.as_str()) {
                None => src.error(
                    &v.at,
                    "link",
                    format!("unknown link {:?}", v.link.as_str()),
                    "a VLAN sits on a [[network.link]], [[network.bond]] or [[network.bridge]]; define it or fix the name",
                ),
                Some((Kind::Vlan, _, _)) => src.error(
                    &v.at,
                    "link",
                    format!("{:?} is a VLAN interface; VLANs cannot be stacked", v.link.as_str()),
                    "put the VLAN on the underlying link, bond or bridge",
                ),
                Some((Kind::Bridge, _, _)) => implied.push((v.link.clone(), v.id)),
                Some(_) => {}
            }
            if let Some(first) = pairs.insert((v.link.as_str(), v.id), &v.at) {
                src.error(
                    &v.at,
                    "id",
                    format!(
                        "VLAN {} on {} is already defined by {}",
                        v.id, v.link, first.key
                    ),
                    "define each VLAN once per interface",
                );
            }
        }
    }
    for br in &mut net.bridges {
        for (link, id) in &implied {
            if *link == br.name && br.vlan_filtering {
                br.vlans.push(*id);
            }
        }
        br.vlans.sort();
        br.vlans.dedup();
    }
}

fn check_routes(net: &NetworkConfig, src: &Sources) {
    let ifs = interfaces(net);
    for r in &net.routes {
        if let Some(dev) = &r.dev {
            if !ifs.contains_key(dev.as_str()) {
                src.error(
                    &r.at,
                    "dev",
                    format!("unknown interface {:?}", dev.as_str()),
                    "name an interface defined under [network]",
                );
            }
        }
    }
    if !ifs.values().any(|(_, _, ip)| ip.has_address()) {
        if let Some(s) = src.0.first() {
            s.warning(
                "network",
                "no interface has an address or dhcp; the host will not be reachable over the network",
                "add dhcp = true or addresses to a link, bond, bridge or VLAN",
            );
        }
    }
}

fn check_vfio(host: &HostConfig, src: &Sources) {
    let mut selects = HashMap::new();
    let mut labels = HashMap::new();
    for d in &host.vfio {
        if let Some(first) = selects.insert(d.select, &d.at) {
            let sub = match d.select {
                VfioSelect::Address(_) => "pci",
                VfioSelect::Id { .. } => "id",
            };
            src.error(
                &d.at,
                sub,
                format!("this device is already selected by {}", first.key),
                "list each device once",
            );
        }
        if let Some(label) = &d.label {
            if let Some(first) = labels.insert(label, &d.at) {
                src.error(
                    &d.at,
                    "label",
                    format!(
                        "label {:?} is already used by {}",
                        label.as_str(),
                        first.key
                    ),
                    "labels must be unique",
                );
            }
        }
    }
}

/// Names of the services walden runs itself (exact, or a prefix ending in
/// `-`): a `[[service]]` by one of these names would clash with them.
pub const BUILTIN_SERVICES: &[&str] = &[
    "udevd", "virtlogd", "libvirtd", "sshd", "dhcp-", "getty-", "console-",
];

fn check_services(host: &HostConfig, src: &Sources) {
    let mut index = HashMap::new();
    for (i, s) in host.services.iter().enumerate() {
        let name = s.name.as_str();
        if let Some(b) = BUILTIN_SERVICES
            .iter()
            .find(|b| name == **b || (b.ends_with('-') && name.starts_with(**b)))
        {
            src.error(
                &s.at,
                "name",
                format!(
                    "service name {name:?} is taken by walden's own {b}{} service",
                    if b.ends_with('-') { "*" } else { "" }
                ),
                "pick another name",
            );
        }
        if let Some(first) = index.insert(s.name.as_str(), i) {
            src.error(
                &s.at,
                "name",
                format!(
                    "duplicate service name {:?} (also {})",
                    s.name.as_str(),
                    host.services[first].at.key
                ),
                "rename one of them",
            );
        }
    }
    let mut edges = vec![Vec::new(); host.services.len()];
    for (i, s) in host.services.iter().enumerate() {
        for a in &s.after {
            match index.get(a.as_str()) {
                Some(&j) => edges[i].push(j),
                None => {
                    let sub = src.element_sub(&s.at, "after", a.as_str());
                    src.error(
                        &s.at,
                        &sub,
                        format!("unknown service {:?}", a.as_str()),
                        "name another [[service]] of host.toml",
                    );
                }
            }
        }
    }
    for cycle in order::cycles(&edges) {
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| host.services[i].name.as_str())
            .collect();
        let first = &host.services[cycle[0]];
        let next = names.get(1).copied().unwrap_or(names[0]);
        let sub = src.element_sub(&first.at, "after", next);
        src.error(
            &first.at,
            &sub,
            format!(
                "services wait for each other in a cycle: {} -> {}",
                names.join(" -> "),
                names[0]
            ),
            "remove one of the `after` entries on the cycle",
        );
    }
}
