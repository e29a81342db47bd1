//! `[network]` of host.toml: links, bonds, bridges, VLANs, routes, DNS.

use super::ids::{IfName, IpNet, LinkRef, MacAddr, VlanId};
use super::source::At;
use std::net::IpAddr;
use std::time::Duration;

/// The host network, as written in `[network]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkConfig {
    /// Apply live network changes with a way back (see docs/config.md). Default true.
    pub safe_apply: bool,
    /// `[[network.link]]`: physical NICs, named and configured.
    pub links: Vec<LinkConfig>,
    /// `[[network.bond]]`.
    pub bonds: Vec<BondConfig>,
    /// `[[network.bridge]]`.
    pub bridges: Vec<BridgeConfig>,
    /// `[[network.vlan]]`: 802.1Q interfaces on top of another interface.
    pub vlans: Vec<VlanConfig>,
    /// `[[network.route]]`.
    pub routes: Vec<RouteConfig>,
    /// `[network.dns]`.
    pub dns: DnsConfig,
}

/// Layer-3 settings shared by every interface kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Addressing {
    /// Run a DHCP client (IPv4) on the interface.
    pub dhcp: bool,
    /// Static addresses with prefix.
    pub addresses: Vec<IpNet>,
    /// MTU, when set.
    pub mtu: Option<u32>,
}

impl Addressing {
    /// True when the interface gets any address.
    pub fn has_address(&self) -> bool {
        self.dhcp || !self.addresses.is_empty()
    }
}

/// A physical NIC: found by name, or by MAC and renamed to `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// Origin in host.toml.
    pub at: At,
    /// Interface name (the NIC is renamed to it when `match_mac` is set).
    pub name: IfName,
    /// `match = "mac:.."`: the NIC with this permanent MAC.
    pub match_mac: Option<MacAddr>,
    /// Bring the link up (default true).
    pub up: bool,
    /// Addresses, DHCP, MTU.
    pub ip: Addressing,
}

/// Linux bonding modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BondMode {
    /// "balance-rr"
    BalanceRr,
    /// "active-backup"
    ActiveBackup,
    /// "balance-xor"
    BalanceXor,
    /// "broadcast"
    Broadcast,
    /// "802.3ad" (LACP)
    Lacp,
    /// "balance-tlb"
    BalanceTlb,
    /// "balance-alb"
    BalanceAlb,
}

impl BondMode {
    /// The kernel's name for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }
}

/// LACP rate of an 802.3ad bond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LacpRate {
    /// Partner sends LACPDUs every 30 s.
    Slow,
    /// Every second.
    Fast,
}

/// Transmit hash policy (`xmit_hash_policy`), kernel spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashPolicy(pub &'static str);

/// A bond of physical links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondConfig {
    /// Origin in host.toml.
    pub at: At,
    /// Interface name.
    pub name: IfName,
    /// Bonding mode.
    pub mode: BondMode,
    /// Member links: names of `[[network.link]]` entries or `mac:` references.
    pub members: Vec<LinkRef>,
    /// LACP rate (802.3ad only).
    pub lacp_rate: Option<LacpRate>,
    /// Transmit hash policy.
    pub hash_policy: Option<HashPolicy>,
    /// Link monitoring interval (default 100ms).
    pub miimon: Duration,
    /// Addresses, DHCP, MTU.
    pub ip: Addressing,
}

/// One port of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePort {
    /// Origin in host.toml.
    pub at: At,
    /// The enslaved interface.
    pub link: LinkRef,
    /// Untagged VLAN of the port (vlan_filtering bridges only).
    pub pvid: Option<VlanId>,
    /// Tagged VLANs allowed on the port (vlan_filtering bridges only).
    pub tagged: Vec<VlanId>,
}

/// A Linux bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Origin in host.toml.
    pub at: At,
    /// Interface name.
    pub name: IfName,
    /// Ports; empty for an internal (guest-to-guest) bridge.
    pub ports: Vec<BridgePort>,
    /// Spanning tree (default false).
    pub stp: bool,
    /// 802.1Q VLAN filtering (default false).
    pub vlan_filtering: bool,
    /// VLANs of the bridge device itself: the `vlans` key plus the id of
    /// every `[[network.vlan]]` on this bridge, sorted.
    pub vlans: Vec<VlanId>,
    /// Addresses, DHCP, MTU.
    pub ip: Addressing,
}

/// An 802.1Q VLAN interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanConfig {
    /// Origin in host.toml.
    pub at: At,
    /// Interface name.
    pub name: IfName,
    /// The interface it sits on (a link, bond or bridge).
    pub link: IfName,
    /// VLAN id.
    pub id: VlanId,
    /// Addresses, DHCP, MTU.
    pub ip: Addressing,
}

/// Destination of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTo {
    /// The default route (IPv6 when `via` is IPv6, else IPv4).
    Default,
    /// A network.
    Net(IpNet),
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Origin in host.toml.
    pub at: At,
    /// Destination.
    pub to: RouteTo,
    /// Gateway.
    pub via: Option<IpAddr>,
    /// Output interface.
    pub dev: Option<IfName>,
    /// Metric.
    pub metric: Option<u32>,
}

/// Resolver settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
}
