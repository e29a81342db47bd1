//! Planner tests: every kind of object, ordering, idempotence (plan, apply
//! to the kernel model in [`super::sim`], plan again: nothing), minimal
//! change plans, unmanaged links left alone, and specific errors.

use super::observed::*;
use super::plan::{plan, Plan};
use super::{sim, NetError};
use crate::config::{IpNet, MacAddr, NetworkConfig};
use std::path::Path;

fn config(host: &str) -> NetworkConfig {
    let text = format!("schema = 1\nhostname = \"h\"\n{host}");
    match crate::config::from_strs(&text, &[]) {
        Ok(c) => c.host.network,
        Err(d) => panic!("test config is invalid: {d}"),
    }
}

fn example(name: &str) -> NetworkConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    crate::config::load(&dir)
        .expect("example loads")
        .host
        .network
}

fn mac(s: &str) -> MacAddr {
    s.parse().expect("test MAC")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test address")
}

/// A machine with loopback and the given NICs (name, MAC), all down.
fn machine(nics: &[(&str, &str)]) -> Observed {
    let mut lo = ObservedLink::new(1, "lo", LinkKind::Other("loopback".into()));
    lo.up = true;
    let mut links = vec![lo];
    for (i, (name, m)) in nics.iter().enumerate() {
        let mut l = ObservedLink::new(i as u32 + 2, name, LinkKind::Device);
        l.mac = Some(mac(m));
        l.perm_mac = Some(mac(m));
        links.push(l);
    }
    Observed {
        links,
        ..Default::default()
    }
}

fn texts(p: &Plan) -> Vec<String> {
    p.ops.iter().map(|o| o.to_string()).collect()
}

/// Position of the op whose text is `text`.
fn pos(p: &Plan, text: &str) -> usize {
    texts(p)
        .iter()
        .position(|t| t == text)
        .unwrap_or_else(|| panic!("no op {text:?} in {:#?}", texts(p)))
}

/// Plan, apply to the model, plan again: the second plan must be empty.
fn converge(config: &NetworkConfig, state: &mut Observed) -> Plan {
    let first = plan(config, state).expect("plan");
    sim::run(state, &first);
    let again = plan(config, state).expect("plan again");
    assert!(
        again.is_empty(),
        "not idempotent; second plan: {:#?}",
        texts(&again)
    );
    first
}

fn bonded_machine() -> Observed {
    machine(&[
        ("enp1s0", "3c:ec:ef:10:00:01"),
        ("enp2s0", "3c:ec:ef:10:00:02"),
    ])
}

#[test]
fn loopback_is_brought_up_even_with_no_network_config() {
    let mut state = machine(&[("enp0s2", "52:54:00:12:34:56")]);
    state.links[0].up = false;
    let p = converge(&config(""), &mut state);
    assert_eq!(texts(&p), ["set lo up"]);
}

#[test]
fn minimal_example_bridges_the_nic() {
    // The example finds its NIC by MAC and names it lan0.
    let mut state = machine(&[("enp0s2", "52:54:00:12:34:56")]);
    let p = converge(&example("minimal"), &mut state);
    assert_eq!(
        texts(&p),
        [
            "rename enp0s2 to lan0",
            "create bridge br0 (stp off, vlan_filtering off)",
            "enslave lan0 to br0",
            "set lan0 up",
            "set br0 up",
        ]
    );
}

