//! Upgrade and rollback on the USB image (issue 8, docs/upgrade.md).
//!
//! Each scenario boots the built USB image (version V1) with an "upgrade
//! disk" (ext4, label WALDEN-UPD) holding a second version V2: the same
//! artifacts under another version string, with its own manifest, so status
//! shows which one runs. A driver script on the config disk plays the
//! operator: it runs `walden image ...` as a user would at the console, one
//! step per boot, and keeps its progress in /config/step. The test watches
//! the console and `walden status --json`, and reads what the commands
//! printed from the config disk after power-off.
//!
//! V2 is made unhealthy or wedged through the config, as an operator's
//! health check would: `[health] command` fails on V2 only; in the watchdog
//! scenario the driver stops the supervisor with SIGSTOP on V2, so PID 1
//! stops pinging the i6300esb watchdog and the machine resets.

mod common;

use anyhow::{ensure, Context};
use common::BOOT_TIMEOUT;
use qemu_tests::{expect, ConfigDisk, Firmware, Machine, Nic, TestEnv};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The second version's string (sorts after any 0.x release).
const V2: &str = "99.0.0-upgrade";
/// Generous bound for a whole trial run (3 failed tries and the rollback).
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(1200);

/// The driver script: one step per boot, progress in /config/step. `$1`
/// is the scenario. Every command's output goes to /config/<name>.txt.
const DRIVER: &str = r#"#!/bin/sh
scenario="$1"
v=$(sed -n 's/^version = "\(.*\)"/\1/p' /run/walden/boot.toml)
step=$(cat /config/step 2>/dev/null || echo 0)
say() { echo "upgrade-test: $*" > /dev/console; }
run() { # NAME CMD...: output to /config/NAME.txt, exit status appended
    name="$1"; shift
    "$@" > "/config/$name.txt" 2>&1
    echo "exit=$?" >> "/config/$name.txt"
    sync
}
next() { echo "$1" > /config/step; sync; }
wait_for() { # PATTERN: until `walden status --json` matches (5 minutes at most)
    i=0
    while [ $i -lt 300 ]; do
        walden status --json | grep -Eq "$1" && return 0
        i=$((i + 1)); sleep 1
    done
    say "timed out waiting for $1 in walden status"
}
wait_ready() { wait_for '"phase": ?"ready"'; }
say "boot of $v, scenario $scenario, step $step"
case "$scenario/$step" in
iso/0)
    run iso-list walden image list
    run iso-install walden image install /config
    next 1; wait_ready; say "iso checks done"; walden poweroff ;;
*/0)
    mkdir -p /run/upd
    mount -o ro LABEL=WALDEN-UPD /run/upd || say "cannot mount the upgrade disk"
    run install walden image install "/run/upd/$V2"
    run list-installed walden image list
    next 1; wait_ready; say "installed, rebooting"; walden reboot ;;
good/1)
    wait_for '"health": ?"marked good"'
    run list-good walden image list
    run rollback walden image rollback
    run list-rolled walden image list
    next 2; wait_ready; say "rolled back by hand, rebooting"; walden reboot ;;
wedge/1)
    if [ "$v" = "$V2" ]; then
        # Wait for the health step (it publishes the watchdog timeout),
        # then hang the supervisor.
        while [ ! -e /run/walden/watchdog.timeout ]; do sleep 1; done
        say "stopping the supervisor (pid $PPID)"
        kill -STOP "$PPID"
    else
        run list-after walden image list; next 2; wait_ready; say "after rollback"
    fi ;;
unhealthy/1)
    if [ "$v" != "$V2" ]; then
        run list-after walden image list; next 2; wait_ready; say "after rollback"
    fi ;;
*)
    say "nothing to do" ;;
esac
exec sleep 100000
"#;

