//! The pure planner: desired config + observed kernel state -> an ordered
//! list of operations. Applying the plan and planning again gives an empty
//! plan; only what differs is touched; links walden neither created nor
//! manages are left alone.
//!
//! Order: delete walden's stale links (VLANs first) -> rename NICs ->
//! release links from wrong masters -> NIC MTUs -> bonds and their
//! members (members go down to be enslaved) -> bridges, ports, bridge
//! MTU, port and bridge VLANs -> VLAN interfaces -> up/down -> stale
//! routes and addresses out -> new addresses -> new routes.

use super::desired::{is_nic, resolve, BondSpec, Desired, Want, WantKind, DEFAULT_PVID};
use super::error::NetError;
use super::observed::{LinkKind, Observed, ObservedLink, ObservedRoute, PortVlan, RTPROT_STATIC};
pub use super::op::Op;
use crate::config::{IpNet, NetworkConfig};
use std::collections::{HashMap, HashSet};

/// An ordered list of operations; empty when the kernel already matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The operations, in the order they must run.
    pub ops: Vec<Op>,
}

impl Plan {
    /// True when nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Plan the changes that bring `observed` to `config`.
pub fn plan(config: &NetworkConfig, observed: &Observed) -> Result<Plan, NetError> {
    let desired = resolve(config, observed)?;
    let mut p = Planner {
        observed,
        desired: &desired,
        ops: Vec::new(),
        kept: Vec::new(),
        gone: HashSet::new(),
        bounced: HashSet::new(),
        created: HashSet::new(),
        aside: HashMap::new(),
    };
    p.match_existing()?;
    p.deletions();
    p.renames()?;
    p.releases();
    p.nic_mtus();
    p.bonds();
    p.bridges();
    p.vlans();
    p.up_down();
    p.layer3()?;
    Ok(Plan { ops: p.ops })
}

struct Planner<'a> {
    observed: &'a Observed,
    desired: &'a Desired,
    ops: Vec<Op>,
    /// For each want (same index), the kernel link it is now, if kept.
    kept: Vec<Option<&'a ObservedLink>>,
    /// Kernel links that the plan deletes (or that go with them).
    gone: HashSet<u32>,
    /// Kernel links the plan takes down on the way (they lose routes and
    /// IPv6 addresses).
    bounced: HashSet<u32>,
    /// Wants the plan creates.
    created: HashSet<String>,
    /// NICs the config no longer has that held a name the config now
    /// gives another NIC: moved aside to this name (`enx` + MAC).
    aside: HashMap<u32, String>,
}

