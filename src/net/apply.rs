//! The thin applier: run a [`Plan`]'s operations over netlink, in order,
//! stopping at the first failure (the message names the operation).

use super::desired::BondSpec;
use super::error::NetError;
use super::observed::{PortVlan, MARK};
use super::plan::Op;
use crate::config::{BondMode, LacpRate};
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    BondLacpRate, BondMode as NlBondMode, BondXmitHashPolicy, BridgeStpState, BridgeVlanInfoFlags,
    InfoKind, LinkMessage,
};
use netlink_packet_route::route::{RouteProtocol, RouteScope};
use netlink_packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBond, LinkBridge, LinkBridgeVlan, LinkMessageBuilder, LinkUnspec, LinkVlan,
    RouteMessageBuilder,
};
use std::net::IpAddr;

/// The kernel index of the link called `name`.
async fn index(handle: &Handle, name: &str, what: &Op) -> Result<u32, NetError> {
    let mut found = handle.link().get().match_name(name.to_string()).execute();
    match found.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        // ENODEV: the link is not there.
        Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => Err(NetError::Vanished {
            what: what.to_string(),
            name: name.to_string(),
        }),
        Err(source) => Err(NetError::Netlink {
            what: what.to_string(),
            source,
        }),
    }
}

async fn set(handle: &Handle, msg: LinkMessage) -> Result<(), rtnetlink::Error> {
    handle.link().set(msg).execute().await
}

/// Run one operation.
pub async fn run(handle: &Handle, op: &Op) -> Result<(), NetError> {
    let fail = |source| NetError::Netlink {
        what: op.to_string(),
        source,
    };
    match op {
        Op::Delete { link } => {
            let i = index(handle, link, op).await?;
            handle.link().del(i).execute().await.map_err(fail)
        }
        Op::SetDown { link } => {
            let i = index(handle, link, op).await?;
            set(handle, LinkUnspec::new_with_index(i).down().build())
                .await
                .map_err(fail)
        }
        Op::SetUp { link } => {
            let i = index(handle, link, op).await?;
            set(handle, LinkUnspec::new_with_index(i).up().build())
                .await
                .map_err(fail)
        }
        Op::Rename { from, to } => {
            let i = index(handle, from, op).await?;
            set(
                handle,
                LinkUnspec::new_with_index(i).name(to.clone()).build(),
            )
            .await
            .map_err(fail)
        }
        Op::SetMtu { link, mtu } => {
            let i = index(handle, link, op).await?;
            set(handle, LinkUnspec::new_with_index(i).mtu(*mtu).build())
                .await
                .map_err(fail)
        }
        Op::SetMaster { link, master } => {
            let i = index(handle, link, op).await?;
            let msg = match master {
                Some(m) => LinkUnspec::new_with_index(i).controller(index(handle, m, op).await?),
                None => LinkUnspec::new_with_index(i).nocontroller(),
            };
            set(handle, msg.build()).await.map_err(fail)
        }
        Op::CreateBond { name, spec } => {
            handle
                .link()
                .add(bond_message(name, spec))
                .execute()
                .await
                .map_err(fail)?;
            mark(handle, name, op).await
        }
        Op::CreateBridge { name, spec } => {
            let mut b = LinkMessageBuilder::<LinkBridge>::new(name).stp_state(stp(spec.stp));
            // Kernels built without VLAN filtering refuse the attribute
            // even when it says "off"; off is the default anyway.
            if spec.vlan_filtering {
                b = b.vlan_filtering(true);
            }
            handle.link().add(b.build()).execute().await.map_err(fail)?;
            mark(handle, name, op).await
        }
        Op::SetBridge {
            name,
            stp: s,
            vlan_filtering,
        } => {
            let i = index(handle, name, op).await?;
            // By index and without IFLA_IFNAME: with a name, the kernel
            // takes the message as a rename too, and older kernels refuse
            // any rename of an up device with EBUSY, even to its own name
            // (Debian's 6.1: "set bridge br0 stp off failed").
            let mut b =
                LinkMessageBuilder::<LinkBridge>::new_with_info_kind(InfoKind::Bridge).index(i);
            if let Some(s) = s {
                b = b.stp_state(stp(*s));
            }
            if let Some(v) = vlan_filtering {
                b = b.vlan_filtering(*v);
            }
            handle
                .link()
                .change(b.build())
                .execute()
                .await
                .map_err(fail)
        }
        Op::CreateVlan { name, parent, id } => {
            let p = index(handle, parent, op).await?;
            handle
                .link()
                .add(LinkVlan::new(name, p, *id).build())
                .execute()
                .await
                .map_err(fail)?;
            mark(handle, name, op).await
        }
        Op::AddBridgeVlan {
            link,
            vlan,
            bridge_self,
        } => {
            let i = index(handle, link, op).await?;
            let mut b = LinkBridgeVlan::new(i).vlan(vlan.vid, vlan_flags(vlan));
            if *bridge_self {
                b = b.bridge_self();
            }
            set(handle, b.build()).await.map_err(fail)
        }
        Op::DelBridgeVlan {
            link,
            vid,
            bridge_self,
        } => {
            let i = index(handle, link, op).await?;
            let mut b = LinkBridgeVlan::new(i).vlan(*vid, BridgeVlanInfoFlags::empty());
            if *bridge_self {
                b = b.bridge_self();
            }
            handle
                .link()
                .del_with_message(b.build())
                .execute()
                .await
                .map_err(fail)
        }
        Op::AddAddress { link, addr } => {
            let i = index(handle, link, op).await?;
            handle
                .address()
                .add(i, addr.addr, addr.prefix)
                .execute()
                .await
                .map_err(fail)
        }
        Op::DelAddress { link, addr } => {
            let i = index(handle, link, op).await?;
            let mut msg = AddressMessage::default();
            msg.header.family = family(addr.addr);
            msg.header.prefix_len = addr.prefix;
            msg.header.index = i;
            msg.attributes.push(AddressAttribute::Local(addr.addr));
            if addr.addr.is_ipv6() {
                msg.attributes.push(AddressAttribute::Address(addr.addr));
            }
            handle.address().del(msg).execute().await.map_err(fail)
        }
        Op::AddRoute(r) => {
            let route_err = invalid(op);
            let mut b = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(r.dst.addr, r.dst.prefix)
                .map_err(&route_err)?;
            if let Some(via) = r.via {
                b = b.gateway(via).map_err(&route_err)?;
            } else if r.dst.addr.is_ipv4() {
                // A route straight out of a device reaches hosts on the link.
                b = b.scope(RouteScope::Link);
            }
            if let Some(dev) = &r.dev {
                b = b.output_interface(index(handle, dev, op).await?);
            }
            if let Some(m) = r.metric {
                b = b.priority(m);
            }
            handle.route().add(b.build()).execute().await.map_err(fail)
        }
        Op::DelRoute { route, .. } => {
            let route_err = invalid(op);
            let mut b = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(route.dst.addr, route.dst.prefix)
                .map_err(&route_err)?
                .protocol(RouteProtocol::Static)
                .priority(route.metric);
            if let Some(via) = route.via {
                b = b.gateway(via).map_err(&route_err)?;
            }
            if let Some(oif) = route.oif {
                b = b.output_interface(oif);
            }
            handle.route().del(b.build()).execute().await.map_err(fail)
        }
    }
}

