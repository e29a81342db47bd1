//! Test support: a model of the kernel's behaviour for each [`Op`], so
//! planner tests can apply a plan to an [`Observed`] and plan again
//! (idempotence, convergence). It follows the kernel where the planner
//! depends on it: bonds enslave only links that are down and close them
//! on release; a port joining a bridge gets the default PVID 1; taking a
//! link down drops its routes and IPv6 addresses; deleting a link takes
//! its VLANs along. The privileged tests check the same against the
//! real kernel.

use super::desired::DEFAULT_PVID;
use super::observed::*;
use super::plan::{Op, Plan};
use crate::config::{LacpRate, MacAddr};
use std::net::IpAddr;

/// Apply `plan` to `state`, panicking where the kernel would refuse.
pub fn run(state: &mut Observed, plan: &Plan) {
    for op in &plan.ops {
        step(state, op);
    }
}

fn idx(s: &Observed, name: &str, op: &Op) -> u32 {
    s.by_name(name)
        .unwrap_or_else(|| panic!("{op}: no link {name} in {:?}", names(s)))
        .index
}

fn names(s: &Observed) -> Vec<String> {
    s.links.iter().map(|l| l.name.clone()).collect()
}

fn link(s: &mut Observed, i: u32) -> &mut ObservedLink {
    s.links
        .iter_mut()
        .find(|l| l.index == i)
        .expect("index exists")
}

fn down(s: &mut Observed, i: u32) {
    let l = link(s, i);
    if l.up {
        l.up = false;
        s.routes.retain(|r| r.oif != Some(i));
        s.addresses
            .retain(|a| !(a.index == i && a.net.addr.is_ipv6()));
    }
}

fn create<'a>(s: &'a mut Observed, name: &str, kind: LinkKind) -> &'a mut ObservedLink {
    let index = s.links.iter().map(|l| l.index).max().unwrap_or(0) + 1;
    let mut l = ObservedLink::new(index, name, kind);
    l.alias = Some(MARK.into());
    l.mac = Some(MacAddr([0x0a, 0, 0, 0, 0, index as u8]));
    s.links.push(l);
    s.links.last_mut().expect("just pushed")
}

