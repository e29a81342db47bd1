//! Privileged tests of host networking: `walden net apply` runs inside
//! network namespaces the test creates (veth pairs stand in for NICs), and
//! the kernel's state is checked through iproute2's JSON output, not
//! through walden's own report. Traffic stays inside those namespaces.
//!
//! Without root, `ip` or network namespaces the tests print
//! "SKIPPED: reason" and pass, unless WALDEN_REQUIRE_PRIVILEGED=1 (CI),
//! where they fail. Tests that need a kernel feature this kernel was built
//! without (bonding, 802.1Q VLANs, bridge VLAN filtering) print
//! "SKIPPED: kernel lacks ..." either way: that is the kernel's build, not
//! a missing privilege; the QEMU scenarios boot a kernel that has them.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const WALDEN: &str = env!("CARGO_BIN_EXE_walden");

fn skip(test: &str, reason: &str) {
    if std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {reason} (WALDEN_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("SKIPPED: {test}: {reason}");
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

fn ok(args: &[&str]) -> String {
    let out = run(Command::new(args[0]).args(&args[1..]));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that is deleted on drop (with everything in it).
struct Ns(String);

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Ns {
    fn new() -> Ns {
        let name = format!(
            "walden-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        ok(&["ip", "netns", "add", &name]);
        let ns = Ns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS`, which must succeed.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.0];
        all.extend_from_slice(args);
        ok(&all)
    }

    /// `ip -j ARGS` parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ip(&all)).expect("ip -j prints JSON")
    }

    /// A NIC stand-in: veth `name` (with `mac`) whose peer `peer` is up.
    fn nic(&self, name: &str, mac: &str, peer: &str) {
        self.ip(&[
            "link", "add", name, "address", mac, "type", "veth", "peer", "name", peer,
        ]);
        self.ip(&["link", "set", peer, "up"]);
    }

    /// `walden net ARGS` inside the namespace.
    fn walden(&self, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.0, WALDEN, "net"])
            .args(args))
    }

    /// `walden net apply DIR` with resolv.conf going to `etc`; returns stdout.
    fn apply(&self, dir: &Path, etc: &Path) -> String {
        let out = self.walden(&[
            "apply",
            &dir.to_string_lossy(),
            "--etc",
            &etc.to_string_lossy(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "walden net apply {} failed:\n{stdout}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn link(&self, name: &str) -> Value {
        self.json(&["-d", "link", "show", "dev", name])[0].clone()
    }

    fn master(&self, name: &str) -> Option<String> {
        self.link(name)["master"].as_str().map(str::to_string)
    }

    fn addresses(&self, name: &str) -> Vec<String> {
        self.json(&["addr", "show", "dev", name])[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
                    .filter(|a| !a.starts_with("fe80:"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_up(&self, name: &str) -> bool {
        self.link(name)["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"))
    }

    /// Whether the kernel can create a link of this kind here.
    fn supports(&self, kind_args: &[&str]) -> bool {
        let mut args = vec!["ip", "-n", &self.0, "link", "add", "wprobe0"];
        args.extend_from_slice(kind_args);
        let made = run(Command::new(args[0]).args(&args[1..])).status.success();
        if made {
            self.ip(&["link", "del", "wprobe0"]);
        }
        made
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Root, `ip` and network namespaces, or the reason they are missing.
fn prerequisites() -> Result<(), String> {
    if !nix_is_root() {
        return Err("needs root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`ip netns` fails: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("iproute2 `ip` not found: {e}")),
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A config directory holding `host` as host.toml.
fn config_dir(host: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!("schema = 1\nhostname = \"t\"\n{host}");
    std::fs::write(dir.path().join("host.toml"), text).expect("write host.toml");
    dir
}

macro_rules! need {
    ($test:expr) => {
        if let Err(reason) = prerequisites() {
            return skip($test, &reason);
        }
    };
}

#[test]
fn minimal_example_bridges_one_nic_and_applies_once() {
    need!("minimal_example");
    let ns = Ns::new();
    // The example matches QEMU's default first-NIC MAC and names it lan0.
    ns.nic("eth0", "52:54:00:12:34:56", "peer0");
    let etc = tempfile::tempdir().unwrap();
    let dir = examples().join("minimal");
    let first = ns.apply(&dir, etc.path());
    assert!(first.contains("create bridge br0"), "{first}");
    let br = ns.link("br0");
    assert_eq!(br["linkinfo"]["info_kind"], "bridge");
    assert_eq!(br["ifalias"], "walden", "walden marks what it creates");
    assert_eq!(ns.link("lan0")["address"], "52:54:00:12:34:56");
    assert_eq!(ns.master("lan0").as_deref(), Some("br0"));
    assert!(ns.is_up("lan0") && ns.is_up("br0"));
    // Applying again changes nothing.
    let second = ns.apply(&dir, etc.path());
    assert!(second.contains("nothing to do"), "{second}");
    // No [network.dns]: resolv.conf is left to the DHCP client.
    assert!(!etc.path().join("resolv.conf").exists());
}

#[test]
fn internal_bridge_example_renames_by_mac_and_routes() {
    need!("internal_bridge_example");
    let ns = Ns::new();
    ns.nic("ens3", "52:54:00:00:10:01", "peer0");
    // Links walden must leave alone.
    ns.ip(&["link", "add", "docker0", "type", "bridge"]);
    ns.nic("other0", "52:54:00:aa:00:09", "peer9");
    ns.ip(&["addr", "add", "198.51.100.7/24", "dev", "other0"]);
    let etc = tempfile::tempdir().unwrap();
    let dir = examples().join("internal-bridge");
    ns.apply(&dir, etc.path());
    // Found by MAC and renamed.
    assert_eq!(ns.link("lan0")["address"], "52:54:00:00:10:01");
    assert_eq!(ns.master("lan0").as_deref(), Some("br0"));
    assert_eq!(ns.addresses("br0"), ["192.0.2.10/24"]);
    // The internal bridge has no ports.
    assert_eq!(ns.addresses("int0"), ["10.99.0.1/24"]);
    let links = ns.json(&["link", "show"]);
    assert!(links
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["master"] != "int0"));
    let routes = ns.json(&["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "192.0.2.1");
    assert_eq!(routes[0]["dev"], "br0");
    let resolv = std::fs::read_to_string(etc.path().join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 192.0.2.1"), "{resolv}");
    // Unmanaged links are as they were.
    assert!(ns.link("docker0")["ifalias"].is_null());
    assert_eq!(ns.addresses("other0"), ["198.51.100.7/24"]);
    assert!(ns.master("other0").is_none());
    assert!(ns.apply(&dir, etc.path()).contains("nothing to do"));
}

#[test]
fn a_config_change_touches_only_what_changed() {
    need!("a_config_change");
    let ns = Ns::new();
    ns.nic("eth0", "52:54:00:aa:00:01", "peer0");
    let etc = tempfile::tempdir().unwrap();
    let base = "[[network.link]]\nname = \"eth0\"\n\
        [[network.bridge]]\nname = \"br0\"\nports = [\"eth0\"]\naddresses = [\"10.1.0.1/24\"]\n\
        [[network.bridge]]\nname = \"br1\"\naddresses = [\"10.2.0.1/24\"]\n\
        [[network.route]]\nto = \"10.3.0.0/16\"\nvia = \"10.2.0.254\"\n";
    ns.apply(config_dir(base).path(), etc.path());
    let br0_index = ns.link("br0")["ifindex"].clone();
    // New address on br0, br1 and its route gone.
    let changed = "[[network.link]]\nname = \"eth0\"\n\
        [[network.bridge]]\nname = \"br0\"\nports = [\"eth0\"]\naddresses = [\"10.1.0.1/24\", \"fd01::1/64\"]\n";
    let out = ns.apply(config_dir(changed).path(), etc.path());
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["delete br1", "add address fd01::1/64 to br0"],
        "{out}"
    );
    assert_eq!(
        ns.link("br0")["ifindex"],
        br0_index,
        "br0 was not recreated"
    );
    assert_eq!(ns.addresses("br0"), ["10.1.0.1/24", "fd01::1/64"]);
    let gone = run(Command::new("ip").args(["-n", &ns.0, "link", "show", "br1"]));
    assert!(!gone.status.success(), "br1 is deleted");
    assert!(ns
        .json(&["route", "show", "10.3.0.0/16"])
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn failures_name_the_culprit_and_change_nothing() {
    need!("failures");
    let ns = Ns::new();
    ns.nic("eth0", "52:54:00:aa:00:01", "peer0");
    ns.nic("eth9", "52:54:00:aa:00:09", "peer9");
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "eth9"]);
    let etc = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[network.bridge]]\nname = \"br0\"\nports = [\"mac:52:54:00:aa:00:77\"]\n",
            "no NIC has MAC 52:54:00:aa:00:77",
        ),
        (
            "[[network.link]]\nname = \"eth7\"\n[[network.vlan]]\nname = \"v20\"\nlink = \"eth7\"\nid = 20\n",
            "VLAN v20 (id 20) sits on eth7",
        ),
        (
            "[[network.link]]\nname = \"eth0\"\naddresses = [\"10.9.0.1/24\"]\n",
            "address 10.9.0.1/24 for eth0 is already on eth9",
        ),
    ];
    for (host, want) in cases {
        let dir = config_dir(host);
        let out = ns.walden(&[
            "apply",
            &dir.path().to_string_lossy(),
            "--etc",
            &etc.path().to_string_lossy(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(want), "{stderr:?} should contain {want:?}");
    }
    // Planning failed before anything was done.
    assert!(
        run(Command::new("ip").args(["-n", &ns.0, "link", "show", "br0"]))
            .status
            .code()
            != Some(0)
    );
    assert!(ns.master("eth0").is_none());
}

#[test]
fn bonded_vlans_example_builds_bond_bridge_and_vlans() {
    need!("bonded_vlans_example");
    let ns = Ns::new();
    for (kind, what) in [
        (&["type", "bond"][..], "bonding (CONFIG_BONDING)"),
        (
            &["type", "bridge", "vlan_filtering", "1"][..],
            "bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)",
        ),
    ] {
        if !ns.supports(kind) {
            eprintln!("SKIPPED: bonded_vlans_example: kernel lacks {what}");
            return;
        }
    }
    ns.nic("enp1s0", "3c:ec:ef:10:00:01", "peer1");
    ns.nic("enp2s0", "3c:ec:ef:10:00:02", "peer2");
    let etc = tempfile::tempdir().unwrap();
    let dir = examples().join("bonded-vlans");
    ns.apply(&dir, etc.path());
    let bond = ns.link("bond0");
    let data = &bond["linkinfo"]["info_data"];
    assert_eq!(data["mode"], "802.3ad");
    assert_eq!(data["ad_lacp_rate"], "fast");
    assert_eq!(data["xmit_hash_policy"], "layer3+4");
    assert_eq!(bond["mtu"], 9000);
    assert_eq!(ns.master("uplink0").as_deref(), Some("bond0"));
    assert_eq!(ns.master("uplink1").as_deref(), Some("bond0"));
    assert_eq!(ns.master("bond0").as_deref(), Some("br0"));
    assert_eq!(ns.link("br0")["linkinfo"]["info_data"]["vlan_filtering"], 1);
    let storage = ns.link("storage");
    assert_eq!(storage["linkinfo"]["info_data"]["id"], 20);
    assert_eq!(storage["link"], "br0");
    assert_eq!(ns.addresses("storage"), ["10.20.0.11/24"]);
    let vlans: Value =
        serde_json::from_str(&ok(&["bridge", "-n", &ns.0, "-j", "vlan", "show"])).unwrap();
    let of = |dev: &str| -> Vec<String> {
        vlans
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["ifname"] == dev)
            .map(|e| {
                e["vlans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| {
                        let flags = v["flags"].as_array().map(|f| f.len()).unwrap_or(0);
                        format!("{}{}", v["vlan"], if flags > 0 { "*" } else { "" })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(of("bond0"), ["1*", "10", "20", "30"]);
    assert_eq!(of("br0"), ["1*", "20"]);
    let route = ns.json(&["route", "show", "10.21.0.0/16"]);
    assert_eq!(route[0]["gateway"], "10.20.0.1");
    assert_eq!(route[0]["dev"], "storage");
    assert!(ns.apply(&dir, etc.path()).contains("nothing to do"));
}

#[test]
fn vlan_20_reaches_the_host_and_vlan_30_does_not() {
    need!("vlan_traffic");
    let host = Ns::new();
    if !host.supports(&["type", "bridge", "vlan_filtering", "1"]) {
        eprintln!("SKIPPED: vlan_traffic: kernel lacks bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)");
        return;
    }
    // A VLAN needs an Ethernet-like parent (loopback refuses VLANs).
    host.ip(&[
        "link", "add", "wprobe1", "type", "veth", "peer", "name", "wprobe2",
    ]);
    let vlan_ok = host.supports(&["link", "wprobe1", "type", "vlan", "id", "5"]);
    host.ip(&["link", "del", "wprobe1"]);
    if !vlan_ok {
        eprintln!("SKIPPED: vlan_traffic: kernel lacks 802.1Q VLAN interfaces (CONFIG_VLAN_8021Q)");
        return;
    }
    let peer = Ns::new();
    host.ip(&[
        "link",
        "add",
        "h0",
        "address",
        "52:54:00:bb:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "p0",
        "netns",
        &peer.0,
    ]);
    peer.ip(&["link", "set", "p0", "up"]);
    for (id, addr) in [("20", "10.20.0.2/24"), ("30", "10.30.0.2/24")] {
        let name = format!("p0.{id}");
        peer.ip(&[
            "link", "add", "link", "p0", "name", &name, "type", "vlan", "id", id,
        ]);
        peer.ip(&["addr", "add", addr, "dev", &name]);
        peer.ip(&["link", "set", &name, "up"]);
    }
    let dir = config_dir(
        "[[network.link]]\nname = \"h0\"\n\
         [[network.bridge]]\nname = \"br0\"\nvlan_filtering = true\nports = [{ name = \"h0\", tagged = [20] }]\n\
         [[network.vlan]]\nname = \"storage\"\nlink = \"br0\"\nid = 20\naddresses = [\"10.20.0.1/24\"]\n\
         [[network.vlan]]\nname = \"lab\"\nlink = \"br0\"\nid = 30\naddresses = [\"10.30.0.1/24\"]\n",
    );
    let etc = tempfile::tempdir().unwrap();
    host.apply(dir.path(), etc.path());
    let ping = |to: &str| {
        run(Command::new("ip").args(["netns", "exec", &peer.0, "ping", "-c1", "-W2", to]))
            .status
            .success()
    };
    // The first ping may race DAD/ARP on fresh links: allow a few tries.
    assert!(
        (0..3).any(|_| ping("10.20.0.1")),
        "VLAN 20 reaches the host's storage address"
    );
    assert!(!ping("10.30.0.1"), "VLAN 30 is not allowed on the port");
}

/// `bridge -j vlan show dev DEV` as (vid, flags) pairs, e.g.
/// `(1, ["PVID", "Egress Untagged"])`.
fn bridge_vlans(ns: &Ns, dev: &str) -> Vec<(u64, Vec<String>)> {
    let text = ok(&["bridge", "-n", &ns.0, "-j", "vlan", "show", "dev", dev]);
    let all: Value = serde_json::from_str(&text).expect("bridge -j prints JSON");
    all.as_array()
        .and_then(|a| a.iter().find(|e| e["ifname"] == dev))
        .and_then(|e| e["vlans"].as_array())
        .map(|vlans| {
            vlans
                .iter()
                .map(|v| {
                    let flags = v["flags"]
                        .as_array()
                        .map(|f| {
                            f.iter()
                                .filter_map(|f| f.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    (v["vlan"].as_u64().unwrap_or(0), flags)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_link_configured_down_is_left_down() {
    need!("link_up_false");
    let ns = Ns::new();
    ns.nic("eth0", "52:54:00:aa:00:01", "peer0");
    ns.nic("eth1", "52:54:00:aa:00:02", "peer1");
    ns.nic("eth2", "52:54:00:aa:00:03", "peer2");
    // eth0 starts down, eth2 up; eth1 (default `up`) is the control.
    ns.ip(&["link", "set", "eth2", "up"]);
    let dir = config_dir(
        "[[network.link]]\nname = \"eth0\"\nup = false\n\
         [[network.link]]\nname = \"eth1\"\n\
         [[network.link]]\nname = \"eth2\"\nup = false\n",
    );
    let etc = tempfile::tempdir().unwrap();
    ns.apply(dir.path(), etc.path());
    assert!(
        !ns.is_up("eth0"),
        "eth0 has up = false: {}",
        ns.link("eth0")
    );
    assert!(
        !ns.is_up("eth2"),
        "eth2 has up = false: {}",
        ns.link("eth2")
    );
    assert!(ns.is_up("eth1"), "eth1 is up by default");
    assert!(ns.apply(dir.path(), etc.path()).contains("nothing to do"));
}

#[test]
fn a_bond_uses_its_configured_miimon() {
    need!("bond_miimon");
    let ns = Ns::new();
    if !ns.supports(&["type", "bond"]) {
        eprintln!("SKIPPED: bond_miimon: kernel lacks bonding (CONFIG_BONDING)");
        return;
    }
    ns.nic("eth0", "52:54:00:aa:00:01", "peer0");
    let dir = config_dir(
        "[[network.link]]\nname = \"eth0\"\n\
         [[network.bond]]\nname = \"bond0\"\nmode = \"active-backup\"\nmembers = [\"eth0\"]\nmiimon = \"200ms\"\n",
    );
    let etc = tempfile::tempdir().unwrap();
    ns.apply(dir.path(), etc.path());
    let data = &ns.link("bond0")["linkinfo"]["info_data"];
    assert_eq!(data["miimon"], 200, "{data}");
    assert_eq!(ns.master("eth0").as_deref(), Some("bond0"));
    assert!(ns.apply(dir.path(), etc.path()).contains("nothing to do"));
}

#[test]
fn a_bridge_without_ports_runs_stp_when_asked() {
    need!("bridge_stp");
    let ns = Ns::new();
    let etc = tempfile::tempdir().unwrap();
    let stp = |on: bool| config_dir(&format!("[[network.bridge]]\nname = \"br0\"\nstp = {on}\n"));
    let stp_state = || ns.link("br0")["linkinfo"]["info_data"]["stp_state"].clone();
    ns.apply(stp(true).path(), etc.path());
    assert_eq!(stp_state(), 1, "created with stp = true");
    // Changed on the existing bridge, both ways.
    ns.apply(stp(false).path(), etc.path());
    assert_eq!(stp_state(), 0, "stp = false");
    ns.apply(stp(true).path(), etc.path());
    assert_eq!(stp_state(), 1, "stp = true again");
    assert!(ns
        .apply(stp(true).path(), etc.path())
        .contains("nothing to do"));
}

#[test]
fn a_vlan_filtering_bridge_gets_its_own_vlans_and_the_port_pvid() {
    need!("bridge_vlans_pvid");
    let ns = Ns::new();
    if !ns.supports(&["type", "bridge", "vlan_filtering", "1"]) {
        eprintln!("SKIPPED: bridge_vlans_pvid: kernel lacks bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)");
        return;
    }
    ns.nic("eth0", "52:54:00:aa:00:01", "peer0");
    let dir = config_dir(
        "[[network.link]]\nname = \"eth0\"\n\
         [[network.bridge]]\nname = \"br0\"\nvlan_filtering = true\nvlans = [40]\n\
         ports = [{ name = \"eth0\", pvid = 10, tagged = [20] }]\n",
    );
    let etc = tempfile::tempdir().unwrap();
    ns.apply(dir.path(), etc.path());
    let untagged = || vec!["PVID".to_string(), "Egress Untagged".to_string()];
    // `vlans`: VLAN 40 tagged on the bridge device itself, next to VLAN 1.
    assert_eq!(
        bridge_vlans(&ns, "br0"),
        [(1, untagged()), (40, vec![])],
        "the bridge's own VLANs"
    );
    // `pvid`: the port's untagged VLAN is 10, not the kernel's 1.
    assert_eq!(
        bridge_vlans(&ns, "eth0"),
        [(10, untagged()), (20, vec![])],
        "the port's VLANs"
    );
    assert!(ns.apply(dir.path(), etc.path()).contains("nothing to do"));
}

#[test]
fn a_route_keeps_its_dev_and_metric() {
    need!("route_dev_metric");
    let ns = Ns::new();
    ns.nic("eth0", "52:54:00:aa:00:01", "peer0");
    ns.nic("eth1", "52:54:00:aa:00:02", "peer1");
    // The gateway is on both links; the kernel's own pick is eth0 (the
    // longer prefix), so only `dev` can put the route on eth1.
    let dir = config_dir(
        "[[network.link]]\nname = \"eth0\"\naddresses = [\"10.1.0.1/24\"]\n\
         [[network.link]]\nname = \"eth1\"\naddresses = [\"10.1.0.2/16\"]\n\
         [[network.route]]\nto = \"10.60.0.0/16\"\nvia = \"10.1.0.254\"\ndev = \"eth1\"\nmetric = 200\n\
         [[network.route]]\nto = \"10.50.0.0/16\"\ndev = \"eth1\"\n",
    );
    let etc = tempfile::tempdir().unwrap();
    ns.apply(dir.path(), etc.path());
    assert_eq!(
        ns.json(&["route", "get", "10.1.0.254"])[0]["dev"],
        "eth0",
        "the kernel's own choice for the gateway"
    );
    let via = ns.json(&["route", "show", "10.60.0.0/16"]);
    assert_eq!(via.as_array().map(Vec::len), Some(1), "{via}");
    assert_eq!(via[0]["dev"], "eth1", "{via}");
    assert_eq!(via[0]["gateway"], "10.1.0.254", "{via}");
    assert_eq!(via[0]["metric"], 200, "{via}");
    let direct = ns.json(&["route", "show", "10.50.0.0/16"]);
    assert_eq!(direct[0]["dev"], "eth1", "{direct}");
    assert!(direct[0]["gateway"].is_null(), "{direct}");
    assert!(ns.apply(dir.path(), etc.path()).contains("nothing to do"));
}

#[test]
fn resolv_conf_gets_the_search_domains() {
    need!("dns_search");
    let ns = Ns::new();
    let dir = config_dir(
        "[network.dns]\nservers = [\"192.0.2.53\"]\nsearch = [\"lab.example\", \"example.org\"]\n",
    );
    let etc = tempfile::tempdir().unwrap();
    ns.apply(dir.path(), etc.path());
    let resolv = std::fs::read_to_string(etc.path().join("resolv.conf")).unwrap();
    let lines: Vec<&str> = resolv.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        ["search lab.example example.org", "nameserver 192.0.2.53"],
        "{resolv}"
    );
}

#[test]
fn net_show_reports_what_the_kernel_has() {
    need!("net_show");
    let ns = Ns::new();
    ns.nic("eth0", "52:54:00:aa:00:01", "peer0");
    ns.nic("eth1", "52:54:00:aa:00:02", "peer1");
    let dir = config_dir(
        "[[network.link]]\nname = \"eth0\"\nmtu = 1400\n\
         [[network.link]]\nname = \"eth1\"\nup = false\naddresses = [\"10.2.0.1/24\"]\n\
         [[network.bridge]]\nname = \"br0\"\nports = [\"eth0\"]\nmtu = 1400\n\
         addresses = [\"10.1.0.1/24\", \"fd01::1/64\"]\n",
    );
    let etc = tempfile::tempdir().unwrap();
    ns.apply(dir.path(), etc.path());
    let out = ns.walden(&["show", &dir.path().to_string_lossy(), "--json"]);
    assert!(
        out.status.success(),
        "walden net show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).expect("net show --json is JSON");
    let shown = shown.as_array().expect("a list of links");
    let names: Vec<&str> = shown.iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, ["eth0", "eth1", "br0"], "config order");
    // Link-local addresses come and go with carrier; compare the rest.
    let global = |v: &Value| -> Vec<String> {
        let mut a: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        a.retain(|s| !s.starts_with("fe80:"));
        a.sort();
        a
    };
    for l in shown {
        let name = l["name"].as_str().unwrap();
        let kernel = ns.link(name);
        let state = if ns.is_up(name) { "up" } else { "down" };
        assert_eq!(l["state"], state, "{name}: {l}");
        assert_eq!(l["mtu"], kernel["mtu"], "{name}: {l}");
        assert_eq!(l["mac"], kernel["address"], "{name}: {l}");
        assert_eq!(l["master"], kernel["master"], "{name}: {l}");
        let mut addrs = ns.addresses(name);
        addrs.sort();
        assert_eq!(global(&l["addresses"]), addrs, "{name}: {l}");
    }
    // Not vacuous: the values the config asked for.
    assert_eq!(shown[1]["state"], "down");
    assert_eq!(shown[2]["state"], "up");
    assert_eq!(shown[2]["mtu"], 1400);
    assert_eq!(shown[2]["members"], serde_json::json!(["eth0"]));
    assert_eq!(
        global(&shown[2]["addresses"]),
        ["10.1.0.1/24", "fd01::1/64"]
    );
    assert_eq!(global(&shown[1]["addresses"]), ["10.2.0.1/24"]);
}