#[test]
fn bonded_vlans_example_orders_every_kind_of_object() {
    let mut state = bonded_machine();
    // One NIC is up (renaming needs it down), one is down.
    state.links[1].up = true;
    let p = converge(&example("bonded-vlans"), &mut state);
    let order = [
        "set enp1s0 down",
        "rename enp1s0 to uplink0",
        "rename enp2s0 to uplink1",
        "set mtu 9000 on uplink0",
        "create bond bond0 (802.3ad)",
        "set mtu 9000 on bond0",
        "enslave uplink0 to bond0",
        "create bridge br0 (stp off, vlan_filtering on)",
        "enslave bond0 to br0",
        "set mtu 9000 on br0",
        "add bridge vlan 10 on bond0",
        "add bridge vlan 20 on bond0",
        "add bridge vlan 30 on bond0",
        "add bridge vlan 20 on br0 self",
        "create vlan storage (id 20 on br0)",
        "set mtu 9000 on storage",
        "set uplink0 up",
        "set bond0 up",
        "set br0 up",
        "set storage up",
        "add address 10.20.0.11/24 to storage",
        "add route 10.21.0.0/16 via 10.20.0.1 dev storage",
    ];
    let positions: Vec<usize> = order.iter().map(|t| pos(&p, t)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "order: {:#?}",
        texts(&p)
    );
    assert!(
        !texts(&p).contains(&"set enp2s0 down".to_string()),
        "already down"
    );
    // The converged model is what the config says.
    let bond = state.by_name("bond0").unwrap();
    assert_eq!(bond.bond.unwrap().mode, crate::config::BondMode::Lacp);
    assert_eq!(
        bond.bond.unwrap().lacp_rate,
        Some(crate::config::LacpRate::Fast)
    );
    assert_eq!(bond.bond.unwrap().hash_policy, Some("layer3+4"));
    let members: Vec<&str> = state
        .links
        .iter()
        .filter(|l| l.master == Some(bond.index))
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(members, ["uplink0", "uplink1"]);
    let port = state.by_name("bond0").unwrap();
    assert_eq!(
        port.bridge_vlans,
        [
            PortVlan::native(1),
            PortVlan::tagged(10),
            PortVlan::tagged(20),
            PortVlan::tagged(30)
        ]
    );
    assert_eq!(
        state.by_name("br0").unwrap().bridge_vlans,
        [PortVlan::native(1), PortVlan::tagged(20)]
    );
    assert!(state.links.iter().all(|l| l.mtu == 9000 || l.name == "lo"));
}

#[test]
fn internal_bridge_example_has_a_portless_bridge_and_a_default_route() {
    let mut state = machine(&[("ens3", "52:54:00:00:10:01")]);
    let p = converge(&example("internal-bridge"), &mut state);
    assert!(pos(&p, "rename ens3 to lan0") < pos(&p, "enslave lan0 to br0"));
    assert!(
        pos(&p, "create bridge int0 (stp off, vlan_filtering off)")
            < pos(&p, "add address 10.99.0.1/24 to int0")
    );
    assert!(
        pos(&p, "add address 192.0.2.10/24 to br0") < pos(&p, "add route 0.0.0.0/0 via 192.0.2.1")
    );
    let int0 = state.by_name("int0").unwrap();
    assert!(state.links.iter().all(|l| l.master != Some(int0.index)));
}

#[test]
fn appliance_example_converges() {
    let mut state = machine(&[("enp0s2", "52:54:00:12:34:56")]);
    converge(&example("appliance"), &mut state);
}

