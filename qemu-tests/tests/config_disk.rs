//! The config disk (issue 4): the writable /etc and config generations
//! survive a power cycle, and a broken host.toml boots the last-known-good
//! generation with the reason in status.
//!
//! Each scenario boots twice on the same config disk image (attached with
//! `extra_args`, so the second machine gets the same file rather than a
//! fresh one); between the boots the test powers off in order, reads and
//! edits the image offline with debugfs, as a user would on another machine.

mod common;

use anyhow::{ensure, Context};
use common::BOOT_TIMEOUT;
use qemu_tests::{expect, ConfigDisk, Firmware, Machine, Nic, Phase, Status, TestEnv};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// walden's console line when it refuses /config (src/supervisor/config_state.rs).
const CONFIG_REFUSED: &str = "walden: CONFIG REFUSED: ";
/// From the power button to QEMU exiting.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(60);

fn step<'a>(s: &'a Status, name: &str) -> anyhow::Result<&'a qemu_tests::status::Step> {
    s.steps
        .iter()
        .find(|st| st.name == name)
        .with_context(|| format!("no step {name} in {:?}", s.steps))
}

fn detail(s: &Status, name: &str) -> anyhow::Result<String> {
    let st = step(s, name)?;
    Ok(format!(
        "{} {}{}",
        st.state,
        st.detail.as_deref().unwrap_or(""),
        st.error.as_deref().unwrap_or("")
    ))
}

/// Orderly power-off: walden unmounts the config disk and syncs.
fn power_off(m: &mut Machine) -> anyhow::Result<()> {
    m.powerdown()?;
    m.wait_exit(POWEROFF_TIMEOUT)?;
    Ok(())
}