impl<'a> Planner<'a> {
    /// The kept kernel link of the want called `name`.
    fn existing(&self, name: &str) -> Option<&'a ObservedLink> {
        let i = self.desired.wants.iter().position(|w| w.name == name)?;
        self.kept.get(i).copied().flatten()
    }

    /// Decide for every want whether a kernel link already is it.
    fn match_existing(&mut self) -> Result<(), NetError> {
        let desired = self.desired;
        for w in &desired.wants {
            let found = match &w.kind {
                WantKind::Nic { index } => self.observed.by_index(*index),
                _ => self
                    .observed
                    .by_name(&w.name)
                    .filter(|l| !is_nic(l) || !self.is_claimed_nic(l)),
            };
            let kept = match (found, &w.kind) {
                (None, _) => None,
                (Some(l), WantKind::Nic { .. }) => Some(l),
                (Some(l), kind) => {
                    if self.compatible(l, kind) {
                        Some(l)
                    } else if l.is_ours() {
                        None
                    } else {
                        return Err(NetError::KindConflict {
                            name: w.name.clone(),
                            found: describe(l),
                            wanted: describe_want(w),
                        });
                    }
                }
            };
            self.kept.push(kept);
        }
        Ok(())
    }

    fn is_claimed_nic(&self, l: &ObservedLink) -> bool {
        self.desired
            .wants
            .iter()
            .any(|w| w.kind == WantKind::Nic { index: l.index })
    }

    fn compatible(&self, l: &ObservedLink, kind: &WantKind) -> bool {
        match kind {
            WantKind::Nic { .. } => true,
            WantKind::Bond(spec) => {
                l.kind == LinkKind::Bond && l.bond.is_some_and(|b| bond_matches(spec, &b))
            }
            WantKind::Bridge(..) => l.kind == LinkKind::Bridge,
            WantKind::Vlan { parent, id } => {
                l.kind == LinkKind::Vlan
                    && l.vlan.is_some_and(|v| {
                        v.id == *id && self.existing(parent).is_some_and(|p| p.index == v.parent)
                    })
            }
        }
    }

    /// Delete walden's links that are no longer wanted as they are; VLANs
    /// first, then bridges, then bonds (the kernel removes VLANs with
    /// their parent).
    fn deletions(&mut self) {
        let kept: HashSet<u32> = self.kept.iter().flatten().map(|l| l.index).collect();
        let mut doomed: Vec<&ObservedLink> = self
            .observed
            .links
            .iter()
            .filter(|l| l.is_ours() && !kept.contains(&l.index))
            .collect();
        doomed.sort_by_key(|l| match l.kind {
            LinkKind::Vlan => 0,
            LinkKind::Bridge => 1,
            LinkKind::Bond => 2,
            _ => 3,
        });
        for l in doomed {
            self.ops.push(Op::Delete {
                link: l.name.clone(),
            });
            self.gone.insert(l.index);
        }
        // Links stacked on deleted ones go with them; members of deleted
        // bonds are released and closed by the kernel.
        loop {
            let more: Vec<u32> = self
                .observed
                .links
                .iter()
                .filter(|l| !self.gone.contains(&l.index))
                .filter(|l| l.vlan.is_some_and(|v| self.gone.contains(&v.parent)))
                .map(|l| l.index)
                .collect();
            if more.is_empty() {
                break;
            }
            self.gone.extend(more);
        }
        for l in &self.observed.links {
            if let Some(m) = l.master.and_then(|m| self.observed.by_index(m)) {
                if self.gone.contains(&m.index) && m.kind == LinkKind::Bond {
                    self.bounced.insert(l.index);
                }
            }
        }
    }

    /// Rename NICs found by MAC to their configured names.
    fn renames(&mut self) -> Result<(), NetError> {
        let mut renames: Vec<(&ObservedLink, &str)> = Vec::new();
        for (w, kept) in self.desired.wants.iter().zip(&self.kept) {
            if let (WantKind::Nic { .. }, Some(l)) = (&w.kind, kept) {
                if l.name != w.name {
                    renames.push((l, &w.name));
                }
            }
        }
        let mut swap = false;
        for (l, to) in &renames {
            let holder = self
                .observed
                .by_name(to)
                .filter(|h| h.index != l.index && !self.gone.contains(&h.index));
            if let Some(h) = holder {
                if renames.iter().any(|(r, _)| r.index == h.index) {
                    swap = true;
                } else if h.kind == LinkKind::Device && !self.is_claimed_nic(h) {
                    // A NIC the config no longer names (replaced, or the
                    // name moved to another NIC): out of the way, to a
                    // name of its own that says which NIC it is.
                    let name = aside_name(h);
                    if h.up {
                        self.ops.push(Op::SetDown {
                            link: h.name.clone(),
                        });
                        self.bounced.insert(h.index);
                    }
                    self.ops.push(Op::Rename {
                        from: h.name.clone(),
                        to: name.clone(),
                    });
                    self.aside.insert(h.index, name);
                } else {
                    return Err(NetError::NameTaken {
                        from: l.name.clone(),
                        to: to.to_string(),
                        holder: describe(h),
                    });
                }
            }
        }
        for (l, _) in &renames {
            if l.up {
                self.ops.push(Op::SetDown {
                    link: l.name.clone(),
                });
                self.bounced.insert(l.index);
            }
        }
        if swap {
            // Names swap between NICs: move every renamed NIC aside first.
            for (l, _) in &renames {
                self.ops.push(Op::Rename {
                    from: l.name.clone(),
                    to: temp_name(l.index),
                });
            }
        }
        for (l, to) in &renames {
            let from = if swap {
                temp_name(l.index)
            } else {
                l.name.clone()
            };
            self.ops.push(Op::Rename {
                from,
                to: to.to_string(),
            });
        }
        Ok(())
    }

    /// The current master of a kept link, by index, unless deleted.
    fn master_of(&self, l: &ObservedLink) -> Option<u32> {
        l.master.filter(|m| !self.gone.contains(m))
    }

    /// True when the want's link is already enslaved to its wanted master.
    fn in_master(&self, w: &Want) -> bool {
        let Some(l) = self.existing(&w.name) else {
            return false;
        };
        match (self.master_of(l), &w.master) {
            (None, None) => true,
            (Some(m), Some(want)) => {
                !self.created.contains(want) && self.existing(want).is_some_and(|ml| ml.index == m)
            }
            _ => false,
        }
    }

    /// Release managed links whose config puts them in no bond or bridge.
    fn releases(&mut self) {
        // Members of walden's bonds and bridges that the config no longer
        // puts there (a NIC taken out of the config would otherwise stay a
        // port of the bridge, carrying its traffic).
        let kept: HashSet<u32> = self.kept.iter().flatten().map(|l| l.index).collect();
        let managed_masters: HashSet<u32> = self
            .kept
            .iter()
            .flatten()
            .filter(|l| matches!(l.kind, LinkKind::Bond | LinkKind::Bridge))
            .map(|l| l.index)
            .collect();
        for l in &self.observed.links {
            if kept.contains(&l.index) || self.gone.contains(&l.index) {
                continue;
            }
            let Some(m) = self.master_of(l) else { continue };
            // Guests' taps (tun) and anything else not made from the
            // config are libvirt's or someone else's: left alone.
            let config_kind = matches!(
                l.kind,
                LinkKind::Device | LinkKind::Veth | LinkKind::Bond | LinkKind::Vlan
            );
            if !managed_masters.contains(&m) || !config_kind {
                continue;
            }
            let name = self
                .aside
                .get(&l.index)
                .cloned()
                .unwrap_or_else(|| l.name.clone());
            self.ops.push(Op::SetMaster {
                link: name,
                master: None,
            });
        }
        for (w, kept) in self.desired.wants.iter().zip(&self.kept) {
            let Some(l) = kept else { continue };
            if w.master.is_none() {
                if let Some(m) = self.master_of(l) {
                    self.ops.push(Op::SetMaster {
                        link: w.name.clone(),
                        master: None,
                    });
                    if self
                        .observed
                        .by_index(m)
                        .is_some_and(|m| m.kind == LinkKind::Bond)
                    {
                        self.bounced.insert(l.index);
                    }
                }
            }
        }
    }

    fn set_mtu(&mut self, w: &Want) {
        let Some(mtu) = w.mtu else { return };
        let current = match self.existing(&w.name) {
            Some(l) if !self.created.contains(&w.name) => l.mtu,
            _ => 1500,
        };
        if current != mtu {
            self.ops.push(Op::SetMtu {
                link: w.name.clone(),
                mtu,
            });
        }
    }

    fn nic_mtus(&mut self) {
        for w in &self.desired.wants {
            if matches!(w.kind, WantKind::Nic { .. }) {
                self.set_mtu(w);
            }
        }
    }

    fn bonds(&mut self) {
        for w in &self.desired.wants {
            let WantKind::Bond(spec) = w.kind else {
                continue;
            };
            if self.existing(&w.name).is_none() {
                self.ops.push(Op::CreateBond {
                    name: w.name.clone(),
                    spec,
                });
                self.created.insert(w.name.clone());
            }
            self.set_mtu(w);
            for m in self
                .desired
                .wants
                .iter()
                .filter(|m| m.master.as_ref() == Some(&w.name))
            {
                if self.in_master(m) {
                    continue;
                }
                if let Some(l) = self.existing(&m.name) {
                    // The kernel enslaves only links that are down.
                    if l.up && !self.bounced.contains(&l.index) {
                        self.ops.push(Op::SetDown {
                            link: m.name.clone(),
                        });
                    }
                    self.bounced.insert(l.index);
                }
                self.ops.push(Op::SetMaster {
                    link: m.name.clone(),
                    master: Some(w.name.clone()),
                });
            }
        }
    }

    fn bridges(&mut self) {
        for w in &self.desired.wants {
            let WantKind::Bridge(spec, own) = &w.kind else {
                continue;
            };
            match self.existing(&w.name) {
                None => {
                    self.ops.push(Op::CreateBridge {
                        name: w.name.clone(),
                        spec: *spec,
                    });
                    self.created.insert(w.name.clone());
                }
                Some(l) => {
                    let (stp, vf) = l
                        .bridge
                        .map_or((false, false), |b| (b.stp, b.vlan_filtering));
                    if stp != spec.stp || vf != spec.vlan_filtering {
                        self.ops.push(Op::SetBridge {
                            name: w.name.clone(),
                            stp: (stp != spec.stp).then_some(spec.stp),
                            vlan_filtering: (vf != spec.vlan_filtering)
                                .then_some(spec.vlan_filtering),
                        });
                    }
                }
            }
            let ports: Vec<&Want> = self
                .desired
                .wants
                .iter()
                .filter(|p| p.master.as_ref() == Some(&w.name))
                .collect();
            let mut joined = HashSet::new();
            for p in &ports {
                if !self.in_master(p) {
                    self.ops.push(Op::SetMaster {
                        link: p.name.clone(),
                        master: Some(w.name.clone()),
                    });
                    joined.insert(p.name.clone());
                }
            }
            self.set_mtu(w);
            if !spec.vlan_filtering {
                continue;
            }
            for p in &ports {
                let Some(want) = &p.port_vlans else { continue };
                let current = match self.existing(&p.name) {
                    Some(l) if !joined.contains(&p.name) => l.bridge_vlans.clone(),
                    _ => vec![PortVlan::native(DEFAULT_PVID)],
                };
                self.vlan_diff(&p.name, &current, want, false);
            }
            let current = match self.existing(&w.name) {
                Some(l) if !self.created.contains(&w.name) => l.bridge_vlans.clone(),
                _ => vec![PortVlan::native(DEFAULT_PVID)],
            };
            self.vlan_diff(&w.name, &current, own, true);
        }
    }

    fn vlan_diff(
        &mut self,
        link: &str,
        current: &[PortVlan],
        want: &[PortVlan],
        bridge_self: bool,
    ) {
        for v in want {
            if !current.contains(v) {
                self.ops.push(Op::AddBridgeVlan {
                    link: link.to_string(),
                    vlan: *v,
                    bridge_self,
                });
            }
        }
        for c in current {
            if !want.iter().any(|v| v.vid == c.vid) {
                self.ops.push(Op::DelBridgeVlan {
                    link: link.to_string(),
                    vid: c.vid,
                    bridge_self,
                });
            }
        }
    }

    fn vlans(&mut self) {
        for w in &self.desired.wants {
            let WantKind::Vlan { parent, id } = &w.kind else {
                continue;
            };
            if self.existing(&w.name).is_none() {
                self.ops.push(Op::CreateVlan {
                    name: w.name.clone(),
                    parent: parent.clone(),
                    id: *id,
                });
                self.created.insert(w.name.clone());
            }
            self.set_mtu(w);
        }
    }

    /// A link is "fresh" when it starts this plan's end state down with no
    /// routes or IPv6 addresses: created, or taken down on the way.
    fn fresh(&self, w: &Want) -> bool {
        match self.existing(&w.name) {
            None => true,
            Some(l) => self.created.contains(&w.name) || self.bounced.contains(&l.index),
        }
    }

    fn up_down(&mut self) {
        // Loopback is always up: 127.0.0.1 and ::1 serve sshd, libvirt and
        // local tools whatever host.toml says (the kernel starts it down).
        for l in &self.observed.links {
            if l.kind == LinkKind::Other("loopback".into()) && !l.up {
                self.ops.push(Op::SetUp {
                    link: l.name.clone(),
                });
            }
        }
        for w in &self.desired.wants {
            let is_up = !self.fresh(w) && self.existing(&w.name).is_some_and(|l| l.up);
            if w.up && !is_up {
                self.ops.push(Op::SetUp {
                    link: w.name.clone(),
                });
            } else if !w.up && is_up {
                self.ops.push(Op::SetDown {
                    link: w.name.clone(),
                });
            }
        }
    }

    /// Routes and addresses: stale ones out (routes first, while their
    /// gateways are reachable), then new addresses, then new routes.
    fn layer3(&mut self) -> Result<(), NetError> {
        let index_of = |name: &str| self.existing(name).map(|l| l.index);
        // Routes that survive until now.
        let live_routes: Vec<&ObservedRoute> = self
            .observed
            .routes
            .iter()
            .filter(|r| {
                r.oif
                    .is_none_or(|o| !self.gone.contains(&o) && !self.bounced.contains(&o))
            })
            .collect();
        let mut add_routes = Vec::new();
        let mut matched: HashSet<usize> = HashSet::new();
        for want in &self.desired.routes {
            let oif = want.dev.as_deref().map(index_of);
            let hit = live_routes.iter().position(|r| {
                r.dst == want.dst
                    && r.via == want.via
                    && r.metric == want.effective_metric()
                    && match oif {
                        None => true,
                        Some(i) => i.is_some() && r.oif == i,
                    }
            });
            match hit {
                Some(i) => {
                    matched.insert(i);
                }
                None => add_routes.push(Op::AddRoute(want.clone())),
            }
        }
        for (i, r) in live_routes.iter().enumerate() {
            if r.protocol == RTPROT_STATIC && !matched.contains(&i) {
                let dev = r
                    .oif
                    .and_then(|o| self.observed.by_index(o))
                    .map_or_else(|| "?".to_string(), |l| l.name.clone());
                self.ops.push(Op::DelRoute { route: **r, dev });
            }
        }
        // Addresses.
        let mut add_addrs = Vec::new();
        for w in &self.desired.wants {
            let current: Vec<IpNet> = match self.existing(&w.name) {
                Some(l) if !self.created.contains(&w.name) => self
                    .observed
                    .addresses_of(l.index)
                    .filter(|a| a.is_static())
                    .filter(|a| !(self.bounced.contains(&l.index) && a.net.addr.is_ipv6()))
                    .map(|a| a.net)
                    .collect(),
                _ => Vec::new(),
            };
            for c in &current {
                if !w.addresses.contains(c) {
                    self.ops.push(Op::DelAddress {
                        link: w.name.clone(),
                        addr: *c,
                    });
                }
            }
            for a in &w.addresses {
                if current.contains(a) {
                    continue;
                }
                self.check_conflict(w, a)?;
                add_addrs.push(Op::AddAddress {
                    link: w.name.clone(),
                    addr: *a,
                });
            }
        }
        self.ops.extend(add_addrs);
        self.ops.extend(add_routes);
        Ok(())
    }

    /// An address wanted on `w` must not be on another interface that keeps it.
    fn check_conflict(&self, w: &Want, a: &IpNet) -> Result<(), NetError> {
        let own = self.existing(&w.name).map(|l| l.index);
        for o in &self.observed.addresses {
            if o.net.addr != a.addr || Some(o.index) == own || self.gone.contains(&o.index) {
                continue;
            }
            let Some(holder) = self.observed.by_index(o.index) else {
                continue;
            };
            let managed = self
                .desired
                .wants
                .iter()
                .zip(&self.kept)
                .find(|(_, k)| k.is_some_and(|k| k.index == o.index))
                .map(|(w, _)| w);
            let keeps = match managed {
                // A managed interface loses addresses the config does not give it.
                Some(m) => m.addresses.iter().any(|x| x.addr == a.addr) || !o.is_static(),
                None => true,
            };
            if keeps {
                return Err(NetError::AddressConflict {
                    addr: *a,
                    wanted_on: w.name.clone(),
                    found_on: holder.name.clone(),
                });
            }
        }
        Ok(())
    }
}

