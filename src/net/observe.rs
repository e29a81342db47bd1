//! Read the kernel's network state over netlink into [`Observed`].

use super::error::NetError;
use super::observed::{
    LinkKind, Observed, ObservedAddress, ObservedBond, ObservedBridge, ObservedLink, ObservedRoute,
    ObservedVlan, PortVlan,
};
use crate::config::{BondMode, IpNet, LacpRate, MacAddr};
use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{
    AfSpecBridge, BondLacpRate, BondMode as NlBondMode, BondXmitHashPolicy, BridgeStpState,
    BridgeVlanInfoFlags, InfoBond, InfoBondPort, InfoBridge, InfoData, InfoKind, InfoPortData,
    InfoVlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn nl(what: &str) -> impl FnOnce(rtnetlink::Error) -> NetError + '_ {
    move |source| NetError::Netlink {
        what: what.to_string(),
        source,
    }
}

/// Dump links, bridge VLANs, addresses and main-table routes.
pub async fn observe(handle: &Handle) -> Result<Observed, NetError> {
    let mut links = Vec::new();
    let mut dump = handle.link().get().execute();
    while let Some(msg) = dump.try_next().await.map_err(nl("listing links"))? {
        links.push(link(&msg));
    }
    // Bridge VLAN entries come from the AF_BRIDGE dump, one message per
    // bridge port and per bridge.
    let mut dump = handle
        .link()
        .get()
        .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan])
        .execute();
    while let Some(msg) = dump.try_next().await.map_err(nl("listing bridge VLANs"))? {
        let vlans = bridge_vlans(&msg);
        if let Some(l) = links.iter_mut().find(|l| l.index == msg.header.index) {
            l.bridge_vlans = vlans;
        }
    }
    let mut addresses = Vec::new();
    let mut dump = handle.address().get().execute();
    while let Some(msg) = dump.try_next().await.map_err(nl("listing addresses"))? {
        if let Some(a) = address(&msg) {
            addresses.push(a);
        }
    }
    let mut routes = Vec::new();
    for query in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut dump = handle.route().get(query).execute();
        while let Some(msg) = dump.try_next().await.map_err(nl("listing routes"))? {
            if let Some(r) = route(&msg) {
                routes.push(r);
            }
        }
    }
    Ok(Observed {
        links,
        addresses,
        routes,
    })
}

fn mac(bytes: &[u8]) -> Option<MacAddr> {
    let b: [u8; 6] = bytes.try_into().ok()?;
    (b != [0; 6]).then_some(MacAddr(b))
}

fn link(msg: &LinkMessage) -> ObservedLink {
    let kind = if msg.header.link_layer_type == LinkLayerType::Loopback {
        LinkKind::Other("loopback".into())
    } else {
        LinkKind::Device
    };
    let mut l = ObservedLink::new(msg.header.index, "", kind);
    l.up = msg.header.flags.contains(LinkFlags::Up);
    let mut parent = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(a) => l.mac = mac(a),
            LinkAttribute::PermAddress(a) => l.perm_mac = l.perm_mac.or(mac(a)),
            LinkAttribute::Mtu(m) => l.mtu = *m,
            LinkAttribute::Controller(m) => l.master = (*m != 0).then_some(*m),
            LinkAttribute::IfAlias(a) => l.alias = Some(a.clone()),
            LinkAttribute::Link(p) => parent = Some(*p),
            LinkAttribute::LinkInfo(infos) => link_info(&mut l, infos),
            _ => {}
        }
    }
    if let (LinkKind::Vlan, Some(v)) = (&l.kind, &mut l.vlan) {
        v.parent = parent.unwrap_or(0);
    }
    l
}

fn link_info(l: &mut ObservedLink, infos: &[LinkInfo]) {
    for info in infos {
        match info {
            LinkInfo::Kind(k) => {
                l.kind = match k {
                    InfoKind::Bond => LinkKind::Bond,
                    InfoKind::Bridge => LinkKind::Bridge,
                    InfoKind::Vlan => LinkKind::Vlan,
                    InfoKind::Veth => LinkKind::Veth,
                    other => LinkKind::Other(other.to_string()),
                }
            }
            LinkInfo::Data(InfoData::Bond(opts)) => l.bond = Some(bond(opts)),
            LinkInfo::Data(InfoData::Bridge(opts)) => {
                let mut b = ObservedBridge {
                    stp: false,
                    vlan_filtering: false,
                };
                for o in opts {
                    match o {
                        InfoBridge::StpState(s) => b.stp = *s != BridgeStpState::Disabled,
                        InfoBridge::VlanFiltering(v) => b.vlan_filtering = *v,
                        _ => {}
                    }
                }
                l.bridge = Some(b);
            }
            LinkInfo::Data(InfoData::Vlan(opts)) => {
                for o in opts {
                    if let InfoVlan::Id(id) = o {
                        l.vlan = Some(ObservedVlan { id: *id, parent: 0 });
                    }
                }
            }
            LinkInfo::PortData(InfoPortData::BondPort(opts)) => {
                for o in opts {
                    if let InfoBondPort::PermHwaddr(a) = o {
                        // The NIC's own MAC: the bond overwrote the current one.
                        l.perm_mac = mac(a).or(l.perm_mac);
                    }
                }
            }
            _ => {}
        }
    }
}