/// A config disk: the example host (no guests, to keep boots short), the
/// driver as a service, and `extra` host.toml lines.
fn config(env: &TestEnv, scenario: &str, extra: &str) -> anyhow::Result<ConfigDisk> {
    let dir = env.scratch().join(format!("config-{scenario}"));
    std::fs::create_dir_all(&dir)?;
    let example = qemu_tests::artifacts::repo_root().join(common::EXAMPLE_CONFIG);
    let mut host = std::fs::read_to_string(example.join("host.toml"))?;
    host.push_str(&format!(
        r#"
[[service]]
name = "upgrade-driver"
command = ["/bin/sh", "/config/driver.sh", "{scenario}"]
env = {{ V2 = "{V2}" }}
restart = "never"
{extra}
"#
    ));
    std::fs::write(dir.join("host.toml"), host)?;
    std::fs::write(dir.join("driver.sh"), DRIVER)?;
    Ok(ConfigDisk::from_dir(&dir))
}

/// The upgrade disk: V1's artifacts as version V2, with a manifest saying so.
fn upgrade_disk(env: &TestEnv, v1: &str) -> anyhow::Result<PathBuf> {
    let a = env.artifacts()?;
    let from = a.build_dir.join("images").join(v1);
    let root = env.scratch().join("upd");
    let to = root.join(V2);
    std::fs::create_dir_all(&to)?;
    for f in ["vmlinuz", "initrd.img", "root.squashfs"] {
        std::fs::copy(from.join(f), to.join(f)).with_context(|| format!("copy {f}"))?;
    }
    let manifest = std::fs::read_to_string(from.join("manifest.toml"))?;
    let manifest = manifest.replacen(
        &format!("version = \"{v1}\""),
        &format!("version = \"{V2}\""),
        1,
    );
    ensure!(
        manifest.contains(V2),
        "manifest of {v1} has no version line"
    );
    std::fs::write(to.join("manifest.toml"), manifest)?;
    let img = env.dir().join("upgrade.ext4");
    qemu_tests::disk::ext4_from_dir(&root, &img, "WALDEN-UPD", 256)?;
    Ok(img)
}

/// A USB machine with the config, the upgrade disk and the i6300esb watchdog.
fn machine(env: &TestEnv, config: ConfigDisk, upd: &Path) -> anyhow::Result<Machine> {
    let a = env.artifacts()?;
    Ok(env
        .machine()
        .usb_image(a.usb_image()?)
        .firmware(Firmware::Bios)
        .config_disk(config)
        .nic(Nic::Isolated)
        .extra_args([
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id=upd", upd.display()),
            "-device".into(),
            "virtio-blk-pci,drive=upd,serial=walden-upd".into(),
            "-device".into(),
            "i6300esb".into(),
            "-action".into(),
            "watchdog=reset".into(),
        ])
        .start()?)
}

/// Wait for the ready line of a boot of `version` and return its status JSON.
fn ready(m: &mut Machine, version: &str) -> anyhow::Result<serde_json::Value> {
    m.wait_for_console(expect::READY, BOOT_TIMEOUT)?;
    let s = m.status_json()?;
    ensure!(
        s["image_version"] == version,
        "expected {version} to run, status says {}",
        s["image_version"]
    );
    Ok(s)
}