fn step(s: &mut Observed, op: &Op) {
    match op {
        Op::Delete { link: name } => {
            let i = idx(s, name, op);
            let mut doomed = vec![i];
            doomed.extend(
                s.links
                    .iter()
                    .filter(|l| l.vlan.is_some_and(|v| v.parent == i))
                    .map(|l| l.index),
            );
            let is_bond = s.by_index(i).is_some_and(|l| l.kind == LinkKind::Bond);
            for l in s.links.iter_mut().filter(|l| l.master == Some(i)) {
                l.master = None;
                l.bridge_vlans.clear();
                if is_bond {
                    l.up = false;
                }
            }
            s.links.retain(|l| !doomed.contains(&l.index));
            s.addresses.retain(|a| !doomed.contains(&a.index));
            s.routes
                .retain(|r| r.oif.is_none_or(|o| !doomed.contains(&o)));
        }
        Op::SetDown { link: name } => {
            let i = idx(s, name, op);
            down(s, i);
        }
        Op::SetUp { link: name } => {
            let i = idx(s, name, op);
            link(s, i).up = true;
        }
        Op::Rename { from, to } => {
            let i = idx(s, from, op);
            assert!(s.by_name(to).is_none(), "{op}: name taken");
            let l = link(s, i);
            assert!(!l.up, "{op}: the kernel renames only links that are down");
            l.name = to.clone();
        }
        Op::SetMaster { link: name, master } => {
            let i = idx(s, name, op);
            let old = s.by_index(i).and_then(|l| l.master);
            if let Some(old) = old {
                if s.by_index(old).is_some_and(|m| m.kind == LinkKind::Bond) {
                    down(s, i);
                }
            }
            let new = master.as_ref().map(|m| idx(s, m, op));
            let new_kind = new.and_then(|m| s.by_index(m)).map(|m| m.kind.clone());
            let new_mtu = new.and_then(|m| s.by_index(m)).map_or(0, |m| m.mtu);
            let l = link(s, i);
            l.master = new;
            l.bridge_vlans.clear();
            match new_kind {
                Some(LinkKind::Bond) => {
                    assert!(!l.up, "{op}: bonds enslave only links that are down");
                    l.perm_mac = l.perm_mac.or(l.mac);
                    l.mtu = new_mtu;
                }
                Some(LinkKind::Bridge) => l.bridge_vlans = vec![PortVlan::native(DEFAULT_PVID)],
                Some(k) => panic!("{op}: master is a {k:?}"),
                None => {}
            }
        }
        Op::SetMtu { link: name, mtu } => {
            let i = idx(s, name, op);
            let is_bond = s.by_index(i).is_some_and(|l| l.kind == LinkKind::Bond);
            link(s, i).mtu = *mtu;
            // A bond passes its MTU on to its members.
            for l in s
                .links
                .iter_mut()
                .filter(|l| is_bond && l.master == Some(i))
            {
                l.mtu = *mtu;
            }
        }
        Op::CreateBond { name, spec } => {
            assert!(s.by_name(name).is_none(), "{op}: exists");
            let l = create(s, name, LinkKind::Bond);
            l.bond = Some(ObservedBond {
                mode: spec.mode,
                lacp_rate: Some(spec.lacp_rate.unwrap_or(LacpRate::Slow)),
                hash_policy: Some(spec.hash_policy.unwrap_or("layer2")),
                miimon_ms: spec.miimon_ms,
            });
        }
        Op::CreateBridge { name, spec } => {
            assert!(s.by_name(name).is_none(), "{op}: exists");
            let l = create(s, name, LinkKind::Bridge);
            l.bridge = Some(ObservedBridge {
                stp: spec.stp,
                vlan_filtering: spec.vlan_filtering,
            });
            l.bridge_vlans = vec![PortVlan::native(DEFAULT_PVID)];
        }
        Op::SetBridge {
            name,
            stp,
            vlan_filtering,
        } => {
            let i = idx(s, name, op);
            let b = link(s, i).bridge.as_mut().expect("a bridge");
            if let Some(v) = stp {
                b.stp = *v;
            }
            if let Some(v) = vlan_filtering {
                b.vlan_filtering = *v;
            }
        }
        Op::CreateVlan { name, parent, id } => {
            assert!(s.by_name(name).is_none(), "{op}: exists");
            let p = idx(s, parent, op);
            let l = create(s, name, LinkKind::Vlan);
            l.vlan = Some(ObservedVlan { id: *id, parent: p });
        }
        Op::AddBridgeVlan {
            link: name, vlan, ..
        } => {
            let i = idx(s, name, op);
            let l = link(s, i);
            if vlan.pvid {
                l.bridge_vlans.iter_mut().for_each(|v| v.pvid = false);
            }
            l.bridge_vlans.retain(|v| v.vid != vlan.vid);
            l.bridge_vlans.push(*vlan);
            l.bridge_vlans.sort();
        }
        Op::DelBridgeVlan {
            link: name, vid, ..
        } => {
            let i = idx(s, name, op);
            let l = link(s, i);
            assert!(
                l.bridge_vlans.iter().any(|v| v.vid == *vid),
                "{op}: no such entry"
            );
            l.bridge_vlans.retain(|v| v.vid != *vid);
        }
        Op::AddAddress { link: name, addr } => {
            let i = idx(s, name, op);
            assert!(
                !s.addresses.iter().any(|a| a.index == i && a.net == *addr),
                "{op}: EEXIST"
            );
            s.addresses.push(ObservedAddress {
                index: i,
                net: *addr,
                permanent: true,
            });
        }
        Op::DelAddress { link: name, addr } => {
            let i = idx(s, name, op);
            let before = s.addresses.len();
            s.addresses.retain(|a| !(a.index == i && a.net == *addr));
            assert_eq!(before, s.addresses.len() + 1, "{op}: no such address");
        }
        Op::AddRoute(r) => {
            let oif = match &r.dev {
                Some(d) => idx(s, d, op),
                None => {
                    let via = r.via.expect("a route has via or dev");
                    s.addresses
                        .iter()
                        .find(|a| contains(a.net.addr, a.net.prefix, via))
                        .unwrap_or_else(|| panic!("{op}: gateway unreachable"))
                        .index
                }
            };
            s.routes.push(ObservedRoute {
                dst: r.dst,
                via: r.via,
                oif: Some(oif),
                metric: r.effective_metric(),
                protocol: RTPROT_STATIC,
            });
        }
        Op::DelRoute { route, .. } => {
            let before = s.routes.len();
            s.routes.retain(|r| r != route);
            assert_eq!(before, s.routes.len() + 1, "{op}: no such route");
        }
    }
}

fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}
