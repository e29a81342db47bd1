//! Host networking under the image's own Debian kernel.
//!
//! The build machine's kernel lacks bonding, 802.1Q and bridge VLAN
//! filtering, so two of the privileged tests in the walden crate's
//! `tests/net.rs` print "SKIPPED: kernel lacks ..." there. This scenario
//! boots the image's kernel (`-kernel`) with an initramfs made here from
//! busybox, the kernel modules from the image root, the host's iproute2
//! and ping, `walden` and that test binary (at the same absolute paths, as
//! the test embeds `CARGO_BIN_EXE_walden`), runs the tests and powers off.
//! Nothing may be skipped there.
//!
//! The second scenario boots the image itself with three NICs, two of them
//! bonded under a VLAN-aware bridge, and reads the layout back from
//! `walden status --json` and, over ssh through the harness's admin NIC
//! (a fourth NIC on a user net of its own, which the layout does not
//! touch), from the kernel itself (`ip -j -d link show`, `bridge -j vlan
//! show`), before and after a power cycle.

mod common;

use anyhow::{bail, ensure, Context};
use common::{assert_status_ready, BOOT_TIMEOUT};
use qemu_tests::artifacts::repo_root;
use qemu_tests::control::ControlChannel;
use qemu_tests::initramfs::Initramfs;
use qemu_tests::kernel_vm::{add_modules, cargo_test_build, kernel_release, modules_dir};
use qemu_tests::{expect, ConfigDisk, DirectKernel, Firmware, Machine, Status, TestEnv};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Printed by `/init` after the tests, followed by their exit code.
const END_MARKER: &str = "walden-net-vm: tests exited with code ";

/// Modules the tests need that Debian builds as modules (dependencies resolved).
const MODULES: &[&str] = &["veth", "bridge", "8021q", "bonding"];

/// Busybox applets `/init` uses (`ip` stays the host's iproute2).
const APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "echo", "cat", "sed", "poweroff", "uname",
];

/// Boot + module loading + six tests under TCG (about a minute here).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Building the test binary (cached, but another build may hold cargo's lock).
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

#[test]
fn network_namespace_tests_pass_on_the_debian_kernel() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(network_namespace_tests_pass_on_the_debian_kernel_once)
}

fn network_namespace_tests_pass_on_the_debian_kernel_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("network_namespace_tests_pass_on_the_debian_kernel")?
    else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let started = Instant::now();
    let (test_bin, walden_bin) = net_test_binaries()?;
    let tests = list_tests(&test_bin)?;
    ensure!(!tests.is_empty(), "{} lists no tests", test_bin.display());

    let kernel = a.kernel()?;
    let release = kernel_release(&kernel)?;
    let mut initramfs = Initramfs::new();
    initramfs.busybox(Path::new("/bin/busybox"), APPLETS)?;
    for tool in ["ip", "bridge", "ping"] {
        initramfs.executable(&in_path(tool)?)?;
    }
    initramfs.executable(&walden_bin)?;
    initramfs.executable(&test_bin)?;
    // The tests read examples/ from the repository (CARGO_MANIFEST_DIR).
    initramfs.tree(&repo_root().join("examples"))?;
    let modules = add_modules(
        &mut initramfs,
        &modules_dir(&a.build_dir, &release)?,
        MODULES,
    )?;
    initramfs.data("/init", init_script(&modules, &test_bin), 0o755);
    // ".img" so the harness deletes it with the other disk files.
    let initrd = env.dir().join("initrd.img");
    initramfs.write(&initrd)?;
    eprintln!(
        "kernel {release}, {} tests, initramfs {} MiB, prepared in {:.1?}",
        tests.len(),
        initrd.metadata()?.len() >> 20,
        started.elapsed()
    );

    let booted = Instant::now();
    let mut m = env
        .machine()
        .direct_kernel(DirectKernel {
            // The same kernel, unpacked: no bzImage decompression under TCG.
            kernel: a.kernel_elf()?,
            initrd,
            append: "console=ttyS0 panic=-1 quiet".into(),
        })
        .no_reboot()
        .start()?;
    m.wait_for_console(END_MARKER, RUN_TIMEOUT)?;
    m.wait_exit(Duration::from_secs(60))
        .context("poweroff -f after the tests")?;
    eprintln!(
        "tests ran and the machine powered off in {:.1?}",
        booted.elapsed()
    );

    // The code is read from the whole console once QEMU has exited: the
    // line seen at the marker may not have its end yet (CI saw "code ").
    let console = m.console().text();
    let code = console
        .lines()
        .find_map(|l| l.split(END_MARKER).nth(1))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .context("end marker without a code")?;
    let skipped: Vec<&str> = console.lines().filter(|l| l.contains("SKIPPED")).collect();
    ensure!(
        skipped.is_empty(),
        "tests skipped on the Debian kernel:\n{}\n(console: {})",
        skipped.join("\n"),
        m.console_log().display()
    );
    for name in &tests {
        let ok = format!("test {name} ... ok");
        if !console.lines().any(|l| l.trim_end() == ok) {
            bail!(
                "no \"{ok}\" on the console (exit code {code}); see {}",
                m.console_log().display()
            );
        }
    }
    ensure!(
        code == "0",
        "the tests exited with code {code}; see {}",
        m.console_log().display()
    );
    Ok(())
}