fn file(m: &Machine, name: &str) -> anyhow::Result<String> {
    let bytes = m
        .config_disk_file(&format!("/{name}.txt"))?
        .with_context(|| format!("/{name}.txt not on the config disk"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A line of `walden image list` for `version`, e.g. "active, previous".
fn markers(list: &str, version: &str) -> String {
    list.lines()
        .find_map(|l| l.strip_prefix(version).filter(|r| r.starts_with(' ')))
        .map(|r| r.trim().to_string())
        .unwrap_or_default()
}

fn power_off(m: &mut Machine) -> anyhow::Result<()> {
    m.powerdown()?;
    m.wait_exit(Duration::from_secs(120))?;
    Ok(())
}

/// Scenarios 1 and 4: install V2, it runs on trial, becomes healthy and is
/// marked good; then `walden image rollback` and a reboot run V1 again.
#[test]
fn install_trial_mark_good_then_manual_rollback() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(install_trial_mark_good_then_manual_rollback_once)
}

fn install_trial_mark_good_then_manual_rollback_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("install_trial_mark_good_then_manual_rollback")? else {
        return Ok(());
    };
    let t0 = Instant::now();
    let v1 = env.artifacts()?.version.clone();
    let upd = upgrade_disk(&env, &v1)?;
    let mut m = machine(&env, config(&env, "good", "")?, &upd)?;
    ready(&mut m, &v1)?;
    m.wait_for_console("upgrade-test: installed, rebooting", BOOT_TIMEOUT)?;
    let s = ready(&mut m, V2)?;
    eprintln!("V2 boot: {}", s["boot_image"]);
    m.wait_for_console("upgrade-test: rolled back by hand, rebooting", BOOT_TIMEOUT)?;
    let s = ready(&mut m, &v1)?;
    ensure!(
        s["boot_image"]["state"] == "normal",
        "after a manual rollback V1 is simply active: {}",
        s["boot_image"]
    );
    power_off(&mut m)?;

    let install = file(&m, "install")?;
    ensure!(install.contains(&format!("installed {V2}")), "{install}");
    let list = file(&m, "list-installed")?;
    ensure!(
        markers(&list, V2) == "active, trial (3 tries left)",
        "{list}"
    );
    ensure!(markers(&list, &v1) == "running, previous", "{list}");
    let list = file(&m, "list-good")?;
    ensure!(markers(&list, V2) == "running, active", "{list}");
    ensure!(markers(&list, &v1) == "previous", "{list}");
    let list = file(&m, "list-rolled")?;
    ensure!(markers(&list, &v1) == "active", "{list}");
    ensure!(markers(&list, V2) == "running, previous", "{list}");
    eprintln!("scenarios 1+4 took {} s", t0.elapsed().as_secs());
    Ok(())
}

/// Scenario 2: V2 never becomes healthy (its health check fails): three
/// tries, then GRUB boots V1, which reports the rollback and marks V2 bad.
#[test]
fn unhealthy_version_rolls_back_after_its_tries() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(unhealthy_version_rolls_back_after_its_tries_once)
}

fn unhealthy_version_rolls_back_after_its_tries_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("unhealthy_version_rolls_back_after_its_tries")? else {
        return Ok(());
    };
    let t0 = Instant::now();
    let v1 = env.artifacts()?.version.clone();
    let upd = upgrade_disk(&env, &v1)?;
    let health = format!(
        "[health]\ntimeout = \"20s\"\ncommand = [\"/bin/sh\", \"-c\", \"! grep -q '{V2}' /run/walden/boot.toml\"]\n"
    );
    let mut m = machine(&env, config(&env, "unhealthy", &health)?, &upd)?;
    ready(&mut m, &v1)?;
    for n in 1..=3 {
        m.wait_for_console(&format!("boot of {V2}"), BOOT_TIMEOUT)?;
        m.wait_for_console(&format!("trial of {V2} failed"), BOOT_TIMEOUT)?;
        eprintln!("try {n} failed after {} s", t0.elapsed().as_secs());
    }
    let line = m.wait_for_console(&format!("rolled back from {V2}:"), ROLLBACK_TIMEOUT)?;
    ensure!(line.contains("health command"), "no reason: {line}");
    let s = ready(&mut m, &v1)?;
    ensure!(
        s["boot_image"]["state"] == "rolled-back",
        "{}",
        s["boot_image"]
    );
    ensure!(
        s["boot_image"]["rolled_back_from"] == V2,
        "{}",
        s["boot_image"]
    );
    m.wait_for_console("upgrade-test: after rollback", BOOT_TIMEOUT)?;
    power_off(&mut m)?;
    let list = file(&m, "list-after")?;
    ensure!(markers(&list, V2) == "bad", "{list}");
    ensure!(markers(&list, &v1) == "running, active", "{list}");
    eprintln!("scenario 2 took {} s", t0.elapsed().as_secs());
    Ok(())
}

