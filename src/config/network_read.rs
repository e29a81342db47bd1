//! Reading `[network]` of host.toml into [`NetworkConfig`].

use super::ids::{IfName, IpNet, LinkRef, MacAddr, VlanId};
use super::network::{
    Addressing, BondConfig, BondMode, BridgeConfig, BridgePort, DnsConfig, HashPolicy, LacpRate,
    LinkConfig, NetworkConfig, RouteConfig, RouteTo, VlanConfig,
};
use super::reader::{Tbl, Val};
use super::source::At;
use super::units::HumanDuration;
use std::net::IpAddr;
use std::time::Duration;

const BOND_MODES: &[(&str, BondMode)] = &[
    ("balance-rr", BondMode::BalanceRr),
    ("active-backup", BondMode::ActiveBackup),
    ("balance-xor", BondMode::BalanceXor),
    ("broadcast", BondMode::Broadcast),
    ("802.3ad", BondMode::Lacp),
    ("balance-tlb", BondMode::BalanceTlb),
    ("balance-alb", BondMode::BalanceAlb),
];

const HASH_POLICIES: &[(&str, HashPolicy)] = &[
    ("layer2", HashPolicy("layer2")),
    ("layer2+3", HashPolicy("layer2+3")),
    ("layer3+4", HashPolicy("layer3+4")),
    ("encap2+3", HashPolicy("encap2+3")),
    ("encap3+4", HashPolicy("encap3+4")),
    ("vlan+srcmac", HashPolicy("vlan+srcmac")),
];

const IP_HINT: &str = "write an IP address, e.g. \"10.0.0.1\" or \"fd00::1\"";

fn ip_addr(v: &Val<'_>) -> Option<IpAddr> {
    let s = v.str()?;
    s.parse()
        .ok()
        .or_else(|| v.error(format!("invalid IP address {s:?}"), IP_HINT))
}

fn addressing(t: &Tbl<'_>) -> Addressing {
    Addressing {
        dhcp: t.opt("dhcp").and_then(|v| v.bool()).unwrap_or(false),
        addresses: t
            .opt("addresses")
            .map(|v| v.parse_list())
            .unwrap_or_default(),
        mtu: t.opt("mtu").and_then(|v| v.u32(68, 65535)),
    }
}

fn name(t: &Tbl<'_>, what: &str) -> Option<IfName> {
    t.req(
        "name",
        &format!("give the {what} an interface name, e.g. name = \"br0\""),
    )
    .and_then(|v| v.parse())
}

/// Read `[network]`.
pub(crate) fn read(t: &Tbl<'_>) -> NetworkConfig {
    let each = |key: &'static str| t.opt(key).and_then(|v| v.tables()).unwrap_or_default();
    NetworkConfig {
        safe_apply: t.opt("safe_apply").and_then(|v| v.bool()).unwrap_or(true),
        links: each("link").into_iter().filter_map(link).collect(),
        bonds: each("bond").into_iter().filter_map(bond).collect(),
        bridges: each("bridge").into_iter().filter_map(bridge).collect(),
        vlans: each("vlan").into_iter().filter_map(vlan).collect(),
        routes: each("route").into_iter().filter_map(route).collect(),
        dns: t
            .opt("dns")
            .and_then(|v| v.table())
            .map(dns)
            .unwrap_or_default(),
    }
}

fn link(t: Tbl<'_>) -> Option<LinkConfig> {
    let name = name(&t, "link");
    let match_mac = t.opt("match").and_then(|v| {
        let s = v.str()?;
        let hint =
            "write \"mac:\" and the NIC's MAC address, e.g. match = \"mac:52:54:00:12:34:56\"";
        match s.strip_prefix("mac:").map(str::parse::<MacAddr>) {
            Some(Ok(mac)) => Some(mac),
            Some(Err(e)) => v.error(e.to_string(), hint),
            None => v.error(format!("unsupported match {s:?}"), hint),
        }
    });
    let up = t.opt("up").and_then(|v| v.bool()).unwrap_or(true);
    let ip = addressing(&t);
    let at = t.at();
    t.finish();
    Some(LinkConfig {
        at,
        name: name?,
        match_mac,
        up,
        ip,
    })
}

fn bond(t: Tbl<'_>) -> Option<BondConfig> {
    let name = name(&t, "bond");
    let mode = t
        .req("mode", "set mode, e.g. mode = \"802.3ad\" for LACP")
        .and_then(|v| v.choice(BOND_MODES));
    let members = t
        .req(
            "members",
            "list the member NICs, e.g. members = [\"eth0\", \"eth1\"]",
        )
        .map(|v| {
            let members = v.parse_list::<LinkRef>();
            if v.array().is_some_and(|a| a.is_empty()) {
                v.error::<()>("a bond needs at least one member", "list the member NICs");
            }
            members
        })
        .unwrap_or_default();
    let lacp_rate = t
        .opt("lacp_rate")
        .and_then(|v| v.choice(&[("slow", LacpRate::Slow), ("fast", LacpRate::Fast)]));
    if lacp_rate.is_some() && mode.is_some_and(|m| m != BondMode::Lacp) {
        if let Some(v) = t.opt("lacp_rate") {
            v.error::<()>(
                "lacp_rate only applies to mode \"802.3ad\"",
                "remove lacp_rate or use mode = \"802.3ad\"",
            );
        }
    }
    let hash_policy = t.opt("hash_policy").and_then(|v| v.choice(HASH_POLICIES));
    let miimon = t
        .opt("miimon")
        .and_then(|v| v.parse::<HumanDuration>())
        .map_or(Duration::from_millis(100), |d| d.0);
    let ip = addressing(&t);
    let at = t.at();
    t.finish();
    Some(BondConfig {
        at,
        name: name?,
        mode: mode.unwrap_or(BondMode::ActiveBackup),
        members,
        lacp_rate,
        hash_policy,
        miimon,
        ip,
    })
}

