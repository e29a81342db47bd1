//! The config resolved against the machine: every interface walden manages
//! with its final name, what it should be, and which kernel link (if any)
//! it is now. Pure; the planner diffs these against [`Observed`].

use super::error::NetError;
use super::observed::{LinkKind, Observed, ObservedLink, PortVlan};
use crate::config::{BondMode, IpNet, LacpRate, LinkRef, NetworkConfig, RouteTo};
use std::net::IpAddr;

/// Bond settings, as the planner compares and the applier creates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BondSpec {
    /// Bonding mode.
    pub mode: BondMode,
    /// LACP rate; `None` = kernel default (slow).
    pub lacp_rate: Option<LacpRate>,
    /// Transmit hash policy; `None` = kernel default (layer2).
    pub hash_policy: Option<&'static str>,
    /// MII monitoring interval in milliseconds.
    pub miimon_ms: u32,
}

/// Bridge settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Spanning tree.
    pub stp: bool,
    /// 802.1Q filtering.
    pub vlan_filtering: bool,
}

/// What sort of interface walden wants, with its kind-specific settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WantKind {
    /// A NIC that exists; `index` is its kernel index.
    Nic {
        /// Kernel index of the NIC.
        index: u32,
    },
    /// A bond walden creates.
    Bond(BondSpec),
    /// A bridge walden creates; `vlans` are the bridge device's own VLAN
    /// entries (vlan_filtering only).
    Bridge(BridgeSpec, Vec<PortVlan>),
    /// A VLAN interface on `parent` (a final name).
    Vlan {
        /// Parent interface (final name).
        parent: String,
        /// VLAN id.
        id: u16,
    },
}

/// One interface walden manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Final name.
    pub name: String,
    /// Kind and settings.
    pub kind: WantKind,
    /// MTU to set, if any.
    pub mtu: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Static addresses.
    pub addresses: Vec<IpNet>,
    /// DHCP client wanted.
    pub dhcp: bool,
    /// Bond or bridge it is enslaved to (final name).
    pub master: Option<String>,
    /// VLAN entries on its bridge port (ports of vlan_filtering bridges only).
    pub port_vlans: Option<Vec<PortVlan>>,
}

impl Want {
    fn new(name: String, kind: WantKind) -> Self {
        Self {
            name,
            kind,
            mtu: None,
            up: true,
            addresses: Vec::new(),
            dhcp: false,
            master: None,
            port_vlans: None,
        }
    }

    /// Kind name for messages ("bond", "bridge", ...).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            WantKind::Nic { .. } => "device",
            WantKind::Bond(_) => "bond",
            WantKind::Bridge(..) => "bridge",
            WantKind::Vlan { .. } => "vlan",
        }
    }
}

/// A route with its device by final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantRoute {
    /// Destination (a /0 for default).
    pub dst: IpNet,
    /// Gateway.
    pub via: Option<IpAddr>,
    /// Output interface (final name).
    pub dev: Option<String>,
    /// Metric; `None` = kernel default (0 for IPv4, 1024 for IPv6).
    pub metric: Option<u32>,
}

impl WantRoute {
    /// The metric the kernel reports for this route.
    pub fn effective_metric(&self) -> u32 {
        match (self.metric, self.dst.addr) {
            (Some(m), _) => m,
            (None, IpAddr::V4(_)) => 0,
            (None, IpAddr::V6(_)) => 1024,
        }
    }
}

/// The whole desired network, in config order: links, bonds, bridges, VLANs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Managed interfaces.
    pub wants: Vec<Want>,
    /// Static routes.
    pub routes: Vec<WantRoute>,
}

/// The kernel's default PVID of bridges and ports.
pub const DEFAULT_PVID: u16 = 1;

