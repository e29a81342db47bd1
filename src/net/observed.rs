//! The kernel's network state as plain data: what [`super::observe`] reads
//! over netlink and what the pure planner compares the config against.
//! Tests build these values by hand.

use crate::config::{BondMode, IpNet, LacpRate, MacAddr};
use std::net::IpAddr;

/// Interface alias (IFLA_IFALIAS) walden puts on the links it creates, so it
/// only ever deletes its own.
pub const MARK: &str = "walden";

/// Everything the planner needs to know about the kernel's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every link in the namespace.
    pub links: Vec<ObservedLink>,
    /// Every address, of every link.
    pub addresses: Vec<ObservedAddress>,
    /// Routes of the main table.
    pub routes: Vec<ObservedRoute>,
}

impl Observed {
    /// The link called `name`.
    pub fn by_name(&self, name: &str) -> Option<&ObservedLink> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The link with kernel index `index`.
    pub fn by_index(&self, index: u32) -> Option<&ObservedLink> {
        self.links.iter().find(|l| l.index == index)
    }

    /// The NIC whose permanent MAC is `mac` (see [`ObservedLink::hw_mac`]).
    pub fn by_mac(&self, mac: MacAddr) -> Option<&ObservedLink> {
        self.links.iter().find(|l| {
            l.hw_mac() == Some(mac) && matches!(l.kind, LinkKind::Device | LinkKind::Veth)
        })
    }

    /// Addresses of the link with index `index`.
    pub fn addresses_of(&self, index: u32) -> impl Iterator<Item = &ObservedAddress> {
        self.addresses.iter().filter(move |a| a.index == index)
    }
}

/// What sort of interface a link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A physical device (no IFLA_INFO_KIND).
    Device,
    /// A bonding master.
    Bond,
    /// A Linux bridge.
    Bridge,
    /// An 802.1Q VLAN interface.
    Vlan,
    /// One end of a veth pair (stands in for a NIC in tests and containers).
    Veth,
    /// Anything else, with the kernel's kind name ("tun", "dummy", "lo" for loopback).
    Other(String),
}

impl LinkKind {
    /// Lower-case name for messages and status.
    pub fn as_str(&self) -> &str {
        match self {
            LinkKind::Device => "device",
            LinkKind::Bond => "bond",
            LinkKind::Bridge => "bridge",
            LinkKind::Vlan => "vlan",
            LinkKind::Veth => "veth",
            LinkKind::Other(k) => k,
        }
    }
}

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLink {
    /// Kernel interface index.
    pub index: u32,
    /// Current name.
    pub name: String,
    /// Kind.
    pub kind: LinkKind,
    /// Current MAC (a bond member carries the bond's).
    pub mac: Option<MacAddr>,
    /// The NIC's own MAC: IFLA_PERM_ADDRESS, or the address the bond saved
    /// when it enslaved the NIC.
    pub perm_mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Index of the bond or bridge this link is enslaved to.
    pub master: Option<u32>,
    /// IFLA_IFALIAS; [`MARK`] on links walden created.
    pub alias: Option<String>,
    /// Bond settings, for bonds.
    pub bond: Option<ObservedBond>,
    /// VLAN id and parent, for VLAN interfaces.
    pub vlan: Option<ObservedVlan>,
    /// Bridge settings, for bridges.
    pub bridge: Option<ObservedBridge>,
    /// Bridge VLAN entries: of the port (for bridge ports) or of the
    /// bridge device itself (for bridges), sorted by id.
    pub bridge_vlans: Vec<PortVlan>,
}

impl ObservedLink {
    /// A link with only the given name, index and kind set (tests build on it).
    pub fn new(index: u32, name: &str, kind: LinkKind) -> Self {
        Self {
            index,
            name: name.to_string(),
            kind,
            mac: None,
            perm_mac: None,
            mtu: 1500,
            up: false,
            master: None,
            alias: None,
            bond: None,
            vlan: None,
            bridge: None,
            bridge_vlans: Vec::new(),
        }
    }

    /// The MAC that identifies the NIC: the permanent one when known, else
    /// the current one.
    pub fn hw_mac(&self) -> Option<MacAddr> {
        self.perm_mac.or(self.mac)
    }

    /// True when walden created this link.
    pub fn is_ours(&self) -> bool {
        self.alias.as_deref() == Some(MARK)
    }
}

/// Settings of a bond that walden manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedBond {
    /// Bonding mode.
    pub mode: BondMode,
    /// LACP rate (reported for every mode; meaningful for 802.3ad).
    pub lacp_rate: Option<LacpRate>,
    /// Transmit hash policy, kernel spelling.
    pub hash_policy: Option<&'static str>,
    /// MII monitoring interval in milliseconds.
    pub miimon_ms: u32,
}

/// VLAN id and parent of a VLAN interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedVlan {
    /// 802.1Q id.
    pub id: u16,
    /// Index of the parent link.
    pub parent: u32,
}

/// Bridge settings walden manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedBridge {
    /// Spanning tree on.
    pub stp: bool,
    /// 802.1Q filtering on.
    pub vlan_filtering: bool,
}

/// One VLAN entry of a bridge port or of the bridge itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortVlan {
    /// VLAN id.
    pub vid: u16,
    /// Untagged frames arriving on the port belong to this VLAN.
    pub pvid: bool,
    /// Frames of this VLAN leave the port untagged.
    pub untagged: bool,
}

impl PortVlan {
    /// A tagged member VLAN.
    pub fn tagged(vid: u16) -> Self {
        Self {
            vid,
            pvid: false,
            untagged: false,
        }
    }

    /// The port's native VLAN: PVID, egress untagged.
    pub fn native(vid: u16) -> Self {
        Self {
            vid,
            pvid: true,
            untagged: true,
        }
    }
}

/// One address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedAddress {
    /// Index of the link.
    pub index: u32,
    /// Address and prefix.
    pub net: IpNet,
    /// IFA_F_PERMANENT: a static address (not from DHCP, SLAAC or the
    /// kernel's link-local generation).
    pub permanent: bool,
}

impl ObservedAddress {
    /// True for an address walden may remove when the config no longer
    /// lists it: static, and not IPv6 link-local.
    pub fn is_static(&self) -> bool {
        let link_local = match self.net.addr {
            IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
            IpAddr::V4(_) => false,
        };
        self.permanent && !link_local
    }
}

/// Route protocol walden uses for its routes (RTPROT_STATIC); `ip route add`
/// uses RTPROT_BOOT and DHCP clients their own, so walden removes only
/// routes it added.
pub const RTPROT_STATIC: u8 = 4;

/// One route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedRoute {
    /// Destination; a /0 for default routes.
    pub dst: IpNet,
    /// Gateway.
    pub via: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Metric (RTA_PRIORITY); 0 when absent.
    pub metric: u32,
    /// Routing protocol (who added it).
    pub protocol: u8,
}