#[test]
fn observed_equal_to_desired_plans_nothing() {
    // A hand-built kernel state that already is the config.
    let cfg = config(
        r#"
[[network.link]]
name = "eth0"
[[network.bridge]]
name = "br0"
ports = [{ name = "eth0", pvid = 5, tagged = [7] }]
vlan_filtering = true
stp = true
[[network.vlan]]
name = "v7"
link = "br0"
id = 7
addresses = ["10.7.0.1/24", "fd07::1/64"]
[[network.route]]
to = "10.8.0.0/16"
via = "10.7.0.254"
"#,
    );
    let mut state = machine(&[("eth0", "52:54:00:00:00:01")]);
    let mut br = ObservedLink::new(10, "br0", LinkKind::Bridge);
    br.up = true;
    br.alias = Some(MARK.into());
    br.bridge = Some(ObservedBridge {
        stp: true,
        vlan_filtering: true,
    });
    br.bridge_vlans = vec![PortVlan::native(1), PortVlan::tagged(7)];
    let mut v7 = ObservedLink::new(11, "v7", LinkKind::Vlan);
    v7.up = true;
    v7.alias = Some(MARK.into());
    v7.vlan = Some(ObservedVlan { id: 7, parent: 10 });
    state.links[1].up = true;
    state.links[1].master = Some(10);
    state.links[1].bridge_vlans = vec![PortVlan::native(5), PortVlan::tagged(7)];
    state.links.extend([br, v7]);
    for a in ["10.7.0.1/24", "fd07::1/64"] {
        state.addresses.push(ObservedAddress {
            index: 11,
            net: net(a),
            permanent: true,
        });
    }
    // Addresses walden must not touch: link-local, and DHCP/SLAAC ones.
    state.addresses.push(ObservedAddress {
        index: 11,
        net: net("fe80::1/64"),
        permanent: true,
    });
    state.addresses.push(ObservedAddress {
        index: 10,
        net: net("192.168.5.20/24"),
        permanent: false,
    });
    state.routes.push(ObservedRoute {
        dst: net("10.8.0.0/16"),
        via: Some("10.7.0.254".parse().unwrap()),
        oif: Some(11),
        metric: 0,
        protocol: RTPROT_STATIC,
    });
    // A route someone added with `ip route add` (protocol boot).
    state.routes.push(ObservedRoute {
        dst: net("10.9.0.0/16"),
        via: Some("10.7.0.253".parse().unwrap()),
        oif: Some(11),
        metric: 0,
        protocol: 3,
    });
    let p = plan(&cfg, &state).unwrap();
    assert!(p.is_empty(), "{:#?}", texts(&p));
}

#[test]
fn a_new_vlan_adds_only_that_vlan() {
    let mut state = bonded_machine();
    converge(&example("bonded-vlans"), &mut state);
    let mut cfg = example("bonded-vlans");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bonded-vlans/host.toml"),
    )
    .unwrap();
    let extra = "\n[[network.vlan]]\nname = \"lab\"\nlink = \"br0\"\nid = 30\naddresses = [\"10.30.0.11/24\"]\n";
    if let Ok(c) = crate::config::from_strs(&format!("{text}{extra}"), &[]) {
        cfg = c.host.network;
    }
    assert_eq!(cfg.vlans.len(), 2, "the extended config is valid");
    let p = converge(&cfg, &mut state);
    assert_eq!(
        texts(&p),
        [
            "add bridge vlan 30 on br0 self",
            "create vlan lab (id 30 on br0)",
            "set lab up",
            "add address 10.30.0.11/24 to lab",
        ]
    );
}

#[test]
fn changing_port_vlans_and_addresses_touches_only_them() {
    let base = r#"
[[network.link]]
name = "eth0"
[[network.bridge]]
name = "br0"
ports = [{ name = "eth0", tagged = [10, 20] }]
vlan_filtering = true
addresses = ["10.0.0.1/24"]
"#;
    let mut state = machine(&[("eth0", "52:54:00:00:00:01")]);
    converge(&config(base), &mut state);
    let changed = base
        .replace("tagged = [10, 20]", "pvid = 10, tagged = [20, 30]")
        .replace("10.0.0.1/24", "10.0.0.2/24");
    let p = converge(&config(&changed), &mut state);
    assert_eq!(
        texts(&p),
        [
            "add bridge vlan 10 pvid untagged on eth0",
            "add bridge vlan 30 on eth0",
            "remove bridge vlan 1 from eth0",
            "remove address 10.0.0.1/24 from br0",
            "add address 10.0.0.2/24 to br0",
        ]
    );
}