fn read(img: &Path, path: &str) -> anyhow::Result<String> {
    let bytes = qemu_tests::disk::ext4_read_file(img, path)?
        .with_context(|| format!("{path} is not on the config disk"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Replace `path` on the (stopped) machine's config disk image.
fn put(env: &TestEnv, img: &Path, path: &str, text: &str) -> anyhow::Result<()> {
    let src = env.scratch().join("put.tmp");
    std::fs::write(&src, text)?;
    let run = |req: String| -> anyhow::Result<std::process::Output> {
        std::process::Command::new("debugfs")
            .args(["-w", "-R", &req])
            .arg(img)
            .output()
            .context("running debugfs (e2fsprogs)")
    };
    run(format!("rm {path}"))?;
    let out = run(format!("write {} {path}", src.display()))?;
    ensure!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("rror"),
        "debugfs write {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// host.toml of the scenarios: no [network], so health does not depend on
/// how QEMU names the NIC (examples/minimal expects eth0).
fn host_toml(hostname: &str) -> String {
    format!(
        "schema = 1\nhostname = \"{hostname}\"\n\n[ssh]\nauthorized_keys = [\n  \
         \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5Zm9yd2FsZGVuZXhhbXBsZXNvbmx5 admin@laptop\",\n]\n"
    )
}

/// A WALDEN-CONFIG disk image holding host.toml, in the scratch dir.
fn config_disk(env: &TestEnv) -> anyhow::Result<PathBuf> {
    let dir = env.scratch().join("config");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("host.toml"), host_toml("walden-mini"))?;
    let img = env.scratch().join("config-disk.img");
    qemu_tests::disk::ext4_from_dir(&dir, &img, "WALDEN-CONFIG", 64)?;
    Ok(img)
}

/// Boot the USB image with `img` as the config disk (virtio-blk, as the
/// harness attaches its own).
fn boot(env: &TestEnv, img: &Path) -> anyhow::Result<Machine> {
    let a = env.artifacts()?;
    Ok(env
        .machine()
        .usb_image_direct(a)?
        .firmware(Firmware::Bios)
        .nic(Nic::Isolated)
        .extra_args([
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id=cfg", img.display()),
            "-device".to_string(),
            "virtio-blk-pci,drive=cfg,serial=walden-config".to_string(),
        ])
        .start()?)
}

fn boot_ready(m: &mut Machine) -> anyhow::Result<Status> {
    m.wait_for_console(expect::READY, BOOT_TIMEOUT)?;
    let s = m.status()?;
    ensure!(s.phase == Phase::Ready, "phase {:?}: {s:?}", s.phase);
    Ok(s)
}

/// The first line of a command's output on the host, over ssh.
fn on_host(m: &mut Machine, command: &str) -> anyhow::Result<String> {
    let out = m.exec_ok(command)?;
    Ok(out.lines().next().unwrap_or("").trim().to_string())
}

#[test]
fn etc_and_a_host_toml_change_survive_a_reboot() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(etc_and_a_host_toml_change_survive_a_reboot_once)
}

fn etc_and_a_host_toml_change_survive_a_reboot_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("etc_and_a_host_toml_change_survive_a_reboot")? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    // host_toml() has a key of its own (admin@laptop); admin_ssh() adds
    // the harness's key beside it and the admin NIC, and the admin logs in
    // from outside: sshd is walden's own service once there is a key.
    let dir = env.scratch().join("config");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("host.toml"), host_toml("walden-mini"))?;
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        .firmware(Firmware::Bios)
        .nic(Nic::Isolated)
        .config_disk(ConfigDisk::from_dir(&dir))
        .admin_ssh()
        .start()?;
    let s = boot_ready(&mut m)?;
    let took = m.wait_for_ssh(Duration::from_secs(180))?;
    eprintln!("ssh from outside answered {took:.1?} after ready");
    let name = on_host(&mut m, "hostname")?;
    ensure!(name == "walden-mini", "hostname over ssh: {name:?}");
    let uid = on_host(&mut m, "id -u")?;
    ensure!(uid == "0", "logged in as uid {uid:?}, not root");
    let release = m.exec_ok("cat /etc/walden-release")?;
    ensure!(
        release
            .lines()
            .any(|l| l.trim() == format!("VERSION={}", a.version)),
        "/etc/walden-release says {release:?}, booted {}",
        a.version
    );
    // A failing command is the command's failure, with its own status and
    // stderr, not ssh's.
    let out = m.exec("echo not-here >&2; exit 3")?;
    ensure!(
        out.status == 3 && out.stderr.trim() == "not-here" && out.stdout.is_empty(),
        "exec of a failing command: {out:?}"
    );
    let err = m
        .exec_ok("false")
        .err()
        .context("exec_ok(\"false\") passed")?;
    ensure!(
        err.to_string().contains("`false` on the host exited 1"),
        "{err}"
    );
    let admin = m
        .admin_ssh()
        .context("the machine has no admin ssh")?
        .clone();
    let keys = m.exec_ok("cat /root/.ssh/authorized_keys")?;
    ensure!(
        keys.contains("admin@laptop") && keys.contains(&admin.public_key),
        "root's authorized_keys lacks the scenario's or the harness's key:\n{keys}"
    );
    let sshd = s.services.iter().find(|v| v.name == "sshd");
    ensure!(
        sshd.is_some(),
        "no sshd service in status: {:?}",
        s.services
    );
    let overlay = detail(&s, "etc-overlay")?;
    ensure!(
        overlay.starts_with("done overlaid"),
        "etc-overlay: {overlay}"
    );
    let recorded = detail(&s, "config-generation")?;
    ensure!(
        recorded.contains("recorded config generation 1-"),
        "config-generation: {recorded}"
    );
    m.check_console()?;
    power_off(&mut m)?;

    // Written by walden into /etc, so on the config disk's upper layer.
    let img = m.config_disk_image();
    ensure!(read(&img, "/etc/hostname")? == "walden-mini\n");
    let key = read(&img, "/etc/ssh/ssh_host_ed25519_key.pub")?;
    ensure!(key.starts_with("ssh-ed25519 "), "host key: {key}");
    ensure!(read(&img, "/.walden/generations/last-good")?.starts_with("1-"));

    // A new host.toml written offline (still letting the admin in), then
    // the same machine powered on again.
    put(
        &env,
        &img,
        "/host.toml",
        &admin.merge_into(&host_toml("walden-two"))?,
    )?;
    m.restart()?;
    let s = boot_ready(&mut m)?;
    ensure!(detail(&s, "hostname")?.contains("walden-two"));
    let name = on_host(&mut m, "hostname")?;
    ensure!(
        name == "walden-two",
        "hostname over ssh after the change: {name:?}"
    );
    let recorded = detail(&s, "config-generation")?;
    ensure!(
        recorded.contains("recorded config generation 2-"),
        "config-generation: {recorded}"
    );
    m.check_console()?;
    power_off(&mut m)?;
    ensure!(read(&img, "/etc/hostname")? == "walden-two\n");
    ensure!(
        read(&img, "/etc/ssh/ssh_host_ed25519_key.pub")? == key,
        "the ssh host key changed across a reboot"
    );
    ensure!(read(&img, "/.walden/generations/last-good")?.starts_with("2-"));
    Ok(())
}