fn port(v: Val<'_>) -> Option<BridgePort> {
    if !v.is_table() {
        let link = v.parse::<LinkRef>()?;
        return Some(BridgePort {
            at: At {
                file: Default::default(),
                key: v.path().to_string(),
            },
            link,
            pvid: None,
            tagged: Vec::new(),
        });
    }
    let t = v.table()?;
    let link = t
        .req(
            "name",
            "name the interface, e.g. { name = \"bond0\", tagged = [20] }",
        )
        .and_then(|v| v.parse::<LinkRef>());
    let pvid = t.opt("pvid").and_then(|v| v.vlan());
    let tagged = t
        .opt("tagged")
        .map(|v| v.list(|e| e.vlan()))
        .unwrap_or_default();
    let at = t.at();
    t.finish();
    Some(BridgePort {
        at,
        link: link?,
        pvid,
        tagged,
    })
}

fn bridge(t: Tbl<'_>) -> Option<BridgeConfig> {
    let name = name(&t, "bridge");
    let file = t.at().file;
    let ports = t
        .opt("ports")
        .map(|v| v.list(|p| port(p.clone())))
        .unwrap_or_default()
        .into_iter()
        .map(|mut p| {
            p.at.file = file.clone();
            p
        })
        .collect();
    let stp = t.opt("stp").and_then(|v| v.bool()).unwrap_or(false);
    let vlan_filtering = t
        .opt("vlan_filtering")
        .and_then(|v| v.bool())
        .unwrap_or(false);
    let vlans = t
        .opt("vlans")
        .map(|v| v.list(|e| e.vlan()))
        .unwrap_or_default();
    let ip = addressing(&t);
    let at = t.at();
    t.finish();
    Some(BridgeConfig {
        at,
        name: name?,
        ports,
        stp,
        vlan_filtering,
        vlans,
        ip,
    })
}

fn vlan(t: Tbl<'_>) -> Option<VlanConfig> {
    let name = name(&t, "VLAN interface");
    let link = t
        .req("link", "name the interface it sits on, e.g. link = \"br0\"")
        .and_then(|v| v.parse::<IfName>());
    let id = t
        .req("id", "set the VLAN id, e.g. id = 20")
        .and_then(|v| v.vlan());
    let ip = addressing(&t);
    let at = t.at();
    t.finish();
    Some(VlanConfig {
        at,
        name: name?,
        link: link?,
        // A bad id was reported; a stand-in keeps the `link` check running.
        id: id.or_else(|| VlanId::new(1))?,
        ip,
    })
}

fn route(t: Tbl<'_>) -> Option<RouteConfig> {
    let to = t
        .req(
            "to",
            "write to = \"default\" or a network like \"10.30.0.0/16\"",
        )
        .and_then(|v| {
            if v.str()? == "default" {
                return Some(RouteTo::Default);
            }
            let net = v.parse::<IpNet>()?;
            if !net.is_network() {
                return v.error(
                    format!("{net} has host bits set"),
                    "write the network address, e.g. \"10.30.0.0/16\"",
                );
            }
            Some(RouteTo::Net(net))
        });
    let via = t.opt("via").and_then(|v| ip_addr(&v));
    let dev = t.opt("dev").and_then(|v| v.parse::<IfName>());
    let metric = t.opt("metric").and_then(|v| v.u32(0, u32::MAX));
    if t.opt("via").is_none() && t.opt("dev").is_none() {
        t.error(
            "a route needs `via`, `dev` or both",
            "add via = \"GATEWAY\" or dev = \"INTERFACE\"",
        );
    }
    if let (Some(RouteTo::Net(net)), Some(gw)) = (to, via) {
        if net.addr.is_ipv4() != gw.is_ipv4() {
            if let Some(v) = t.opt("via") {
                v.error::<()>(
                    format!("gateway {gw} and destination {net} are of different IP versions"),
                    "use an IPv4 gateway for IPv4 routes and IPv6 for IPv6",
                );
            }
        }
    }
    let at = t.at();
    t.finish();
    Some(RouteConfig {
        at,
        // A bad `to` was reported; keep the route for the `dev` check.
        to: to.unwrap_or(RouteTo::Default),
        via,
        dev,
        metric,
    })
}

fn dns(t: Tbl<'_>) -> DnsConfig {
    let servers = t
        .opt("servers")
        .map(|v| v.list(ip_addr))
        .unwrap_or_default();
    let search = t
        .opt("search")
        .map(|v| {
            v.list(|e| {
                let s = e.str()?;
                let ok = !s.is_empty()
                    && s.split('.').all(|l| {
                        !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    });
                ok.then(|| s.to_string()).or_else(|| {
                    e.error(
                        format!("invalid search domain {s:?}"),
                        "e.g. \"example.org\"",
                    )
                })
            })
        })
        .unwrap_or_default();
    t.finish();
    DnsConfig { servers, search }
}