#[test]
fn removed_objects_go_and_only_walden_s_own() {
    let full = r#"
[[network.link]]
name = "eth0"
[[network.bridge]]
name = "br0"
ports = ["eth0"]
[[network.vlan]]
name = "v5"
link = "br0"
id = 5
addresses = ["10.5.0.1/24"]
[[network.route]]
to = "10.6.0.0/16"
via = "10.5.0.254"
"#;
    let mut state = machine(&[("eth0", "52:54:00:00:00:01")]);
    // Links walden must leave alone: a foreign bridge, a guest tap on br0
    // (added later), a foreign VLAN.
    let mut docker = ObservedLink::new(50, "docker0", LinkKind::Bridge);
    docker.up = true;
    state.links.push(docker);
    converge(&config(full), &mut state);
    let br0 = state.by_name("br0").unwrap().index;
    let mut tap = ObservedLink::new(60, "vnet0", LinkKind::Other("tun".into()));
    tap.master = Some(br0);
    tap.up = true;
    state.links.push(tap);
    let p = converge(&config("[[network.link]]\nname = \"eth0\"\n"), &mut state);
    // The route and address went with v5; eth0, only released, stays up.
    assert_eq!(texts(&p), ["delete v5", "delete br0"]);
    assert!(state.by_name("docker0").is_some());
    assert!(state.by_name("vnet0").is_some());
    assert!(!texts(&p)
        .iter()
        .any(|t| t.contains("docker0") || t.contains("vnet0")));
    assert!(state.routes.is_empty());
}

#[test]
fn a_changed_bond_mode_recreates_the_bond_and_what_sits_on_it() {
    let mut state = bonded_machine();
    converge(&example("bonded-vlans"), &mut state);
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bonded-vlans/host.toml"),
    )
    .unwrap()
    .replace("mode = \"802.3ad\"", "mode = \"active-backup\"")
    .replace("lacp_rate = \"fast\"\n", "");
    let cfg = crate::config::from_strs(&text, &[]).unwrap().host.network;
    let p = converge(&cfg, &mut state);
    assert!(pos(&p, "delete bond0") < pos(&p, "create bond bond0 (active-backup)"));
    assert!(pos(&p, "create bond bond0 (active-backup)") < pos(&p, "enslave bond0 to br0"));
    assert!(!texts(&p)
        .iter()
        .any(|t| t.starts_with("delete br0") || t.starts_with("create bridge")));
}

#[test]
fn balance_alb_bond_by_mac_members() {
    let cfg = config(
        r#"
[[network.bond]]
name = "bond1"
mode = "balance-alb"
members = ["mac:52:54:00:00:00:01", "mac:52:54:00:00:00:02"]
addresses = ["10.1.0.1/24"]
"#,
    );
    let mut state = machine(&[("ens1", "52:54:00:00:00:01"), ("ens2", "52:54:00:00:00:02")]);
    state.links[1].up = true;
    let p = converge(&cfg, &mut state);
    assert!(pos(&p, "set ens1 down") < pos(&p, "enslave ens1 to bond1"));
    assert!(pos(&p, "enslave ens2 to bond1") < pos(&p, "set ens1 up"));
    // Enslaved, the NICs carry the bond's MAC; found again by their own.
    for l in state.links.iter_mut().filter(|l| l.name.starts_with("ens")) {
        l.mac = Some(mac("0a:00:00:00:00:09"));
    }
    assert!(plan(&cfg, &state).unwrap().is_empty());
}

#[test]
fn nic_names_can_swap() {
    let cfg = config(
        r#"
[[network.link]]
name = "a"
match = "mac:52:54:00:00:00:02"
[[network.link]]
name = "b"
match = "mac:52:54:00:00:00:01"
"#,
    );
    let mut state = machine(&[("a", "52:54:00:00:00:01"), ("b", "52:54:00:00:00:02")]);
    let p = converge(&cfg, &mut state);
    assert_eq!(
        state.by_name("a").unwrap().hw_mac(),
        Some(mac("52:54:00:00:00:02"))
    );
    assert!(texts(&p).iter().any(|t| t.starts_with("rename a to wtmp")));
}