fn bond(opts: &[InfoBond]) -> ObservedBond {
    let mut b = ObservedBond {
        mode: BondMode::BalanceRr,
        lacp_rate: None,
        hash_policy: None,
        miimon_ms: 0,
    };
    for o in opts {
        match o {
            InfoBond::Mode(m) => {
                b.mode = match m {
                    NlBondMode::ActiveBackup => BondMode::ActiveBackup,
                    NlBondMode::BalanceXor => BondMode::BalanceXor,
                    NlBondMode::Broadcast => BondMode::Broadcast,
                    NlBondMode::Ieee8023Ad => BondMode::Lacp,
                    NlBondMode::BalanceTlb => BondMode::BalanceTlb,
                    NlBondMode::BalanceAlb => BondMode::BalanceAlb,
                    _ => BondMode::BalanceRr,
                }
            }
            InfoBond::AdLacpRate(r) => {
                b.lacp_rate = match r {
                    BondLacpRate::Fast => Some(LacpRate::Fast),
                    _ => Some(LacpRate::Slow),
                }
            }
            InfoBond::XmitHashPolicy(p) => b.hash_policy = Some(hash_policy_name(*p)),
            InfoBond::MiiMon(ms) => b.miimon_ms = *ms,
            _ => {}
        }
    }
    b
}

/// Kernel spelling of a transmit hash policy.
pub fn hash_policy_name(p: BondXmitHashPolicy) -> &'static str {
    match p {
        BondXmitHashPolicy::Layer2 => "layer2",
        BondXmitHashPolicy::Layer34 => "layer3+4",
        BondXmitHashPolicy::Layer23 => "layer2+3",
        BondXmitHashPolicy::Encap23 => "encap2+3",
        BondXmitHashPolicy::Encap34 => "encap3+4",
        BondXmitHashPolicy::VlanSrcMac => "vlan+srcmac",
        _ => "unknown",
    }
}

fn bridge_vlans(msg: &LinkMessage) -> Vec<PortVlan> {
    let mut out = Vec::new();
    for attr in &msg.attributes {
        if let LinkAttribute::AfSpecBridge(specs) = attr {
            for s in specs {
                if let AfSpecBridge::VlanInfo(v) = s {
                    out.push(PortVlan {
                        vid: v.vid,
                        pvid: v.flags.contains(BridgeVlanInfoFlags::Pvid),
                        untagged: v.flags.contains(BridgeVlanInfoFlags::Untagged),
                    });
                }
            }
        }
    }
    out.sort();
    out
}

fn address(msg: &AddressMessage) -> Option<ObservedAddress> {
    let mut addr = None;
    let mut local = None;
    let mut permanent = msg.header.flags.contains(AddressHeaderFlags::Permanent);
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Address(a) => addr = Some(*a),
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Flags(f) => permanent = f.contains(AddressFlags::Permanent),
            _ => {}
        }
    }
    // For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
    // peer on point-to-point links).
    let addr = local.or(addr)?;
    Some(ObservedAddress {
        index: msg.header.index,
        net: IpNet {
            addr,
            prefix: msg.header.prefix_len,
        },
        permanent,
    })
}

fn route(msg: &RouteMessage) -> Option<ObservedRoute> {
    let mut table = u32::from(msg.header.table);
    let mut dst = None;
    let mut via = None;
    let mut oif = None;
    let mut metric = 0;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = ip(a),
            RouteAttribute::Gateway(a) => via = ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || msg.header.kind != RouteType::Unicast {
        return None;
    }
    let dst = dst.unwrap_or(match msg.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    Some(ObservedRoute {
        dst: IpNet {
            addr: dst,
            prefix: msg.header.destination_prefix_length,
        },
        via,
        oif,
        metric,
        protocol: u8::from(msg.header.protocol),
    })
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}