/// Map a message-builder error to [`NetError::Invalid`] for `op`.
fn invalid<E: std::fmt::Display>(op: &Op) -> impl Fn(E) -> NetError + '_ {
    move |e| NetError::Invalid {
        what: op.to_string(),
        reason: e.to_string(),
    }
}

/// Put walden's mark on a link it just created.
async fn mark(handle: &Handle, name: &str, op: &Op) -> Result<(), NetError> {
    let i = index(handle, name, op).await?;
    set(handle, LinkUnspec::new_with_index(i).alias(MARK).build())
        .await
        .map_err(|source| NetError::Netlink {
            what: format!("mark {name} as walden's (interface alias)"),
            source,
        })
}

fn bond_message(name: &str, spec: &BondSpec) -> LinkMessage {
    let mode = match spec.mode {
        BondMode::BalanceRr => NlBondMode::BalanceRr,
        BondMode::ActiveBackup => NlBondMode::ActiveBackup,
        BondMode::BalanceXor => NlBondMode::BalanceXor,
        BondMode::Broadcast => NlBondMode::Broadcast,
        BondMode::Lacp => NlBondMode::Ieee8023Ad,
        BondMode::BalanceTlb => NlBondMode::BalanceTlb,
        BondMode::BalanceAlb => NlBondMode::BalanceAlb,
    };
    let mut b = LinkBond::new(name).mode(mode).miimon(spec.miimon_ms);
    if spec.mode == BondMode::Lacp {
        if let Some(rate) = spec.lacp_rate {
            b = b.ad_lacp_rate(match rate {
                LacpRate::Slow => BondLacpRate::Slow,
                LacpRate::Fast => BondLacpRate::Fast,
            });
        }
    }
    if let Some(p) = spec.hash_policy.and_then(hash_policy) {
        b = b.xmit_hash_policy(p);
    }
    b.build()
}

/// The netlink value of a transmit hash policy in kernel spelling.
fn hash_policy(name: &str) -> Option<BondXmitHashPolicy> {
    Some(match name {
        "layer2" => BondXmitHashPolicy::Layer2,
        "layer3+4" => BondXmitHashPolicy::Layer34,
        "layer2+3" => BondXmitHashPolicy::Layer23,
        "encap2+3" => BondXmitHashPolicy::Encap23,
        "encap3+4" => BondXmitHashPolicy::Encap34,
        "vlan+srcmac" => BondXmitHashPolicy::VlanSrcMac,
        _ => return None,
    })
}

fn stp(on: bool) -> BridgeStpState {
    if on {
        BridgeStpState::KernelStp
    } else {
        BridgeStpState::Disabled
    }
}

fn vlan_flags(v: &PortVlan) -> BridgeVlanInfoFlags {
    let mut f = BridgeVlanInfoFlags::empty();
    if v.pvid {
        f |= BridgeVlanInfoFlags::Pvid;
    }
    if v.untagged {
        f |= BridgeVlanInfoFlags::Untagged;
    }
    f
}

fn family(a: IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}