#[test]
fn routes_are_replaced_when_their_gateway_changes() {
    let base = r#"
[[network.link]]
name = "eth0"
addresses = ["10.0.0.2/24", "fd00::2/64"]
[[network.route]]
to = "default"
via = "10.0.0.1"
[[network.route]]
to = "default"
via = "fd00::1"
"#;
    let mut state = machine(&[("eth0", "52:54:00:00:00:01")]);
    converge(&config(base), &mut state);
    let p = converge(
        &config(&base.replace("via = \"10.0.0.1\"", "via = \"10.0.0.254\"")),
        &mut state,
    );
    assert_eq!(
        texts(&p),
        [
            "remove route 0.0.0.0/0 via 10.0.0.1 dev eth0",
            "add route 0.0.0.0/0 via 10.0.0.254"
        ]
    );
    let v6 = state.routes.iter().find(|r| r.dst.addr.is_ipv6()).unwrap();
    assert_eq!(
        v6.metric, 1024,
        "IPv6 routes get the kernel's default metric"
    );
}

#[test]
fn a_link_switched_off_goes_down() {
    let mut state = machine(&[("eth0", "52:54:00:00:00:01")]);
    state.links[1].up = true;
    let p = converge(
        &config("[[network.link]]\nname = \"eth0\"\nup = false\n"),
        &mut state,
    );
    assert_eq!(texts(&p), ["set eth0 down"]);
}