/// Scenario 3: V2's supervisor hangs; PID 1 stops pinging the i6300esb
/// watchdog, the machine resets, each reset is a failed try, then rollback.
#[test]
fn wedged_version_is_reset_by_the_watchdog_and_rolled_back() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(wedged_version_is_reset_by_the_watchdog_and_rolled_back_once)
}

fn wedged_version_is_reset_by_the_watchdog_and_rolled_back_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("wedged_version_is_reset_by_the_watchdog_and_rolled_back")?
    else {
        return Ok(());
    };
    let t0 = Instant::now();
    let v1 = env.artifacts()?.version.clone();
    let upd = upgrade_disk(&env, &v1)?;
    // V2 never passes its check, so it is never marked good before the hang.
    let extra = format!(
        "[health]\ncommand = [\"/bin/sh\", \"-c\", \"! grep -q '{V2}' /run/walden/boot.toml\"]\n\
         [watchdog]\ntimeout = \"20s\"\n"
    );
    let mut m = machine(&env, config(&env, "wedge", &extra)?, &upd)?;
    // PID 1 arms it when udev has loaded the driver, before ready.
    m.wait_for_console("hardware watchdog /dev/watchdog armed", BOOT_TIMEOUT)?;
    ready(&mut m, &v1)?;
    for n in 1..=3 {
        m.wait_for_console(&format!("boot of {V2}"), BOOT_TIMEOUT)?;
        m.wait_for_console("upgrade-test: stopping the supervisor", BOOT_TIMEOUT)?;
        eprintln!("try {n} wedged after {} s", t0.elapsed().as_secs());
    }
    let line = m.wait_for_console(&format!("rolled back from {V2}:"), ROLLBACK_TIMEOUT)?;
    ensure!(
        line.contains("watchdog"),
        "reason should name the hang: {line}"
    );
    // QEMU reports each watchdog expiry; the events queued meanwhile are
    // read with the next command's reply.
    m.qmp("query-status", None)?;
    let fired = m
        .qmp_events()
        .iter()
        .filter(|e| e["event"] == "WATCHDOG")
        .count();
    ensure!(
        fired == 3,
        "expected 3 watchdog resets, QEMU reported {fired}"
    );
    let s = ready(&mut m, &v1)?;
    ensure!(
        s["boot_image"]["rolled_back_from"] == V2,
        "{}",
        s["boot_image"]
    );
    m.wait_for_console("upgrade-test: after rollback", BOOT_TIMEOUT)?;
    power_off(&mut m)?;
    let list = file(&m, "list-after")?;
    ensure!(markers(&list, V2) == "bad", "{list}");
    eprintln!("scenario 3 took {} s", t0.elapsed().as_secs());
    Ok(())
}

/// Scenario 5: from an ISO, `image list` says single version and `image
/// install` refuses clearly.
#[test]
fn iso_has_a_single_version_and_refuses_install() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(iso_has_a_single_version_and_refuses_install_once)
}

fn iso_has_a_single_version_and_refuses_install_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("iso_has_a_single_version_and_refuses_install")? else {
        return Ok(());
    };
    let t0 = Instant::now();
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .iso_cdrom(a.iso()?)
        .firmware(Firmware::Bios)
        .config_disk(config(&env, "iso", "")?)
        .nic(Nic::Isolated)
        .start()?;
    let s = ready(&mut m, &a.version)?;
    ensure!(
        s["boot_image"]["state"] == "single-version",
        "{}",
        s["boot_image"]
    );
    m.wait_exit(BOOT_TIMEOUT)?;
    let list = file(&m, "iso-list")?;
    ensure!(list.contains("single version"), "{list}");
    let install = file(&m, "iso-install")?;
    ensure!(
        install.contains("booted from an ISO") && install.contains("exit=1"),
        "{install}"
    );
    eprintln!("scenario 5 took {} s", t0.elapsed().as_secs());
    Ok(())
}
