//! The operations a plan is made of, with the text `walden net apply`
//! prints for each.

use super::desired::{BondSpec, BridgeSpec, WantRoute};
use super::observed::{ObservedRoute, PortVlan};
use crate::config::IpNet;
use std::fmt;

/// One change to the kernel's network state. Links are named by the name
/// they have at that point of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Delete a link walden created.
    Delete {
        /// The link.
        link: String,
    },
    /// Take a link down (before renaming it or enslaving it to a bond).
    SetDown {
        /// The link.
        link: String,
    },
    /// Rename a NIC.
    Rename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// Enslave a link to a bond or bridge, or release it (`None`).
    SetMaster {
        /// The link.
        link: String,
        /// The bond or bridge.
        master: Option<String>,
    },
    /// Set the MTU.
    SetMtu {
        /// The link.
        link: String,
        /// MTU.
        mtu: u32,
    },
    /// Create a bond (marked as walden's).
    CreateBond {
        /// Name.
        name: String,
        /// Settings.
        spec: BondSpec,
    },
    /// Create a bridge (marked as walden's).
    CreateBridge {
        /// Name.
        name: String,
        /// Settings.
        spec: BridgeSpec,
    },
    /// Change STP and/or VLAN filtering of an existing bridge (only the
    /// settings that differ are sent: kernels without VLAN filtering refuse
    /// even "off").
    SetBridge {
        /// Name.
        name: String,
        /// New STP setting.
        stp: Option<bool>,
        /// New VLAN filtering setting.
        vlan_filtering: Option<bool>,
    },
    /// Create a VLAN interface (marked as walden's).
    CreateVlan {
        /// Name.
        name: String,
        /// Parent link.
        parent: String,
        /// VLAN id.
        id: u16,
    },
    /// Add (or change the flags of) a bridge VLAN entry.
    AddBridgeVlan {
        /// The port, or the bridge itself when `bridge_self`.
        link: String,
        /// The entry.
        vlan: PortVlan,
        /// The entry is the bridge device's own.
        bridge_self: bool,
    },
    /// Remove a bridge VLAN entry.
    DelBridgeVlan {
        /// The port, or the bridge itself when `bridge_self`.
        link: String,
        /// VLAN id.
        vid: u16,
        /// The entry is the bridge device's own.
        bridge_self: bool,
    },
    /// Bring a link up.
    SetUp {
        /// The link.
        link: String,
    },
    /// Add a static address.
    AddAddress {
        /// The link.
        link: String,
        /// Address.
        addr: IpNet,
    },
    /// Remove a static address.
    DelAddress {
        /// The link.
        link: String,
        /// Address.
        addr: IpNet,
    },
    /// Add a static route.
    AddRoute(WantRoute),
    /// Remove a static route walden added earlier.
    DelRoute {
        /// The route as observed.
        route: ObservedRoute,
        /// Name of its output interface, for messages.
        dev: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Delete { link } => write!(f, "delete {link}"),
            Op::SetDown { link } => write!(f, "set {link} down"),
            Op::Rename { from, to } => write!(f, "rename {from} to {to}"),
            Op::SetMaster {
                link,
                master: Some(m),
            } => write!(f, "enslave {link} to {m}"),
            Op::SetMaster { link, master: None } => write!(f, "release {link}"),
            Op::SetMtu { link, mtu } => write!(f, "set mtu {mtu} on {link}"),
            Op::CreateBond { name, spec } => {
                write!(f, "create bond {name} ({})", spec.mode.as_str())
            }
            Op::CreateBridge { name, spec } => write!(
                f,
                "create bridge {name} (stp {}, vlan_filtering {})",
                on(spec.stp),
                on(spec.vlan_filtering)
            ),
            Op::SetBridge {
                name,
                stp,
                vlan_filtering,
            } => {
                write!(f, "set bridge {name}")?;
                if let Some(s) = stp {
                    write!(f, " stp {}", on(*s))?;
                }
                if let Some(v) = vlan_filtering {
                    write!(f, " vlan_filtering {}", on(*v))?;
                }
                Ok(())
            }
            Op::CreateVlan { name, parent, id } => {
                write!(f, "create vlan {name} (id {id} on {parent})")
            }
            Op::AddBridgeVlan {
                link,
                vlan,
                bridge_self,
            } => write!(
                f,
                "add bridge vlan {}{}{} on {link}{}",
                vlan.vid,
                if vlan.pvid { " pvid" } else { "" },
                if vlan.untagged { " untagged" } else { "" },
                if *bridge_self { " self" } else { "" }
            ),
            Op::DelBridgeVlan {
                link,
                vid,
                bridge_self,
            } => {
                write!(
                    f,
                    "remove bridge vlan {vid} from {link}{}",
                    if *bridge_self { " self" } else { "" }
                )
            }
            Op::SetUp { link } => write!(f, "set {link} up"),
            Op::AddAddress { link, addr } => write!(f, "add address {addr} to {link}"),
            Op::DelAddress { link, addr } => write!(f, "remove address {addr} from {link}"),
            Op::AddRoute(r) => {
                write!(f, "add route {}", r.dst)?;
                if let Some(via) = r.via {
                    write!(f, " via {via}")?;
                }
                if let Some(dev) = &r.dev {
                    write!(f, " dev {dev}")?;
                }
                if let Some(m) = r.metric {
                    write!(f, " metric {m}")?;
                }
                Ok(())
            }
            Op::DelRoute { route, dev } => {
                write!(f, "remove route {}", route.dst)?;
                if let Some(via) = route.via {
                    write!(f, " via {via}")?;
                }
                write!(f, " dev {dev}")
            }
        }
    }
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