fn err(cfg: &NetworkConfig, state: &Observed) -> String {
    match plan(cfg, state) {
        Ok(p) => panic!("expected an error, got {:#?}", texts(&p)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_member_mac_that_matches_no_nic_is_named() {
    let cfg = config(
        r#"
[[network.bond]]
name = "bond0"
mode = "active-backup"
members = ["mac:52:54:00:00:00:01", "mac:52:54:00:00:00:09"]
"#,
    );
    let e = err(&cfg, &machine(&[("eth0", "52:54:00:00:00:01")]));
    assert!(e.contains("no NIC has MAC 52:54:00:00:00:09"), "{e}");
    assert!(e.contains("bond bond0 member mac:52:54:00:00:00:09"), "{e}");
}

#[test]
fn a_vlan_on_a_link_that_does_not_exist_is_named() {
    let cfg = config(
        r#"
[[network.link]]
name = "eth7"
[[network.vlan]]
name = "storage"
link = "eth7"
id = 20
"#,
    );
    let e = err(&cfg, &machine(&[("eth0", "52:54:00:00:00:01")]));
    assert!(e.contains("VLAN storage (id 20) sits on eth7"), "{e}");
    let e = err(
        &config("[[network.link]]\nname = \"eth7\"\n"),
        &machine(&[]),
    );
    assert!(e.contains("no interface named eth7"), "{e}");
}

#[test]
fn an_address_on_another_interface_is_a_conflict() {
    let cfg = config("[[network.link]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/24\"]\n");
    let mut state = machine(&[("eth0", "52:54:00:00:00:01"), ("eth9", "52:54:00:00:00:09")]);
    state.addresses.push(ObservedAddress {
        index: 3,
        net: net("10.0.0.1/16"),
        permanent: true,
    });
    let e = err(&cfg, &state);
    assert!(
        e.contains("address 10.0.0.1/24 for eth0 is already on eth9"),
        "{e}"
    );
    // On a managed interface that loses it, it simply moves.
    let cfg = config(
        "[[network.link]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/24\"]\n[[network.link]]\nname = \"eth9\"\n",
    );
    let p = converge(&cfg, &mut state);
    assert!(
        pos(&p, "remove address 10.0.0.1/16 from eth9")
            < pos(&p, "add address 10.0.0.1/24 to eth0")
    );
}

#[test]
fn a_foreign_link_in_the_way_is_not_taken_over() {
    let cfg = config("[[network.link]]\nname = \"eth0\"\n[[network.bridge]]\nname = \"br0\"\nports = [\"eth0\"]\n");
    let mut state = machine(&[("eth0", "52:54:00:00:00:01")]);
    let mut foreign = ObservedLink::new(9, "br0", LinkKind::Veth);
    foreign.mac = Some(mac("52:54:00:00:00:07"));
    state.links.push(foreign);
    let e = err(&cfg, &state);
    assert!(e.contains("br0 exists as a br0 (veth"), "{e}");
    assert!(e.contains("wants a bridge"), "{e}");
    // A NIC found by MAC cannot take a name another interface holds.
    let cfg = config("[[network.link]]\nname = \"wan\"\nmatch = \"mac:52:54:00:00:00:01\"\n");
    let mut state = machine(&[("eth0", "52:54:00:00:00:01")]);
    state
        .links
        .push(ObservedLink::new(9, "wan", LinkKind::Other("tun".into())));
    let e = err(&cfg, &state);
    assert!(e.contains("cannot rename eth0 to wan"), "{e}");
    assert!(matches!(
        plan(&cfg, &state),
        Err(NetError::NameTaken { .. })
    ));
}

#[test]
fn a_name_moved_to_another_nic_moves_the_old_one_aside_and_out_of_the_bridge() {
    // lan0 in br0 was the NIC ..10:01; the new config gives the name (and
    // the bridge port) to the NIC ..34:56 and no longer names the first.
    let before = config(
        "[[network.link]]\nname = \"lan0\"\nmatch = \"mac:52:54:00:00:10:01\"\n\
         [[network.bridge]]\nname = \"br0\"\nports = [\"lan0\"]\n",
    );
    let after = config(
        "[[network.link]]\nname = \"lan0\"\nmatch = \"mac:52:54:00:12:34:56\"\n\
         [[network.bridge]]\nname = \"br0\"\nports = [\"lan0\"]\n",
    );
    let mut state = machine(&[
        ("enp0s7", "52:54:00:00:10:01"),
        ("enp0s8", "52:54:00:12:34:56"),
    ]);
    converge(&before, &mut state);
    let p = converge(&after, &mut state);
    let old = pos(&p, "rename lan0 to enx525400001001");
    let new = pos(&p, "rename enp0s8 to lan0");
    assert!(old < new, "{:#?}", texts(&p));
    assert!(pos(&p, "release enx525400001001") > old, "{:#?}", texts(&p));
    let old_nic = state.by_mac(mac("52:54:00:00:10:01")).unwrap();
    assert_eq!(
        (old_nic.name.as_str(), old_nic.master),
        ("enx525400001001", None)
    );
    let new_nic = state.by_mac(mac("52:54:00:12:34:56")).unwrap();
    let br0 = state.by_name("br0").unwrap().index;
    assert_eq!((new_nic.name.as_str(), new_nic.master), ("lan0", Some(br0)));
}

#[test]
fn a_port_taken_out_of_the_config_leaves_the_bridge() {
    let two = config(
        "[[network.link]]\nname = \"eth0\"\n[[network.link]]\nname = \"eth1\"\n\
         [[network.bridge]]\nname = \"br0\"\nports = [\"eth0\", \"eth1\"]\n",
    );
    let one = config(
        "[[network.link]]\nname = \"eth0\"\n\
         [[network.bridge]]\nname = \"br0\"\nports = [\"eth0\"]\n",
    );
    let mut state = machine(&[("eth0", "52:54:00:00:00:01"), ("eth1", "52:54:00:00:00:02")]);
    converge(&two, &mut state);
    converge(&one, &mut state);
    assert_eq!(
        state.by_name("eth1").unwrap().master,
        None,
        "eth1 still bridged"
    );
    let br0 = state.by_name("br0").unwrap().index;
    assert_eq!(state.by_name("eth0").unwrap().master, Some(br0));
}