#[test]
fn a_broken_host_toml_boots_the_last_known_good_generation() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(a_broken_host_toml_boots_the_last_known_good_generation_once)
}

fn a_broken_host_toml_boots_the_last_known_good_generation_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("a_broken_host_toml_boots_the_last_known_good_generation")?
    else {
        return Ok(());
    };
    let img = config_disk(&env)?;
    let mut m = boot(&env, &img)?;
    let s = boot_ready(&mut m)?;
    let recorded = detail(&s, "config-generation")?;
    ensure!(
        recorded.contains("recorded config generation 1-"),
        "{recorded}"
    );
    power_off(&mut m)?;
    drop(m);

    // Line 3, column 1: a key host.toml does not have.
    let broken = "schema = 1\nhostname = \"broken\"\nhostnmae = \"typo\"\n";
    put(&env, &img, "/host.toml", broken)?;
    let mut m = boot(&env, &img)?;
    let line = m.wait_for_console(CONFIG_REFUSED, BOOT_TIMEOUT)?;
    // Kernel messages can break a long console line: what is missing from
    // this line must follow it; `walden status` below has the whole text.
    for part in ["host.toml:3:1", "last-known-good generation 1"] {
        if !line.contains(part) {
            m.wait_for_console(part, Duration::from_secs(30))
                .with_context(|| format!("refusal line without {part:?}: {line}"))?;
        }
    }
    let s = boot_ready(&mut m)?;
    let config = detail(&s, "config")?;
    ensure!(
        config.contains("host.toml:3:1") && config.contains("generation 1"),
        "config step: {config}"
    );
    ensure!(
        detail(&s, "hostname")?.contains("walden-mini"),
        "the last-known-good hostname runs"
    );
    let skipped = detail(&s, "config-generation")?;
    ensure!(
        skipped.starts_with("skipped"),
        "config-generation: {skipped}"
    );
    // The newest error names the refused file and line: the config step's
    // CONFIG REFUSED, or the health step reporting that refusal after it.
    ensure!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("host.toml:3:1"),
        "last_error: {:?}",
        s.last_error
    );
    // The broken file is still there, untouched, for the user to fix.
    power_off(&mut m)?;
    drop(m);
    ensure!(read(&img, "/host.toml")? == broken);
    Ok(())
}

#[test]
fn no_config_disk_is_maintenance_until_one_is_plugged_in() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(no_config_disk_is_maintenance_until_one_is_plugged_in_once)
}