/// The walden crate's `tests/net.rs` binary and the `walden` it embeds:
/// `$WALDEN_NET_TEST_BIN` / `$WALDEN_BIN` (default: `../walden` beside
/// `deps/`), or built with cargo.
fn net_test_binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    if let Some(test) = std::env::var_os("WALDEN_NET_TEST_BIN") {
        let test = PathBuf::from(test);
        let walden = match std::env::var_os("WALDEN_BIN") {
            Some(w) => PathBuf::from(w),
            None => test
                .parent()
                .and_then(Path::parent)
                .map(|d| d.join("walden"))
                .context("WALDEN_NET_TEST_BIN has no parent directory; set WALDEN_BIN")?,
        };
        return Ok((test, walden));
    }
    let build = cargo_test_build("net", BUILD_TIMEOUT)?;
    let walden = match std::env::var_os("WALDEN_BIN") {
        Some(w) => PathBuf::from(w),
        None => build
            .bins
            .get("walden")
            .cloned()
            .context("cargo built no walden binary with the net test")?,
    };
    Ok((build.test, walden))
}

/// Test names from `<bin> --list` (lines `name: test`), run on the host.
fn list_tests(bin: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new(bin)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", bin.display()))?;
    ensure!(out.status.success(), "{} --list failed", bin.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

/// `tool` in `$PATH` (plus the sbin directories a non-root PATH may lack).
fn in_path(tool: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{tool} not found in PATH (apt-get install iproute2 iputils-ping)")
        });
    found
}

/// `/init`: mounts, quiets the kernel log (bond/bridge messages would split
/// libtest's lines), loads the modules, runs the tests from the repository
/// root with stderr kept apart (printed after, prefixed), prints the end
/// marker and powers off.
/// The VM's /init. /tmp stays the initramfs's own (writable) directory, not
/// a tmpfs: the repository may live under /tmp (CI clones there), and the
/// binaries must be found at their build paths.
fn init_script(modules: &[PathBuf], test_bin: &Path) -> String {
    let insmods: String = modules
        .iter()
        .map(|m| {
            format!(
                "insmod {0} || echo \"walden-net-vm: insmod {0} failed\"\n",
                m.display()
            )
        })
        .collect();
    format!(
        "#!/bin/sh\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         mount -t tmpfs run /run\n\
         echo 1 > /proc/sys/kernel/printk\n\
         {insmods}\
         export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         cd {repo}\n\
         echo \"walden-net-vm: kernel $(uname -r), running {bin}\"\n\
         WALDEN_REQUIRE_PRIVILEGED=1 RUST_BACKTRACE=1 {bin} --test-threads=1 --nocapture 2>/tmp/stderr.log\n\
         rc=$?\n\
         sed 's/^/stderr: /' /tmp/stderr.log\n\
         echo \"{END_MARKER}$rc\"\n\
         poweroff -f\n",
        repo = repo_root().display(),
        bin = test_bin.display(),
    )
}

