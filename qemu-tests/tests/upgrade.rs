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
//! V2 fails its trial in both ways an unattended box meets, in one trial
//! run: unhealthy through the config, as an operator's health check would
//! (`[health] command` fails on V2 only), and wedged (the driver stops the
//! supervisor with SIGSTOP on V2, so PID 1 stops pinging the i6300esb
//! watchdog and the machine resets).
//!
//! Settings are proven with values other than their defaults and with
//! assertions the default would fail: `[health] on_failure = "stay"` keeps
//! V2's first failed try up (no reset for 20 s, tries left in status), then
//! the driver switches it to "reboot"; `[watchdog] timeout = "20s"` resets
//! a wedged V2 well before the default 60 s could.

mod common;

use anyhow::{ensure, Context};
use common::BOOT_TIMEOUT;
use qemu_tests::{expect, ConfigDisk, Firmware, Machine, Nic, TestEnv};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
wedge() { # once the health step published the watchdog timeout: hang the supervisor
    while [ ! -e /run/walden/watchdog.timeout ]; do sleep 1; done
    say "stopping the supervisor (pid $PPID)"
    kill -STOP "$PPID"
}
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
fail/1)
    if [ "$v" = "$V2" ]; then
        # Try 1 runs with on_failure = "stay": its failed health check
        # leaves it up. Look, let the next tries reboot, then hang.
        wait_for '"health": ?"not healthy'
        run list-stayed walden image list
        say "trial failed, staying up"
        sleep 20
        sed -i 's/^on_failure = "stay"$/on_failure = "reboot"/' /config/host.toml
        next 2; say "still up after 20 s; on_failure = reboot from now on"
        wedge
    fi ;;
fail/2)
    # Try 2: nothing to do, its failed health check reboots it.
    [ "$v" = "$V2" ] && next 3 ;;
fail/3)
    if [ "$v" = "$V2" ]; then
        # Try 3: hung before its health check could fail (20 s).
        wedge
    else
        run list-after walden image list
        run remove walden image remove "$V2"
        run list-removed walden image list
        next 4; wait_ready; say "after rollback"
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

/// QMP events named `name` so far (after reading whatever QEMU queued).
fn qmp_events(m: &mut Machine, name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    // Queued events are read with the next command's reply.
    m.qmp("query-status", None)?;
    Ok(m.qmp_events()
        .iter()
        .filter(|e| e["event"] == name)
        .cloned()
        .collect())
}

/// When QEMU emitted `event` (its host-clock timestamp).
fn event_time(event: &serde_json::Value) -> anyhow::Result<SystemTime> {
    let t = &event["timestamp"];
    let (Some(s), Some(us)) = (t["seconds"].as_u64(), t["microseconds"].as_u64()) else {
        anyhow::bail!("QMP event without a timestamp: {event}");
    };
    Ok(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us))
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

/// Scenarios 2 and 3: V2 never becomes healthy and hangs: three tries,
/// then GRUB boots V1, which reports the rollback and marks V2 bad.
/// Try 1 fails its health check with `[health] on_failure = "stay"`: it
/// stays up (no reset, two tries left) until the driver switches to
/// "reboot" and hangs the supervisor, so the i6300esb watchdog resets it.
/// Try 2's failed check reboots it by itself. Try 3 hangs before its check
/// can fail. `[watchdog] timeout = "20s"`: every boot arms the device with
/// 20 s, and each reset comes 20-30 s after the hang (pings stop once the
/// supervisor has not answered for half the timeout), where the default
/// 60 s would take 60-90 s. After the rollback `walden image remove`
/// deletes the bad V2: gone from `image list` and from the stick's ESP
/// (directory, menu, grubenv).
#[test]
fn failing_version_stays_is_reset_by_the_watchdog_and_rolls_back() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(failing_version_once)
}

/// When the supervisor was stopped ("stopping the supervisor" on the
/// console), checked against QEMU's WATCHDOG event: 20-30 s later.
fn check_watchdog_reset(hung: SystemTime, event: &serde_json::Value, n: u32) -> anyhow::Result<()> {
    let after = event_time(event)?
        .duration_since(hung)
        .unwrap_or(Duration::ZERO);
    eprintln!("try {n}: reset {} s after the hang", after.as_secs());
    ensure!(
        (Duration::from_secs(10)..Duration::from_secs(50)).contains(&after),
        "try {n}: the watchdog fired {after:?} after the supervisor stopped; \
         with a 20 s timeout that is 20-30 s (60 s would be 60-90 s)"
    );
    Ok(())
}