fn bond_matches(spec: &BondSpec, b: &super::observed::ObservedBond) -> bool {
    use crate::config::{BondMode, LacpRate};
    let rate = |r: Option<LacpRate>| r.unwrap_or(LacpRate::Slow);
    spec.mode == b.mode
        && (spec.mode != BondMode::Lacp || rate(spec.lacp_rate) == rate(b.lacp_rate))
        && spec.hash_policy.unwrap_or("layer2") == b.hash_policy.unwrap_or("layer2")
        && spec.miimon_ms == b.miimon_ms
}

/// A temporary name for a NIC while names swap ("wtmp7").
/// The name a NIC the config no longer has is moved aside to: `enx` and
/// its permanent MAC without colons (systemd's MAC-based name, 15 bytes),
/// or `wold<index>` without a MAC.
fn aside_name(l: &ObservedLink) -> String {
    match l.perm_mac.or(l.mac) {
        Some(mac) => format!(
            "enx{}",
            mac.to_string().replace(':', "").to_ascii_lowercase()
        ),
        None => format!("wold{}", l.index),
    }
}

fn temp_name(index: u32) -> String {
    format!("wtmp{index}")
}

fn describe(l: &ObservedLink) -> String {
    let mut s = format!("{} ({}", l.name, l.kind.as_str());
    if let Some(b) = &l.bond {
        s.push_str(&format!(", mode {}", b.mode.as_str()));
    }
    if let Some(v) = &l.vlan {
        s.push_str(&format!(", id {}", v.id));
    }
    if let Some(mac) = l.hw_mac() {
        s.push_str(&format!(", mac {mac}"));
    }
    s.push(')');
    s
}

fn describe_want(w: &Want) -> String {
    match &w.kind {
        WantKind::Bond(spec) => format!("bond (mode {})", spec.mode.as_str()),
        WantKind::Vlan { parent, id } => format!("vlan (id {id} on {parent})"),
        _ => w.kind_name().to_string(),
    }
}