/// Bond members by MAC (both on one QEMU hub with the user network, so
/// they share an L2), a spare NIC, the bridge on the bond with VLAN
/// filtering, VLAN 20 with a static address and DHCP on the bridge.
/// active-backup, not 802.3ad: QEMU's hub does not speak LACP.
const BONDED_HOST_TOML: &str = r#"schema = 1
hostname = "walden-bond"

[[network.link]]
name = "uplink0"
match = "mac:52:54:00:b0:00:01"

[[network.link]]
name = "uplink1"
match = "mac:52:54:00:b0:00:02"

[[network.link]]
name = "spare0"
match = "mac:52:54:00:b0:00:03"

[[network.bond]]
name = "bond0"
mode = "active-backup"
members = ["uplink0", "uplink1"]
miimon = "100ms"

[[network.bridge]]
name = "br0"
vlan_filtering = true
ports = [{ name = "bond0", pvid = 1, tagged = [20] }]
vlans = [1]
dhcp = true

[[network.vlan]]
name = "storage"
link = "br0"
id = 20
addresses = ["10.20.0.11/24"]
"#;

/// Three virtio NICs: two on hub 0 with QEMU's user network (restrict=on:
/// DHCP from QEMU, nothing leaves), one on a user network of its own.
const THREE_NICS: &[&str] = &[
    "-netdev",
    "user,id=wan,restrict=on",
    "-netdev",
    "hubport,id=hub-wan,hubid=0,netdev=wan",
    "-netdev",
    "hubport,id=hub-a,hubid=0",
    "-netdev",
    "hubport,id=hub-b,hubid=0",
    "-device",
    "virtio-net-pci,netdev=hub-a,mac=52:54:00:b0:00:01",
    "-device",
    "virtio-net-pci,netdev=hub-b,mac=52:54:00:b0:00:02",
    "-netdev",
    "user,id=spare,restrict=on",
    "-device",
    "virtio-net-pci,netdev=spare,mac=52:54:00:b0:00:03",
];

#[test]
fn bonded_nics_under_a_vlan_bridge_come_up_and_survive_a_power_cycle() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(
        bonded_nics_under_a_vlan_bridge_come_up_and_survive_a_power_cycle_once,
    )
}

fn bonded_nics_under_a_vlan_bridge_come_up_and_survive_a_power_cycle_once() -> anyhow::Result<()> {
    let name = "bonded_nics_under_a_vlan_bridge_come_up_and_survive_a_power_cycle";
    let Some(env) = TestEnv::with_image(name)? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let config = tempfile::tempdir()?;
    std::fs::write(config.path().join("host.toml"), BONDED_HOST_TOML)?;
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        .firmware(Firmware::Bios)
        .config_disk(ConfigDisk::from_dir(config.path()))
        .extra_args(THREE_NICS.iter().copied())
        .admin_ssh()
        .start()?;
    for run in ["first boot", "after a power cycle"] {
        let booted = Instant::now();
        let line = m.wait_for_console(expect::READY, BOOT_TIMEOUT)?;
        let (status, raw) = status_json(&env)?;
        eprintln!("{run}: {line} (console wait {:.1?})", booted.elapsed());
        eprintln!("{run}: network {}", raw["network"]);
        assert_status_ready(&status, &a.version, &[]).with_context(|| run.to_string())?;
        assert_bonded_layout(&raw).with_context(|| format!("{run}: network {}", raw["network"]))?;
        let lease = wait_for_dhcp_lease(&env, "br0", "10.0.2.15/")
            .with_context(|| format!("{run}: br0 got no DHCP lease from QEMU"))?;
        eprintln!("{run}: br0 has {lease}");
        // The same layout as the kernel itself reports it, read from
        // outside as an admin would, not through walden.
        assert_kernel_layout(&mut m).with_context(|| {
            format!(
                "{run}: the kernel's view over ssh (exec log {})",
                m.exec_log().display()
            )
        })?;
        m.check_console()?;
        if run == "first boot" {
            m.restart()?;
        }
    }
    Ok(())
}