fn no_config_disk_is_maintenance_until_one_is_plugged_in_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("no_config_disk_is_maintenance_until_one_is_plugged_in")?
    else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let img = config_disk(&env)?;
    // The disk exists for QEMU but is not attached: a stick still in the drawer.
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        .firmware(Firmware::Bios)
        .nic(Nic::Isolated)
        .extra_args([
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id=cfg", img.display()),
        ])
        .start()?;
    let line = m.wait_for_console("[step=config-disk] failed", BOOT_TIMEOUT)?;
    // Only the start of the line is reliable: kernel messages may break a
    // long console line; the maintenance line is waited for on its own.
    ensure!(
        line.contains("no config disk with LABEL=WALDEN-CONFIG"),
        "config-disk line: {line}"
    );
    m.wait_for_console(expect::MAINTENANCE, Duration::from_secs(120))?;
    let s = m.status()?;
    ensure!(s.phase == Phase::Maintenance, "phase {:?}", s.phase);
    let consoles = detail(&s, "consoles")?;
    ensure!(consoles.contains("ttyS0"), "consoles: {consoles}");

    // Plug the stick in.
    m.qmp(
        "device_add",
        Some(serde_json::json!({
            "driver": "usb-storage", "bus": "xhci.0", "drive": "cfg", "id": "cfgstick"
        })),
    )?;
    m.wait_for_console(
        "appeared: running the config bring-up",
        Duration::from_secs(60),
    )?;
    let s = boot_ready(&mut m)?;
    ensure!(detail(&s, "config-disk")?.starts_with("done mounted"));
    ensure!(detail(&s, "hostname")?.contains("walden-mini"));
    m.quit()?;
    Ok(())
}

/// host.toml with an internal bridge carrying `address` (a network change
/// that touches no NIC of the machine).
fn host_toml_with_bridge(hostname: &str, address: &str) -> String {
    format!(
        "{}\n[network]\n\n[[network.bridge]]\nname = \"br-apply\"\naddresses = [\"{address}\"]\n",
        host_toml(hostname)
    )
}

fn apply_request(host: &str, confirm_timeout_s: Option<u64>) -> serde_json::Value {
    let mut req = serde_json::json!({
        "action": "config-apply",
        "files": { "host.toml": host },
    });
    if let Some(t) = confirm_timeout_s {
        req["confirm_timeout_s"] = t.into();
    }
    req
}