fn failing_version_once() -> anyhow::Result<()> {
    let Some(env) =
        TestEnv::with_image("failing_version_stays_is_reset_by_the_watchdog_and_rolls_back")?
    else {
        return Ok(());
    };
    let t0 = Instant::now();
    let v1 = env.artifacts()?.version.clone();
    let upd = upgrade_disk(&env, &v1)?;
    let extra = format!(
        "[health]\ntimeout = \"20s\"\non_failure = \"stay\"\n\
         command = [\"/bin/sh\", \"-c\", \"! grep -q '{V2}' /run/walden/boot.toml\"]\n\
         [watchdog]\ntimeout = \"20s\"\n"
    );
    let mut m = machine(&env, config(&env, "fail", &extra)?, &upd)?;
    // PID 1 arms it when udev has loaded the driver, before ready.
    m.wait_for_console(expect::WATCHDOG_ARMED, BOOT_TIMEOUT)?;
    ready(&mut m, &v1)?;
    let mut hung = Vec::new();

    // Try 1, on_failure = "stay": failed, and still up 20 s later.
    m.wait_for_console(&format!("boot of {V2}"), BOOT_TIMEOUT)?;
    let rebooted = format!("trial of {V2} failed");
    let stayed = m.wait_for_any(
        &["upgrade-test: trial failed, staying up", &rebooted],
        BOOT_TIMEOUT,
    )?;
    ensure!(
        stayed.index == 0,
        "walden rebooted the failed try although on_failure = \"stay\": {}",
        stayed.line
    );
    let resets = qmp_events(&mut m, "RESET")?.len();
    let s = m.status_json()?;
    let img = &s["boot_image"];
    ensure!(
        s["image_version"] == V2 && img["state"] == "trial" && img["tries_left"] == 2,
        "the failed first try should still run V2 on trial with 2 tries left: {img}"
    );
    ensure!(
        img["health"]
            .as_str()
            .is_some_and(|h| h.starts_with("not healthy") && h.contains("health command")),
        "status should say why it is not healthy: {img}"
    );
    m.wait_for_console(
        "upgrade-test: still up after 20 s",
        Duration::from_secs(120),
    )?;
    ensure!(
        qmp_events(&mut m, "RESET")?.len() == resets,
        "the machine was reset although on_failure = \"stay\""
    );
    ensure!(
        !m.console().contains(&rebooted),
        "walden rebooted the failed try although on_failure = \"stay\""
    );
    m.wait_for_console("upgrade-test: stopping the supervisor", BOOT_TIMEOUT)?;
    hung.push(SystemTime::now());
    eprintln!(
        "try 1 failed, stayed up, hung after {} s",
        t0.elapsed().as_secs()
    );

    // Try 2, on_failure = "reboot" (set by the driver): walden reboots.
    m.wait_for_console(&format!("boot of {V2}"), BOOT_TIMEOUT)?;
    m.wait_for_console(&rebooted, BOOT_TIMEOUT)?;
    eprintln!("try 2 failed after {} s", t0.elapsed().as_secs());

    // Try 3: hung.
    m.wait_for_console(&format!("boot of {V2}"), BOOT_TIMEOUT)?;
    m.wait_for_console("upgrade-test: stopping the supervisor", BOOT_TIMEOUT)?;
    hung.push(SystemTime::now());
    eprintln!("try 3 hung after {} s", t0.elapsed().as_secs());

    let line = m.wait_for_console(&format!("rolled back from {V2}:"), ROLLBACK_TIMEOUT)?;
    // The last try's own outcome, not try 2's recorded health failure.
    ensure!(
        line.contains("try 3 of 3 never reported health") && line.contains("watchdog"),
        "the reason should be the last try's hang: {line}"
    );
    // QEMU reports each watchdog expiry, with the time it fired.
    let fired = qmp_events(&mut m, "WATCHDOG")?;
    ensure!(
        fired.len() == 2,
        "expected 2 watchdog resets (tries 1 and 3), QEMU reported {}",
        fired.len()
    );
    for ((at, event), n) in hung.iter().zip(&fired).zip([1, 3]) {
        check_watchdog_reset(*at, event, n)?;
    }
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
    let list = file(&m, "list-stayed")?;
    ensure!(
        markers(&list, V2) == "running, active, trial (2 tries left)",
        "{list}"
    );
    let list = file(&m, "list-after")?;
    ensure!(markers(&list, V2) == "bad", "{list}");
    ensure!(markers(&list, &v1) == "running, active", "{list}");
    let remove = file(&m, "remove")?;
    ensure!(
        remove.contains(&format!("removed {V2}")) && remove.contains("exit=0"),
        "{remove}"
    );
    let list = file(&m, "list-removed")?;
    ensure!(
        !list.contains(V2) && markers(&list, &v1) == "running, active",
        "{list}"
    );
    let timeouts = watchdog_timeouts(&m.console().text());
    ensure!(
        timeouts.len() == 5 && timeouts.iter().all(|t| *t == 20),
        "each of the 5 boots should run the watchdog at 20 s; console says {timeouts:?}"
    );
    // The stick itself, as the machine left it.
    let usb = m.media_copy(0)?;
    let versions = qemu_tests::disk::esp_list_dir(&usb, "images")?;
    ensure!(
        versions == [v1.clone()],
        "images/ on the ESP after removing {V2}: {versions:?}"
    );
    for f in ["grub/grub.cfg", "grub/grubenv"] {
        let text = qemu_tests::disk::esp_read_file(&usb, f)?;
        ensure!(!text.contains(V2), "{f} still names {V2}:\n{text}");
    }
    eprintln!("scenarios 2+3 took {} s", t0.elapsed().as_secs());
    Ok(())
}

/// The watchdog timeout each boot ended up with, in seconds, from PID 1's
/// console lines: `armed (N s)` when it opens the device, `timeout set to
/// N s` when the supervisor's published value arrives afterwards.
fn watchdog_timeouts(console: &str) -> Vec<u64> {
    let secs = |rest: &str| rest.split_whitespace().next()?.parse::<u64>().ok();
    let mut out: Vec<u64> = Vec::new();
    for line in console.lines() {
        if let Some(rest) = line.split(expect::WATCHDOG_ARMED).nth(1) {
            out.extend(secs(rest.trim_start_matches(" (")));
        } else if let Some(rest) = line.split(expect::WATCHDOG_SET).nth(1) {
            if let (Some(last), Some(n)) = (out.last_mut(), secs(rest)) {
                *last = n;
            }
        }
    }
    out
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