/// The raw status JSON (the harness's typed [`Status`] has no `network`).
fn status_json(env: &TestEnv) -> anyhow::Result<(Status, Value)> {
    let mut ch = ControlChannel::connect(&env.scratch().join("ctl.sock"), Duration::from_secs(60))?;
    let v = ch.request("status", Duration::from_secs(60))?;
    let s: Status = serde_json::from_value(v.clone()).context("status JSON")?;
    Ok((s, v))
}

/// The `network` row called `name`.
fn link<'a>(raw: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    raw["network"]
        .as_array()
        .context("status has no network list")?
        .iter()
        .find(|l| l["name"] == name)
        .with_context(|| format!("no network row for {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Poll status (links are read from the kernel on every request) until
/// `link` has an address starting with `prefix`; QEMU's user network
/// leases 10.0.2.15 to the first client.
fn wait_for_dhcp_lease(env: &TestEnv, link_name: &str, prefix: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, raw) = status_json(env)?;
        let addrs = strings(&link(&raw, link_name)?["addresses"]);
        if let Some(a) = addrs.iter().find(|a| a.starts_with(prefix)) {
            return Ok(a.clone());
        }
        ensure!(
            Instant::now() < deadline,
            "{link_name} addresses after 90 s: {addrs:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// What `walden status --json` must show for [`BONDED_HOST_TOML`] (the
/// DHCP lease is checked by [`wait_for_dhcp_lease`]).
fn assert_bonded_layout(raw: &Value) -> anyhow::Result<()> {
    for (name, kind) in [
        ("uplink0", "device"),
        ("uplink1", "device"),
        ("spare0", "device"),
        ("bond0", "bond"),
        ("br0", "bridge"),
        ("storage", "vlan"),
    ] {
        let l = link(raw, name)?;
        ensure!(l["kind"] == kind, "{name} is {}, not a {kind}", l["kind"]);
        ensure!(l["state"] == "up", "{name} is {}, not up", l["state"]);
    }
    // Found by MAC and renamed (the bond gives its members one MAC, so
    // the names are the evidence), then enslaved.
    for nic in ["uplink0", "uplink1"] {
        let l = link(raw, nic)?;
        ensure!(
            l["master"] == "bond0",
            "{nic} is enslaved to {}",
            l["master"]
        );
    }
    ensure!(
        link(raw, "spare0")?["master"].is_null(),
        "spare0 must stay out of the bond"
    );
    let mut members = strings(&link(raw, "bond0")?["members"]);
    members.sort();
    ensure!(
        members == ["uplink0", "uplink1"],
        "bond0 members {members:?}"
    );
    ensure!(
        link(raw, "bond0")?["master"] == "br0",
        "bond0 is not a port of br0"
    );
    let br = link(raw, "br0")?;
    ensure!(
        strings(&br["members"]).contains(&"bond0".to_string()),
        "br0 ports {}",
        br["members"]
    );
    ensure!(br["dhcp"] == true, "br0 has no DHCP client");
    let storage = link(raw, "storage")?;
    ensure!(
        strings(&storage["addresses"]).contains(&"10.20.0.11/24".to_string()),
        "storage addresses {}",
        storage["addresses"]
    );
    ensure!(
        strings(&storage["vlans"])
            .iter()
            .any(|v| v.starts_with("20")),
        "storage vlans {}",
        storage["vlans"]
    );
    Ok(())
}

/// `command`'s stdout on the host, parsed as JSON.
fn json_on_host(m: &mut Machine, command: &str) -> anyhow::Result<Value> {
    let out = m.exec_ok(command)?;
    serde_json::from_str(&out).with_context(|| format!("`{command}` printed no JSON: {out}"))
}

/// The entry of `list` (an `ip -j`/`bridge -j` array) whose `ifname` is `name`.
fn ifname<'a>(list: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    list.as_array()
        .context("not a JSON array")?
        .iter()
        .find(|l| l["ifname"] == name)
        .with_context(|| format!("no interface {name}"))
}

/// A bridge port's VLANs from `bridge -j vlan show`: (id, pvid, untagged).
fn port_vlans(vlans: &Value, port: &str) -> anyhow::Result<Vec<(u64, bool, bool)>> {
    let entry = ifname(vlans, port).with_context(|| format!("bridge vlan show: {vlans}"))?;
    let list = entry["vlans"]
        .as_array()
        .with_context(|| format!("{port} has no vlans list: {entry}"))?;
    list.iter()
        .map(|v| {
            let id = v["vlan"].as_u64().with_context(|| format!("{port}: {v}"))?;
            let flags = strings(&v["flags"]);
            Ok((
                id,
                flags.iter().any(|f| f == "PVID"),
                flags.iter().any(|f| f == "Egress Untagged"),
            ))
        })
        .collect()
}

/// What the kernel must report for [`BONDED_HOST_TOML`]: the NICs renamed
/// and enslaved to an active-backup bond, the bond a port of the
/// VLAN-filtering bridge with VLAN 1 untagged and 20 tagged, the bridge
/// itself in VLAN 20 too, VLAN interface `storage` on it with its address.
fn assert_kernel_layout(m: &mut Machine) -> anyhow::Result<()> {
    let links = json_on_host(m, "ip -j -d link show")?;
    let vlans = json_on_host(m, "bridge -j vlan show")?;
    let addrs = json_on_host(m, "ip -j addr show dev storage")?;
    check_kernel_layout(&links, &vlans, &addrs)
}

/// [`assert_kernel_layout`] on the three commands' parsed output.
fn check_kernel_layout(links: &Value, vlans: &Value, addrs: &Value) -> anyhow::Result<()> {
    let kind = |l: &Value| {
        l["linkinfo"]["info_kind"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    for nic in ["uplink0", "uplink1"] {
        let l = ifname(links, nic)?;
        ensure!(
            l["master"] == "bond0" && l["linkinfo"]["info_slave_kind"] == "bond",
            "{nic} is not a bond0 member: {l}"
        );
    }
    let spare = ifname(links, "spare0")?;
    ensure!(spare["master"].is_null(), "spare0 is enslaved: {spare}");
    let bond = ifname(links, "bond0")?;
    ensure!(kind(bond) == "bond", "bond0 is a {:?}: {bond}", kind(bond));
    let data = &bond["linkinfo"]["info_data"];
    ensure!(
        data["mode"] == "active-backup",
        "bond0 mode {}",
        data["mode"]
    );
    ensure!(data["miimon"] == 100, "bond0 miimon {}", data["miimon"]);
    ensure!(
        bond["master"] == "br0",
        "bond0 is not a port of br0: {bond}"
    );
    let br = ifname(links, "br0")?;
    ensure!(kind(br) == "bridge", "br0 is a {:?}: {br}", kind(br));
    ensure!(
        br["linkinfo"]["info_data"]["vlan_filtering"] == 1,
        "br0 does not filter VLANs: {}",
        br["linkinfo"]["info_data"]
    );
    let storage = ifname(links, "storage")?;
    ensure!(
        kind(storage) == "vlan",
        "storage is a {:?}: {storage}",
        kind(storage)
    );
    ensure!(
        storage["link"] == "br0" && storage["linkinfo"]["info_data"]["id"] == 20,
        "storage is not VLAN 20 on br0: {storage}"
    );
    for name in ["uplink0", "uplink1", "bond0", "br0", "storage"] {
        let l = ifname(links, name)?;
        ensure!(
            strings(&l["flags"]).iter().any(|f| f == "UP"),
            "{name} is not up: {}",
            l["flags"]
        );
    }

    let mut bond_vlans = port_vlans(vlans, "bond0")?;
    bond_vlans.sort();
    ensure!(
        bond_vlans == [(1, true, true), (20, false, false)],
        "bond0 on br0 has VLANs (id, pvid, untagged) {bond_vlans:?}, not 1 untagged + 20 tagged"
    );
    let br_vlans = port_vlans(vlans, "br0")?;
    ensure!(
        br_vlans.contains(&(1, true, true)) && br_vlans.contains(&(20, false, false)),
        "br0 itself has VLANs (id, pvid, untagged) {br_vlans:?}, not 1 untagged + 20 tagged"
    );

    let storage_addrs: Vec<String> = ifname(addrs, "storage")?["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or("?"), i["prefixlen"]))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        storage_addrs.contains(&"10.20.0.11/24".to_string()),
        "storage has addresses {storage_addrs:?}"
    );
    Ok(())
}

/// The kernel-view check passes what the image's kernel reported for
/// [`BONDED_HOST_TOML`] (recorded from a run's exec.log into
/// test_data/net/) and fails each thing it guards when broken.
#[test]
fn kernel_layout_check_passes_the_recorded_layout_and_fails_broken_ones() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/net");
    let load = |f: &str| -> anyhow::Result<Value> {
        let path = dir.join(f);
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Ok(serde_json::from_str(&text)?)
    };
    let (links, vlans, addrs) = (
        load("ip-link.json")?,
        load("bridge-vlan.json")?,
        load("ip-addr-storage.json")?,
    );
    check_kernel_layout(&links, &vlans, &addrs)?;

    fn find<'a>(list: &'a mut Value, name: &str) -> &'a mut Value {
        list.as_array_mut()
            .and_then(|a| a.iter_mut().find(|l| l["ifname"] == name))
            .unwrap_or_else(|| panic!("fixture has no {name}"))
    }
    type Break = fn(&mut Value, &mut Value, &mut Value);
    let breaks: [(&str, Break); 7] = [
        ("uplink1 out of the bond", |l, _, _| {
            find(l, "uplink1")["master"] = Value::Null
        }),
        ("bond in 802.3ad", |l, _, _| {
            find(l, "bond0")["linkinfo"]["info_data"]["mode"] = "802.3ad".into()
        }),
        ("no VLAN filtering", |l, _, _| {
            find(l, "br0")["linkinfo"]["info_data"]["vlan_filtering"] = 0.into()
        }),
        ("storage on VLAN 30", |l, _, _| {
            find(l, "storage")["linkinfo"]["info_data"]["id"] = 30.into()
        }),
        ("bond0 down", |l, _, _| {
            find(l, "bond0")["flags"] = serde_json::json!(["BROADCAST", "MASTER"])
        }),
        ("VLAN 20 untagged on the bond", |_, v, _| {
            find(v, "bond0")["vlans"][1]["flags"] = serde_json::json!(["Egress Untagged"])
        }),
        ("storage without its address", |_, _, a| {
            find(a, "storage")["addr_info"] = serde_json::json!([])
        }),
    ];
    for (what, break_it) in breaks {
        let (mut l, mut v, mut a) = (links.clone(), vlans.clone(), addrs.clone());
        break_it(&mut l, &mut v, &mut a);
        ensure!(
            check_kernel_layout(&l, &v, &a).is_err(),
            "the kernel-view check passed a layout with {what}"
        );
    }
    Ok(())
}