fn bridges(status: &serde_json::Value) -> Vec<String> {
    status["network"]
        .as_array()
        .map(|links| {
            links
                .iter()
                .filter_map(|l| l["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `walden config apply` on the running appliance (issues 4 and 5): a
/// network change reverts when not confirmed and is kept when confirmed; a
/// plain change is recorded at once; a power cut in the middle of an apply
/// boots the old or the new config, never a mix, on a clean file system.
#[test]
fn config_apply_confirm_revert_and_a_power_cut_mid_apply() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(config_apply_confirm_revert_and_a_power_cut_mid_apply_once)
}

fn config_apply_confirm_revert_and_a_power_cut_mid_apply_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("config_apply_confirm_revert_and_a_power_cut_mid_apply")?
    else {
        return Ok(());
    };
    let img = config_disk(&env)?;
    let mut m = boot(&env, &img)?;
    boot_ready(&mut m)?;
    let generation = |m: &mut Machine| -> anyhow::Result<u64> {
        m.status_json()?["config_generation"]
            .as_u64()
            .context("no config_generation in status")
    };
    ensure!(generation(&mut m)? == 1);

    // 1. A network change nobody confirms comes back out.
    let changed = host_toml_with_bridge("walden-net", "192.168.77.1/24");
    let report = m.command(&apply_request(&changed, Some(15)), Duration::from_secs(120))?;
    ensure!(report["state"] == "awaiting-confirm", "{report}");
    let s = m.status_json()?;
    ensure!(
        bridges(&s).contains(&"br-apply".to_string()),
        "{}",
        s["network"]
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let reverted = loop {
        let s = m.status_json()?;
        if s["config_apply"]["state"] == "reverted" {
            break s;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "not reverted: {}",
            s["config_apply"]
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    ensure!(
        !bridges(&reverted).contains(&"br-apply".to_string()),
        "the bridge stayed after the revert: {}",
        reverted["network"]
    );
    ensure!(
        reverted["config_generation"] == 1,
        "{}",
        reverted["config_generation"]
    );

    // 2. The same change, confirmed: kept and recorded.
    let report = m.command(
        &apply_request(&changed, Some(120)),
        Duration::from_secs(120),
    )?;
    ensure!(report["state"] == "awaiting-confirm", "{report}");
    let report = m.command(
        &serde_json::json!({"action": "config-confirm"}),
        Duration::from_secs(60),
    )?;
    ensure!(report["state"] == "confirmed", "{report}");
    let s = m.status_json()?;
    ensure!(
        bridges(&s).contains(&"br-apply".to_string()),
        "{}",
        s["network"]
    );
    ensure!(s["config_generation"] == 2, "{}", s["config_generation"]);

    // 3. A change without network: applied and recorded at once; a broken
    //    one is refused with its line and changes nothing.
    let plain = host_toml_with_bridge("walden-three", "192.168.77.1/24");
    let report = m.command(&apply_request(&plain, None), Duration::from_secs(120))?;
    ensure!(report["state"] == "applied", "{report}");
    ensure!(generation(&mut m)? == 3);
    let broken = format!("{plain}hostnmae = \"typo\"\n");
    match m.command(&apply_request(&broken, None), Duration::from_secs(60)) {
        Err(e) => ensure!(e.to_string().contains("host.toml:"), "{e}"),
        Ok(r) => anyhow::bail!("a broken config was applied: {r}"),
    }
    ensure!(generation(&mut m)? == 3);

    // 3b. A network change with `[network] safe_apply = false`: applied and
    //     recorded at once, no confirmation asked.
    let unconfirmed = host_toml_with_bridge("walden-three", "192.168.79.1/24")
        .replace("[network]\n", "[network]\nsafe_apply = false\n");
    let report = m.command(&apply_request(&unconfirmed, None), Duration::from_secs(120))?;
    ensure!(
        report["state"] == "applied",
        "safe_apply = false asked for a confirmation: {report}"
    );
    ensure!(generation(&mut m)? == 4);
    let s = m.status_json()?;
    let br = s["network"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "br-apply"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        br["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "192.168.79.1/24")),
        "br-apply (as the kernel has it) lacks the new address: {br}"
    );
    let plain = unconfirmed;

    // 4. Power cut right after an apply starts.
    let cut = host_toml_with_bridge("walden-four", "192.168.78.1/24");
    m.send_command(&apply_request(&cut, None))?;
    std::thread::sleep(Duration::from_millis(300));
    m.quit()?;
    drop(m);
    let mut m = boot(&env, &img)?;
    let s = boot_ready(&mut m)?;
    let disk = detail(&s, "config-disk")?;
    let host = m.status_json()?;
    let hostname = detail(&s, "hostname")?;
    eprintln!(
        "after the cut: {hostname}; config-disk: {disk}; generation {}",
        host["config_generation"]
    );
    power_off(&mut m)?;
    drop(m);
    let now = read(&img, "/host.toml")?;
    ensure!(
        now == plain || now == cut,
        "host.toml is neither the old nor the new set:\n{now}"
    );
    let expect_name = if now == cut {
        "walden-four"
    } else {
        "walden-three"
    };
    ensure!(
        hostname.contains(expect_name),
        "hostname {hostname} with host.toml:\n{now}"
    );
    ensure!(
        read(&img, "/.walden/install/host.toml").is_err(),
        "the install journal was left behind"
    );
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn"])
        .arg(&img)
        .output()
        .context("running e2fsck")?;
    ensure!(
        fsck.status.success(),
        "e2fsck -fn after the power cut and a boot: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    Ok(())
}
