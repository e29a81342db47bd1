//! The example configs of examples/ on the image, with stand-ins for what a
//! test machine lacks, checked from outside (over ssh: the kernel's links,
//! addresses, mounts and swap, the guests' QEMU processes and disks).
//! examples/minimal runs in boot.rs and power.rs, examples/appliance-qemu in
//! make_run.rs.
//!
//! What is stood in, and why:
//! - NICs: QEMU NICs with the examples' MAC addresses, each on its own user
//!   network (restrict=on, nothing leaves). bonded-vlans' LACP bond has no
//!   switch partner here: the bond and its members come up, no aggregation
//!   with a switch can be shown.
//! - guest OS images: the examples' bases (`/srv/vm/images/*.qcow2`) are
//!   empty qcow2 images on the data disk: the test machine has no Debian,
//!   OpenWrt or TrueNAS image. Each guest's disk is created on its base and
//!   its QEMU runs; its firmware then finds nothing to boot.
//! - examples/appliance's HBA (0000:03:00.0) and Intel I210 (8086:1533)
//!   do not exist in QEMU (and the machine has no IOMMU): the `[[vfio]]`
//!   entries fail, and the storage guest, and the services guest `after` it,
//!   wait saying so instead of starting.
//! - examples/appliance's installer ISOs are not on the stood-in VM store:
//!   the desktop guest does not start, saying which ISO is missing.

mod common;