/// Resolve `config` against `observed`: find NICs by name or MAC, decide
/// final names, members and port VLANs.
pub fn resolve(config: &NetworkConfig, observed: &Observed) -> Result<Desired, NetError> {
    let mut wants: Vec<Want> = Vec::new();
    // NICs of [[network.link]].
    for l in &config.links {
        let found = match l.match_mac {
            Some(mac) => observed.by_mac(mac).ok_or(NetError::NoNicWithMac {
                mac,
                wanted_by: format!("[[network.link]] {}", l.name),
            })?,
            None => match observed.by_name(l.name.as_str()) {
                Some(found) => found,
                None => return Err(missing_link(config, &l.name)),
            },
        };
        claim(&wants, found, &format!("[[network.link]] {}", l.name))?;
        let mut w = Want::new(l.name.to_string(), WantKind::Nic { index: found.index });
        w.up = l.up;
        apply_ip(&mut w, &l.ip);
        wants.push(w);
    }
    // A `mac:` member or port that no [[network.link]] names: the NIC keeps
    // its kernel name.
    let nic_ref = |r: &LinkRef, wants: &mut Vec<Want>, user: String| -> Result<String, NetError> {
        match r {
            LinkRef::Name(n) => Ok(n.to_string()),
            LinkRef::Mac(mac) => {
                if let Some(l) = config.links.iter().find(|l| l.match_mac == Some(*mac)) {
                    return Ok(l.name.to_string());
                }
                let found = observed.by_mac(*mac).ok_or(NetError::NoNicWithMac {
                    mac: *mac,
                    wanted_by: user.clone(),
                })?;
                if let Some(w) = wants
                    .iter()
                    .find(|w| w.kind == WantKind::Nic { index: found.index })
                {
                    return Ok(w.name.clone());
                }
                claim(wants, found, &user)?;
                wants.push(Want::new(
                    found.name.clone(),
                    WantKind::Nic { index: found.index },
                ));
                Ok(found.name.clone())
            }
        }
    };
    let mut masters: Vec<(String, String, Option<Vec<PortVlan>>)> = Vec::new();
    for b in &config.bonds {
        for m in &b.members {
            let name = nic_ref(m, &mut wants, format!("bond {} member {m}", b.name))?;
            masters.push((name, b.name.to_string(), None));
        }
        let spec = BondSpec {
            mode: b.mode,
            lacp_rate: b.lacp_rate,
            hash_policy: b.hash_policy.map(|h| h.0),
            miimon_ms: u32::try_from(b.miimon.as_millis()).unwrap_or(u32::MAX),
        };
        let mut w = Want::new(b.name.to_string(), WantKind::Bond(spec));
        apply_ip(&mut w, &b.ip);
        wants.push(w);
    }
    for br in &config.bridges {
        for p in &br.ports {
            let name = nic_ref(
                &p.link,
                &mut wants,
                format!("bridge {} port {}", br.name, p.link),
            )?;
            let vlans = br.vlan_filtering.then(|| {
                let pvid = p.pvid.map_or(DEFAULT_PVID, |v| v.get());
                vlan_set(pvid, p.tagged.iter().map(|v| v.get()))
            });
            masters.push((name, br.name.to_string(), vlans));
        }
        let spec = BridgeSpec {
            stp: br.stp,
            vlan_filtering: br.vlan_filtering,
        };
        let own = if br.vlan_filtering {
            vlan_set(DEFAULT_PVID, br.vlans.iter().map(|v| v.get()))
        } else {
            Vec::new()
        };
        let mut w = Want::new(br.name.to_string(), WantKind::Bridge(spec, own));
        apply_ip(&mut w, &br.ip);
        wants.push(w);
    }
    for v in &config.vlans {
        if !wants.iter().any(|w| w.name == v.link.as_str()) {
            return Err(NetError::VlanParentMissing {
                vlan: v.name.clone(),
                id: v.id,
                parent: v.link.clone(),
            });
        }
        let mut w = Want::new(
            v.name.to_string(),
            WantKind::Vlan {
                parent: v.link.to_string(),
                id: v.id.get(),
            },
        );
        apply_ip(&mut w, &v.ip);
        wants.push(w);
    }
    for (name, master, vlans) in masters {
        if let Some(w) = wants.iter_mut().find(|w| w.name == name) {
            w.master = Some(master);
            w.port_vlans = vlans;
        }
    }
    // A bond member's MTU follows its bond (the kernel copies it on enslaving).
    let bond_mtus: Vec<(String, Option<u32>)> = wants
        .iter()
        .filter(|w| matches!(w.kind, WantKind::Bond(_)))
        .map(|w| (w.name.clone(), w.mtu))
        .collect();
    for w in &mut wants {
        if let Some((_, mtu)) = bond_mtus.iter().find(|(b, _)| w.master.as_ref() == Some(b)) {
            w.mtu = *mtu;
        }
    }
    let routes = config
        .routes
        .iter()
        .map(|r| {
            let dst = match r.to {
                RouteTo::Net(n) => n,
                RouteTo::Default => match r.via {
                    Some(IpAddr::V6(_)) => IpNet {
                        addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                        prefix: 0,
                    },
                    _ => IpNet {
                        addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                        prefix: 0,
                    },
                },
            };
            WantRoute {
                dst,
                via: r.via,
                dev: r.dev.as_ref().map(|d| d.to_string()),
                metric: r.metric,
            }
        })
        .collect::<Vec<_>>();
    for r in &config.routes {
        if let Some(dev) = &r.dev {
            if !wants.iter().any(|w| w.name == dev.as_str()) {
                return Err(NetError::RouteDevMissing {
                    to: match r.to {
                        RouteTo::Default => "default".into(),
                        RouteTo::Net(n) => n.to_string(),
                    },
                    dev: dev.clone(),
                });
            }
        }
    }
    Ok(Desired { wants, routes })
}

/// `pvid` as the native VLAN plus `tagged`, sorted by id.
fn vlan_set(pvid: u16, tagged: impl Iterator<Item = u16>) -> Vec<PortVlan> {
    let mut set = vec![PortVlan::native(pvid)];
    for t in tagged {
        if t != pvid && !set.iter().any(|v| v.vid == t) {
            set.push(PortVlan::tagged(t));
        }
    }
    set.sort();
    set
}

fn apply_ip(w: &mut Want, ip: &crate::config::Addressing) {
    w.mtu = ip.mtu;
    w.addresses = ip.addresses.clone();
    w.dhcp = ip.dhcp;
}

/// Refuse a NIC that two config entries resolve to.
fn claim(wants: &[Want], found: &ObservedLink, user: &str) -> Result<(), NetError> {
    match wants
        .iter()
        .find(|w| w.kind == WantKind::Nic { index: found.index })
    {
        Some(w) => Err(NetError::SameNic {
            name: found.name.clone(),
            first: format!("[[network.link]] {}", w.name),
            second: user.to_string(),
        }),
        None => Ok(()),
    }
}

/// The error for a [[network.link]] by name that the kernel does not have:
/// name the VLAN on it when there is one (the more useful message).
fn missing_link(config: &NetworkConfig, name: &crate::config::IfName) -> NetError {
    match config.vlans.iter().find(|v| &v.link == name) {
        Some(v) => NetError::VlanParentMissing {
            vlan: v.name.clone(),
            id: v.id,
            parent: name.clone(),
        },
        None => NetError::NoSuchLink { name: name.clone() },
    }
}

/// True when `link` is a physical NIC (or a veth standing in for one).
pub fn is_nic(link: &ObservedLink) -> bool {
    matches!(link.kind, LinkKind::Device | LinkKind::Veth)
}