use anyhow::{ensure, Context};
use qemu_tests::{expect, ConfigDisk, DataDisk, Machine, TestEnv};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Empty qcow2 images standing in for the examples' guest OS images, in
/// `dir/images/`.
fn stand_in_bases(dir: &Path, names: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("images"))?;
    for name in names {
        let path = dir.join("images").join(name);
        let out = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg("1G")
            .output()?;
        ensure!(
            out.status.success(),
            "qemu-img create {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A NIC with `mac` on a user network of its own (nothing leaves).
fn nic(id: &str, mac: &str) -> [String; 4] {
    [
        "-netdev".into(),
        format!("user,id={id},restrict=on"),
        "-device".into(),
        format!("virtio-net-pci,netdev={id},mac={mac}"),
    ]
}

/// Wait until `walden guest list --json` inside the host says `guest` is
/// in `state` (the CLI, over ssh, as an admin would ask).
fn wait_guest(
    m: &mut Machine,
    guest: &str,
    state: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    wait_guest_where(m, guest, state, timeout, |g| g["state"] == state)
}

/// `walden guest list --json`'s row of `guest` once `ok` holds for it
/// (`what` says what is waited for).
fn wait_guest_where(
    m: &mut Machine,
    guest: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + qemu_tests::env::scaled(timeout);
    loop {
        let list: Value = serde_json::from_str(&m.exec_ok("walden guest list --json")?)?;
        let row = list
            .as_array()
            .and_then(|a| a.iter().find(|g| g["name"] == guest))
            .cloned();
        if let Some(row) = row.filter(|g| ok(g)) {
            return Ok(row);
        }
        ensure!(
            Instant::now() < deadline,
            "guest {guest} not {what} after {timeout:?}: {list}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// The guest QEMU processes running now, by guest name (libvirt's
/// `-name guest=NAME`), as `ps` in the host shows them.
fn qemu_guests(m: &mut Machine) -> anyhow::Result<Vec<String>> {
    let out = m.exec_ok(
        "ps -eo args= | grep -o 'qemu-system[^ ]* -name guest=[^,]*' | sed 's/.*guest=//' | sort",
    )?;
    Ok(out.lines().map(str::to_string).collect())
}

fn ip_json(m: &mut Machine, args: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&m.exec_ok(&format!("ip -j {args}"))?)?)
}

/// `addr_info` local/prefixlen of link `dev`.
fn addresses(m: &mut Machine, dev: &str) -> anyhow::Result<Vec<String>> {
    let v = ip_json(m, &format!("addr show dev {dev}"))?;
    Ok(v[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
                .collect()
        })
        .unwrap_or_default())
}

/// The files of an example directory as a `config-apply` request, host.toml
/// given (with the harness's admin NIC and key merged in).
fn apply_request(example: &Path, host_toml: &str) -> anyhow::Result<Value> {
    let mut files = serde_json::Map::new();
    files.insert("host.toml".into(), host_toml.into());
    for e in std::fs::read_dir(example.join("guests"))? {
        let p = e?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .context("guest file name")?;
        files.insert(
            format!("guests/{name}"),
            std::fs::read_to_string(&p)?.into(),
        );
    }
    Ok(json!({"action": "config-apply", "files": files, "confirm_timeout_s": 300}))
}

#[test]
fn internal_bridge_then_appliance_examples_run_with_stand_ins() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(internal_bridge_then_appliance_once)
}

fn internal_bridge_then_appliance_once() -> anyhow::Result<()> {
    let Some(env) =
        TestEnv::with_image("internal_bridge_then_appliance_examples_run_with_stand_ins")?
    else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let seed = env.dir().join("vmstore");
    stand_in_bases(
        &seed,
        &["debian-12.qcow2", "openwrt.qcow2", "truenas.qcow2"],
    )?;
    let mut args: Vec<String> = Vec::new();
    args.extend(nic("ib", "52:54:00:00:10:01"));
    args.extend(nic("ap", "52:54:00:12:34:56"));
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        .memory_mib(4096)
        .config_disk(ConfigDisk::from_dir("examples/internal-bridge"))
        .data_disk(DataDisk::ext4("vmstore", 3072).with_files(&seed))
        .extra_args(args)
        .admin_ssh()
        .start()?;
    common::assert_boots_to_ready(&mut m, &a.version)?;

    // internal-bridge: lan0 found by MAC in br0 with its static address,
    // the port-less int0, the default route, the data disk, both guests.
    ensure!(addresses(&mut m, "br0")?.contains(&"192.0.2.10/24".to_string()));
    ensure!(addresses(&mut m, "int0")?.contains(&"10.99.0.1/24".to_string()));
    let lan0 = ip_json(&mut m, "link show dev lan0")?;
    ensure!(lan0[0]["master"] == "br0", "lan0: {lan0}");
    let route = ip_json(&mut m, "route show default")?;
    ensure!(route[0]["gateway"] == "192.0.2.1", "default route: {route}");
    let mounts = m.exec_ok("grep ' /srv/vm ' /proc/mounts")?;
    ensure!(mounts.contains("/srv/vm ext4"), "{mounts}");
    for g in ["router", "app"] {
        wait_guest(&mut m, g, "running", Duration::from_secs(180))?;
    }
    ensure!(qemu_guests(&mut m)? == ["app", "router"], "QEMU processes");
    let info: Value = serde_json::from_str(
        &m.exec_ok("qemu-img info --output=json --force-share /srv/vm/router.qcow2")?,
    )?;
    ensure!(
        info["backing-filename"] == "/srv/vm/images/openwrt.qcow2"
            && info["virtual-size"] == 1u64 << 30,
        "router's disk is not a thin overlay of its base: {info}"
    );

    // Their firmware finds no OS on the stand-in disks and would ignore
    // the ACPI button for their whole shutdown_timeout (120 s): forced off
    // first, as an admin would (a running guest removed by an apply is
    // shut down and undefined in guests.rs's config apply scenario).
    for g in ["router", "app"] {
        m.exec_ok(&format!("walden guest stop --force {g}"))?;
        wait_guest(&mut m, g, "stopped", Duration::from_secs(60))?;
    }

    // appliance, applied to the running box: the links change (confirmed),
    // router and app go away, the HBA and the I210 are missing, so storage
    // and services wait with the reason.
    let example = qemu_tests::artifacts::repo_root().join("examples/appliance");
    let admin = m.admin_ssh().context("admin ssh")?.clone();
    let host = admin.merge_into(&std::fs::read_to_string(example.join("host.toml"))?)?;
    // The apply reports the two steps the missing hardware fails (and is
    // therefore not recorded as last-known-good); everything else applies.
    let report = m.command(&apply_request(&example, &host)?, Duration::from_secs(300))?;
    let failed: Vec<&str> = report["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["state"] == "failed")
        .filter_map(|s| s["name"].as_str())
        .collect();
    ensure!(
        report["state"] == "failed" && failed == ["vfio", "guests"],
        "apply of examples/appliance: {report}"
    );
    let lan0 = ip_json(&mut m, "link show dev lan0")?;
    ensure!(
        lan0[0]["master"] == "br0",
        "appliance's lan0 (by MAC) in br0: {lan0}"
    );
    ensure!(addresses(&mut m, "store0")?.contains(&"10.98.0.1/24".to_string()));
    let gone = ip_json(&mut m, "link show")?;
    ensure!(
        !gone
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["ifname"] == "int0"),
        "int0 of the previous example is still there"
    );
    for g in ["storage", "services"] {
        let row = wait_guest(&mut m, g, "waiting", Duration::from_secs(60))?;
        eprintln!("{g}: {row}");
    }
    let storage = wait_guest(&mut m, "storage", "waiting", Duration::from_secs(10))?;
    ensure!(
        storage["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("PCI passthrough: ")),
        "storage waits without the vfio reason: {storage}"
    );
    let services = wait_guest(&mut m, "services", "waiting", Duration::from_secs(10))?;
    ensure!(
        services["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("storage")),
        "services does not say it waits for storage: {services}"
    );
    // The desktop's installer ISO is not on the stood-in VM store: it does
    // not start, saying which ISO and key, and nothing else is held up.
    let desktop = wait_guest_where(
        &mut m,
        "desktop",
        "refused for its missing ISO",
        Duration::from_secs(60),
        |g| {
            (g["state"] == "backoff" || g["state"] == "failed")
                && g["last_error"].as_str().is_some_and(|e| {
                    e.contains("cdrom[0]")
                        && e.contains(
                            "ISO image /srv/vm/iso/Win10_22H2_English_x64.iso does not exist",
                        )
                })
        },
    )?;
    eprintln!("desktop: {desktop}");
    // router and app are undefined. storage is not defined at all: its PCI label selected nothing, so
    // it has no domain until the device exists (it waits in walden); the
    // desktop is defined, its start refused.
    let deadline = Instant::now() + qemu_tests::env::scaled(Duration::from_secs(60));
    loop {
        let defined = m.exec_ok("virsh -c qemu:///system list --all --name | sort | grep .")?;
        if defined.split_whitespace().collect::<Vec<_>>() == ["desktop", "services"] {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "libvirt still has the previous example's guests: {defined}"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    ensure!(
        qemu_guests(&mut m)?.is_empty(),
        "a guest runs although it waits"
    );
    m.check_console()?;
    m.powerdown()?;
    for step in expect::POWEROFF_STEPS {
        m.wait_for_console(step, Duration::from_secs(180))?;
    }
    m.wait_exit(Duration::from_secs(60))?;
    Ok(())
}

#[test]
fn bonded_vlans_example_runs_with_stand_ins() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(bonded_vlans_once)
}

fn bonded_vlans_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("bonded_vlans_example_runs_with_stand_ins")? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let seed = env.dir().join("vmstore");
    stand_in_bases(&seed, &["debian-12.qcow2"])?;
    let mut args: Vec<String> = Vec::new();
    args.extend(nic("u0", "3c:ec:ef:10:00:01"));
    args.extend(nic("u1", "3c:ec:ef:10:00:02"));
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        // db has 8 GiB and web 4 GiB; QEMU only touches what the guests use.
        .memory_mib(14 * 1024)
        .config_disk(ConfigDisk::from_dir("examples/bonded-vlans"))
        // The example's XFS disk; the 4 GiB swap file and db's 200 GiB raw
        // disk are sparse on it.
        .data_disk(DataDisk::xfs("vmstore", 8192).with_files(&seed))
        .extra_args(args)
        .admin_ssh()
        .start()?;
    common::assert_boots_to_ready(&mut m, &a.version)?;

    // The bond of two NICs found by MAC, as the kernel has it.
    let bond = ip_json(&mut m, "-d link show dev bond0")?;
    let info = &bond[0]["linkinfo"]["info_data"];
    ensure!(
        info["mode"] == "802.3ad"
            && info["ad_lacp_rate"] == "fast"
            && info["xmit_hash_policy"] == "layer3+4",
        "bond0: {info}"
    );
    ensure!(bond[0]["mtu"] == 9000, "bond0 mtu: {}", bond[0]["mtu"]);
    for member in ["uplink0", "uplink1"] {
        let l = ip_json(&mut m, &format!("link show dev {member}"))?;
        ensure!(
            l[0]["master"] == "bond0" && l[0]["mtu"] == 9000,
            "{member}: {l}"
        );
    }
    let vlans: Value = serde_json::from_str(&m.exec_ok("bridge -j vlan show dev bond0")?)?;
    let ids: Vec<u64> = vlans[0]["vlans"]
        .as_array()
        .map(|v| v.iter().filter_map(|x| x["vlan"].as_u64()).collect())
        .unwrap_or_default();
    ensure!(ids == [1, 10, 20, 30], "bond0's VLANs on br0: {vlans}");
    ensure!(addresses(&mut m, "storage")?.contains(&"10.20.0.11/24".to_string()));
    let route = ip_json(&mut m, "route show 10.21.0.0/16")?;
    ensure!(
        route[0]["gateway"] == "10.20.0.1" && route[0]["dev"] == "storage",
        "{route}"
    );
    let resolv = m.exec_ok("cat /etc/resolv.conf")?;
    ensure!(
        resolv.contains("nameserver 10.10.0.53") && resolv.contains("search lab.example.org"),
        "{resolv}"
    );
    // The XFS data disk, the swap file on it, the time zone.
    let mounts = m.exec_ok("grep ' /srv/vm ' /proc/mounts")?;
    ensure!(
        mounts.contains("/srv/vm xfs") && mounts.contains("noatime"),
        "{mounts}"
    );
    let swaps = m.exec_ok("cat /proc/swaps")?;
    ensure!(swaps.contains("/srv/vm/swapfile"), "{swaps}");
    ensure!(m.exec_ok("cat /etc/timezone")?.trim() == "Europe/Berlin");
    // db and web run (web after db, UEFI), lab is only defined.
    for g in ["db", "web"] {
        wait_guest(&mut m, g, "running", Duration::from_secs(240))?;
    }
    wait_guest(&mut m, "lab", "stopped", Duration::from_secs(10))?;
    ensure!(qemu_guests(&mut m)? == ["db", "web"], "QEMU processes");
    let web = m.exec_ok("ps -eo args= | grep -o 'qemu-system.*guest=web.*' | head -n 1")?;
    ensure!(
        web.contains("OVMF_CODE_4M.fd"),
        "web does not boot through OVMF: {web}"
    );
    let raw = m.exec_ok("stat -c %s /srv/vm/db-data.raw")?;
    ensure!(
        raw.trim() == (200u64 << 30).to_string(),
        "db-data.raw size {raw}"
    );
    m.check_console()?;
    // Their firmware finds no OS on the stand-in disks, so nothing would
    // answer the power button: db's shutdown_timeout (5 minutes) would
    // pass first. Pulled like plugs, as an admin would: `stop --force`
    // (db's restart = "always" must not bring it back).
    for g in ["db", "web"] {
        let out = m.exec_ok(&format!("walden guest stop --force {g}"))?;
        ensure!(out.contains(&format!("forcing {g} off")), "{out}");
    }
    for g in ["db", "web"] {
        wait_guest(&mut m, g, "stopped", Duration::from_secs(60))?;
    }
    ensure!(
        qemu_guests(&mut m)?.is_empty(),
        "QEMU processes after stop --force"
    );
    m.powerdown()?;
    for step in expect::POWEROFF_STEPS {
        m.wait_for_console(step, Duration::from_secs(180))?;
    }
    m.wait_exit(Duration::from_secs(60))?;
    Ok(())
}
